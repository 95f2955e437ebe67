"""Training N configs of one architecture as one vectorised model (core.stacked): the folds of
a k-fold run, repeated seeds, a learning-rate grid. Each config still becomes a normal run
with its own history, weights, predictions and checkpoint.

What each model gets is what it would get trained alone (core.training): its own
initialization (seeded by its config), its own training and validation indices, its own
shuffle order each epoch (seeded from its seed and the epoch), its own learning rate and
schedule, its own early stopping. The losses of the N models are summed, so each model's
gradient is its own loss's gradient. Results match the same configs trained one by one up to
floating-point rounding (a batched matrix product sums in another order than a plain one);
dropout and augmentation draw different random numbers than one-by-one runs do, so with
them the models are equally good, not equal.

Limits handled, not hidden (`vectorize_plan` says which applies, and the runs train one by one):
  - configs that differ in anything but seed, fold, learning rate, L2, training subset,
    validation split or early stopping (architecture, batch size, epochs, optimizer, ...);
  - folds whose epochs have a different number of batches (their last batches of different
    sizes are fine: padded samples are masked out of the loss and of batch norm);
  - more than MAX_GROUP models.
Per-model learning rates: core.stacked.MemberRates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from core.augment import augment_batch
from core.callbacks import EarlyStopping, GroupHooks, MemberView
from core.config import RunConfig
from core.cuda_graphs import (StepGraphs, graph_blocker, graphable_optimizer, keep_tensor_hyperparameters,
                              load_optimizer_state, plain_optimizer_state)
from core.data import Dataset, to_tensor
from core.devices import device_name, resolve_device
from core.metrics import confusion_matrix
from core.models import build_model, count_parameters
from core.stacked import MemberRates, StackedModel
from core.vectorize import MAX_GROUP, MAY_DIFFER, vectorize_plan  # noqa: F401
from core.training import (GRAD_NORM_EVERY, TrainResult, autocast, epoch_seed, evaluate, evaluation_result,
                           loss_function, make_optimizer, make_scheduler, num_batches, predictions, shuffle_order,
                           split_indices, task_labels)

CANCEL_EVERY = 10  # batches between two looks at the members' cancel flags
VAL_ROWS_PER_PASS = 10_000  # validation rows of all members in one stacked forward pass


@dataclass
class Member:
    """One model of the stack: its config, its data and what it has done so far."""

    config: RunConfig
    train_idx: np.ndarray
    val_idx: np.ndarray
    history: list[dict] = field(default_factory=list)
    done: bool = False
    stop_reason: str = ""
    early: EarlyStopping | None = None
    final_state: dict | None = None        # weights it ended with (set when it stops)
    restored_epoch: int | None = None


class GroupTrainer:
    """fit() for N models in one stack (see the module docstring)."""

    def __init__(self, configs: list[RunConfig], dataset: Dataset, device: torch.device):
        reason = vectorize_plan(configs, dataset, for_speed=False)
        if reason:
            raise ValueError(f"these runs cannot train as one vectorised model: {reason}")
        self.configs, self.dataset, self.device = configs, dataset, device
        self.n = len(configs)
        base = configs[0]
        self.base = base
        models = []
        for config in configs:
            torch.manual_seed(config.seed)  # each model starts exactly where it would alone
            models.append(build_model(config.architecture(), config.num_outputs))
        self.params_per_model = count_parameters(models[0])
        self.model = StackedModel(models).to(device)
        if any(sp["type"] == "conv" for sp in self.model.layer_specs):
            self.model = self.model.to(memory_format=torch.channels_last)
        labels = task_labels(dataset.train_labels, base)
        self.mean, self.std = dataset.mean, dataset.std
        self.train_x = to_tensor(dataset.train_images, self.mean, self.std, device)
        self.train_y = torch.from_numpy(labels).to(device)
        self.test_x = to_tensor(dataset.test_images, self.mean, self.std, device)
        self.test_y = torch.from_numpy(task_labels(dataset.test_labels, base)).to(device)
        self.members = []
        for config in configs:
            train_idx, val_idx = split_indices(config, dataset.train_labels)
            self.members.append(Member(config, train_idx, val_idx, early=EarlyStopping(
                config.early_stopping, restore_best=config.restore_best) if config.early_stopping else None))
        self.val = [(self.train_x[torch.from_numpy(m.val_idx).to(device)], self.train_y[torch.from_numpy(m.val_idx)
                                                                                       .to(device)])
                    for m in self.members]
        self.batch_size = base.batch_size
        self.steps_per_epoch = num_batches(len(self.members[0].train_idx), self.batch_size)
        self.graph_blocker = graph_blocker(base, device)
        self.optimizer = graphable_optimizer(base, self.model.parameters()) if self.graph_blocker is None \
            else make_optimizer(base, self.model)
        self.scheduler = make_scheduler(base, self.optimizer, self.steps_per_epoch)
        keep_tensor_hyperparameters(self.optimizer)
        self.rates = MemberRates.of([c.lr for c in configs], device)
        self.l2 = torch.tensor([c.l2 for c in configs], dtype=torch.float32, device=device)
        self.any_l2 = any(c.l2 for c in configs)
        self.scaler = torch.amp.GradScaler("cuda") if base.precision == "fp16" and device.type == "cuda" else None
        self.kernels = self.model.kernel_groups()
        self.train_seconds = 0.0
        self.results: dict[int, TrainResult] = {}  # members finished in this fit, by position
        self.environment = {"training_loop": f"vectorised: {self.n} models in one stack"}
        self.graphs = StepGraphs(self._graph_step, self.optimizer) if self.graph_blocker is None else None
        if self.graphs is not None:
            self.environment["cuda_graph"] = self.graphs.describe()
        elif device.type == "cuda":
            self.environment["eager_reason"] = self.graph_blocker
        self._losses = torch.zeros(0)
        self._batches_done = 0
        self._bufs: dict[str, torch.Tensor] = {}
        self._rows: torch.Tensor | None = None
        self._val_rows: torch.Tensor | None = None
        self._valid: torch.Tensor | None = None
        self._background = -self.mean / self.std

    # --- one epoch ------------------------------------------------------------------------------

    def _orders(self, epoch: int) -> list[torch.Tensor]:
        """Each member's training rows for this epoch, in its own shuffle order."""
        out = []
        for m in self.members:
            order = shuffle_order(epoch_seed(m.config.seed, epoch), len(m.train_idx), self.device)
            out.append(torch.from_numpy(m.train_idx).to(self.device)[order])
        return out

    def _scaled_step(self) -> None:
        """The optimizer step, each model's update scaled by its learning rate (see module doc)."""
        step = self.scaler.step if self.scaler else (lambda optimizer: optimizer.step())
        if self.rates is None:
            step(self.optimizer)
        else:
            self.rates.step(self.optimizer, step)

    def running_loss(self) -> list[float]:
        if not self._batches_done:
            return [float("nan")] * self.n
        return self._losses[: self._batches_done].mean(0).tolist()

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
                          "seen": torch.zeros(n, device=d), "grad_sums": torch.zeros(n, len(self.kernels), device=d),
                          "counter": torch.zeros(1, dtype=torch.long, device=d)}
        else:
            for t in self._bufs.values():
                t.zero_()
        for i, o in enumerate(orders):
            self._rows[i, :len(o)] = o
        self._min_length = min(lengths)
        return self._bufs

    def _step(self, rows: torch.Tensor, mask: torch.Tensor | None, at, grad_norm: bool) -> None:
        """One step of the stack on the (N, m) training rows `rows` (mask: which are real),
        gradients zeroed; the members' losses go to losses[at] (an int, or the device counter)."""
        cfg, n, bufs = self.base, self.n, self._bufs
        m = rows.shape[1]
        binary = cfg.loss == "binary_crossentropy"
        rows = rows.reshape(-1)
        xb = self.train_x.index_select(0, rows)
        yb = self.train_y.index_select(0, rows).view(n, m)
        if cfg.augment:
            xb = augment_batch(xb, self._background)
        xb = xb.view(n, m, *xb.shape[1:])
        with autocast(cfg, self.device):
            logits = self.model(xb, mask)
            if binary:
                per_sample = F.binary_cross_entropy_with_logits(logits.squeeze(-1).float(), yb.float(),
                                                                reduction="none")
            else:
                per_sample = F.cross_entropy(logits.float().reshape(n * m, -1), yb.reshape(-1),
                                             reduction="none").view(n, m)
        loss = (per_sample * mask).sum(1) / mask.sum(1) if mask is not None else per_sample.mean(1)
        objective = loss.sum()
        if self.any_l2:
            squares = sum(self.model.per_member(w).square().sum(1) for _, w in self.kernels)
            objective = objective + (self.l2 * squares).sum()
        if self.scaler:
            self.scaler.scale(objective).backward()
            self._scaled_step()
            self.scaler.update()
        else:
            objective.backward()
            self._scaled_step()
        with torch.no_grad():
            if isinstance(at, int):
                bufs["losses"][at] = loss.detach()
            else:
                bufs["losses"].index_copy_(0, at, loss.detach().float().view(1, n))
            pred = (logits.squeeze(-1) > 0).long() if binary else logits.argmax(-1)
            if mask is not None:
                bufs["correct"] += ((pred == yb).float() * mask).sum(1)
                bufs["seen"] += mask.sum(1)
            else:   # every row real: the host counts them (one kernel less a step)
                bufs["correct"] += (pred == yb).sum(1)
            if grad_norm:
                grads = [w.grad for _, w in self.kernels]
                if all(g is not None for g in grads):
                    bufs["grad_sums"] += torch.stack([self.model.per_member(g).float().norm(dim=1) for g in grads], 1)

    def _graph_step(self, key: tuple[str, bool]) -> None:
        """The step a CUDA graph captures: its rows read through the device step counter
        ("full" batches) or the fixed ragged last batch ("last"); with or without the
        gradient-norm sample (a graph each)."""
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

    def train_epoch(self, epoch: int, hooks: GroupHooks) -> tuple[list[float], list[float], list[dict], list[str]]:
        cfg, n, bs = self.base, self.n, self.batch_size
        self.model.train()
        torch.manual_seed(epoch_seed(cfg.seed, epoch))
        steps = self.steps_per_epoch
        bufs = self._epoch_buffers(self._orders(epoch))
        self._losses = bufs["losses"]
        longest = self._rows.shape[1]
        full = min(steps, longest // bs)
        grad_samples = 0
        unmasked = 0      # rows of the steps that ran without a mask (all real), counted here
        cancelled: list[str] = [""] * n
        for b in range(steps):
            sample_norms = b % GRAD_NORM_EVERY == 0
            # A batch needs the mask only where a shorter member has run out of rows (a captured
            # step always applies it when any member is shorter: one graph for every batch).
            masked = self._valid is not None and (self.graphs is not None or
                                                  self._min_length < min((b + 1) * bs, longest))
            if not masked:
                unmasked += min(bs, longest - b * bs)
            if self.graphs is not None:
                self.graphs(("full" if b < full else "last", sample_norms))
            else:
                self.optimizer.zero_grad(set_to_none=True)
                self._step(self._rows[:, b * bs:(b + 1) * bs], self._valid[:, b * bs:(b + 1) * bs] if masked else None,
                           b, sample_norms)
            grad_samples += sample_norms
            if self.scheduler:
                self.scheduler.step()
                keep_tensor_hyperparameters(self.optimizer)   # nothing to do for an eager optimizer
            self._batches_done = b + 1
            hooks.on_progress(self, epoch, b, steps)
            if b % CANCEL_EVERY == 0 or b == steps - 1:
                for i, member in enumerate(self.members):
                    if not member.done and not cancelled[i]:
                        cancelled[i] = hooks.should_cancel(i) or ""
                if all(member.done or cancelled[i] for i, member in enumerate(self.members)):
                    break
        if self.graphs is not None:
            self.environment["cuda_graph"] = self.graphs.describe()
        acc = (bufs["correct"] / (bufs["seen"] + unmasked).clamp(min=1)).tolist()
        norms = (bufs["grad_sums"] / max(grad_samples, 1)).tolist()
        names = [name for name, _ in self.kernels]
        return self.running_loss(), acc, [dict(zip(names, row)) for row in norms], cancelled

    @torch.inference_mode()
    def _validate(self, active: list[int]) -> dict[int, dict]:
        """The validation pass of the members in `active`, as stacked forward passes over all
        members' validation rows at once (`evaluate`'s results for each). N separate passes were
        about half of a 5-fold epoch on a GPU (bench/gpu_speed.py)."""
        n, d = self.n, self.device
        if self._val_rows is None:
            lengths = [len(m.val_idx) for m in self.members]
            rows = torch.zeros(n, max(lengths), dtype=torch.long)
            for i, m in enumerate(self.members):
                rows[i, :len(m.val_idx)] = torch.from_numpy(m.val_idx)
            self._val_rows, self._val_lengths = rows.to(d), lengths
        was_training = self.model.training
        self.model.eval()
        chunk = max(100, VAL_ROWS_PER_PASS // n)
        parts = []
        with autocast(self.base, d):
            for start in range(0, self._val_rows.shape[1], chunk):
                rows = self._val_rows[:, start:start + chunk]
                xb = self.train_x.index_select(0, rows.reshape(-1)).view(n, rows.shape[1], *self.train_x.shape[1:])
                parts.append(self.model(xb).float())   # eval mode: batch norm uses each model's running statistics
        self.model.train(was_training)
        logits = torch.cat(parts, 1)
        out = {}
        for i in active:
            config = self.members[i].config
            li, yi = logits[i, :self._val_lengths[i]], self.val[i][1]
            loss = float(loss_function(config)(li, yi)) if len(yi) else 0.0
            out[i] = evaluation_result(predictions(li, config.loss == "binary_crossentropy")[0], yi, loss)
        return out

    # --- the epochs ---------------------------------------------------------------------------

    def member_model(self, i: int):
        from core.training import to_device

        return to_device(self.model.member(i), self.device)

    def fit(self, start_epoch: int = 0, hooks: GroupHooks | None = None) -> None:
        hooks = hooks or GroupHooks()
        hooks.on_train_begin(self)
        for i, member in enumerate(self.members):  # resumed after the epoch that stopped it early
            if not member.done and member.early is not None and member.early.stop_training:
                self._finish(i, member.early.stop_reason, hooks)
        for epoch in range(start_epoch, self.base.epochs):
            if all(m.done for m in self.members):
                break
            t0 = time.perf_counter()
            lr0 = float(self.optimizer.param_groups[0]["lr"])
            losses, accs, norms, cancelled = self.train_epoch(epoch, hooks)
            for i, reason in enumerate(cancelled):
                if reason and not self.members[i].done:   # stopped mid-epoch: keep its finished epochs
                    self._finish(i, reason, hooks)
            if all(m.done for m in self.members):
                break
            train_time = time.perf_counter() - t0
            logs = {}
            vals = self._validate([i for i, m in enumerate(self.members) if not m.done])
            for i, member in enumerate(self.members):
                if member.done:
                    continue
                val = vals[i]
                log = {"epoch": epoch + 1, "train_loss": losses[i], "train_accuracy": accs[i],
                       "val_loss": val["loss"], "val_accuracy": val["accuracy"],
                       "seconds": 0.0,  # set below: the epoch of the whole stack, validation included
                       "lr": lr0 * (float(self.rates.scale[i]) if self.rates is not None else 1.0),
                       "samples_per_second": len(member.train_idx) / train_time,
                       "val_confusion": confusion_matrix(val["labels"], val["preds"],
                                                         num_classes=2 if member.config.num_outputs == 1 else 10
                                                         ).tolist(),
                       "grad_norm": norms[i]}
                if member.config.l2:
                    kernels = [w for _, w in self.kernels]
                    with torch.no_grad():
                        log["l2_penalty"] = float(member.config.l2 * sum(
                            self.model.per_member(w)[i].float().square().sum() for w in kernels))
                member.history.append(log)
                logs[i] = log
                if member.early is not None:  # judged before the checkpoint of this epoch is written
                    member.early.on_epoch_end(MemberView(self.member_model(i)), epoch, log)
            seconds = time.perf_counter() - t0
            self.train_seconds += seconds
            for log in logs.values():
                log["seconds"] = seconds
            hooks.on_epoch_end(self, epoch, logs)
            for i in logs:
                member = self.members[i]
                if member.early is not None and member.early.stop_training:
                    self._finish(i, member.early.stop_reason, hooks)
        for i, member in enumerate(self.members):
            if not member.done:
                self._finish(i, "", hooks)

    def _finish(self, i: int, reason: str, hooks: GroupHooks) -> None:
        """Member i is done (all epochs, early stopping, or cancelled): fix its weights, evaluate
        it on the test set, hand its result over. The stack goes on computing it with the
        others, unused, so nothing has to be re-stacked."""
        member = self.members[i]
        model = self.member_model(i)
        if member.early is not None and member.early.stop_training and member.early.restore_best \
                and member.early.best_state is not None:
            model.load_state_dict(member.early.best_state)
            member.restored_epoch = member.early.best_epoch
        member.done, member.stop_reason = True, reason
        member.final_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        test = evaluate(model, self.test_x, self.test_y, member.config)
        result = TrainResult(config=member.config, model=model.cpu(), history=list(member.history), test=test,
                             device=str(self.device), device_name=device_name(self.device),
                             dataset=self.dataset.describe(), train_index=member.train_idx, val_index=member.val_idx,
                             stop_reason=reason, seconds=self.train_seconds,
                             extra={"restored_epoch": member.restored_epoch, "vectorized": self.n,
                                    "environment": self.environment})
        self.results[i] = result
        hooks.on_member_done(self, i, result)

    # --- checkpoints ----------------------------------------------------------------------------

    def checkpoint_state(self, epoch: int) -> dict:
        return {
            "epoch": epoch, "stacked": self.model.state_dict(),
            "optimizer": plain_optimizer_state(self.optimizer.state_dict()),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "scaler": self.scaler.state_dict() if self.scaler else None, "train_seconds": self.train_seconds,
            "members": [{"history": m.history, "done": m.done, "stop_reason": m.stop_reason,
                         "early": m.early.state_dict() if m.early else None, "final_state": m.final_state,
                         "restored_epoch": m.restored_epoch} for m in self.members],
        }

    def load_checkpoint(self, state: dict) -> int:
        self.model.load_state_dict(state["stacked"])
        load_optimizer_state(self.optimizer, state["optimizer"])
        if self.scheduler and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
            keep_tensor_hyperparameters(self.optimizer)
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        for member, saved in zip(self.members, state["members"]):
            member.history = list(saved["history"])
            member.done, member.stop_reason = saved["done"], saved["stop_reason"]
            member.final_state, member.restored_epoch = saved.get("final_state"), saved.get("restored_epoch")
            if member.early is not None and saved.get("early"):
                member.early.load_state_dict(saved["early"])
        return int(state["epoch"]) + 1


def train_group(configs: list[RunConfig], dataset: Dataset, hooks: GroupHooks | None = None,
                resume_state: dict | None = None) -> dict[int, TrainResult]:
    """Train `configs` as one vectorised model; returns the result of each member that finished
    in this call, by position (a resumed group's members that had finished before are not
    trained again)."""
    device = resolve_device(configs[0].device)
    trainer = GroupTrainer(configs, dataset, device)
    start = trainer.load_checkpoint(resume_state) if resume_state else 0
    trainer.fit(start, hooks)
    return trainer.results
