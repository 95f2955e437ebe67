"""The code a student would write for a run: PyTorch and Keras programs that train the same run.

The train page shows both so the course's Keras steps (define, summary, compile, fit,
evaluate, save) map one to one onto the PyTorch the lab runs. Both are generated from the
RunConfig the trainer reads, and every option that changes training appears in both, in the
form each framework's users write it: the learning-rate schedule (stepped per batch), L2 on
the kernels, dropout, batch norm, early stopping with the best weights restored,
augmentation, the binary task, mixed precision, and the lab's seeded stratified validation
split (or k-fold fold, or training subset). What a framework cannot express is named in a
comment where it would go, never dropped silently. tests/test_codegen.py runs both programs
and compares them with the lab's own runs.

Both programs read the four MNIST IDX files from a folder named at the top (DATA) and need no
network. They normalise with the training pixels' mean and standard deviation, as the lab.
"""

from __future__ import annotations

import re

from core.augment import MAX_ROTATION_DEG, MAX_SHIFT_PX, SCALE_RANGE, STROKE_CHANGE_P
from core.codegen_data import DATA_STEP, READ_IDX, data_folder, split_code, split_import
from core.config import RunConfig
from core.layer_kinds import TORCH_ACT, kind_of
from core.models import output_shapes

# The course's steps, each opened by a comment "# N. step" at the start of a line: the
# notebook (core/handover/notebook.py) cuts the program there into one cell per step.
STEPS = {"0": "data", "1": "define", "2": "summary", "3": "compile", "4": "fit", "5": "evaluate",
         "6": "predict and save"}

# The lab's augmentation (core.augment): the same numbers in both programs.
AUG_ROTATION, AUG_SCALE, AUG_SHIFT = round(MAX_ROTATION_DEG), round(SCALE_RANGE[1] - 1, 6), MAX_SHIFT_PX


# --- PyTorch -----------------------------------------------------------------------------------------

def torch_layers(config: RunConfig) -> list[str]:
    layers = config.architecture()
    shapes = [(1, 28, 28), *output_shapes(layers, config.num_outputs)]
    lines = []
    for layer, in_shape in zip(layers, shapes):
        lines += kind_of(layer).torch_code(layer, in_shape)
        act = TORCH_ACT[layer.get("activation", "linear")] if kind_of(layer).has_activation else None
        if act:
            lines.append(act + ",")
    last = shapes[len(layers)]
    if len(last) != 1:
        lines.append("nn.Flatten(),")
    n_in = last[0] if len(last) == 1 else last[0] * last[1] * last[2]
    inside = "sigmoid" if config.num_outputs == 1 else "softmax"
    lines.append(f"nn.Linear({n_in}, {config.num_outputs}),  # logits; the {inside} is inside the loss")
    return lines


def _drop_unused_imports(code: str) -> str:
    """Without the plain `import M` lines whose module the program never names (`math` serves
    only some options): a student reading the program meets no import it does not use."""
    lines = code.split("\n")
    return "\n".join(line for line in lines if not re.fullmatch(r"import (\w+)", line)
                     or re.search(rf"\b{line.split()[1]}\.", code))


def _indent(text: str, spaces: int) -> str:
    return "\n".join((" " * spaces + line) if line else line for line in text.splitlines())


def pytorch_code(config: RunConfig, data_dir=None) -> str:
    """A complete PyTorch program that trains `config` as the lab does (see the module docstring)."""
    binary = config.num_outputs == 1
    layers = "\n".join("    " + line for line in torch_layers(config))
    # fused=True: the lab's optimizer (core.compiling.make_optimizer), one kernel for every
    # parameter; PyTorch's default per-parameter loop rounds differently in the last bits, and
    # a few hundred steps make that a different run.
    if config.optimizer == "adam":
        opt = f"torch.optim.Adam(model.parameters(), lr={config.lr:g}, fused=True)  # eps=1e-8: PyTorch's default, the lab's"
    else:
        opt = f"torch.optim.SGD(model.parameters(), lr={config.lr:g}, momentum={config.momentum:g}, fused=True)"
    device = ('"cuda" if torch.cuda.is_available() else "cpu"' if config.device == "auto" else repr(config.device))
    imports = ["import copy" if config.early_stopping else None, "import gzip", "import math", "import os",
               "import struct", "", "import numpy as np", "import torch",
               "import torch.nn.functional as F" if config.augment else None,
               split_import(config), "from torch import nn"]
    head = "\n".join(line for line in imports if line is not None)

    schedule = ""
    if config.lr_schedule == "onecycle":
        schedule = (f"# one-cycle, stepped every batch: warm up to {config.lr:g}, then anneal (it also cycles Adam's "
                    "beta1 0.95-0.85)\n"
                    f"scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr={config.lr:g}, "
                    "total_steps=EPOCHS * steps_per_epoch)\n")
    elif config.lr_schedule == "cosine":
        schedule = ("# cosine decay to 0 over the whole run, stepped every batch\n"
                    "scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, "
                    "T_max=EPOCHS * steps_per_epoch)\n")
    l2 = ""
    if config.l2:
        l2 = (f"L2 = {config.l2:g}  # Keras' kernel_regularizer=l2(L2): L2 * sum of the squared kernels added to the "
              "loss\nkernels = [m.weight for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]\n")
    augment = ""
    if config.augment:
        augment = f'''
BLANK = float(-mean / std)  # a blank pixel after normalisation: what moves in from the border


def augment(xb):
    """A different random rotation (up to {AUG_ROTATION} degrees), zoom ({SCALE_RANGE[0]:g}-{SCALE_RANGE[1]:g}) and shift (up to
    {AUG_SHIFT} pixels) for each image, in one affine_grid + grid_sample call (torchvision's v2.RandomAffine
    draws one transform per call: per image it would be a Python loop), then thicker strokes for
    {STROKE_CHANGE_P:.0%} of the images and thinner ones for {STROKE_CHANGE_P / 2:.0%} (a 3x3 max or min filter): the lab's
    augmentation, drawing the same random numbers."""
    n = len(xb)
    angle = (torch.rand(n, device=xb.device) * 2 - 1) * math.radians({MAX_ROTATION_DEG:g})
    scale = torch.empty(n, device=xb.device).uniform_({SCALE_RANGE[0]:g}, {SCALE_RANGE[1]:g})
    shift = (torch.rand(n, 2, device=xb.device) * 2 - 1) * ({MAX_SHIFT_PX:g} / 14)  # 14 pixels = 1 grid unit
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(xb.shape), align_corners=False)
    out = F.grid_sample(xb - BLANK, grid, align_corners=False, padding_mode="zeros")
    r = torch.rand(n, 1, 1, 1, device=xb.device)
    thick, thin = F.max_pool2d(out, 3, 1, 1), -F.max_pool2d(-out, 3, 1, 1)
    return torch.where(r < {STROKE_CHANGE_P:g}, thick, torch.where(r > {1 - STROKE_CHANGE_P / 2:g}, thin, out)) + BLANK
'''
    amp = ""
    scaler = ""
    if config.precision == "bf16":
        amp = "with torch.autocast(device.split(':')[0], dtype=torch.bfloat16):  # bf16 mixed precision"
    elif config.precision == "fp16":
        amp = "with torch.autocast('cuda', dtype=torch.float16):  # fp16 mixed precision (CUDA)"
        scaler = "scaler = torch.amp.GradScaler('cuda')  # scales the fp16 loss so small gradients survive\n"
    target = "yb.float()" if binary else "yb"
    logits = "model(xb).squeeze(1)" if binary else "model(xb)"
    forward = f"loss = loss_fn({logits}, {target})"
    if config.l2:
        forward += "\nloss = loss + L2 * sum((w * w).sum() for w in kernels)"
    if amp:
        forward = amp + "\n" + _indent(forward, 4)
    step = ("optimizer.zero_grad()\nscaler.scale(loss).backward()\nscaler.step(optimizer)\nscaler.update()" if scaler
            else "optimizer.zero_grad()\nloss.backward()\noptimizer.step()")
    if schedule:
        step += "\nscheduler.step()"
    batch = "xb, yb = X[batch], Y[batch]" + ("\nxb = augment(xb)" if config.augment else "")
    early = init_early = ""
    if config.early_stopping:
        init_early = '\nbest_loss, best_state, wait = float("inf"), None, 0  # for early stopping'
        restore = ("            model.load_state_dict(best_state)  # restore the best epoch's weights\n"
                   if config.restore_best else "")
        early = f'''
    # early stopping: stop when validation loss has not improved for {config.early_stopping} epochs
    if val_loss < best_loss:
        best_loss, best_state, wait = val_loss, copy.deepcopy(model.state_dict()), 0
    else:
        wait += 1
        if wait >= {config.early_stopping}:
{restore}            break'''
    pred = "(out.squeeze(1) > 0).long()" if binary else "out.argmax(1)"
    eval_loss = "loss_fn(out.squeeze(1), y.float())" if binary else "loss_fn(out, y)"
    eval_amp = ("with torch.no_grad(), torch.autocast(device.split(':')[0], dtype=torch.bfloat16):"
                if config.precision == "bf16" else
                "with torch.no_grad(), torch.autocast('cuda', dtype=torch.float16):"
                if config.precision == "fp16" else "with torch.no_grad():")
    channels_last = ""
    if any(layer["type"] == "conv" for layer in config.architecture()):
        channels_last = ("\nmodel = model.to(memory_format=torch.channels_last)  # convolutions run faster in this "
                         "memory layout (as the lab's)")
    return _drop_unused_imports(f'''{head}

DATA = {data_folder(data_dir)}  # the folder with the four MNIST IDX files (.gz or not); nothing is downloaded
SEED = {config.seed}
EPOCHS, BATCH = {config.epochs}, {config.batch_size}
torch.manual_seed(SEED)
device = {device}

{DATA_STEP}{READ_IDX}
{split_code(config)}


def tensor(images):
    return ((torch.tensor(images, dtype=torch.float32) / 255 - mean) / std).unsqueeze(1).to(device)


X, Y = tensor(x_train[train_idx]), torch.tensor(y_train[train_idx], device=device)
X_val, Y_val = tensor(x_train[val_idx]), torch.tensor(y_train[val_idx], device=device)
X_test, Y_test = tensor(x_test), torch.tensor(y_test, device=device)
{augment}
# 1. define
model = nn.Sequential(
{layers}
).to(device){channels_last}
# 2. summary
print(model)
print("parameters", sum(p.numel() for p in model.parameters()))

# 3. compile (fused: one kernel for every parameter, as the lab; the same numbers to the last bit)
optimizer = {opt}
loss_fn = {"nn.BCEWithLogitsLoss()" if binary else "nn.CrossEntropyLoss()"}
steps_per_epoch = len(X) // BATCH + (len(X) % BATCH > 1)  # a last batch of one sample is dropped, as the lab
{schedule}{l2}{scaler}

def evaluate(x, y):
    model.eval()
    {eval_amp}
        out = torch.cat([model(x[i:i + 2000]) for i in range(0, len(x), 2000)]).float()
        loss = {eval_loss}.item()
    model.train()
    return loss, ({pred} == y).float().mean().item()


# 4. fit{init_early}
history = {{"loss": [], "val_loss": [], "val_accuracy": []}}  # per epoch, as Keras' History
for epoch in range(EPOCHS):
    model.train()
    # a new order every epoch, seeded from (SEED, epoch) as the lab does, with dropout's random state: the run
    # repeats exactly (the lab draws a CUDA run's order on the GPU, so there the order differs)
    epoch_seed = SEED * 1_000_003 + epoch + 1
    torch.manual_seed(epoch_seed)
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(epoch_seed)).to(device)
    total_loss = torch.zeros((), device=device)  # summed on the device: no sync per batch
    for i in range(steps_per_epoch):
        batch = perm[i * BATCH:(i + 1) * BATCH]
{_indent(batch, 8)}
{_indent(forward, 8)}
{_indent(step, 8)}
        total_loss += loss.detach().float()
    val_loss, val_accuracy = evaluate(X_val, Y_val)
    history["loss"].append(total_loss.item() / steps_per_epoch)
    history["val_loss"].append(val_loss)
    history["val_accuracy"].append(val_accuracy)
    print(f"epoch {{epoch + 1}}/{{EPOCHS}}: val_loss {{val_loss:.4f}}, val_accuracy {{val_accuracy:.4f}}"){early}

# 5. evaluate
test_loss, test_accuracy = evaluate(X_test, Y_test)
print(f"test accuracy {{test_accuracy:.4f}}")

# 6. predict and save
model.eval()
with torch.no_grad():
    predicted = {"(model(X_test[:10]).squeeze(1) > 0).long()" if binary else "model(X_test[:10]).argmax(1)"}
print("predicted", predicted.tolist(), "true", Y_test[:10].tolist())
torch.save(model.state_dict(), "model.pt")  # load it with torch.load("model.pt", weights_only=True)
''')


# --- Keras --------------------------------------------------------------------------------------------

def keras_layers(config: RunConfig) -> list[str]:
    reg = ", kernel_regularizer=regularizers.l2(L2)" if config.l2 else ""
    lines = ["keras.Input(shape=(28, 28, 1)),"]
    if config.augment:
        lines += ["# augmentation (active in fit only), the lab's ranges; blank pixels move in from the border",
                  f"layers.RandomRotation({AUG_ROTATION} / 360, fill_mode='constant', fill_value=BLANK),",
                  f"layers.RandomZoom(({-AUG_SCALE:g}, {AUG_SCALE:g}), fill_mode='constant', fill_value=BLANK),",
                  f"layers.RandomTranslation({AUG_SHIFT} / 28, {AUG_SHIFT} / 28, fill_mode='constant', "
                  "fill_value=BLANK),",
                  "# the lab also makes 30% of the strokes thicker and 15% thinner (a 3x3 max or min filter): "
                  "Keras has no layer for it"]
    shapes = [(1, 28, 28), *output_shapes(config.architecture(), config.num_outputs)]
    for layer, in_shape in zip(config.architecture(), shapes):
        lines += kind_of(layer).keras_code(layer, in_shape, reg)
        if kind_of(layer).has_activation and layer.get("activation", "linear") == "leaky_relu":
            lines.append("layers.LeakyReLU(negative_slope=0.01),  # PyTorch's slope (Keras' default is 0.2)")
    if len(shapes[len(config.architecture())]) != 1:
        lines.append("layers.Flatten(),")
    mixed = ", dtype='float32'" if config.precision != "fp32" else ""
    out = (f"layers.Dense(1, activation='sigmoid'{reg}{mixed})," if config.num_outputs == 1
           else f"layers.Dense(10, activation='softmax'{reg}{mixed}),")
    lines.append(out)
    return lines


ONE_CYCLE_KERAS = '''

class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """PyTorch's OneCycleLR with its defaults, per batch: a cosine warm-up from max_lr / 25 to
    max_lr over the first 30% of the steps, then a cosine anneal to max_lr / 25e4. (PyTorch's
    also cycles Adam's beta_1 between 0.95 and 0.85; Keras' Adam keeps beta_1 fixed at 0.9,
    so that part of the lab's schedule is not reproduced here.)"""

    def __init__(self, max_lr, total_steps):
        self.max_lr, self.total_steps = max_lr, total_steps

    def __call__(self, step):
        step = ops.cast(step, "float32")
        up = max(0.3 * self.total_steps - 1, 1.0)
        down = max(self.total_steps - 1 - up, 1.0)
        start, end = self.max_lr / 25, self.max_lr / 25 / 1e4

        def cos(a, b, pct):
            return b + (a - b) / 2 * (ops.cos(math.pi * ops.minimum(pct, 1.0)) + 1)

        return ops.where(step <= up, cos(start, self.max_lr, step / up), cos(self.max_lr, end, (step - up) / down))

    def get_config(self):
        return {"max_lr": self.max_lr, "total_steps": self.total_steps}
'''


def keras_code(config: RunConfig, data_dir=None) -> str:
    """The same run in the course's Keras style (Keras 3, any backend)."""
    binary = config.num_outputs == 1
    layers = "\n".join("    " + line for line in keras_layers(config))
    lr = config.lr
    if config.lr_schedule == "onecycle":
        lr_expr = "OneCycle(LR, total_steps=EPOCHS * steps_per_epoch)"
    elif config.lr_schedule == "cosine":
        lr_expr = "keras.optimizers.schedules.CosineDecay(LR, decay_steps=EPOCHS * steps_per_epoch)"
    else:
        lr_expr = "LR"
    if config.optimizer == "adam":
        opt = f"keras.optimizers.Adam(learning_rate={lr_expr}, epsilon=1e-8)  # PyTorch's eps (Keras' is 1e-7)"
    else:
        opt = f"keras.optimizers.SGD(learning_rate={lr_expr}, momentum={config.momentum:g})"
    loss = "binary_crossentropy" if binary else "categorical_crossentropy"
    labels = ("y_tr, y_val, y_te = y_train[train_idx], y_train[val_idx], y_test" if binary else
              "y_tr = keras.utils.to_categorical(y_train[train_idx], 10)\n"
              "y_val = keras.utils.to_categorical(y_train[val_idx], 10)\n"
              "y_te = keras.utils.to_categorical(y_test, 10)")
    callbacks = []
    if config.early_stopping:
        callbacks.append(f"keras.callbacks.EarlyStopping(monitor='val_loss', patience={config.early_stopping}, "
                         f"restore_best_weights={config.restore_best})")
    policy = ""
    if config.precision != "fp32":
        name = "mixed_bfloat16" if config.precision == "bf16" else "mixed_float16"
        policy = (f'keras.mixed_precision.set_global_policy("{name}")  # {config.precision} mixed precision'
                  + (" (Keras scales the loss itself)" if config.precision == "fp16" else "") + "\n")
    imports = ["import gzip", "import math", "import os",
               "import struct", "", "import keras", "import numpy as np",
               "from keras import layers" + (", ops" if config.lr_schedule == "onecycle" else "")
               + (", regularizers" if config.l2 else ""),
               split_import(config)]
    head = "\n".join(line for line in imports if line is not None)
    fit_callbacks = f", callbacks=[{', '.join(callbacks)}]" if callbacks else ""
    early_note = ("\n# Keras' restore_best_weights also restores when training runs to the end; the lab restores "
                  "only when it\n# stopped early" if config.early_stopping and config.restore_best else "")
    return _drop_unused_imports(f'''{head}

DATA = {data_folder(data_dir)}  # the folder with the four MNIST IDX files (.gz or not); nothing is downloaded
SEED = {config.seed}
EPOCHS, BATCH, LR = {config.epochs}, {config.batch_size}, {lr:g}
{"L2 = " + f"{config.l2:g}" + "  # kernel_regularizer=l2(L2): L2 * sum of the squared kernels added to the loss" + chr(10) if config.l2 else ""}keras.utils.set_random_seed(SEED)
# device: Keras trains on the accelerator its backend finds (the lab's run: {config.device})
{policy}
{DATA_STEP}{READ_IDX}
{split_code(config)}


def images(x):
    return ((x / 255 - mean) / std).reshape(-1, 28, 28, 1).astype("float32")


x_tr, x_val, x_te = images(x_train[train_idx]), images(x_train[val_idx]), images(x_test)
{labels}
{"steps_per_epoch = math.ceil(len(x_tr) / BATCH)" + chr(10) if config.lr_schedule != "constant" else ""}{"BLANK = float(-mean / std)  # a blank pixel after normalisation" + chr(10) if config.augment else ""}{ONE_CYCLE_KERAS if config.lr_schedule == "onecycle" else ""}
# 1. define
# (Keras starts kernels with glorot_uniform, PyTorch with kaiming_uniform(a=sqrt(5)); for PyTorch's, pass
#  kernel_initializer=keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform") to each layer)
model = keras.Sequential([
{layers}
])
# 2. summary
model.summary()

# 3. compile
optimizer = {opt}
model.compile(optimizer=optimizer, loss="{loss}", metrics=["accuracy"])

# 4. fit, on the lab's validation split{early_note}
history = model.fit(x_tr, y_tr, batch_size=BATCH, epochs=EPOCHS, validation_data=(x_val, y_val){fit_callbacks})

# 5. evaluate
test_loss, test_accuracy = model.evaluate(x_te, y_te, verbose=0)
print(f"test accuracy {{test_accuracy:.4f}}")

# 6. predict and save
probabilities = model.predict(x_te[:10], verbose=0)
predicted = {"(probabilities[:, 0] > 0.5).astype(int)" if binary else "probabilities.argmax(1)"}
print("predicted", predicted.tolist(), "true", y_test[:10].tolist())
model.save("model.keras")
''')
