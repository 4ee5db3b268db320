"""Data sets for training and for test vectors: integer input codes, deterministic splits.

:func:`load_dataset` takes a name, ``kind`` or ``kind:ARG`` (:data:`DATASETS`), and a split seed.

``digits``
    scikit-learn's ``load_digits``, 1797 8×8 images, 10 classes, used as shipped: each pixel is
    an integer 0..16, fed to the first layer unchanged as a 5-bit unsigned code
    (:data:`INPUT_BITS`). Split 70/10/20 (train/val/test), stratified by class, fixed by the seed.

``mnist:DIR``
    The MNIST files as published (LeCun et al.) in folder ``DIR``: ``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each
    plain or gzipped (``.gz``), also spelled ``train-images.idx3-ubyte`` (read by
    :func:`qnnfab.model.idx.read_idx`; nothing is downloaded). Pixels are flattened row-major and
    kept as the published 8-bit unsigned codes (:data:`MNIST_INPUT_BITS`). The ``t10k`` files are
    the test split; a stratified 10 % of the training file, chosen by the seed, is the validation
    split; the rest trains. The set's name records ``DIR`` made absolute, so a network's
    ``meta["data"]["name"]`` loads the same files from any working directory.

``fashion-mnist``
    Zalando's Fashion-MNIST (28×28 grey images of clothes, 10 classes, 60,000 + 10,000) in the
    MNIST file format, from the folder Debian's ``dataset-fashion-mnist`` package installs,
    :data:`FASHION_MNIST_DIR` (``apt-get install dataset-fashion-mnist``); read and split as
    ``mnist:DIR``, with the class names (:data:`FASHION_MNIST_CLASSES`).

``npz:FILE[,bits=K]``
    A numpy ``.npz`` with ``x_train, y_train, x_test, y_test`` and optionally ``x_val, y_val``
    (without them a stratified :data:`VAL_FRACTION` of the training split, chosen by the seed,
    is the validation split) and ``classes``. Inputs ``(N, F)``, ``(N, H, W)`` or
    ``(N, H, W, C)``: integer codes, or floats in ``[0, 1]`` quantized to ``K``-bit codes
    (default 8); see :mod:`qnnfab.model.datafiles`.

``csv:FILE[,label=first|last|N|NAME][,bits=K]``
    One sample per line, a label column and feature columns (same code rule), split 70/10/20
    (train/val/test) stratified by class and fixed by the seed, like ``digits``.

The file forms record their path made absolute (and the options given) in the set's name.

numpy and scikit-learn only (no torch): :mod:`qnnfab.model.vectors` reads test splits through
:func:`load_dataset` without training anything.
"""

import dataclasses
import functools
import os
from dataclasses import dataclass

import numpy as np

from .datafiles import parse_file_spec, read_csv, read_npz
from .idx import read_idx

__all__ = ["INPUT_BITS", "MNIST_INPUT_BITS", "MNIST_FILES", "DATASETS", "Dataset",
           "digits_split", "mnist_split", "load_dataset", "FASHION_MNIST_DIR",
           "FASHION_MNIST_CLASSES", "fashion_mnist_folder"]

#: Bits of each digits input code: pixels are 0..16, so 5 bits.
INPUT_BITS = 5

#: Bits of each MNIST input code: pixels are published as unsigned bytes 0..255.
MNIST_INPUT_BITS = 8

#: The four published MNIST file names (plain; each may also carry ``.gz``), by role.
MNIST_FILES = {
    "train images": "train-images-idx3-ubyte",
    "train labels": "train-labels-idx1-ubyte",
    "test images": "t10k-images-idx3-ubyte",
    "test labels": "t10k-labels-idx1-ubyte",
}

#: Where Debian's ``dataset-fashion-mnist`` package puts the four IDX files.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

#: Fashion-MNIST's class names, labels 0..9.
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")

#: Fractions of the whole set held out for validation and test (the rest trains).
VAL_FRACTION = 0.1
TEST_FRACTION = 0.2


@dataclass(frozen=True, eq=False)
class Dataset:
    """A data set split three ways.

    Attributes
    ----------
    name : str
        What :func:`load_dataset` accepts to load it again.
    seed : int
        The split seed.
    input_bits : int
        Bits of each input code; ``x_*`` hold int64 codes ``0 .. 2**input_bits - 1``.
    classes : tuple of str
        Class names; ``y_*`` hold int64 indices into it.
    x_train, y_train, x_val, y_val, x_test, y_test : ndarray
        Inputs ``(n, features)`` and labels ``(n,)``. The validation split is for model
        selection only; the test split is held out for reporting.
    input_shape : tuple (H, W, C) or None
        The image shape of the inputs (flattened ``(y, x, c)``) when the files give one
        (IDX images, 3-D/4-D npz arrays); None otherwise.
    """
    name: str
    seed: int
    input_bits: int
    classes: tuple
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    input_shape: "tuple | None" = None

    @property
    def n_features(self):
        return int(self.x_train.shape[1])

    @property
    def n_classes(self):
        return len(self.classes)


@functools.lru_cache(maxsize=1)
def _digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = np.asarray(d.data).astype(np.int64)
    if not np.array_equal(x, d.data):
        raise RuntimeError("load_digits returned non-integer pixels")
    y = np.asarray(d.target).astype(np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _holdout(idx, y, size, seed):
    """``idx`` split in two (kept, held out), stratified by ``y``; ``size`` as sklearn takes it."""
    from sklearn.model_selection import train_test_split
    return train_test_split(idx, test_size=size, stratify=y, random_state=seed)


def _stratified_split(y, seed):
    """Index arrays (train, val, test), stratified by label, deterministic for ``seed``."""
    idx = np.arange(len(y))
    rest, test = _holdout(idx, y, TEST_FRACTION, seed)
    n_val = int(round(VAL_FRACTION * len(y)))
    train, val = _holdout(rest, y[rest], n_val, seed)
    return train, val, test


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"split seed must be a non-negative integer, not {seed!r}")
    return int(seed)


def digits_split(seed=0):
    """The digits set split 70/10/20 (train/val/test), stratified, fixed by ``seed``.

    Inputs are the pixel values 0..16 unchanged, as int64 codes of :data:`INPUT_BITS` bits.
    """
    seed = _check_seed(seed)
    x, y = _digits()
    train, val, test = _stratified_split(y, seed)
    return Dataset(name="digits", seed=seed, input_bits=INPUT_BITS,
                   classes=tuple(str(c) for c in range(10)),
                   x_train=x[train], y_train=y[train], x_val=x[val], y_val=y[val],
                   x_test=x[test], y_test=y[test])


def _load_digits(seed, arg):
    if arg is not None:
        raise ValueError(f"data set 'digits' takes no argument, got 'digits:{arg}'")
    return digits_split(seed)


def _mnist_candidates(base):
    """File names tried for published name ``base``: plain, gzipped, ``.idx`` spelling."""
    alt = base.replace("-idx", ".idx")
    return (base, base + ".gz", alt, alt + ".gz")


def _mnist_files(folder):
    """The four MNIST files in ``folder``: ``(path, mtime_ns, size)`` by :data:`MNIST_FILES` role.

    The first existing candidate of :func:`_mnist_candidates` wins (plain before ``.gz``).
    """
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise ValueError(f"mnist: {folder} {what}")
    found, missing = [], []
    for base in MNIST_FILES.values():
        names = _mnist_candidates(base)
        path = next((p for p in (os.path.join(folder, n) for n in names)
                     if os.path.isfile(p)), None)
        if path is None:
            missing.append(" or ".join(names))
        else:
            st = os.stat(path)
            found.append((path, st.st_mtime_ns, st.st_size))
    if missing:
        raise ValueError(f"mnist: missing in folder {folder}: " + "; ".join(missing))
    return tuple(found)


@functools.lru_cache(maxsize=2)
def _mnist_arrays(files):
    """Parsed and checked MNIST arrays ``(x_train, y_train, x_test, y_test, n_classes,
    image_shape)``.

    ``files`` is :func:`_mnist_files`' answer, so the cache is keyed on the absolute paths,
    modification times and sizes: a changed file is read again. Inputs are ``(n, rows*cols)``
    uint8 (row-major), labels int64; all read-only.
    """
    (tr_img, _, _), (tr_lab, _, _), (te_img, _, _), (te_lab, _, _) = files
    out = []
    for img_path, lab_path in ((tr_img, tr_lab), (te_img, te_lab)):
        x, y = read_idx(img_path), read_idx(lab_path)
        for path, a, what in ((img_path, x, "images"), (lab_path, y, "labels")):
            if a.dtype != np.uint8:
                raise ValueError(f"{path}: {what} must be unsigned bytes (type 0x08), "
                                 f"got {a.dtype}")
        if x.ndim != 3 or 0 in x.shape[1:]:
            raise ValueError(f"{img_path}: images must be 3-D (count, rows, columns), "
                             f"got shape {x.shape}")
        if y.ndim != 1:
            raise ValueError(f"{lab_path}: labels must be 1-D (count,), got shape {y.shape}")
        if len(x) != len(y):
            raise ValueError(f"{lab_path}: {len(y)} labels for the {len(x)} images of "
                             f"{img_path}")
        if len(y) == 0:
            raise ValueError(f"{img_path}: no images")
        out += [x, y.astype(np.int64)]
    x_train, y_train, x_test, y_test = out
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"{te_img}: images are {x_test.shape[1]}x{x_test.shape[2]} pixels, "
                         f"those of {tr_img} are {x_train.shape[1]}x{x_train.shape[2]}")
    labels = np.unique(y_train)
    n_classes = int(labels[-1]) + 1
    missing = sorted(set(range(n_classes)) - set(labels.tolist()))
    if n_classes < 2 or missing:
        raise ValueError(f"{tr_lab}: labels must be 0..C-1 with every class present and C >= 2; "
                         f"got {len(labels)} distinct labels up to {n_classes - 1}"
                         + (f", missing {missing[:10]}" if missing else ""))
    if y_test.max() >= n_classes:
        raise ValueError(f"{te_lab}: label {int(y_test.max())} is outside the training "
                         f"classes 0..{n_classes - 1} of {tr_lab}")
    out = (x_train.reshape(len(x_train), -1), y_train, x_test.reshape(len(x_test), -1), y_test)
    for a in out:
        a.setflags(write=False)
    return out + (n_classes, (int(x_train.shape[1]), int(x_train.shape[2]), 1))


def mnist_split(folder, seed=0):
    """The MNIST files in ``folder`` split train/val/test, fixed by ``seed``.

    Test: the published ``t10k`` files in their order. Validation: a stratified
    :data:`VAL_FRACTION` of the training file chosen by ``seed``; the rest trains. Inputs are the
    published pixels 0..255, flattened row-major, as int64 codes of :data:`MNIST_INPUT_BITS`
    bits. ``name`` is ``"mnist:"`` + ``folder`` made absolute. Parsed files are cached per
    (path, modification time, size).
    """
    seed = _check_seed(seed)
    if not isinstance(folder, (str, os.PathLike)):
        raise TypeError(f"mnist folder must be a path, not {folder!r}")
    folder = os.path.abspath(os.path.expanduser(os.fspath(folder)))
    files = _mnist_files(folder)
    x_train, y_train, x_test, y_test, n_classes, shape = _mnist_arrays(files)
    n_val = int(round(VAL_FRACTION * len(y_train)))
    try:
        train, val = _holdout(np.arange(len(y_train)), y_train, n_val, seed)
    except ValueError as e:
        raise ValueError(f"{files[1][0]}: cannot hold out a stratified validation split of "
                         f"{n_val} of {len(y_train)} images in {n_classes} classes: {e}") from None
    return Dataset(name="mnist:" + folder, seed=seed, input_bits=MNIST_INPUT_BITS,
                   classes=tuple(str(c) for c in range(n_classes)),
                   x_train=x_train[train].astype(np.int64), y_train=y_train[train],
                   x_val=x_train[val].astype(np.int64), y_val=y_train[val],
                   x_test=x_test.astype(np.int64), y_test=y_test.copy(), input_shape=shape)


def _load_mnist(seed, arg):
    if arg is None:
        raise ValueError("mnist needs a folder: --data mnist:DIR")
    return mnist_split(arg, seed)


def fashion_mnist_folder():
    """:data:`FASHION_MNIST_DIR` when it holds the four files; ValueError saying how to install
    them otherwise."""
    try:
        _mnist_files(FASHION_MNIST_DIR)
    except ValueError as exc:
        raise ValueError(f"fashion-mnist: not installed ({exc}): apt-get install "
                         f"dataset-fashion-mnist, or give the four IDX files' folder as "
                         f"--data mnist:DIR") from None
    return FASHION_MNIST_DIR


def _load_fashion_mnist(seed, arg):
    if arg is not None:
        raise ValueError(f"data set 'fashion-mnist' takes no argument, got "
                         f"'fashion-mnist:{arg}' (for the files in another folder: mnist:DIR)")
    ds = mnist_split(fashion_mnist_folder(), seed)
    if ds.n_classes != len(FASHION_MNIST_CLASSES):
        raise ValueError(f"fashion-mnist: {FASHION_MNIST_DIR} holds {ds.n_classes} classes, "
                         f"expected {len(FASHION_MNIST_CLASSES)}")
    return dataclasses.replace(ds, name="fashion-mnist", classes=FASHION_MNIST_CLASSES)


def _spec_name(kind, path, options):
    """``kind:PATH[,key=value...]`` (the options in a fixed order) for a set's name."""
    return ",".join([f"{kind}:{path}", *(f"{k}={options[k]}" for k in sorted(options))])


def _load_npz(seed, arg):
    path, options = parse_file_spec("npz", arg)
    f = read_npz(path, bits=options.get("bits"))
    x_val, y_val, x_train, y_train = f.x_val, f.y_val, f.x_train, f.y_train
    if x_val is None:
        n_val = max(len(f.classes), int(round(VAL_FRACTION * len(y_train))))
        try:
            train, val = _holdout(np.arange(len(y_train)), y_train, n_val, seed)
        except ValueError as e:
            raise ValueError(f"{path}: y_train: cannot hold out a stratified validation split "
                             f"of {n_val} of {len(y_train)} samples in {len(f.classes)} classes "
                             f"({e}); add x_val, y_val to the file") from None
        x_train, y_train, x_val, y_val = x_train[train], y_train[train], x_train[val], \
            y_train[val]
    return Dataset(name=_spec_name("npz", path, options), seed=seed, input_bits=f.input_bits,
                   classes=f.classes, input_shape=f.input_shape,
                   x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val,
                   x_test=f.x_test, y_test=f.y_test)


def _load_csv(seed, arg):
    path, options = parse_file_spec("csv", arg)
    f = read_csv(path, label=options.get("label"), bits=options.get("bits"))
    x, y = f.x_train, f.y_train
    try:
        train, val, test = _stratified_split(y, seed)
    except ValueError as e:
        raise ValueError(f"{path}: cannot split {len(y)} samples in {len(f.classes)} classes "
                         f"70/10/20 stratified ({e}); every class needs enough samples") \
            from None
    return Dataset(name=_spec_name("csv", path, options), seed=seed, input_bits=f.input_bits,
                   classes=f.classes,
                   x_train=x[train], y_train=y[train], x_val=x[val], y_val=y[val],
                   x_test=x[test], y_test=y[test])


#: Data set loaders by kind: ``loader(seed, arg)``, ``arg`` the text after ``kind:`` or None.
DATASETS = {"digits": _load_digits, "mnist": _load_mnist, "fashion-mnist": _load_fashion_mnist,
            "npz": _load_npz, "csv": _load_csv}


def load_dataset(name="digits", seed=0):
    """Load data set ``name`` split by ``seed``; ValueError naming the known sets otherwise.

    ``name`` is a key of :data:`DATASETS` (``"digits"``, ``"fashion-mnist"``), or for sets
    that read files ``"kind:PATH"`` (``"mnist:DIR"``, ``"npz:FILE"``, ``"csv:FILE"``, the last
    two with ``,key=value`` options), the part before the first colon selecting the loader.
    The returned :attr:`Dataset.name` loads the same set again.
    """
    if not isinstance(name, str):
        raise TypeError(f"data set name must be a string, not {name!r}")
    kind, _, arg = name.partition(":")
    loader = DATASETS.get(kind)
    if loader is None:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}")
    return loader(seed, arg or None)
