"""Data sets for training and for test vectors: integer input codes, deterministic splits.

The digits set (scikit-learn's ``load_digits``, 1797 8×8 images, 10 classes) is used as shipped:
each pixel is an integer 0..16, fed to the first layer unchanged as a 5-bit unsigned code
(:data:`INPUT_BITS`). The split is stratified by class and fixed by its seed.

numpy and scikit-learn only (no torch): :mod:`qnnfab.vectors` reads test splits through
:func:`load_dataset` without training anything.
"""

import functools
from dataclasses import dataclass

import numpy as np

__all__ = ["INPUT_BITS", "DATASETS", "Dataset", "digits_split", "load_dataset"]

#: Bits of each digits input code: pixels are 0..16, so 5 bits.
INPUT_BITS = 5

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


def _stratified_split(y, seed):
    """Index arrays (train, val, test), stratified by label, deterministic for ``seed``."""
    from sklearn.model_selection import train_test_split
    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=TEST_FRACTION, stratify=y,
                                  random_state=seed)
    n_val = int(round(VAL_FRACTION * len(y)))
    train, val = train_test_split(rest, test_size=n_val, stratify=y[rest], random_state=seed)
    return train, val, test


def digits_split(seed=0):
    """The digits set split 70/10/20 (train/val/test), stratified, fixed by ``seed``.

    Inputs are the pixel values 0..16 unchanged, as int64 codes of :data:`INPUT_BITS` bits.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"split seed must be a non-negative integer, not {seed!r}")
    x, y = _digits()
    train, val, test = _stratified_split(y, int(seed))
    return Dataset(name="digits", seed=int(seed), input_bits=INPUT_BITS,
                   classes=tuple(str(c) for c in range(10)),
                   x_train=x[train], y_train=y[train], x_val=x[val], y_val=y[val],
                   x_test=x[test], y_test=y[test])


def _load_digits(seed, arg):
    if arg is not None:
        raise ValueError(f"data set 'digits' takes no argument, got 'digits:{arg}'")
    return digits_split(seed)


#: Data set loaders by kind: ``loader(seed, arg)``, ``arg`` the text after ``kind:`` or None.
DATASETS = {"digits": _load_digits}


def load_dataset(name="digits", seed=0):
    """Load data set ``name`` split by ``seed``; ValueError naming the known sets otherwise.

    ``name`` is a key of :data:`DATASETS`; later sets that read files take ``"kind:PATH"``
    (``"mnist:DIR"``), the part before the colon selecting the loader.
    """
    if not isinstance(name, str):
        raise TypeError(f"data set name must be a string, not {name!r}")
    kind, _, arg = name.partition(":")
    loader = DATASETS.get(kind)
    if loader is None:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}")
    return loader(seed, arg or None)
