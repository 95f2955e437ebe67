"""N models of one architecture computed as one: what makes a k-fold run, repeated seeds or a
learning-rate grid cost little more than one model.

Each model keeps its own weights; they are stacked along a new first dimension so that one
kernel computes all of them: dense layers as batched matrix products (`torch.baddbmm` over
an (N, in, out) weight), convolutions as one grouped convolution (the N models' channels
side by side, `groups=N`), pooling, dropout and activations elementwise over the stack.
Why by hand rather than `torch.func.vmap(functional_call)`: measured on this project's
2-core CPU, vmap over 5 course MLPs cost 5.1x one model's step (no gain), batched matrix
products 3.1x; and batch norm's running statistics, which vmap cannot update in place, are
simply per-channel buffers of the grouped layout here.

Layouts inside the forward pass: images as (B, N*C, H, W) (model i owns channels
i*C..(i+1)*C), vectors as (N, B, F). Every model sees its own batch: the input is
(N, B, 1, 28, 28). A `mask` (N, B) marks real samples when the models' batches are of
different sizes (folds of unequal size pad their last batch): padded samples do not count in
the loss nor in batch norm's statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.layer_kinds import KINDS
from core.models import INPUT_SHAPE, LabModel, build_model

_ACT = {"linear": None, "relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}


def _activation(name: str, alpha: float):
    if name == "leaky_relu":
        return lambda x: F.leaky_relu(x, alpha)
    return _ACT[name]


class StackedModel(nn.Module):
    """`models` (same architecture, own weights) as one module; `member(i)` gives model i back."""

    def __init__(self, models: list[LabModel]):
        super().__init__()
        first = models[0]
        self.n = len(models)
        self.layer_specs = [dict(s) for s in first.layer_specs]
        self.num_outputs = first.num_outputs
        self.ops: list[dict] = []
        self.mask: torch.Tensor | None = None
        self._keys: list[tuple[str, str, str]] = []  # (state-dict key, stacked name, layout)
        specs = self.layer_specs + [{"type": "dense", "activation": "linear"}]  # the output layer
        in_shape = INPUT_SHAPE
        from core.models import output_shapes

        shapes = output_shapes(self.layer_specs, self.num_outputs)
        for (name, block), spec, out_shape in zip(first.blocks.items(), specs, shapes):
            modules = list(block) if isinstance(block, nn.Sequential) else [block]
            op = {"type": spec["type"], "name": name, "image": len(in_shape) == 3,
                  "act": _activation(spec.get("activation", "linear"), spec.get("alpha", 0.01))}
            for idx, module in enumerate(modules):
                prefix = f"blocks.{name}." + (f"{idx}." if isinstance(block, nn.Sequential) else "")
                if isinstance(module, nn.ZeroPad2d):
                    op["pad"] = tuple(module.padding)
                elif isinstance(module, nn.Linear):
                    self._add(op, "w", prefix + "weight", "dense_w", models)
                    self._add(op, "b", prefix + "bias", "dense_b", models)
                elif isinstance(module, nn.Conv2d):
                    self._add(op, "w", prefix + "weight", "cat", models)
                    self._add(op, "b", prefix + "bias", "cat", models)
                    op.update(stride=module.stride, padding=module.padding)
                elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                    for key in ("weight", "bias", "running_mean", "running_var"):
                        self._add(op, key, prefix + key, "cat", models)
                    self._add(op, "num_batches_tracked", prefix + "num_batches_tracked", "stack", models)
                    op.update(momentum=module.momentum, eps=module.eps, channels=module.num_features)
                elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
                    op.update(pool="max" if isinstance(module, nn.MaxPool2d) else "avg",
                              size=module.kernel_size, stride=module.stride)
                elif isinstance(module, nn.Dropout):
                    op["rate"] = module.p
            self.ops.append(op)
            in_shape = out_shape

    def _add(self, op: dict, role: str, key: str, layout: str, models: list[LabModel]) -> None:
        tensors = [m.state_dict()[key] for m in models]
        if layout == "dense_w":      # Linear (out, in) -> (N, in, out): x @ W without a transpose copy
            value = torch.stack([t.t() for t in tensors]).contiguous()
        elif layout == "dense_b":    # (out,) -> (N, 1, out)
            value = torch.stack(tensors)[:, None, :].contiguous()
        elif layout == "cat":        # per-channel tensors side by side: (N*C, ...)
            value = torch.cat(tensors).contiguous()
        else:                        # scalars: (N,)
            value = torch.stack(tensors)
        stacked = f"{op['name']}__{role}"
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            self.register_buffer(stacked, value.clone())
        else:
            self.register_parameter(stacked, nn.Parameter(value.clone()))
        op[role] = stacked
        self._keys.append((key, stacked, layout))

    def tensor(self, op: dict, role: str) -> torch.Tensor:
        """The stacked tensor that plays `role` (w, b, running_mean, ...) in layer `op`."""
        return getattr(self, op[role])

    # --- forward ---------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(N, B, 1, 28, 28) -> logits (N, B, outputs)."""
        n, b = x.shape[0], x.shape[1]
        if self.ops[0]["type"] == "flatten":
            t, image = x.reshape(n, b, -1), False
        else:
            t, image = x.transpose(0, 1).reshape(b, n * x.shape[2], *x.shape[3:]), True
        self.mask = mask  # batch norm's (core.layer_kinds.BatchNorm.stacked reads it)
        for op in self.ops:
            t, image = KINDS[op["type"]].stacked(self, op, t, image, n, b)
            if op["act"] is not None:
                t = op["act"](t)
        self.mask = None
        return t

    def batchnorm(self, op: dict, t: torch.Tensor, image: bool, mask: torch.Tensor | None = None) -> torch.Tensor:
        n = self.n
        if not image:  # (N, B, F) -> (B, N*F): each model's features are its own channels
            b = t.shape[1]
            flat = t.transpose(0, 1).reshape(b, -1)
            out = self.batchnorm(op, flat, True, mask)
            return out.reshape(b, n, -1).transpose(0, 1)
        w, bias = self.tensor(op, "weight"), self.tensor(op, "bias")
        rm, rv = self.tensor(op, "running_mean"), self.tensor(op, "running_var")
        if self.training:
            self.tensor(op, "num_batches_tracked").add_(1)
        if mask is None or not self.training:
            return F.batch_norm(t, rm, rv, w, bias, self.training, op["momentum"], op["eps"])
        # Folds of unequal size: statistics over each model's real samples only.
        c = op["channels"]
        weight = mask.t().repeat_interleave(c, dim=1).to(t.dtype)          # (B, N*C)
        shape = (t.shape[0], t.shape[1]) + (1,) * (t.dim() - 2)
        weight = weight.reshape(shape).expand_as(t)
        dims = [0] + list(range(2, t.dim()))
        count = weight.sum(dims)
        mean = (t * weight).sum(dims) / count
        centred = t - mean.reshape(1, -1, *([1] * (t.dim() - 2)))
        var = (centred.square() * weight).sum(dims) / count
        with torch.no_grad():
            m = op["momentum"]
            rm.mul_(1 - m).add_(mean.detach(), alpha=m)
            rv.mul_(1 - m).add_(var.detach() * count / (count - 1).clamp(min=1), alpha=m)
        scale = (w / torch.sqrt(var + op["eps"])).reshape(1, -1, *([1] * (t.dim() - 2)))
        return centred * scale + bias.reshape(1, -1, *([1] * (t.dim() - 2)))

    # --- the members back ---------------------------------------------------------------------

    def kernel_groups(self) -> list[tuple[str, torch.Tensor]]:
        """Each weight layer's stacked kernel (what L2 and the gradient norms apply to)."""
        return [(op["name"], self.tensor(op, "w")) for op in self.ops if op["type"] in ("dense", "conv")]

    def per_member(self, t: torch.Tensor) -> torch.Tensor:
        """A stacked kernel (or its gradient) as (N, -1): one row per model."""
        return t.reshape(self.n, -1)

    def member_state_dict(self, i: int) -> dict:
        """Model i's weights in LabModel's own state-dict format."""
        return self.member_state_dict_of({name: t.detach() for name, t in self.named_parameters()} |
                                         {name: t for name, t in self.named_buffers()}, i)

    def member_state_dict_of(self, stacked: dict, i: int) -> dict:
        """Model i's part of stacked tensors (weights, or their gradients), by LabModel key."""
        out = {}
        for key, name, layout in self._keys:
            value = stacked.get(name)
            if value is None:
                continue
            if layout == "dense_w":
                out[key] = value[i].t().contiguous().clone()
            elif layout == "dense_b":
                out[key] = value[i, 0].clone()
            elif layout == "cat":
                size = value.shape[0] // self.n
                out[key] = value[i * size:(i + 1) * size].clone()
            else:
                out[key] = value[i].clone()
        return out

    def member(self, i: int) -> LabModel:
        """Model i as an ordinary LabModel (on the CPU)."""
        model = build_model(self.layer_specs, self.num_outputs)
        model.load_state_dict({k: v.cpu() for k, v in self.member_state_dict(i).items()})
        return model

    def load_member(self, i: int, state: dict) -> None:
        """Put model i's weights (LabModel format) into the stack."""
        with torch.no_grad():
            for key, stacked, layout in self._keys:
                target = getattr(self, stacked)
                value = state[key].to(target.device, target.dtype)
                if layout == "dense_w":
                    target[i].copy_(value.t())
                elif layout == "dense_b":
                    target[i, 0].copy_(value)
                elif layout == "cat":
                    size = target.shape[0] // self.n
                    target[i * size:(i + 1) * size].copy_(value)
                else:
                    target[i].copy_(value)


class MemberRates:
    """Per-model learning rates for one optimizer over stacked weights: the optimizer steps at
    the first model's rate, then each model's update is scaled by its rate over that one
    (`lerp` back towards the weights before the step). Adam's and SGD's moments do not depend
    on the rate, so this is the update each model would get alone. Hand-written: no library
    scales one optimizer's step per slice of a parameter."""

    def __init__(self, scale: torch.Tensor):
        self.scale = scale            # lr_i / lr_0, one per model
        self.n = len(scale)
        self._layouts: list[str] | None = None

    @classmethod
    def of(cls, lrs: list[float], device) -> "MemberRates | None":
        """None when every model has the first one's rate (nothing to scale)."""
        scale = torch.tensor([lr / lrs[0] for lr in lrs], dtype=torch.float32, device=device)
        return None if torch.all(scale == 1) else cls(scale)

    def step(self, optimizer, step) -> None:
        """`step(optimizer)` (a plain or a gradient scaler's step), each model's update scaled."""
        params = [p for g in optimizer.param_groups for p in g["params"]]
        before = [p.detach().clone() for p in params]
        step(optimizer)
        if self._layouts is None:  # stacked (N, ...) or concatenated (N*k, ...) along dim 0
            self._layouts = ["stack" if p.shape[0] == self.n and p.dim() != 1 else "cat" for p in params]
        with torch.no_grad():
            for p, old, layout in zip(params, before, self._layouts):
                p.lerp_(old, self._weight_like(p, layout))

    def _weight_like(self, p: torch.Tensor, layout: str) -> torch.Tensor:
        """1 - lr_i/lr_0, broadcast over parameter p's stacked layout (weight of `lerp` to old)."""
        w = 1 - self.scale
        if layout == "stack":
            return w.reshape(self.n, *([1] * (p.dim() - 1)))
        return w.repeat_interleave(p.shape[0] // self.n).reshape(-1, *([1] * (p.dim() - 1)))
