"""Training and evaluation: a flat, visible loop over tensors that live on the device.

Speed comes from the data path, not from cleverness in the loop: the whole data set is a
float tensor on the training device, each epoch does one permutation gather, and a batch is
a slice of it. Nothing per sample runs in Python, no PIL, no DataLoader workers (which
re-import the main script under `spawn`, a known trap inside Streamlit).

Determinism: the model is initialised from `seed`, and each epoch reseeds the global RNG
(dropout, augmentation) and its shuffling generator from (seed, epoch). So the same config on
the CPU gives the same weights bit for bit, and a run resumed from the checkpoint of epoch k
continues exactly as if it had never stopped.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from core.augment import augment_batch
from core.callbacks import Callback, Cancel, EarlyStopping
from core.config import RunConfig
from core.cuda_graphs import (StepGraphs, graph_blocker, graphable_optimizer, keep_tensor_hyperparameters,
                               load_optimizer_state, plain_optimizer_state)
from core.data import Dataset, load_dataset
from core.devices import device_name, resolve_device
from core.metrics import confusion_matrix
from core.models import LabModel, build_model, count_parameters, kernel_parameters
from core.compiling import (autocast, check_precision, evaluate, evaluation_result,  # noqa: F401
                            loss_function, make_optimizer, make_scheduler, predictions)
from core.run_data import (TensorData, check_against_data, epoch_seed, prepare_data, shuffle_order,  # noqa: F401
                           split_indices, task_labels)


def to_device(model: LabModel, device: torch.device) -> LabModel:
    """The model on `device`; a model with convolutions in channels-last memory layout, which
    oneDNN (CPU) and cuDNN (GPU) convolve faster: the course CNN's training step took 12.3 ms
    instead of 15.7 ms on this project's 2-core CPU (bench/kfold_speed.py measures the epoch)."""
    model = model.to(device)
    if any(s["type"] == "conv" for s in model.layer_specs):
        model = model.to(memory_format=torch.channels_last)
    return model


# --- the loop ---------------------------------------------------------------------------

GRAD_NORM_EVERY = 10  # steps between two samples of the per-layer gradient norms


def l2_penalty(kernels: list[torch.Tensor], l2: float) -> torch.Tensor:
    """Keras' kernel_regularizer=l2(λ) summed over the layers: λ·Σ w² of every kernel."""
    return l2 * sum(torch.sum(w * w) for w in kernels)


class Trainer:
    """fit() for one model on one device: epochs of batches, a validation pass per epoch,
    callbacks between them. `history` holds one dict per finished epoch."""

    def __init__(self, config: RunConfig, model: LabModel, data: TensorData, device: torch.device,
                 callbacks: list[Callback] = ()):
        self.config, self.model, self.data, self.device = config, model, data, device
        self.callbacks = list(callbacks)
        if config.early_stopping:
            # First, so that it has judged an epoch before the checkpoint of that epoch is written.
            self.callbacks.insert(0, EarlyStopping(config.early_stopping, restore_best=config.restore_best))
        self.loss_fn = loss_function(config)
        # On a CUDA GPU the whole step is captured as a CUDA graph (core.cuda_graphs) unless
        # something in the config prevents it; the environment says which, and why.
        self.graph_blocker = graph_blocker(config, device)
        self.optimizer = graphable_optimizer(config, model.parameters()) if self.graph_blocker is None \
            else make_optimizer(config, model)
        self.steps_per_epoch = self._num_batches(len(data.train_x))
        self.scheduler = make_scheduler(config, self.optimizer, self.steps_per_epoch)
        keep_tensor_hyperparameters(self.optimizer)
        self.scaler = torch.amp.GradScaler("cuda") if config.precision == "fp16" and device.type == "cuda" else None
        named = kernel_parameters(model)
        self.kernel_names = [name for name, _ in named]
        self.kernels = [p for _, p in named]
        self.history: list[dict] = []
        self.stop_reason = ""
        self.stopped_mid_epoch = False
        self.restored_epoch: int | None = None
        self.dataset_info: dict = {}
        self.graphs = StepGraphs(self._graph_step, self.optimizer) if self.graph_blocker is None else None
        self.environment: dict = self.graphs.describe() if self.graphs is not None else \
            {"training_loop": "eager", "eager_reason": self.graph_blocker} if device.type == "cuda" else \
            {"training_loop": "eager"}
        self.samples_seen = 0
        self.train_seconds = 0.0          # training time of the finished epochs, resumed runs included
        self._bufs: dict[str, torch.Tensor] = {}
        self._losses = torch.zeros(0)
        self._batches_done = 0
        self._shuffled = None
        self._background = 0.0

    def _num_batches(self, n: int) -> int:
        return num_batches(n, self.config.batch_size)

    def running_loss(self) -> float:
        """Mean training loss of the batches done so far in this epoch (syncs the device)."""
        return float(self._losses[: self._batches_done].mean()) if self._batches_done else float("nan")

    def _stateful_callbacks(self) -> dict[str, Callback]:
        """Callbacks with memory, keyed by class and occurrence (positions differ between a
        straight and a resumed run: the CLI adds a progress bar, a page does not)."""
        out, seen = {}, {}
        for cb in self.callbacks:
            if type(cb).state_dict is not Callback.state_dict:
                n = seen.get(type(cb).__name__, 0)
                seen[type(cb).__name__] = n + 1
                out[f"{type(cb).__name__}:{n}"] = cb
        return out

    def checkpoint_state(self, epoch: int) -> dict:
        """Everything needed to resume after `epoch` (0-based) exactly where training was:
        weights, optimizer and schedule, gradient scaler, the callbacks' memory, the history
        and the training time so far. (The random state needs no saving: every epoch reseeds
        from (seed, epoch).)"""
        return {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": plain_optimizer_state(self.optimizer.state_dict()),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "callbacks": {k: cb.state_dict() for k, cb in self._stateful_callbacks().items()},
            "history": self.history,
            "train_seconds": self.train_seconds,
        }

    def load_checkpoint(self, state: dict) -> int:
        """Restore a `checkpoint_state`; returns the epoch to continue from."""
        self.model.load_state_dict(state["model"])
        load_optimizer_state(self.optimizer, state["optimizer"])
        if self.scheduler and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
            keep_tensor_hyperparameters(self.optimizer)
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        saved = state.get("callbacks") or {}
        for key, cb in self._stateful_callbacks().items():
            if saved.get(key) is not None:
                cb.load_state_dict(saved[key])
        self.history = list(state.get("history", []))
        self.train_seconds = float(state.get("train_seconds") or sum(h["seconds"] for h in self.history))
        return int(state["epoch"]) + 1

    def _stopping(self) -> bool:
        for cb in self.callbacks:
            if cb.stop_training:
                self.stop_reason = cb.stop_reason
                return True
        return False

    def _epoch_buffers(self, n_batches: int) -> dict[str, torch.Tensor]:
        """The step's results for one epoch, on the device and at fixed addresses (a captured
        step writes into them): loss per batch, correct predictions, summed gradient norms,
        and the step counter a captured step reads its batch by."""
        if not self._bufs or len(self._bufs["losses"]) != n_batches:
            d = self.device
            self._bufs = {"losses": torch.zeros(n_batches, device=d), "correct": torch.zeros((), dtype=torch.long, device=d),
                          "grad_sums": torch.zeros(len(self.kernels), device=d),
                          "counter": torch.zeros(1, dtype=torch.long, device=d)}
        else:
            for t in self._bufs.values():
                t.zero_()
        return self._bufs

    def _step(self, xb: torch.Tensor, yb: torch.Tensor, at, grad_norm: bool) -> None:
        """One training step on (xb, yb) with zeroed gradients; its loss goes to losses[at] (an
        int, or the device step counter when captured)."""
        cfg, bufs = self.config, self._bufs
        if cfg.augment:
            xb = augment_batch(xb, self._background)
        with autocast(cfg, self.device):
            logits = self.model(xb)
            loss = self.loss_fn(logits, yb)
        objective = loss + l2_penalty(self.kernels, cfg.l2) if cfg.l2 else loss
        if self.scaler:
            self.scaler.scale(objective).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            objective.backward()
            self.optimizer.step()
        with torch.no_grad():
            if isinstance(at, int):
                bufs["losses"][at] = loss.detach()
            else:
                bufs["losses"].index_copy_(0, at, loss.detach().float().view(1))
            pred = (logits.squeeze(1) > 0).long() if cfg.loss == "binary_crossentropy" else logits.argmax(1)
            bufs["correct"] += (pred == yb).sum()
            if grad_norm and self.kernels:
                grads = [p.grad for p in self.kernels]
                if all(g is not None for g in grads):
                    bufs["grad_sums"] += torch.stack(torch._foreach_norm(grads)).float()

    def _graph_step(self, key: tuple[str, bool]) -> None:
        """The step a CUDA graph captures: its batch read through the device step counter from
        the shuffled buffer ("full" batches), or the fixed ragged last batch ("last"); with or
        without the gradient-norm sample (taken every GRAD_NORM_EVERY steps: a graph each)."""
        bufs, (xs, ys), bs = self._bufs, self._shuffled, self.config.batch_size
        counter = bufs["counter"]
        kind, norms = key
        if kind == "full":
            full = len(xs) // bs
            xb = xs[:full * bs].view(full, bs, *xs.shape[1:]).index_select(0, counter)[0]
            yb = ys[:full * bs].view(full, bs).index_select(0, counter)[0]
        else:
            start = (len(xs) // bs) * bs
            xb, yb = xs[start:], ys[start:]
        self._step(xb, yb, counter, grad_norm=norms)
        counter += 1

    def train_epoch(self, epoch: int) -> tuple[float, float, dict]:
        """One pass over the shuffled training set; returns (mean loss, accuracy, mean gradient
        norm of each layer's kernel)."""
        cfg, data, model = self.config, self.data, self.model
        model.train()
        seed = epoch_seed(cfg.seed, epoch)
        torch.manual_seed(seed)
        order = shuffle_order(seed, len(data.train_x), self.device)
        bs, n_batches = cfg.batch_size, self.steps_per_epoch
        self._background = -data.mean / data.std
        # Per-batch results go into preallocated buffers on the device: no sync per batch.
        bufs = self._epoch_buffers(n_batches)
        self._losses = bufs["losses"]
        grad_samples = 0
        self.samples_seen = 0
        # One gather per epoch into buffers kept across epochs (a fresh 150 MB tensor each
        # epoch costs more in page faults than the copy itself), then each batch is a slice.
        if self._shuffled is None:
            self._shuffled = (torch.empty_like(data.train_x), torch.empty_like(data.train_y))
        xs, ys = self._shuffled
        torch.index_select(data.train_x, 0, order, out=xs)
        torch.index_select(data.train_y, 0, order, out=ys)
        full = len(xs) // bs
        for b in range(n_batches):
            size = min(bs, len(xs) - b * bs)
            sample_norms = b % GRAD_NORM_EVERY == 0
            if self.graphs is not None:
                self.graphs(("full" if b < full else "last", sample_norms))
            else:
                self.optimizer.zero_grad(set_to_none=True)
                self._step(xs[b * bs:(b + 1) * bs], ys[b * bs:(b + 1) * bs], b, sample_norms)
            grad_samples += sample_norms
            if self.scheduler:
                self.scheduler.step()
                keep_tensor_hyperparameters(self.optimizer)   # nothing to do for an eager optimizer
            self.samples_seen += size
            self._batches_done = b + 1
            for cb in self.callbacks:
                cb.on_batch_end(self, epoch, b, n_batches)
            if self._stopping():
                self.stopped_mid_epoch = b + 1 < n_batches or isinstance(self._stopper(), Cancel)
                break
        if self.graphs is not None:
            self.environment.update(self.graphs.describe())
        seen = self.samples_seen
        correct = int(bufs["correct"])
        norms = (bufs["grad_sums"] / max(grad_samples, 1)).tolist()
        return self.running_loss(), correct / max(seen, 1), dict(zip(self.kernel_names, norms))

    def _stopper(self) -> Callback | None:
        return next((cb for cb in self.callbacks if cb.stop_training), None)

    def fit(self, start_epoch: int = 0) -> list[dict]:
        for cb in self.callbacks:
            cb.on_train_begin(self)
        # A run resumed after the epoch that stopped it early trains no further epoch.
        first = self.config.epochs if self._stopping() else start_epoch
        for epoch in range(first, self.config.epochs):
            for cb in self.callbacks:
                cb.on_epoch_begin(self, epoch)
            t0 = time.perf_counter()
            lr = float(self.optimizer.param_groups[0]["lr"])
            train_loss, train_acc, grad_norm = self.train_epoch(epoch)
            if self.stopped_mid_epoch:
                break  # a cancelled (or pruned) epoch is not finished: keep only the finished ones
            val = evaluate(self.model, self.data.val_x, self.data.val_y, self.config)
            seconds = time.perf_counter() - t0
            log = {
                "epoch": epoch + 1, "train_loss": train_loss, "train_accuracy": train_acc,
                "val_loss": val["loss"], "val_accuracy": val["accuracy"], "seconds": seconds,
                "lr": lr, "samples_per_second": self.samples_seen / seconds,
                "val_confusion": confusion_matrix(val["labels"], val["preds"],
                                                  num_classes=2 if self.config.num_outputs == 1 else 10).tolist(),
                "grad_norm": grad_norm,
            }
            if self.config.l2:
                with torch.no_grad():
                    log["l2_penalty"] = float(l2_penalty(self.kernels, self.config.l2))
            self.history.append(log)
            self.train_seconds += seconds
            for cb in self.callbacks:
                cb.on_epoch_end(self, epoch, log)
            if self._stopping():
                break
        for cb in self.callbacks:
            cb.on_train_end(self)
        return self.history


def num_batches(n: int, batch_size: int) -> int:
    """Batches in an epoch of `n` samples. A last batch of one sample breaks batch norm
    ("expected more than 1 value per channel"), so it is dropped."""
    batches = math.ceil(n / batch_size)
    if n % batch_size == 1 and batches > 1:
        batches -= 1
    return batches


# --- one call: config in, trained model and results out ----------------------------------

@dataclass
class TrainResult:
    config: RunConfig
    model: LabModel
    history: list[dict]
    test: dict                      # loss, accuracy, preds, probs, labels
    device: str
    device_name: str
    dataset: dict                   # Dataset.describe()
    train_index: np.ndarray
    val_index: np.ndarray
    stop_reason: str = ""
    seconds: float = 0.0            # training time of all epochs, resumed runs included
    seconds_this_process: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    def summary(self) -> dict:
        """The JSON-friendly result the CLI prints and the run store keeps."""
        return {
            "device": self.device, "device_name": self.device_name, "epochs_run": self.epochs_run,
            "test_accuracy": self.test["accuracy"], "test_loss": self.test["loss"],
            "best_val_accuracy": max((h["val_accuracy"] for h in self.history), default=None),
            "stop_reason": self.stop_reason, "seconds": self.seconds,
            "seconds_this_process": self.seconds_this_process, "resumed_from_epoch": self.extra.get("resumed_from"),
            "parameters": count_parameters(self.model), "dataset": self.dataset,
            "history": [{k: v for k, v in h.items() if k != "val_confusion"} for h in self.history],
        }


def train(config: RunConfig, dataset: Dataset | None = None, data_dir=None,
          callbacks: list[Callback] = (), resume_state: dict | None = None) -> TrainResult:
    """Define, compile, fit and evaluate one config: the course's Keras workflow in one call.

    `dataset` may be passed in (already loaded) to avoid reading the files again; otherwise
    it is loaded by name from `data_dir`. `resume_state` is a checkpoint to continue from.
    """
    device = resolve_device(config.device)
    if dataset is None:
        dataset = load_dataset(config.dataset, data_dir)
    data = prepare_data(config, dataset, device)
    torch.manual_seed(config.seed)
    model = to_device(build_model(config.architecture(), config.num_outputs), device)
    trainer = Trainer(config, model, data, device, callbacks)
    trainer.dataset_info = dataset.describe()
    start_epoch = trainer.load_checkpoint(resume_state) if resume_state else 0
    t0 = time.perf_counter()
    history = trainer.fit(start_epoch)
    seconds = time.perf_counter() - t0
    test = evaluate(model, data.test_x, data.test_y, config)
    return TrainResult(
        config=config, model=model, history=history, test=test, device=str(device),
        device_name=device_name(device), dataset=dataset.describe(), train_index=data.train_index,
        val_index=data.val_index, stop_reason=trainer.stop_reason, seconds=trainer.train_seconds,
        seconds_this_process=seconds,
        extra={"restored_epoch": trainer.restored_epoch, "resumed_from": start_epoch if resume_state else None,
               "environment": trainer.environment},
    )
