"""The maths behind the concept pages, as plain functions returning arrays and tables:
activation functions and their derivatives, softmax, one neuron, tiny networks on 2-D toy
data, convolution (2-D and 1-D, valid and same padding), pooling, dropout, batch norm, the
course's losses, and optimizers racing down 2-D loss surfaces.

The activation functions, losses and their derivatives are written out in numpy on purpose:
they are what the course teaches, and the tests check them against torch (autograd for the
derivatives, torch.nn.functional for the losses). Convolution, pooling, dropout, batch norm
and the optimizers are torch's own, so the pages show what the training code really does.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

# --- activation functions ---------------------------------------------------------------------

ACTIVATION_FACTS = {
    "linear": {"formula": "f(x) = a·x", "used for": "the output of a regression network",
               "trade-off": "stacking linear layers is still one linear map: no new power without a non-linearity"},
    "sigmoid": {"formula": "f(x) = 1 / (1 + e^(−x))", "used for": "the output of binary classification",
                "trade-off": "saturates: for large |x| the gradient is nearly 0, so deep networks train slowly"},
    "tanh": {"formula": "f(x) = (e^x − e^(−x)) / (e^x + e^(−x))", "used for": "hidden layers (zero-centred)",
             "trade-off": "zero-centred, but saturates like the sigmoid"},
    "relu": {"formula": "f(x) = max(0, x)", "used for": "hidden layers, the default",
             "trade-off": "fast and does not saturate for x > 0, but a unit stuck at x < 0 gets no gradient ('dying ReLU')"},
    "leaky_relu": {"formula": "f(x) = x if x > 0 else α·x", "used for": "hidden layers",
                   "trade-off": "keeps a small gradient α for x < 0, so units cannot die"},
}


def activation(name: str, x, a: float = 1.0, alpha: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """f(x) and f'(x) for an activation (slope `a` for linear, `alpha` for leaky ReLU)."""
    x = np.asarray(x, dtype=np.float64)
    if name == "linear":
        return a * x, np.full_like(x, a)
    if name == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-x))
        return s, s * (1 - s)
    if name == "tanh":
        t = np.tanh(x)
        return t, 1 - t ** 2
    if name == "relu":
        return np.maximum(x, 0), (x > 0).astype(np.float64)
    if name == "leaky_relu":
        return np.where(x > 0, x, alpha * x), np.where(x > 0, 1.0, alpha)
    raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(ACTIVATION_FACTS)}")


def activation_frame(name: str, lo: float, hi: float, n: int = 201, a: float = 1.0, alpha: float = 0.01) -> pd.DataFrame:
    x = np.linspace(lo, hi, n)
    y, dy = activation(name, x, a, alpha)
    return pd.concat([pd.DataFrame({"x": x, "value": y, "curve": "f(x)"}),
                      pd.DataFrame({"x": x, "value": dy, "curve": "f'(x)"})], ignore_index=True)


def softmax(logits, temperature: float = 1.0) -> np.ndarray:
    """Probabilities that sum to 1; a high temperature flattens them, a low one sharpens them."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = np.asarray(logits, dtype=np.float64) / temperature
    e = np.exp(z - z.max())
    return e / e.sum()


def sigmoid(x) -> np.ndarray:
    return activation("sigmoid", x)[0]


def neuron(x, w, b: float, name: str = "sigmoid") -> np.ndarray:
    """One neuron: a = f(w·x + b) for inputs x of shape (N, d)."""
    return activation(name, np.asarray(x, np.float64) @ np.asarray(w, np.float64) + b)[0]


# --- toy 2-D data and tiny networks --------------------------------------------------------------

def toy_data(kind: str = "moons", n: int = 300, noise: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_circles, make_moons

    if kind == "moons":
        return make_moons(n, noise=noise, random_state=seed)
    if kind == "circles":
        return make_circles(n, noise=noise * 0.5, factor=0.5, random_state=seed)
    raise ValueError(f"unknown toy data {kind!r}; allowed: moons, circles")


def line_accuracy(X: np.ndarray, y: np.ndarray, w, b: float) -> float:
    """How many points the line w·x + b = 0 puts on their class's side (either side may be
    class 1: a neuron's sign can be flipped by the next layer)."""
    side = X @ np.asarray(w, dtype=float) + b > 0
    return float(max((side == (y == 1)).mean(), (side == (y == 0)).mean()))


def step_text(w1: float, b: float) -> str:
    """Where one input's sigmoid neuron steps from 0 to 1: at w₁x₁ + b = 0, x₁ = -b / w₁. With
    w₁ = 0 the input does nothing and there is no step ("nan" before); "z" keeps a bias of 0 from
    printing as "-0.00"."""
    if w1 == 0:
        return f"with w₁ = 0 there is no step: a = sigmoid(b) = {float(sigmoid(b)):.2f} for every x₁"
    return f"the step is at x₁ = {-b / w1:z.2f}"


def boundary_line(w, b: float, x1_range: tuple[float, float], x2_range: tuple[float, float],
                  n: int = 50) -> pd.DataFrame:
    """Points (x1, x2) of the line w₁x₁ + w₂x₂ + b = 0 inside the given ranges; vertical when
    w₂ = 0 (it was not drawn at all), empty when both weights are 0 (no line)."""
    w1, w2 = float(w[0]), float(w[1])
    if w2 != 0:
        x1 = np.linspace(*x1_range, n)
        x2 = -(w1 * x1 + b) / w2
    elif w1 != 0:
        x2 = np.linspace(*x2_range, n)
        x1 = np.full(n, -b / w1)
    else:
        return pd.DataFrame({"x1": [], "x2": []})
    inside = (x1 >= x1_range[0]) & (x1 <= x1_range[1]) & (x2 >= x2_range[0]) & (x2 <= x2_range[1])
    return pd.DataFrame({"x1": x1[inside], "x2": x2[inside]})


def fitted_line_accuracy(X: np.ndarray, y: np.ndarray) -> float:
    """What a straight line fitted to the points gets: scikit-learn's logistic regression
    (one sigmoid neuron, trained), its accuracy on the same points."""
    from sklearn.linear_model import LogisticRegression

    return float(LogisticRegression().fit(X, y).score(X, y))


def train_toy(X: np.ndarray, y: np.ndarray, activation_name: str, hidden: int = 16, steps: int = 400,
              lr: float = 0.05, seed: int = 0, grid: int = 60) -> dict:
    """A 2-16-16-1 network trained full-batch with Adam (about a second on a CPU); returns its
    accuracy and its predicted probability on a grid over the data (the decision regions)."""
    torch.manual_seed(seed)
    act = {"linear": torch.nn.Identity, "relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[activation_name]
    net = torch.nn.Sequential(torch.nn.Linear(2, hidden), act(), torch.nn.Linear(hidden, hidden), act(),
                              torch.nn.Linear(hidden, 1))
    xt, yt = torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(net(xt)[:, 0], yt)
        loss.backward()
        opt.step()
    lo, hi = X.min(0) - 0.5, X.max(0) + 0.5
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], grid), np.linspace(lo[1], hi[1], grid))
    with torch.no_grad():
        acc = float(((net(xt)[:, 0] > 0).float() == yt).float().mean())
        p = torch.sigmoid(net(torch.tensor(np.c_[gx.ravel(), gy.ravel()], dtype=torch.float32))[:, 0]).numpy()
    return {"accuracy": acc, "loss": float(loss.detach()), "grid": pd.DataFrame({"x1": gx.ravel(), "x2": gy.ravel(), "p": p})}


# --- convolution and pooling ------------------------------------------------------------------

KERNELS = {
    "vertical edges": [[1, 0, -1], [2, 0, -2], [1, 0, -1]],
    "horizontal edges": [[1, 2, 1], [0, 0, 0], [-1, -2, -1]],
    "blur": [[1 / 9] * 3] * 3,
    "sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
    "identity": [[0, 0, 0], [0, 1, 0], [0, 0, 0]],
}


def conv_output_size(n: int, k: int, padding: str, stride: int = 1) -> int:
    """Output length of a convolution: valid gives (n - k) // s + 1, same gives ceil(n / s)."""
    if padding == "valid":
        return (n - k) // stride + 1
    if padding == "same":
        return -(-n // stride)
    raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")


def convolve2d(image, kernel, padding: str = "valid") -> np.ndarray:
    """One kernel over one image with torch (a cross-correlation, as in Keras and PyTorch)."""
    x = torch.as_tensor(np.asarray(image, np.float32))[None, None]
    k = torch.as_tensor(np.asarray(kernel, np.float32))[None, None]
    return F.conv2d(x, k, padding=padding)[0, 0].numpy()


def convolve1d(signal, kernel, padding: str = "valid") -> np.ndarray:
    x = torch.as_tensor(np.asarray(signal, np.float32))[None, None]
    k = torch.as_tensor(np.asarray(kernel, np.float32))[None, None]
    return F.conv1d(x, k, padding=padding)[0, 0].numpy()


COURSE_POOL_GRID = [[1, 2, 6, 3], [5, 4, 3, 7], [9, 3, 4, 2], [1, 3, 7, 3]]


def pool2d(grid, size: int = 2, kind: str = "max") -> np.ndarray:
    """Max or average pooling with a size x size window and stride = size (torch)."""
    x = torch.as_tensor(np.asarray(grid, np.float32))[None, None]
    f = F.max_pool2d if kind == "max" else F.avg_pool2d
    return f(x, size)[0, 0].numpy()


def dropout_demo(values, rate: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Torch's dropout at train time: (the kept mask, the output = kept values / (1 - rate))."""
    torch.manual_seed(seed)
    x = torch.as_tensor(np.asarray(values, np.float32))
    out = F.dropout(x, p=rate, training=True)
    return (out != 0).numpy() | (x == 0).numpy(), out.numpy()


def batchnorm_demo(batch) -> np.ndarray:
    """A batch (N, features) normalized by torch's BatchNorm1d in training mode (mean 0, std 1
    per feature over the batch, before the learned scale and shift, which start at 1 and 0)."""
    x = torch.as_tensor(np.asarray(batch, np.float32))
    bn = torch.nn.BatchNorm1d(x.shape[1])
    bn.train()
    with torch.no_grad():
        return bn(x).numpy()


def image_frame(img: np.ndarray, name: str = "value") -> pd.DataFrame:
    """An image as long rows (row, col, value) for a heatmap."""
    r, c = np.indices(img.shape)
    return pd.DataFrame({"row": r.ravel(), "col": c.ravel(), name: np.asarray(img, np.float64).ravel()})


# --- losses ---------------------------------------------------------------------------------------

def categorical_crossentropy(y_true: int, probs, eps: float = 1e-7) -> float:
    """−Σ y·log(p) with a one-hot y: the minus log of the probability given to the true class."""
    p = np.clip(np.asarray(probs, np.float64), eps, 1.0)
    return float(-np.log(p[int(y_true)]))


def binary_crossentropy(y: float, p: float, eps: float = 1e-7) -> float:
    """−(y·log p + (1 − y)·log(1 − p))."""
    p = float(np.clip(p, eps, 1 - eps))
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)))


def mean_squared_error(y_true: int, probs) -> float:
    """Mean of (one-hot − p)²: a regression loss, shown for contrast."""
    p = np.asarray(probs, np.float64)
    onehot = np.eye(len(p))[int(y_true)]
    return float(np.mean((onehot - p) ** 2))


# --- optimizers on 2-D loss surfaces ------------------------------------------------------------

SURFACES = {
    # An elongated valley: steep across, flat along; plain SGD zig-zags, momentum and Adam do not.
    "elongated valley": {"f": lambda x, y: 0.05 * x ** 2 + 2.0 * y ** 2, "start": (-4.5, 1.5),
                         "range": ((-5, 5), (-2.5, 2.5))},
    # A saddle at (0, 0) between two minima at x = ±1: a start near the ridge is slow to leave it.
    "saddle": {"f": lambda x, y: x ** 4 / 4 - x ** 2 / 2 + y ** 2 / 2 + 0.05 * x, "start": (0.02, 1.8),
               "range": ((-2, 2), (-2, 2))},
}


def surface_grid(name: str, n: int = 60) -> pd.DataFrame:
    s = SURFACES[name]
    (x0, x1), (y0, y1) = s["range"]
    gx, gy = np.meshgrid(np.linspace(x0, x1, n), np.linspace(y0, y1, n))
    return pd.DataFrame({"x": gx.ravel(), "y": gy.ravel(), "loss": s["f"](gx, gy).ravel()})


def race(surface: str, lrs: dict[str, float], steps: int = 60, limit: float = 1e3) -> pd.DataFrame:
    """SGD, SGD with momentum and Adam from the same start, with torch's optimizers; a path that
    leaves the surface (|x| or |y| > limit, or NaN) stops and is marked diverged."""
    s = SURFACES[surface]
    makers = {"SGD": lambda p, lr: torch.optim.SGD([p], lr=lr),
              "SGD + momentum": lambda p, lr: torch.optim.SGD([p], lr=lr, momentum=0.9),
              "Adam": lambda p, lr: torch.optim.Adam([p], lr=lr)}
    rows = []
    for name, lr in lrs.items():
        p = torch.tensor(s["start"], dtype=torch.float64, requires_grad=True)
        opt = makers[name](p, lr)
        diverged = False
        for step in range(steps + 1):
            x, y = (float(v) for v in p.detach())
            if not (np.isfinite(x) and np.isfinite(y)) or max(abs(x), abs(y)) > limit:
                diverged = True
                break
            loss = s["f"](p[0], p[1])
            rows.append({"optimizer": name, "step": step, "x": x, "y": y, "loss": float(loss.detach()), "diverged": False})
            if step == steps:
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
        if diverged:
            for r in rows:
                if r["optimizer"] == name:
                    r["diverged"] = True
    return pd.DataFrame(rows)
