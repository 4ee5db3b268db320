"""A user's own data: ``npz:FILE`` and ``csv:FILE`` through :func:`load_dataset` (tiny files made
here), the input-code rule, the splits, and every error naming the file and what is wrong."""

import numpy as np
import pytest

from qnnfab.model import data, datafiles


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _arrays(rng, n_train=60, n_test=12, shape=(4, 4), dtype=np.uint8, hi=256, classes=3):
    return {"x_train": rng.integers(0, hi, (n_train, *shape)).astype(dtype),
            "y_train": np.arange(n_train) % classes,
            "x_test": rng.integers(0, hi, (n_test, *shape)).astype(dtype),
            "y_test": np.arange(n_test) % classes}


def test_npz_uint8_images(tmp_path):
    rng = np.random.default_rng(0)
    a = _arrays(rng)
    path = _npz(tmp_path / "d.npz", **a)
    ds = data.load_dataset(f"npz:{path}", seed=1)
    assert ds.name == f"npz:{path}" and ds.seed == 1 and ds.input_bits == 8
    assert ds.input_shape == (4, 4, 1) and ds.n_features == 16 and ds.classes == ("0", "1", "2")
    # No x_val: a stratified 10 % of the training split (at least one per class) validates.
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (54, 6, 12)
    assert np.bincount(ds.y_val).tolist() == [2, 2, 2]
    assert np.array_equal(ds.x_test, a["x_test"].reshape(12, 16)) and ds.x_test.dtype == np.int64
    rows = sorted(map(tuple, np.concatenate([ds.x_train, ds.x_val]).tolist()))
    assert rows == sorted(map(tuple, a["x_train"].reshape(60, 16).tolist()))
    again = data.load_dataset(ds.name, seed=1)  # the name loads the same set
    assert np.array_equal(again.x_val, ds.x_val) and np.array_equal(again.y_train, ds.y_train)


def test_npz_float_channels_last_with_val_and_classes(tmp_path):
    rng = np.random.default_rng(1)
    a = _arrays(rng, shape=(2, 3, 2))
    a = {k: (v / 255.0 if k.startswith("x") else v) for k, v in a.items()}
    a.update(x_val=rng.random((3, 2, 3, 2)), y_val=np.array([0, 1, 2]),
             classes=np.array(["cat", "dog", "eel"]))
    path = _npz(tmp_path / "f.npz", **a)
    ds = data.load_dataset(f"npz:{path}")
    assert ds.input_bits == 8 and ds.input_shape == (2, 3, 2) and ds.n_features == 12
    assert ds.classes == ("cat", "dog", "eel") and len(ds.y_val) == 3 and len(ds.y_train) == 60
    # x / 255 comes back as the byte it was, flattened (y, x, c).
    assert np.array_equal(ds.x_train, np.round(a["x_train"] * 255).reshape(60, 12))
    assert np.array_equal(ds.x_val, np.floor(a["x_val"] * 255 + 0.5).reshape(3, 12))
    ds4 = data.load_dataset(f"npz:{path},bits=4")
    assert ds4.input_bits == 4 and ds4.name == f"npz:{path},bits=4"
    assert np.array_equal(ds4.x_train, np.floor(a["x_train"] * 15 + 0.5).reshape(60, 12))


def test_npz_integer_codes_bits(tmp_path):
    rng = np.random.default_rng(2)
    a = _arrays(rng, shape=(5,), dtype=np.int64, hi=17)  # digits-like 0..16
    a["x_train"][0, 0] = 16
    path = _npz(tmp_path / "i.npz", **a)
    assert data.load_dataset(f"npz:{path}").input_bits == 5
    assert data.load_dataset(f"npz:{path},bits=7").input_bits == 7
    assert data.load_dataset(f"npz:{path}").input_shape is None
    b = dict(a, x_train=(a["x_train"] > 8), x_test=(a["x_test"] > 8))  # 0/1: 2-bit codes
    assert data.load_dataset(f"npz:{_npz(tmp_path / 'b.npz', **b)}").input_bits == 2


def test_npz_text_labels(tmp_path):
    rng = np.random.default_rng(3)
    a = _arrays(rng, shape=(3,))
    names = np.array(["b", "a", "c"])
    a.update(y_train=names[a["y_train"]], y_test=names[a["y_test"]])
    ds = data.load_dataset(f"npz:{_npz(tmp_path / 't.npz', **a)}")
    assert ds.classes == ("a", "b", "c")
    assert np.array_equal(np.array(ds.classes)[ds.y_test], a["y_test"])


def _bad(tmp_path, name, **changes):
    a = _arrays(np.random.default_rng(4), shape=(4,))
    a.update(changes)
    for k in [k for k, v in a.items() if v is None]:
        del a[k]
    return _npz(tmp_path / name, **a)


@pytest.mark.parametrize("changes,message", [
    ({"x_test": None}, "missing array 'x_test' (has x_train, y_train, y_test); expected "
                       "x_train, y_train, x_test, y_test"),
    ({"X_train": np.zeros(3)}, "unexpected array 'X_train'; an npz data file holds x_train"),
    ({"x_val": np.zeros((2, 4))}, "has x_val but not y_val; give both or neither"),
    ({"x_train": np.zeros(60)}, "x_train: expected shape (N, features), (N, H, W) or "
                                "(N, H, W, C), got (60,)"),
    ({"x_test": np.zeros((12, 5), np.uint8)}, "x_test: samples of shape (5,), those of x_train "
                                              "are (4,)"),
    ({"y_test": np.zeros(11, int)}, "y_test: 11 labels for the 12 inputs of x_test"),
    ({"y_train": np.zeros((60, 1), int)}, "y_train: labels must be 1-D (N,), got shape (60, 1)"),
    ({"y_train": np.arange(60) % 3 * 1.0}, "y_train: labels must be integers 0..C-1 (or text, "
                                           "in every split), got dtype float64 (convert"),
    ({"y_train": np.arange(60) % 3 + 1}, "y_train: labels must be 0..C-1 with every class "
                                         "present and C >= 2; got 3 distinct labels up to 3, "
                                         "missing [0]"),
    ({"y_test": np.arange(12) % 4}, "y_test: label 3 is outside the classes 0..2 of y_train"),
    ({"x_test": np.full((12, 4), 0.5)}, "inputs mix integer codes and floats (x_train uint8, "
                                        "x_test float64)"),
    ({"x_train": np.full((60, 4), 1.5), "x_test": np.zeros((12, 4))},
     "x_train[0, 0] = 1.5: float inputs must lie in [0, 1] (they are quantized to 8-bit codes "
     "round(x * 255))"),
    ({"x_train": np.full((60, 4), np.nan), "x_test": np.zeros((12, 4))}, "x_train[0, 0] = nan"),
    ({"x_train": np.full((60, 4), -2)}, "x_train[0, 0] = -2: input codes must be >= 0"),
    ({"x_train": np.full((60, 4), 300)}, "x_train: codes up to 300 need 9 bits; inputs have at "
                                         "most 8"),
    ({"x_train": np.full((60, 4), "a")}, "x_train: expected numbers (integer codes, or floats "
                                         "in [0, 1]), got dtype <U1"),
    ({"classes": np.array(["a", "b"])}, "classes: 2 names for 3 classes (labels 0..2)"),
    ({"x_test": np.zeros((0, 4), np.uint8), "y_test": np.zeros(0, int)}, "x_test: no samples"),
])
def test_npz_errors(tmp_path, changes, message):
    path = _bad(tmp_path, "bad.npz", **changes)
    with pytest.raises(ValueError) as info:
        data.load_dataset(f"npz:{path}")
    assert str(info.value).startswith(str(path)) and message in str(info.value)


def test_npz_file_errors(tmp_path):
    (tmp_path / "text.npz").write_text("hello")
    np.save(tmp_path / "one.npy", np.zeros(3))
    ok = _bad(tmp_path, "ok.npz")
    for spec, message in [
            (f"npz:{tmp_path / 'nope.npz'}", f"npz: {tmp_path / 'nope.npz'} does not exist"),
            (f"npz:{tmp_path}", f"npz: {tmp_path} is not a file"),
            (f"npz:{tmp_path / 'text.npz'}", "text.npz: not an .npz file (the zip archive "
                                             "np.savez writes; it starts with 68 65 6c 6c"),
            (f"npz:{tmp_path / 'one.npy'}", "one.npy: a single .npy array, not an .npz archive"),
            (f"npz:{ok},bits=1", "bits=1: expected an integer 2..8 (a 1-bit input code would "
                                 "mean ±1)"),
            (f"npz:{ok},bits=4", "x_train: code 255 does not fit bits=4 (0..15)"),
            (f"npz:{ok},bit=4", "unknown option 'bit=4'; npz takes bits=..."),
            (f"npz:{ok},bits=4,bits=5", "option bits given twice"),
            ("npz", "npz needs a file: --data npz:FILE"),
    ]:
        with pytest.raises(ValueError) as info:
            data.load_dataset(spec)
        assert message in str(info.value), (spec, str(info.value))


def test_npz_too_small_to_hold_out_validation(tmp_path):
    path = _npz(tmp_path / "s.npz", x_train=np.zeros((4, 2), np.uint8),
                y_train=np.array([0, 1, 2, 2]), x_test=np.zeros((1, 2), np.uint8),
                y_test=np.array([0]))
    with pytest.raises(ValueError, match="y_train: cannot hold out a stratified validation "
                                         "split .* add x_val, y_val to the file"):
        data.load_dataset(f"npz:{path}")


# -- csv ---------------------------------------------------------------------------------------

def _csv_rows(rng, n=50, features=3, hi=16, classes=("0", "1", "2")):
    return [[classes[i % len(classes)], *map(str, rng.integers(0, hi, features))]
            for i in range(n)]


def _write_csv(path, rows, header=None):
    lines = ([",".join(header)] if header else []) + [",".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_label_first_integer_codes(tmp_path):
    rows = _csv_rows(np.random.default_rng(5))
    path = _write_csv(tmp_path / "d.csv", rows)
    ds = data.load_dataset(f"csv:{path}", seed=2)
    assert ds.name == f"csv:{path}" and ds.input_bits == 4 and ds.n_features == 3
    assert ds.classes == ("0", "1", "2") and ds.input_shape is None
    # One file: split 70/10/20 (train/val/test), stratified, fixed by the seed.
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (35, 5, 10)
    assert sorted(np.bincount(ds.y_test).tolist()) == [3, 3, 4]
    got = sorted(map(tuple, np.column_stack([np.concatenate([ds.y_train, ds.y_val, ds.y_test]),
                                             np.concatenate([ds.x_train, ds.x_val,
                                                             ds.x_test])]).tolist()))
    assert got == sorted(tuple(int(v) for v in r) for r in rows)
    again = data.load_dataset(ds.name, seed=2)
    assert np.array_equal(again.x_test, ds.x_test)


def test_csv_header_label_by_name_floats_text_labels(tmp_path):
    rng = np.random.default_rng(6)
    rows = [[f"{v:.3f}" for v in rng.random(2)] + [["setosa", "versicolor"][i % 2],
                                                   f"{rng.random():.3f}"] for i in range(40)]
    path = _write_csv(tmp_path / "iris.csv", rows, header=["a", "b", "species", "c"])
    ds = data.load_dataset(f"csv:{path},label=species,bits=6")
    assert ds.name == f"csv:{path},bits=6,label=species"
    assert ds.classes == ("setosa", "versicolor") and ds.input_bits == 6 and ds.n_features == 3
    x = np.array([[float(r[0]), float(r[1]), float(r[3])] for r in rows])
    all_x = np.concatenate([ds.x_train, ds.x_val, ds.x_test])
    assert sorted(map(tuple, all_x.tolist())) == \
        sorted(map(tuple, np.floor(x * 63 + 0.5).astype(int).tolist()))
    for label in ("2", "last"):
        other = _write_csv(tmp_path / f"l{label}.csv",
                           [r[:2] + r[3:] + r[2:3] if label == "last" else r for r in rows])
        assert data.load_dataset(f"csv:{other},label={label}").classes == \
            ("setosa", "versicolor")


@pytest.mark.parametrize("text,spec,message", [
    ("0,1,2\n1,2\n", "", "line 2: 2 fields, expected 3 (as in line 1)"),
    ("0,1,2\n1,x,2\n", "", "line 2, column 1: 'x' is not a number (features must be numbers)"),
    ("a,b\n", "", "no samples after the header line"),
    ("\n\n", "", "empty (expected a label column and feature columns)"),
    ("1\n0\n", "", "line 1: 1 column; expected a label column and at least one feature column"),
    ("y,a\n0,1\n1,2\n", ",label=z", "label=z: no such column; the header has y, a"),
    ("0,1\n1,2\n", ",label=y", "label=y: the file has no header line to find a column name in"),
    ("0,1\n1,2\n", ",label=5", "label=5: expected a column index 0..1"),
    ("0,1.5\n1,0.2\n", "", "features[0, 0] = 1.5: float inputs must lie in [0, 1]"),
    ("0,-1\n1,2\n", "", "features[0, 0] = -1: input codes must be >= 0"),
    ("0,1\n2,2\n", "", "labels: labels must be 0..C-1 with every class present and C >= 2; got 2 "
                       "distinct labels up to 2, missing [1]"),
    ("0,1\n1,2\n", ",sep=;", "unknown option 'sep=;'; csv takes label=..., bits=..."),
])
def test_csv_errors(tmp_path, text, spec, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        data.load_dataset(f"csv:{path}{spec}")
    assert message in str(info.value) and str(path) in str(info.value)


def test_csv_too_few_samples_to_split(tmp_path):
    path = _write_csv(tmp_path / "few.csv", [["0", "1"], ["1", "2"], ["0", "3"], ["1", "1"]])
    with pytest.raises(ValueError, match="cannot split 4 samples in 2 classes 70/10/20"):
        data.load_dataset(f"csv:{path}")


def test_csv_file_errors(tmp_path):
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00")
    for spec, message in [
            (f"csv:{tmp_path / 'nope.csv'}", "does not exist"),
            (f"csv:{tmp_path / 'bin.csv'}", "bin.csv: not a UTF-8 text file"),
            ("csv:", "csv needs a file: --data csv:FILE"),
    ]:
        with pytest.raises(ValueError, match=message):
            data.load_dataset(spec)


def test_fashion_mnist_missing_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", str(tmp_path / "none"))
    with pytest.raises(ValueError, match=r"fashion-mnist: not installed \(mnist: .*none does not "
                                         r"exist\): apt-get install dataset-fashion-mnist"):
        data.load_dataset("fashion-mnist")
    with pytest.raises(ValueError, match="takes no argument"):
        data.load_dataset("fashion-mnist:/tmp")


def test_code_rule_constants():
    assert (datafiles.MIN_BITS, datafiles.DEFAULT_BITS, datafiles.MAX_BITS) == (2, 8, 8)
