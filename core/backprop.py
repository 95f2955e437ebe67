"""Backpropagation on a network small enough to follow by hand: 2 inputs, 2 hidden units,
2 outputs, one training example, squared error. Its starting numbers are those of Matt
Mazur's well-known worked example (inputs 0.05 and 0.10, targets 0.01 and 0.99), so a
student can check every value against it.

Forward pass, loss, backward pass, one update: `forward` gives every intermediate value;
`autograd_gradients` gives each weight's gradient as torch.autograd computes it (what any
real training uses); `chain_rule` writes the same gradient as the product of local
derivatives along its paths (what the lecture's "the gradient of the loss is computed and
applied backwards" means), so the two can be shown side by side and checked equal.

Weights are named as in the worked example: w1..w4 from the inputs to the hidden units
(w1: i1->h1, w2: i2->h1, w3: i1->h2, w4: i2->h2), w5..w8 from the hidden units to the
outputs (w5: h1->o1, w6: h2->o1, w7: h1->o2, w8: h2->o2); b1, b2 the hidden biases, b3, b4
the output biases.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

WEIGHTS = ("w1", "w2", "w3", "w4", "w5", "w6", "w7", "w8")
BIASES = ("b1", "b2", "b3", "b4")
PARAMS = WEIGHTS + BIASES
# (source node, target node) of every weight; biases feed their own node
EDGES = {"w1": ("i1", "h1"), "w2": ("i2", "h1"), "w3": ("i1", "h2"), "w4": ("i2", "h2"),
         "w5": ("h1", "o1"), "w6": ("h2", "o1"), "w7": ("h1", "o2"), "w8": ("h2", "o2")}
BIAS_OF = {"b1": "h1", "b2": "h2", "b3": "o1", "b4": "o2"}
ACTIVATIONS = ("sigmoid", "tanh", "relu")

START = {"w1": 0.15, "w2": 0.20, "w3": 0.25, "w4": 0.30, "w5": 0.40, "w6": 0.45, "w7": 0.50, "w8": 0.55,
         "b1": 0.35, "b2": 0.35, "b3": 0.60, "b4": 0.60}
START_INPUTS = (0.05, 0.10)
START_TARGETS = (0.01, 0.99)


def _act(name: str, z: float) -> tuple[float, float]:
    """f(z) and f'(z)."""
    if name == "sigmoid":
        a = 1.0 / (1.0 + math.exp(-z))
        return a, a * (1 - a)
    if name == "tanh":
        a = math.tanh(z)
        return a, 1 - a * a
    if name == "relu":
        return max(z, 0.0), 1.0 if z > 0 else 0.0
    raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}")


def forward(p: dict, x, activation: str = "sigmoid") -> dict:
    """Every value of the forward pass: net inputs z and outputs a of each unit (inputs as a)."""
    v = {"i1": x[0], "i2": x[1]}
    for unit, (w_a, w_b, b) in {"h1": ("w1", "w2", "b1"), "h2": ("w3", "w4", "b2")}.items():
        v["z_" + unit] = p[w_a] * x[0] + p[w_b] * x[1] + p[b]
        v[unit], v["d_" + unit] = _act(activation, v["z_" + unit])
    for unit, (w_a, w_b, b) in {"o1": ("w5", "w6", "b3"), "o2": ("w7", "w8", "b4")}.items():
        v["z_" + unit] = p[w_a] * v["h1"] + p[w_b] * v["h2"] + p[b]
        v[unit], v["d_" + unit] = _act(activation, v["z_" + unit])
    return v


def loss(p: dict, x, t, activation: str = "sigmoid") -> float:
    """Squared error ½Σ(target − output)², the worked example's loss."""
    v = forward(p, x, activation)
    return 0.5 * ((t[0] - v["o1"]) ** 2 + (t[1] - v["o2"]) ** 2)


def autograd_gradients(p: dict, x, t, activation: str = "sigmoid") -> dict:
    """dLoss/dparameter for every parameter, computed by torch.autograd (float64)."""
    tp = {k: torch.tensor(float(v), dtype=torch.float64, requires_grad=True) for k, v in p.items()}
    f = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}[activation]
    xi = torch.tensor(x, dtype=torch.float64)
    h1 = f(tp["w1"] * xi[0] + tp["w2"] * xi[1] + tp["b1"])
    h2 = f(tp["w3"] * xi[0] + tp["w4"] * xi[1] + tp["b2"])
    o1 = f(tp["w5"] * h1 + tp["w6"] * h2 + tp["b3"])
    o2 = f(tp["w7"] * h1 + tp["w8"] * h2 + tp["b4"])
    total = 0.5 * ((t[0] - o1) ** 2 + (t[1] - o2) ** 2)
    total.backward()
    return {k: float(v.grad) for k, v in tp.items()}


def chain_rule(p: dict, x, t, name: str, activation: str = "sigmoid") -> list[dict]:
    """The gradient of parameter `name` as products of local derivatives, one row per path
    from the loss back to it: the factors, their names and the product. The gradient is the
    sum of the rows' products (two paths for a hidden-layer weight: through o1 and o2)."""
    v = forward(p, x, activation)
    target = {"o1": t[0], "o2": t[1]}
    if name in EDGES:
        src, dst = EDGES[name]
        input_value, input_label = v[src], f"∂z_{dst}/∂{name} = {src}"
    elif name in BIAS_OF:
        dst = BIAS_OF[name]
        input_value, input_label = 1.0, f"∂z_{dst}/∂{name} = 1"
    else:
        raise ValueError(f"unknown parameter {name!r}; allowed: {', '.join(PARAMS)}")
    rows = []
    if dst.startswith("o"):
        factors = [(f"∂L/∂{dst} = {dst} − target", v[dst] - target[dst]),
                   (f"∂{dst}/∂z_{dst} = f'(z_{dst})", v["d_" + dst]),
                   (input_label, input_value)]
        rows.append({"path": f"L ← {dst} ← {name}", "factors": factors})
    else:
        out_weight = {("h1", "o1"): "w5", ("h2", "o1"): "w6", ("h1", "o2"): "w7", ("h2", "o2"): "w8"}
        for out in ("o1", "o2"):
            w = out_weight[(dst, out)]
            factors = [(f"∂L/∂{out} = {out} − target", v[out] - target[out]),
                       (f"∂{out}/∂z_{out} = f'(z_{out})", v["d_" + out]),
                       (f"∂z_{out}/∂{dst} = {w}", p[w]),
                       (f"∂{dst}/∂z_{dst} = f'(z_{dst})", v["d_" + dst]),
                       (input_label, input_value)]
            rows.append({"path": f"L ← {out} ← {dst} ← {name}", "factors": factors})
    for row in rows:
        row["product"] = float(np.prod([f for _, f in row["factors"]]))
    return rows


def chain_rule_gradients(p: dict, x, t, activation: str = "sigmoid") -> dict:
    """Every parameter's gradient by the chain rule (the sums of `chain_rule`'s paths)."""
    return {name: sum(r["product"] for r in chain_rule(p, x, t, name, activation)) for name in PARAMS}


def sgd_step(p: dict, grads: dict, lr: float, update_biases: bool = False) -> dict:
    """One update: every weight moves against its gradient, w ← w − lr·∂L/∂w. Matt Mazur's worked
    example updates the weights only (its updated weights are this function's to the 9 digits it
    prints); `update_biases` moves the biases too, as a framework's optimizer does."""
    return {k: p[k] - lr * grads[k] if (update_biases or k.startswith("w")) else p[k] for k in p}


MAZUR_PRINTED_LOSS = 0.291027924  # the loss after one update as his post prints it (see the page's note)


def train_steps(p: dict, x, t, lr: float, steps: int, activation: str = "sigmoid",
                update_biases: bool = False) -> tuple[dict, list[float]]:
    """`steps` updates; returns the parameters and the loss before each step and after the last."""
    losses = [loss(p, x, t, activation)]
    for _ in range(steps):
        p = sgd_step(p, autograd_gradients(p, x, t, activation), lr, update_biases)
        losses.append(loss(p, x, t, activation))
    return p, losses


# --- the drawing --------------------------------------------------------------------------------

POSITIONS = {"i1": (0, 2), "i2": (0, 0), "h1": (1, 2), "h2": (1, 0), "o1": (2, 2), "o2": (2, 0)}


def graph_frames(p: dict, x, t, activation: str = "sigmoid", grads: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Nodes (name, x, y, value shown) and edges (weight, its gradient, coordinates, label
    position) of the network, for a chart with the numbers on the drawing."""
    v = forward(p, x, activation)
    nodes = []
    for name, (cx, cy) in POSITIONS.items():
        text = f"{name} = {v[name]:.4f}"
        if name.startswith("o"):
            text += f"  (target {t[int(name[1]) - 1]:.2f})"
        if name[0] in "ho":
            bias = next(b for b, unit in BIAS_OF.items() if unit == name)
            text += f"\nz = {v['z_' + name]:.4f}, {bias} = {p[bias]:.3f}"
        nodes.append({"node": name, "x": cx, "y": cy, "text": text})
    edges = []
    for w, (src, dst) in EDGES.items():
        (x0, y0), (x1, y1) = POSITIONS[src], POSITIONS[dst]
        # Crossing edges are labelled near their source, except h1 -> o2: h1's two-line text sits
        # under h1 where that label would be (the browser tour checks no two labels overlap).
        frac = 0.5 if y0 == y1 else 0.75 if (src, dst) == ("h1", "o2") else 0.3
        label = f"{w} = {p[w]:.3f}" + (f"\n∂L/∂{w} = {grads[w]:+.5f}" if grads else "")
        edges.append({"weight": w, "x": x0, "y": y0, "x2": x1, "y2": y1, "value": p[w],
                      "gradient": grads[w] if grads else 0.0,
                      "lx": x0 + (x1 - x0) * frac, "ly": y0 + (y1 - y0) * frac + (0.12 if y0 == y1 else 0),
                      "label": label})
    return pd.DataFrame(nodes), pd.DataFrame(edges)
