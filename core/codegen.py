"""The code a student would write for a config: PyTorch and Keras, side by side.

The train page shows both so the course's Keras steps (define, summary, compile, fit with
validation_split, evaluate, save) map one to one onto the PyTorch the lab runs. Generated
from the same RunConfig the trainer reads, so the code always matches the run.
"""

from __future__ import annotations

from core.config import RunConfig
from core.models import output_shapes

TORCH_ACT = {"relu": "nn.ReLU()", "sigmoid": "nn.Sigmoid()", "tanh": "nn.Tanh()",
             "leaky_relu": "nn.LeakyReLU(0.01)", "linear": None}


def _torch_layers(config: RunConfig) -> list[str]:
    layers = config.architecture()
    shapes = [(1, 28, 28), *output_shapes(layers, config.num_outputs)]
    lines = []
    for layer, in_shape in zip(layers, shapes):
        kind = layer["type"]
        act = None
        if kind == "dense":
            lines.append(f"nn.Linear({in_shape[0]}, {layer['units']}),")
            act = TORCH_ACT[layer.get("activation", "linear")]
        elif kind == "conv":
            pad = "'same'" if layer.get("padding", "valid") == "same" else "0"
            stride = layer.get("stride", 1)
            lines.append(f"nn.Conv2d({in_shape[0]}, {layer['filters']}, kernel_size={layer['kernel']}, "
                         f"padding={pad}{'' if stride == 1 else f', stride={stride}'}),")
            act = TORCH_ACT[layer.get("activation", "linear")]
        elif kind == "pool":
            cls = "nn.MaxPool2d" if layer.get("kind", "max") == "max" else "nn.AvgPool2d"
            lines.append(f"{cls}({layer.get('size', 2)}),")
        elif kind == "dropout":
            lines.append(f"nn.Dropout({layer.get('rate', 0.5)}),")
        elif kind == "batchnorm":
            lines.append(f"nn.BatchNorm{'2d' if len(in_shape) == 3 else '1d'}({in_shape[0]}),")
        elif kind == "flatten":
            lines.append("nn.Flatten(),")
        if act:
            lines.append(act + ",")
    last = shapes[len(layers)]
    if len(last) != 1:
        lines.append("nn.Flatten(),")
    n_in = last[0] if len(last) == 1 else last[0] * last[1] * last[2]
    inside = "sigmoid" if config.num_outputs == 1 else "softmax"
    lines.append(f"nn.Linear({n_in}, {config.num_outputs}),  # logits; the {inside} is inside the loss")
    return lines


def pytorch_code(config: RunConfig) -> str:
    """A complete, runnable PyTorch script for `config` (data from torchvision)."""
    binary = config.num_outputs == 1
    layers = "\n".join("    " + line for line in _torch_layers(config))
    opt = (f"torch.optim.Adam(model.parameters(), lr={config.lr:g})" if config.optimizer == "adam"
           else f"torch.optim.SGD(model.parameters(), lr={config.lr:g}, momentum={config.momentum:g})")
    loss = "nn.BCEWithLogitsLoss()" if binary else "nn.CrossEntropyLoss()"
    target = f"(y == {config.positive_class}).float().unsqueeze(1)" if binary else "y"
    pred = "(out.squeeze(1) > 0).long()" if binary else "out.argmax(1)"
    device = ('"cuda" if torch.cuda.is_available() else "cpu"' if config.device == "auto"
              else repr(config.device))
    truth = f"(y == {config.positive_class}).long()" if binary else "y"
    return f'''import torch
from torch import nn
from torch.utils.data import DataLoader, random_split
from torchvision import datasets, transforms

torch.manual_seed({config.seed})
device = {device}
tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
full = datasets.MNIST("data", train=True, download=True, transform=tf)
test = datasets.MNIST("data", train=False, download=True, transform=tf)
n_val = int(len(full) * {config.val_split:g})                      # validation_split={config.val_split:g}
train, val = random_split(full, [len(full) - n_val, n_val])

# 1. define
model = nn.Sequential(
{layers}
).to(device)
print(model)                                                       # 2. summary

# 3. compile
optimizer = {opt}
loss_fn = {loss}

# 4. fit
for epoch in range({config.epochs}):
    model.train()
    for x, y in DataLoader(train, batch_size={config.batch_size}, shuffle=True):
        x, y = x.to(device), y.to(device)
        loss = loss_fn(model(x), {target})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

# 5. evaluate
model.eval()
correct = 0
with torch.no_grad():
    for x, y in DataLoader(test, batch_size=1000):
        out = model(x.to(device))
        correct += ({pred}.cpu() == {truth}).sum().item()
print("test accuracy", correct / len(test))

# 6. save
torch.save(model.state_dict(), "model.pt")   # load with torch.load(..., weights_only=True)
'''


KERAS_ACT = {"leaky_relu": "leaky_relu"}


def _keras_layers(config: RunConfig) -> list[str]:
    lines = ["keras.Input(shape=(28, 28, 1)),"]
    shapes = [(1, 28, 28), *output_shapes(config.architecture(), config.num_outputs)]
    for layer, in_shape in zip(config.architecture(), shapes):
        kind = layer["type"]
        act = KERAS_ACT.get(layer.get("activation", "linear"), layer.get("activation", "linear"))
        if kind == "dense":
            lines.append(f"layers.Dense({layer['units']}, activation='{act}'),")
        elif kind == "conv":
            stride = layer.get("stride", 1)
            lines.append(f"layers.Conv2D({layer['filters']}, ({layer['kernel']}, {layer['kernel']}), "
                         f"padding='{layer.get('padding', 'valid')}', activation='{act}'"
                         f"{'' if stride == 1 else f', strides={stride}'}),")
        elif kind == "pool":
            cls = "MaxPooling2D" if layer.get("kind", "max") == "max" else "AveragePooling2D"
            s = layer.get("size", 2)
            lines.append(f"layers.{cls}(({s}, {s})),")
        elif kind == "dropout":
            lines.append(f"layers.Dropout({layer.get('rate', 0.5)}),")
        elif kind == "batchnorm":
            lines.append("layers.BatchNormalization(),")
        elif kind == "flatten":
            lines.append("layers.Flatten(),")
    if len(shapes[len(config.architecture())]) != 1:
        lines.append("layers.Flatten(),")
    out = "layers.Dense(1, activation='sigmoid')," if config.num_outputs == 1 else "layers.Dense(10, activation='softmax'),"
    lines.append(out)
    return lines


def keras_code(config: RunConfig) -> str:
    """The same model and training in the course's Keras style."""
    binary = config.num_outputs == 1
    layers = "\n".join("    " + line for line in _keras_layers(config))
    opt = (f"keras.optimizers.Adam(learning_rate={config.lr:g})" if config.optimizer == "adam"
           else f"keras.optimizers.SGD(learning_rate={config.lr:g}, momentum={config.momentum:g})")
    loss = "binary_crossentropy" if binary else "categorical_crossentropy"
    labels = (f"y_train = (y_train == {config.positive_class}).astype('float32')\n"
              f"y_test = (y_test == {config.positive_class}).astype('float32')" if binary else
              "y_train = keras.utils.to_categorical(y_train, 10)\ny_test = keras.utils.to_categorical(y_test, 10)")
    return f'''import keras
from keras import layers

keras.utils.set_random_seed({config.seed})
(x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
x_train = x_train.reshape(-1, 28, 28, 1).astype("float32") / 255
x_test = x_test.reshape(-1, 28, 28, 1).astype("float32") / 255
{labels}

# 1. define
model = keras.Sequential([
{layers}
])
model.summary()                                                    # 2. summary

# 3. compile
model.compile(optimizer={opt}, loss="{loss}", metrics=["accuracy"])

# 4. fit (Keras takes the LAST {config.val_split:.0%} as validation; the lab draws a seeded,
#    stratified random split instead, because MNIST files are not shuffled by class)
history = model.fit(x_train, y_train, batch_size={config.batch_size}, epochs={config.epochs},
                    validation_split={config.val_split:g})

# 5. evaluate
test_loss, test_accuracy = model.evaluate(x_test, y_test)

# 6. save
model.save("model.keras")
'''
