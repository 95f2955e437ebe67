"""The data step of the generated programs (core/codegen.py): reading the MNIST IDX files and
the lab's train/validation split (or k-fold fold, or training subset) as code, the same in the
PyTorch and the Keras program."""

from __future__ import annotations

from core.config import RunConfig

DEFAULT_DATA = "data/mnist"
DATA_STEP = "# 0. data: the four MNIST files, the lab's train/validation split, normalised\n"

# By hand, in both programs: torchvision's MNIST class reads only uncompressed files under
# DATA/MNIST/raw and Keras' mnist.load_data() downloads an .npz; neither reads the standard
# .gz files where they are. The IDX format is 12 lines.
READ_IDX = '''

def read_idx(name):
    """One MNIST IDX file, gzipped or not: a magic number whose 4th byte is the number of
    dimensions, the dimensions (big-endian uint32), then the bytes."""
    for path in (os.path.join(DATA, name + ".gz"), os.path.join(DATA, name)):
        if os.path.exists(path):
            with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
                raw = f.read()
            dims = struct.unpack(">" + "I" * raw[3], raw[4:4 + 4 * raw[3]])
            return np.frombuffer(raw, np.uint8, offset=4 + 4 * raw[3]).reshape(dims)
    raise FileNotFoundError(f"{name}(.gz) is not in {DATA}: put the four MNIST files there")


x_train, y_train = read_idx("train-images-idx3-ubyte"), read_idx("train-labels-idx1-ubyte").astype(np.int64)
x_test, y_test = read_idx("t10k-images-idx3-ubyte"), read_idx("t10k-labels-idx1-ubyte").astype(np.int64)
'''


def split_code(config: RunConfig) -> str:
    """The lab's train/validation indices (core.training.split_indices) as code, stratified by digit."""
    if config.kfold:
        k, fold = config.kfold[0], config.kfold[1]
        cls = kfold_splitter(config)
        lines = [f"# fold {fold + 1} of a {k}-fold cross-validation: this fold validates, the others train",
                 f"train_idx, val_idx = list({cls}({k}, shuffle=True, random_state=SEED).split(x_train, y_train))"
                 f"[{fold}]"]
    else:
        lines = [f"# validation: a seeded split stratified by digit (the lab's); Keras' validation_split={config.val_split:g}",
                 "# would take the last samples of the file instead",
                 f"train_idx, val_idx = train_test_split(np.arange(len(y_train)), test_size={config.val_split:g}, "
                 "random_state=SEED,",
                 "                                      stratify=y_train)",
                 "train_idx, val_idx = np.sort(train_idx), np.sort(val_idx)"]
    if config.train_subset:
        stratify = "stratify=y_train[train_idx]" if config.train_subset >= 10 else "stratify=None"
        lines += [f"# train on a stratified subset of {config.train_subset:,} digits (the under/overfitting study's small "
                  "training set)",
                  f"train_idx, _ = train_test_split(train_idx, train_size={config.train_subset}, random_state=SEED, "
                  f"{stratify})",
                  "train_idx = np.sort(train_idx)"]
    if config.num_outputs == 1:
        lines += [f"# the binary task: is it a {config.positive_class}? (after the split, which is stratified by digit)",
                  f"y_train, y_test = (y_train == {config.positive_class}).astype(np.int64), "
                  f"(y_test == {config.positive_class}).astype(np.int64)"]
    lines += ["mean, std = x_train.mean() / 255, x_train.std() / 255  # of the training pixels, as the lab"]
    return "\n".join(lines)


def kfold_splitter(config: RunConfig) -> str:
    """scikit-learn's class for a k-fold run's folds (the third kfold field: stratified, default yes)."""
    return "StratifiedKFold" if len(config.kfold) < 3 or config.kfold[2] else "KFold"


def split_import(config: RunConfig) -> str:
    """The scikit-learn splitters `_split` uses, imported at the top with the others."""
    names = []
    if config.kfold:
        names.append(kfold_splitter(config))
    if not config.kfold or config.train_subset:
        names.append("train_test_split")
    return f"from sklearn.model_selection import {', '.join(names)}"


def data_folder(data_dir) -> str:
    return repr(str(data_dir or DEFAULT_DATA))
