"""The one training loop: fit() for one model or for N stacked models (core.fit_models), so that
batches, the CUDA-graph step and its eager fallback, validation, checkpoints and resume, cancel
and progress, L2, early stopping, schedules, augmentation and mixed precision are each written
once, for a single run and for every member of a vectorised group alike.

Speed comes from the data path, not from cleverness in the loop: the whole data set is a float
tensor on the training device, each batch is one gather of its rows, and nothing per sample runs
in Python (no PIL, no DataLoader workers, which re-import the main script under `spawn`, a known
trap inside Streamlit). Per-batch results go into buffers on the device: no sync per batch.

Determinism: each model is initialised from its `seed`, and each epoch reseeds the global RNG
(dropout, augmentation) and each model's shuffle from (seed, epoch). So the same config on the
CPU gives the same weights bit for bit, and a run resumed from the checkpoint of epoch k goes on
exactly as if it had never stopped.

Callbacks (core.callbacks.Callback) are given per member: each model being trained is a
`Member`, the `trainer` its callbacks see (its config, model, history, progress), named (a run's
id in the store), so progress, checkpoint, cancel and the store writer work for a member of a
group exactly as for a single run. Callbacks given to the whole fit see the `Fit` and get the
epoch's logs by member name (the store writes a group's one checkpoint that way). Early stopping
belongs to the loop: each member's is judged first, before any callback sees the epoch.
"""

from __future__ import annotations

import time

import torch

from core.augment import augment_batch
from core.callbacks import Callback, Cancel, EarlyStopping
from core.compiling import autocast, evaluate, make_optimizer, make_scheduler
from core.config import RunConfig
from core.cuda_graphs import (StepGraphs, graph_blocker, graphable_optimizer, keep_tensor_hyperparameters,
                              load_optimizer_state, plain_optimizer_state)
from core.devices import device_name
from core.metrics import confusion_matrix
from core.run_data import epoch_seed, shuffle_order
from core.stacked import MemberRates
from core.train_result import TrainResult

GRAD_NORM_EVERY = 10  # steps between two samples of the per-layer gradient norms


def num_batches(n: int, batch_size: int) -> int:
    """Batches in an epoch of `n` samples. A last batch of one sample breaks batch norm
    ("expected more than 1 value per channel"), so it is dropped."""
    batches = -(-n // batch_size)
    if n % batch_size == 1 and batches > 1:
        batches -= 1
    return batches


def stateful(callbacks: list[Callback]) -> dict[str, Callback]:
    """Callbacks with memory, keyed by class and occurrence (positions differ between a straight
    and a resumed run: the CLI adds a progress bar, a page does not)."""
    out, seen = {}, {}
    for cb in callbacks:
        if type(cb).state_dict is not Callback.state_dict:
            n = seen.get(type(cb).__name__, 0)
            seen[type(cb).__name__] = n + 1
            out[f"{type(cb).__name__}:{n}"] = cb
    return out


class Member:
    """One model being trained, as its callbacks see it (their `trainer`)."""

    def __init__(self, fit: "Fit", index: int, name: str, config: RunConfig, callbacks):
        self.fit, self.index, self.name, self.config = fit, index, name, config
        self.callbacks = list(callbacks)
        self.train_index, self.val_index = fit.models.splits[index]
        self.early = EarlyStopping(config.early_stopping, restore_best=config.restore_best) \
            if config.early_stopping else None
        self.history: list[dict] = []
        self.done = False
        self.stopping: str | None = None   # why it stopped mid-epoch (cancel); finished when the epoch ends
        self.stop_reason = ""
        self.final_state: dict | None = None
        self.restored_epoch: int | None = None
        self.result = None                  # its core.training.TrainResult, once done

    # What callbacks read: the same names as a single run's trainer always had.
    @property
    def model(self):
        return self.fit.models.member_model(self.index)

    @property
    def device(self):
        return self.fit.device

    @property
    def dataset_info(self) -> dict:
        return self.fit.dataset_info

    @property
    def environment(self) -> dict:
        group = {"group": self.fit.names} if self.fit.models.stacked else {}
        return {**self.fit.environment, **group}

    @property
    def samples_seen(self) -> int:
        return self.fit.samples_seen

    def running_loss(self) -> float:
        return self.fit.running_loss()[self.index]

    def checkpoint_state(self, epoch: int) -> dict:
        """What resuming this model needs: a single model's whole fit; for a member of a stack,
        a pointer to its group (whose one checkpoint a fit-level callback writes)."""
        if not self.fit.models.stacked:
            return self.fit.checkpoint_state(epoch)
        return {"epoch": epoch, "group": self.fit.names, "member": self.index, "history": self.history}

    def requested_stop(self) -> Callback | None:
        return next((cb for cb in self.callbacks if cb.stop_training), None)

    def state(self) -> dict:
        return {"history": self.history, "done": self.done, "stop_reason": self.stop_reason,
                "early": self.early.state_dict() if self.early else None, "final_state": self.final_state,
                "restored_epoch": self.restored_epoch,
                "callbacks": {k: cb.state_dict() for k, cb in stateful(self.callbacks).items()}}

    def load(self, saved: dict) -> None:
        self.history = list(saved.get("history", []))
        self.done, self.stop_reason = saved.get("done", False), saved.get("stop_reason", "")
        self.final_state, self.restored_epoch = saved.get("final_state"), saved.get("restored_epoch")
        if self.early is not None and saved.get("early"):
            self.early.load_state_dict(saved["early"])
        kept = saved.get("callbacks") or {}
        for key, cb in stateful(self.callbacks).items():
            if kept.get(key) is not None:
                cb.load_state_dict(kept[key])


class Fit:
    """fit() for the models of `models` (core.fit_models.OneModel or Stack), one `Member` each."""

    def __init__(self, models, configs: list[RunConfig], device: torch.device, names: list[str] | None = None,
                 member_callbacks: list[list[Callback]] | None = None, callbacks=(), dataset_info: dict | None = None):
        self.models, self.configs, self.device = models, configs, device
        self.base, self.n = configs[0], len(configs)
        self.names = list(names or [str(i) for i in range(self.n)])
        self.callbacks = list(callbacks)
        self.dataset_info = dataset_info or {}
        self.members = [Member(self, i, self.names[i], c, (member_callbacks or [()] * self.n)[i])
                        for i, c in enumerate(configs)]
        base = self.base
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
        self.train_seconds = 0.0          # training time of the finished epochs, resumed runs included
        self.samples_seen = 0
        self.graphs = StepGraphs(self._graph_step, self.optimizer) if self.graph_blocker is None else None
        self.environment = self._describe()
        self._background = -models.mean / models.std
        self._bufs: dict[str, torch.Tensor] = {}
        self._losses = torch.zeros(0)
        self._batches_done = 0
        self._rows: torch.Tensor | None = None
        self._valid: torch.Tensor | None = None
        self._min_length = 0
        self._resumed_from: int | None = None
        self._t_begin = time.perf_counter()

    def _describe(self) -> dict:
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

    def active(self) -> list[Member]:
        return [m for m in self.members if not m.done]

    def running_loss(self) -> list[float]:
        """Each member's mean training loss over this epoch's batches so far (syncs the device)."""
        b = self._batches_done
        if not b:
            return [float("nan")] * self.n
        return torch.stack([self._losses[:b, i].mean() for i in range(self.n)]).tolist()

    # --- checkpoints ------------------------------------------------------------------------------

    def checkpoint_state(self, epoch: int) -> dict:
        """Everything needed to resume after `epoch` (0-based) exactly where training was:
        weights, optimizer and schedule, gradient scaler, each member's history, early stopping
        and callbacks' memory, the training time so far. (The random state needs no saving:
        every epoch reseeds from (seed, epoch).)"""
        return {"epoch": epoch, self.models.weights_key: self.models.module.state_dict(),
                "optimizer": plain_optimizer_state(self.optimizer.state_dict()),
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "scaler": self.scaler.state_dict() if self.scaler else None, "train_seconds": self.train_seconds,
                "members": [m.state() for m in self.members]}

    def load_checkpoint(self, state: dict) -> int:
        """Restore a `checkpoint_state`; returns the epoch to continue from."""
        if "members" not in state:   # a single run's checkpoint from before the one loop
            kept = dict(state.get("callbacks") or {})
            early = kept.pop("EarlyStopping:0", None) if self.base.early_stopping else None
            state = {**state, "members": [{"history": state.get("history", []), "early": early, "callbacks": kept}]}
        self.models.module.load_state_dict(state[self.models.weights_key])
        load_optimizer_state(self.optimizer, state["optimizer"])
        if self.scheduler and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
            keep_tensor_hyperparameters(self.optimizer)
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        for member, saved in zip(self.members, state["members"]):
            member.load(saved)
        self.train_seconds = float(state.get("train_seconds") or sum(h["seconds"] for h in self.members[0].history))
        self._resumed_from = int(state["epoch"]) + 1
        return self._resumed_from

    # --- one step ---------------------------------------------------------------------------------

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

    def train_epoch(self, epoch: int) -> tuple[list[float], list[float], list[dict]]:
        """One pass over each model's shuffled training rows; returns each member's mean loss,
        accuracy and mean gradient norm of each layer's kernel. A member whose callback asks to
        stop mid-epoch is marked `stopping`; the epoch ends early once every member is."""
        bs, steps = self.batch_size, self.steps_per_epoch
        self.models.module.train()
        torch.manual_seed(epoch_seed(self.base.seed, epoch))
        orders = [rows[shuffle_order(epoch_seed(m.config.seed, epoch), len(rows), self.device)]
                  for m, rows in zip(self.members, self.models.rows)]
        bufs = self._epoch_buffers(orders)
        self._losses = bufs["losses"]
        longest = self._rows.shape[1]
        full = min(steps, longest // bs)
        grad_samples = 0
        unmasked = 0      # rows of the steps that ran without a mask (all real), counted here
        self.samples_seen = 0
        active = self.active()
        for b in range(steps):
            sample_norms = b % GRAD_NORM_EVERY == 0
            # A batch needs the mask only where a shorter member has run out of rows (a captured
            # step always applies it when any member is shorter: one graph for every batch).
            masked = self._valid is not None and (self.graphs is not None or
                                                  self._min_length < min((b + 1) * bs, longest))
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
            if not masked:
                unmasked += min(bs, longest - b * bs)
            self.samples_seen += min(bs, longest - b * bs)
            self._batches_done = b + 1
            for member in active:
                if member.stopping is not None:
                    continue
                for cb in member.callbacks:
                    cb.on_batch_end(member, epoch, b, steps)
                stopper = member.requested_stop()
                if stopper is not None and (b + 1 < steps or isinstance(stopper, Cancel)):
                    member.stopping = stopper.stop_reason
            if all(m.stopping is not None for m in active):
                break
        if self.graphs is not None:
            self.environment = self._describe()
        return self._epoch_results(bufs, grad_samples, unmasked)

    def _epoch_results(self, bufs: dict, grad_samples: int, unmasked: int) -> tuple[list[float], list[float], list[dict]]:
        seen = [s + unmasked for s in bufs["seen"].tolist()]
        accuracy = [c / max(s, 1) for c, s in zip(bufs["correct"].tolist(), seen)]
        norms = (bufs["grad_sums"] / max(grad_samples, 1)).tolist()
        return self.running_loss(), accuracy, [dict(zip(self.models.kernel_names, row)) for row in norms]

    # --- the epochs -------------------------------------------------------------------------------

    def fit(self, start_epoch: int = 0) -> list[Member]:
        """Train from `start_epoch` (after `load_checkpoint`, the epoch it returned) until every
        member is done: all its epochs, early stopping, or a callback's stop. Returns the members;
        each done one holds its `result`."""
        self._t_begin = time.perf_counter()
        for cb in self.callbacks:
            cb.on_train_begin(self)
        for member in self.active():
            for cb in member.callbacks:
                cb.on_train_begin(member)
        for member in self.active():   # resumed after the epoch that stopped it early
            if member.early is not None and member.early.stop_training:
                self._finish(member, member.early.stop_reason)
        for epoch in range(start_epoch, self.base.epochs):
            active = self.active()
            if not active:
                break
            for cb in self.callbacks:
                cb.on_epoch_begin(self, epoch)
            for member in active:
                for cb in member.callbacks:
                    cb.on_epoch_begin(member, epoch)
            t0 = time.perf_counter()
            lr0 = float(self.optimizer.param_groups[0]["lr"])
            losses, accuracies, norms = self.train_epoch(epoch)
            for member in active:
                if member.stopping is not None:   # stopped mid-epoch: keeps only its finished epochs
                    self._finish(member, member.stopping)
            active = self.active()
            if not active:
                break
            vals = self.models.validate([m.index for m in active])
            seconds = time.perf_counter() - t0
            self.train_seconds += seconds
            logs = {}
            for member in active:
                i, val = member.index, vals[member.index]
                log = {"epoch": epoch + 1, "train_loss": losses[i], "train_accuracy": accuracies[i],
                       "val_loss": val["loss"], "val_accuracy": val["accuracy"], "seconds": seconds,
                       "lr": lr0 * (float(self.rates.scale[i]) if self.rates is not None else 1.0),
                       "samples_per_second": min(self.samples_seen, len(member.train_index)) / seconds,
                       "val_confusion": confusion_matrix(val["labels"], val["preds"],
                                                         num_classes=2 if member.config.num_outputs == 1 else 10
                                                         ).tolist(),
                       "grad_norm": norms[i]}
                if member.config.l2:
                    log["l2_penalty"] = self.models.l2_value(i)
                member.history.append(log)
                logs[member.name] = log
                if member.early is not None:   # judged before any checkpoint of this epoch is written
                    member.early.on_epoch_end(member, epoch, log)
            for cb in self.callbacks:
                cb.on_epoch_end(self, epoch, logs)
            for member in active:
                for cb in member.callbacks:
                    cb.on_epoch_end(member, epoch, logs[member.name])
            for member in active:
                stopper = member.early if member.early is not None and member.early.stop_training \
                    else member.requested_stop()
                if stopper is not None:
                    self._finish(member, stopper.stop_reason)
        for member in self.active():
            self._finish(member, "")
        for cb in self.callbacks:
            cb.on_train_end(self)
        return self.members

    def _finish(self, member: Member, reason: str) -> None:
        """`member` is done (all epochs, early stopping, or stopped): fix its weights (the best
        epoch's, when early stopping restores them), evaluate it on the test set, and tell its
        callbacks (`on_train_end`, with `member.result` set). In a stack the others go on
        computing it, unused, so nothing has to be re-stacked."""
        i, config = member.index, member.config
        seconds_here = time.perf_counter() - self._t_begin
        model = self.models.member_model(i)
        early = member.early
        if early is not None and early.stop_training and early.restore_best and early.best_state is not None:
            model.load_state_dict(early.best_state)
            member.restored_epoch = early.best_epoch
        member.done, member.stop_reason, member.stopping = True, reason, None
        if self.models.stacked:
            member.final_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        test = evaluate(model, self.models.test_x, self.models.test_y, config)
        extra = {"restored_epoch": member.restored_epoch, "resumed_from": self._resumed_from,
                 "environment": member.environment}
        if self.models.stacked:
            extra["vectorized"] = self.n
        member.result = TrainResult(
            config=config, model=self.models.result_model(i, model), history=list(member.history), test=test,
            device=str(self.device), device_name=device_name(self.device), dataset=self.dataset_info,
            train_index=member.train_index, val_index=member.val_index, stop_reason=reason,
            seconds=self.train_seconds, seconds_this_process=seconds_here, extra=extra)
        for cb in member.callbacks:
            cb.on_train_end(member)
