"""The training step of the models being trained (core.fit_models), written once for one model
and for a stack: the optimizer and its schedule, per-model learning rates, the gradient scaler,
the step itself (augmentation, mixed precision, L2), captured as a CUDA graph where it can be
(core.cuda_graphs) or run eagerly, and the epoch's buffers it writes its results into, on the
device (no sync per batch). core.fit's loop drives it batch by batch.
"""

from __future__ import annotations

import torch

from core.augment import augment_batch
from core.compiling import autocast, make_optimizer, make_scheduler
from core.config import RunConfig
from core.cuda_graphs import StepGraphs, graph_blocker, graphable_optimizer, keep_tensor_hyperparameters
from core.stacked import MemberRates

GRAD_NORM_EVERY = 10  # steps between two samples of the per-layer gradient norms


def num_batches(n: int, batch_size: int) -> int:
    """Batches in an epoch of `n` samples. A last batch of one sample breaks batch norm
    ("expected more than 1 value per channel"), so it is dropped."""
    batches = -(-n // batch_size)
    if n % batch_size == 1 and batches > 1:
        batches -= 1
    return batches


class Steps:
    """The step of `models` (every model on its own rows of one batch) and its epoch's buffers."""

    def __init__(self, models, configs: list[RunConfig], device: torch.device):
        base = configs[0]
        self.models, self.base, self.n, self.device = models, base, len(configs), device
        self.batch_size = base.batch_size
        self.steps_per_epoch = num_batches(len(models.rows[0]), self.batch_size)
        # On a CUDA GPU the whole step is captured as a CUDA graph (core.cuda_graphs) unless
        # something in the config prevents it; the environment says which, and why.
        self.graph_blocker = graph_blocker(base, device)
        self.optimizer = graphable_optimizer(base, models.module.parameters()) if self.graph_blocker is None \
            else make_optimizer(base, models.module)
        self.scheduler = make_scheduler(base, self.optimizer, self.steps_per_epoch)
        keep_tensor_hyperparameters(self.optimizer)
        self.rates = MemberRates.of([c.lr for c in configs], device)   # None: one rate for all
        self.l2 = torch.tensor([c.l2 for c in configs], dtype=torch.float32, device=device)
        self.any_l2 = any(c.l2 for c in configs)
        self.scaler = torch.amp.GradScaler("cuda") if base.precision == "fp16" and device.type == "cuda" else None
        self.graphs = StepGraphs(self._graph_step, self.optimizer) if self.graph_blocker is None else None
        self._background = -models.mean / models.std
        self._bufs: dict[str, torch.Tensor] = {}
        self._losses = torch.zeros(0)
        self.batches_done = 0
        self._rows: torch.Tensor | None = None
        self._valid: torch.Tensor | None = None
        self._min_length = 0
        self._grad_samples = self._unmasked = 0

    def describe(self) -> dict:
        """How the steps run, for the run's environment."""
        how = self.graphs.describe() if self.graphs is not None else \
            {"training_loop": "eager", "eager_reason": self.graph_blocker} if self.device.type == "cuda" else \
            {"training_loop": "eager"}
        if not self.models.stacked:
            return how
        env = {"training_loop": f"vectorised: {self.n} models in one stack"}
        if self.graphs is not None:
            env["cuda_graph"] = how
        elif self.device.type == "cuda":
            env["eager_reason"] = self.graph_blocker
        return env

    def running_loss(self) -> list[float]:
        """Each model's mean training loss over this epoch's batches so far (syncs the device)."""
        b = self.batches_done
        if not b:
            return [float("nan")] * self.n
        return torch.stack([self._losses[:b, i].mean() for i in range(self.n)]).tolist()

    # --- an epoch -----------------------------------------------------------------------------

    def begin_epoch(self, orders: list[torch.Tensor]) -> None:
        """Each model's training rows for this epoch, in its shuffle order."""
        self._losses = self._epoch_buffers(orders)["losses"]
        self._grad_samples = self._unmasked = 0

    def run(self, b: int) -> int:
        """Batch `b` of the epoch: one step of every model, then the schedule; returns the rows
        of the longest model's batch."""
        bs, longest = self.batch_size, self._rows.shape[1]
        sample_norms = b % GRAD_NORM_EVERY == 0
        # A batch needs the mask only where a shorter member has run out of rows (a captured
        # step always applies it when any member is shorter: one graph for every batch).
        masked = self._valid is not None and (self.graphs is not None or
                                              self._min_length < min((b + 1) * bs, longest))
        if self.graphs is not None:
            self.graphs(("full" if b < min(self.steps_per_epoch, longest // bs) else "last", sample_norms))
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self._step(self._rows[:, b * bs:(b + 1) * bs], self._valid[:, b * bs:(b + 1) * bs] if masked else None,
                       b, sample_norms)
        self._grad_samples += sample_norms
        if self.scheduler:
            self.scheduler.step()
            keep_tensor_hyperparameters(self.optimizer)   # nothing to do for an eager optimizer
        rows = min(bs, longest - b * bs)
        if not masked:
            self._unmasked += rows
        self.batches_done = b + 1
        return rows

    def results(self) -> tuple[list[float], list[float], list[dict]]:
        """Each model's mean loss, accuracy and mean gradient norm of each layer's kernel over
        the epoch's batches so far."""
        bufs = self._bufs
        seen = [s + self._unmasked for s in bufs["seen"].tolist()]
        accuracy = [c / max(s, 1) for c, s in zip(bufs["correct"].tolist(), seen)]
        norms = (bufs["grad_sums"] / max(self._grad_samples, 1)).tolist()
        return self.running_loss(), accuracy, [dict(zip(self.models.kernel_names, row)) for row in norms]

    def _epoch_buffers(self, orders: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """This epoch's rows and the step's result buffers, at fixed addresses (a captured step
        reads and writes them): all members' rows in one (N, longest) matrix, a shorter member
        (folds of unequal size) padded at its end and the padding masked out (`_valid`)."""
        n, d, steps = self.n, self.device, self.steps_per_epoch
        lengths = [len(o) for o in orders]
        longest = max(lengths)
        if self._rows is None or self._rows.shape[1] != longest:
            self._rows = torch.zeros(n, longest, dtype=torch.long, device=d)
            self._valid = None if min(lengths) == longest else \
                (torch.arange(longest, device=d)[None, :] < torch.tensor(lengths, device=d)[:, None]).float()
            self._bufs = {"losses": torch.zeros(steps, n, device=d), "correct": torch.zeros(n, device=d),
                          "seen": torch.zeros(n, device=d),
                          "grad_sums": torch.zeros(n, len(self.models.kernel_names), device=d),
                          "counter": torch.zeros(1, dtype=torch.long, device=d)}
        else:
            for t in self._bufs.values():
                t.zero_()
        for i, o in enumerate(orders):
            self._rows[i, :len(o)] = o
        self._min_length = min(lengths)
        return self._bufs

    def _step(self, rows: torch.Tensor, mask: torch.Tensor | None, at, grad_norm: bool) -> None:
        """One step of every model on its (N, m) training rows `rows` (mask: which are real),
        gradients zeroed; the losses go to losses[at] (an int, or the device step counter)."""
        cfg, n, bufs = self.base, self.n, self._bufs
        m = rows.shape[1]
        rows = rows.reshape(-1)
        xb = self.models.pool_x.index_select(0, rows)
        yb = self.models.pool_y.index_select(0, rows).view(n, m)
        if cfg.augment:
            xb = augment_batch(xb, self._background)
        xb = xb.view(n, m, *xb.shape[1:])
        with autocast(cfg, self.device):
            logits, loss = self.models.forward_loss(xb, yb, mask)
        objective = loss.sum()
        if self.any_l2:
            objective = objective + self.models.penalty(self.l2)
        step = self.scaler.step if self.scaler else (lambda optimizer: optimizer.step())
        (self.scaler.scale(objective) if self.scaler else objective).backward()
        if self.rates is None:
            step(self.optimizer)
        else:   # each model's update scaled by its learning rate (core.stacked.MemberRates)
            self.rates.step(self.optimizer, step)
        if self.scaler:
            self.scaler.update()
        with torch.no_grad():
            if isinstance(at, int):
                bufs["losses"][at] = loss.detach()
            else:
                bufs["losses"].index_copy_(0, at, loss.detach().float().view(1, n))
            pred = (logits.squeeze(-1) > 0).long() if cfg.loss == "binary_crossentropy" else logits.argmax(-1)
            if mask is not None:
                bufs["correct"] += ((pred == yb).float() * mask).sum(1)
                bufs["seen"] += mask.sum(1)
            else:   # every row real: the host counts them (one kernel less a step)
                bufs["correct"] += (pred == yb).sum(1)
            if grad_norm:
                norms = self.models.grad_norms()
                if norms is not None:
                    bufs["grad_sums"] += norms

    def _graph_step(self, key: tuple[str, bool]) -> None:
        """The step a CUDA graph captures: its rows read through the device step counter
        ("full" batches) or the fixed ragged last batch ("last"); with or without the
        gradient-norm sample (taken every GRAD_NORM_EVERY steps: a graph each)."""
        bs, n, counter = self.batch_size, self.n, self._bufs["counter"]
        full = min(self.steps_per_epoch, self._rows.shape[1] // bs)
        kind, norms = key
        if kind == "full":
            rows = self._rows[:, :full * bs].view(n, full, bs).index_select(1, counter)[:, 0]
            mask = None if self._valid is None else \
                self._valid[:, :full * bs].view(n, full, bs).index_select(1, counter)[:, 0]
        else:
            rows = self._rows[:, full * bs:(full + 1) * bs]
            mask = None if self._valid is None else self._valid[:, full * bs:(full + 1) * bs]
        self._step(rows, mask, counter, grad_norm=norms)
        counter += 1

    # --- one epoch --------------------------------------------------------------------------------
