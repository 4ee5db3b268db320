"""IDX reader and the ``mnist:DIR`` data set, on small IDX files written here."""

import gzip
import os
import re
import struct
from types import SimpleNamespace

import numpy as np
import pytest

from qnnfab.model import vectors
from qnnfab.model import data
from qnnfab.model.idx import read_idx

SEED = 1234
N_TRAIN, N_TEST, ROWS, COLS = 120, 30, 6, 5
BIG_ENDIAN = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def idx_bytes(a, code=0x08):
    """IDX encoding of ``a``, written independently of the reader."""
    a = np.asarray(a)
    head = bytes([0, 0, code, a.ndim]) + b"".join(struct.pack(">I", s) for s in a.shape)
    return head + a.astype(BIG_ENDIAN[code]).tobytes()


def write(path, raw, gz=False):
    path.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
    return path


def mnist_arrays(seed=SEED):
    rng = np.random.default_rng(seed)
    return {
        "train images": rng.integers(0, 256, (N_TRAIN, ROWS, COLS), dtype=np.uint8),
        "train labels": rng.permutation(np.repeat(np.arange(10), N_TRAIN // 10)).astype(np.uint8),
        "test images": rng.integers(0, 256, (N_TEST, ROWS, COLS), dtype=np.uint8),
        "test labels": rng.integers(0, 10, N_TEST).astype(np.uint8),
    }


# Per role: gzipped?, alternative spelling (train-images.idx3-ubyte)?
LAYOUT = {"train images": (True, True), "train labels": (False, False),
          "test images": (False, False), "test labels": (True, False)}


def write_mnist(folder, arrays, raw=None):
    """The four files in ``folder`` as :data:`LAYOUT` says; ``raw`` overrides a role's bytes."""
    folder.mkdir(exist_ok=True)
    paths = {}
    for role, base in data.MNIST_FILES.items():
        gz, alt = LAYOUT[role]
        name = (base.replace("-idx", ".idx") if alt else base) + (".gz" if gz else "")
        content = (raw or {}).get(role)
        paths[role] = write(folder / name, idx_bytes(arrays[role]) if content is None
                            else content, gz)
    return paths


@pytest.fixture
def mnist(tmp_path):
    arrays = mnist_arrays()
    paths = write_mnist(tmp_path / "mnist", arrays)
    return SimpleNamespace(dir=tmp_path / "mnist", arrays=arrays, paths=paths)


# --- read_idx ---------------------------------------------------------------------------------

@pytest.mark.parametrize("code", sorted(BIG_ENDIAN))
@pytest.mark.parametrize("shape", [(7,), (3, 4, 2)])
def test_read_idx_types_and_shapes(tmp_path, code, shape):
    rng = np.random.default_rng([SEED, code, len(shape)])
    lo, hi = (0, 256) if code == 0x08 else (-128, 128)
    want = rng.integers(lo, hi, shape).astype(BIG_ENDIAN[code])
    if code in (0x0D, 0x0E):
        want = want + rng.random(shape).astype(want.dtype)
    got = read_idx(write(tmp_path / "a", idx_bytes(want, code)))
    assert got.shape == shape and got.dtype == want.dtype.newbyteorder("=")
    assert got.dtype.isnative and got.flags.writeable
    assert np.array_equal(got, want)


@pytest.mark.parametrize("name,gz", [("plain", False), ("plain.gz", False),
                                     ("zipped", True), ("zipped.gz", True)])
def test_read_idx_gzip_by_magic_not_suffix(tmp_path, name, gz):
    want = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    got = read_idx(write(tmp_path / name, idx_bytes(want), gz))
    assert got.dtype == np.uint8 and np.array_equal(got, want)


def test_read_idx_empty(tmp_path):
    got = read_idx(write(tmp_path / "e", idx_bytes(np.zeros((0, 3), np.uint8))))
    assert got.shape == (0, 3)


GOOD = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
GZ = gzip.compress(GOOD, mtime=0)  # no timestamp: the same test ids in every process


@pytest.mark.parametrize("raw,gz,match", [
    (b"\x00\x01" + GOOD[2:], False, "bad magic 00 01 08 03"),
    (b"\x08\x03", False, r"truncated header: expected at least 4 bytes, got 2"),
    (GOOD[:2] + b"\x0a" + GOOD[3:], False, "unsupported type code 0x0A; known: 0x08 uint8"),
    (GOOD[:3] + b"\x00" + GOOD[4:], False, "bad header: 0 dimensions"),
    (GOOD[:12], False, "truncated header: expected 16 bytes for 3 dimensions, got 12"),
    (GOOD[:-5], False, r"truncated data: expected 24 bytes for shape \(2, 3, 4\) of uint8, "
                       "got 19"),
    (GOOD + b"\x00\x00", False, "2 trailing bytes after the 24 bytes of data"),
    (GOOD[:-1], True, "truncated data: expected 24 bytes"),
    (GZ[:len(GZ) // 2], False, "corrupt gzip data"),
    (GZ[:12] + bytes(b ^ 0x55 for b in GZ[12:-8]) + GZ[-8:], False, "corrupt gzip data"),
    (GZ[:-4] + b"\xff\xff\xff\xff", False, "corrupt gzip data"),
])
def test_read_idx_rejects(tmp_path, raw, gz, match):
    path = write(tmp_path / "bad-idx3-ubyte", raw, gz)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": " + match):
        read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


# --- mnist:DIR --------------------------------------------------------------------------------

def rows(x, y):
    return sorted(map(tuple, np.column_stack([x, y]).tolist()))


def test_mnist_loads_what_was_written(mnist):
    ds = data.load_dataset("mnist:" + str(mnist.dir), seed=3)
    a = mnist.arrays
    assert ds.name == "mnist:" + str(mnist.dir) and ds.seed == 3
    assert ds.input_bits == data.MNIST_INPUT_BITS == 8
    assert ds.classes == tuple("0123456789") and ds.n_features == ROWS * COLS
    n_val = round(0.1 * N_TRAIN)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (N_TRAIN - n_val, n_val, N_TEST)
    for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)):
        assert x.dtype == np.int64 and y.dtype == np.int64 and x.shape == (len(y), ROWS * COLS)
    # Test split: the t10k files in order, pixels flattened row-major.
    assert np.array_equal(ds.x_test, a["test images"].reshape(N_TEST, ROWS * COLS))
    assert np.array_equal(ds.x_test[:, COLS], a["test images"][:, 1, 0])
    assert np.array_equal(ds.y_test, a["test labels"])
    # Train + val: exactly the training file's (pixels, label) rows.
    got = rows(np.concatenate([ds.x_train, ds.x_val]), np.concatenate([ds.y_train, ds.y_val]))
    assert got == rows(a["train images"].reshape(N_TRAIN, -1), a["train labels"])
    # Stratified: 12 of each class in the training file, so 1.2 of each in val.
    assert np.all(np.abs(np.bincount(ds.y_val, minlength=10) - 1.2) < 1), ds.y_val


def test_mnist_split_is_deterministic_and_seeded(mnist):
    name = "mnist:" + str(mnist.dir)
    a, b, c = (data.load_dataset(name, seed=s) for s in (0, 0, 1))
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert not np.array_equal(a.x_val, c.x_val)
    assert np.array_equal(a.x_test, c.x_test)


def test_mnist_name_is_absolute_and_reloads_elsewhere(mnist, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ds = data.load_dataset("mnist:mnist/", seed=2)
    assert ds.name == "mnist:" + str(mnist.dir)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    again = data.load_dataset(ds.name, seed=2)
    assert np.array_equal(again.x_val, ds.x_val)
    network = SimpleNamespace(meta={"data": {"name": ds.name, "split_seed": 2}},
                              input_features=ROWS * COLS)
    vec = vectors.test_vectors(network, 7)
    assert np.array_equal(vec.codes, ds.x_test[:7]) and np.array_equal(vec.labels, ds.y_test[:7])


def test_mnist_cache_hits_and_sees_changed_files(mnist):
    name = "mnist:" + str(mnist.dir)
    first = data.load_dataset(name)
    hits = data._mnist_arrays.cache_info().hits
    assert np.array_equal(data.load_dataset(name).x_test, first.x_test)
    assert data._mnist_arrays.cache_info().hits == hits + 1
    # Rewrite the test labels (gzipped) with new content and a new modification time.
    new = (mnist.arrays["test labels"] + 1) % 10
    path = mnist.paths["test labels"]
    write(path, idx_bytes(new), gz=True)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert np.array_equal(data.load_dataset(name).y_test, new)


@pytest.mark.parametrize("name", ["mnist", "mnist:"])
def test_mnist_needs_a_folder(name):
    with pytest.raises(ValueError, match="^mnist needs a folder: --data mnist:DIR$"):
        data.load_dataset(name)


def test_mnist_folder_not_there(tmp_path):
    with pytest.raises(ValueError, match=re.escape(f"mnist: {tmp_path / 'no'} does not exist")):
        data.load_dataset(f"mnist:{tmp_path / 'no'}")
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'file'} is not a folder")):
        data.load_dataset(f"mnist:{tmp_path / 'file'}")


def test_mnist_missing_files_in_one_error(mnist):
    mnist.paths["train labels"].unlink()
    mnist.paths["test images"].unlink()
    with pytest.raises(ValueError) as e:
        data.load_dataset("mnist:" + str(mnist.dir))
    msg = str(e.value)
    assert msg.startswith(f"mnist: missing in folder {mnist.dir}: ")
    for name in ("train-labels-idx1-ubyte", "train-labels-idx1-ubyte.gz",
                 "train-labels.idx1-ubyte", "t10k-images-idx3-ubyte.gz"):
        assert name in msg
    assert "train-images" not in msg and "t10k-labels" not in msg


def test_mnist_bad_seed(mnist):
    with pytest.raises(ValueError, match="split seed"):
        data.load_dataset("mnist:" + str(mnist.dir), seed=-1)


def _arrays(**change):
    a = mnist_arrays()
    for role, f in change.items():
        a[role.replace("_", " ")] = f(a[role.replace("_", " ")])
    return a


@pytest.mark.parametrize("arrays,raw,role,match", [
    (_arrays(train_images=lambda x: x.reshape(N_TRAIN, -1)), None, "train images",
     r"images must be 3-D \(count, rows, columns\), got shape \(120, 30\)"),
    (_arrays(test_labels=lambda y: y[:, None]), None, "test labels",
     r"labels must be 1-D \(count,\), got shape \(30, 1\)"),
    (_arrays(train_labels=lambda y: y[:-1]), None, "train labels",
     "119 labels for the 120 images of .*train-images.idx3-ubyte.gz"),
    (_arrays(test_images=lambda x: x.reshape(N_TEST, COLS, ROWS)), None, "test images",
     "images are 5x6 pixels, those of .*train-images.idx3-ubyte.gz are 6x5"),
    (_arrays(train_labels=lambda y: np.where(y == 3, 4, y)), None, "train labels",
     r"labels must be 0..C-1 .*; got 9 distinct labels up to 9, missing \[3\]"),
    (_arrays(train_labels=lambda y: np.zeros_like(y)), None, "train labels",
     "labels must be 0..C-1 .* and C >= 2; got 1 distinct labels up to 0$"),
    (_arrays(test_labels=lambda y: np.where(y == 0, 10, y)), None, "test labels",
     "label 10 is outside the training classes 0..9"),
    (_arrays(train_labels=lambda y: np.repeat(np.arange(10, dtype=np.uint8), 2),
             train_images=lambda x: x[:20]), None,
     "train labels", "cannot hold out a stratified validation split of 2 of 20 images in 10 "
                     "classes"),
    (_arrays(test_images=lambda x: x[:0], test_labels=lambda y: y[:0]), None, "test images",
     "no images"),
    (mnist_arrays(), {"train images": idx_bytes(mnist_arrays()["train images"], 0x0C)},
     "train images", "images must be unsigned bytes .type 0x08., got int32"),
    (mnist_arrays(), {"test labels": idx_bytes(mnist_arrays()["test labels"])[:-3]},
     "test labels", "truncated data: expected 30 bytes"),
])
def test_mnist_rejects(tmp_path, arrays, raw, role, match):
    paths = write_mnist(tmp_path / "m", arrays, raw)
    with pytest.raises(ValueError, match=re.escape(str(paths[role])) + ": " + match):
        data.load_dataset(f"mnist:{tmp_path / 'm'}")
