"""A run as a Jupyter notebook: the program of core/codegen.py cut into the course's steps.

A student who finishes the course goes on in a notebook (Jupyter, Colab). The notebook is the
same program the train page shows as "the same run as code" (so it trains the same run, and
tests/test_handover.py executes it), one code cell per step of the course's Keras workflow
under a markdown heading: the data folder as the first cell's variable, then data, define,
summary, compile, fit, evaluate, predict and save, and the training curves plotted at the end.
It reads MNIST from that folder and downloads nothing. Built with nbformat, not by hand.
"""

from __future__ import annotations

import re

from core.codegen import STEPS, keras_code, pytorch_code
from core.config import RunConfig

FRAMEWORKS = ("pytorch", "keras")

# What each step does, in the course's words, with the call that does it in each framework.
STEP_TEXT = {
    "data": "The four MNIST files from `DATA`, split into training and validation digits as the lab split "
            "this run, then normalised with the training pixels' mean and standard deviation.",
    "define": "The network, layer by layer, as a {define}.",
    "summary": "Each layer's output shape and parameter count ({summary}).",
    "compile": "The optimizer, the loss and what is measured ({compile}).",
    "fit": "Training: every epoch goes once through the training digits in small batches, then measures "
           "the validation digits ({fit}).",
    "evaluate": "The test digits, which training never saw: the number to report ({evaluate}).",
    "predict and save": "The model's answers for the first ten test digits, then the weights to a file ({save}).",
}
CALLS = {
    "pytorch": {"define": "`nn.Sequential`", "summary": "`print(model)`", "compile": "`torch.optim` and a loss",
                "fit": "a loop over `torch.randperm` batches", "evaluate": "`evaluate(X_test, Y_test)`",
                "save": "`torch.save`"},
    "keras": {"define": "`keras.Sequential`", "summary": "`model.summary()`", "compile": "`model.compile`",
              "fit": "`model.fit`", "evaluate": "`model.evaluate`", "save": "`model.predict`, `model.save`"},
}
CURVES = {
    "pytorch": "h = history  # the loss and validation numbers the fit cell kept",
    "keras": "h = history.history  # what model.fit returned",
}
PLOT = '''epochs = range(1, len(h["val_loss"]) + 1)
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
left.plot(epochs, h["loss"], "o-", label="training")
left.plot(epochs, h["val_loss"], "o-", label="validation")
left.set(title="loss", xlabel="epoch")
left.legend()
if "accuracy" in h:
    right.plot(epochs, h["accuracy"], "o-", label="training")
right.plot(epochs, h["val_accuracy"], "o-", label="validation")
right.set(title="accuracy", xlabel="epoch")
right.legend()
plt.show()'''
# `%matplotlib inline` draws the curves in the notebook whatever MPLBACKEND says (Agg, set by
# some tools, would keep plt.show() silent).
PARAMETER = re.compile(r"^(DATA|SEED|EPOCHS|L2)\b")
STEP_LINE = re.compile(r"^# ([0-9])\. ")


def program(config: RunConfig, framework: str, data_dir=None) -> str:
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; allowed: {', '.join(FRAMEWORKS)}")
    return (pytorch_code if framework == "pytorch" else keras_code)(config, data_dir)


def steps(code: str) -> list[tuple[str, str]]:
    """The program cut at its step comments: [("setup", ...), ("data", ...), ("define", ...), ...].
    The step comment itself is dropped (the markdown heading says it)."""
    parts: list[tuple[str, list[str]]] = [("setup", [])]
    for line in code.splitlines():
        match = STEP_LINE.match(line)
        if match:
            parts.append((STEPS[match.group(1)], []))
            continue
        parts[-1][1].append(line)
    return [(name, "\n".join(lines).strip("\n")) for name, lines in parts]


def notebook(config: RunConfig, framework: str = "pytorch", data_dir=None, title: str | None = None,
             facts: str = ""):
    """The notebook (an nbformat NotebookNode, validated) of `config` in `framework`."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    parts = steps(program(config, framework, data_dir))
    setup = parts[0][1].splitlines()
    parameters = [line for line in setup if PARAMETER.match(line)]
    rest = [line for line in setup if not PARAMETER.match(line)]
    name = "PyTorch" if framework == "pytorch" else "Keras"
    calls = CALLS[framework]
    cells = [
        new_markdown_cell(f"# {title or config.name or config.model}: the run in {name}\n\n"
                          "The course's steps (data, define, summary, compile, fit, evaluate, predict and save), "
                          "each a cell, training the same run as MNIST Lab. It runs offline: `DATA` below is the "
                          "folder with the four MNIST IDX files (`.gz` or not); nothing is downloaded."
                          + (f"\n\n{facts}" if facts else "")),
        new_code_cell("\n".join(parameters)),
        new_markdown_cell("## Setup\nThe libraries, the seed and the device."),
        new_code_cell("\n".join(rest).strip("\n")),
    ]
    for number, (step, code) in enumerate(parts[1:]):
        text = STEP_TEXT[step].format(**calls)
        heading = step.capitalize() if step == "data" else f"{number}. {step.capitalize()}"
        cells += [new_markdown_cell(f"## {heading}\n{text}"), new_code_cell(code)]
    cells += [new_markdown_cell("## Curves\nLoss and accuracy per epoch: where the validation curve leaves the "
                                "training curve, the model starts to overfit."),
              new_code_cell("%matplotlib inline\nimport matplotlib.pyplot as plt\n\n" + CURVES[framework] + "\n" + PLOT)]
    for i, cell in enumerate(cells):  # the same run gives the same file (nbformat's ids are random)
        cell.id = f"step-{i}"
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}})
    nbformat.validate(nb)
    return nb


def notebook_text(config: RunConfig, framework: str = "pytorch", data_dir=None, **kwargs) -> str:
    import nbformat

    return nbformat.writes(notebook(config, framework, data_dir, **kwargs))
