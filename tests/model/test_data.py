"""Data splits: sizes, stratification, determinism, integer codes."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from qnnfab.model import data


def test_digits_split_sizes_and_codes():
    ds = data.digits_split(0)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (1257, 180, 360)
    assert ds.n_features == 64 and ds.n_classes == 10 and ds.input_bits == data.INPUT_BITS == 5
    for x in (ds.x_train, ds.x_val, ds.x_test):
        assert x.dtype == np.int64 and x.shape[1] == 64
        assert x.min() >= 0 and x.max() <= 16 < 2 ** ds.input_bits
    for y in (ds.y_train, ds.y_val, ds.y_test):
        assert y.dtype == np.int64 and set(np.unique(y)) <= set(range(10))


def test_digits_split_partitions_the_set_unchanged():
    ds = data.digits_split(0)
    ref = load_digits()
    x = np.concatenate([ds.x_train, ds.x_val, ds.x_test])
    y = np.concatenate([ds.y_train, ds.y_val, ds.y_test])
    # Same multiset of (pixels, label) rows as sklearn's: nothing lost, duplicated or rescaled.
    got = sorted(map(tuple, np.column_stack([x, y]).tolist()))
    want = sorted(map(tuple, np.column_stack([ref.data.astype(np.int64), ref.target]).tolist()))
    assert got == want


def test_digits_split_is_stratified():
    ds = data.digits_split(0)
    total = np.bincount(load_digits().target, minlength=10)
    for name, y, frac in (("train", ds.y_train, 0.7), ("val", ds.y_val, 0.1),
                          ("test", ds.y_test, 0.2)):
        counts = np.bincount(y, minlength=10)
        assert np.all(np.abs(counts - frac * total) <= 1.5), (name, counts, frac * total)


def test_digits_split_is_deterministic_and_seeded():
    a, b, c = data.digits_split(0), data.digits_split(0), data.digits_split(1)
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert not np.array_equal(a.y_test, c.y_test) or not np.array_equal(a.x_test, c.x_test)


def test_load_dataset():
    ds = data.load_dataset("digits", seed=2)
    ref = data.digits_split(2)
    assert ds.name == "digits" and ds.seed == 2
    assert np.array_equal(ds.x_test, ref.x_test) and np.array_equal(ds.y_test, ref.y_test)


@pytest.mark.parametrize("name,match", [
    ("mnist-ish", "unknown data set 'mnist-ish'; known: csv, digits, fashion-mnist, mnist, npz"),
    ("digits:/tmp", "takes no argument"),
])
def test_load_dataset_rejects(name, match):
    with pytest.raises(ValueError, match=match):
        data.load_dataset(name)


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_bad_split_seed(seed):
    with pytest.raises(ValueError, match="split seed"):
        data.digits_split(seed)
