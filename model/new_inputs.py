"""New inputs for a trained network (``qnnfab infer``): read a file of samples and turn them
into the network's input codes, the same rule the data sets use
(:func:`qnnfab.model.datafiles.to_codes`: integers are the codes, floats in ``[0, 1]`` become
``round(x · (2**bits − 1))``).

Forms, by content and suffix:

``.npz``
    An array ``x`` (or ``x_test``, or the archive's only array) of samples, and optionally
    labels ``y`` (or ``y_test``): accuracy is then reported.
``.npy``
    One array of samples.
``.csv``
    One sample per line, comma-separated numbers; a first line that is not numbers is a header.
IDX (MNIST's format, plain or gzipped)
    ``(N, H, W)`` images or one ``(H, W)`` image, e.g. ``t10k-images-idx3-ubyte.gz``.
``.pgm``
    One grey image (``P5`` binary or ``P2`` text), for image networks.

A sample is ``(features,)``, ``(H, W)`` or ``(H, W, C)``, flattened row-major; its size must be
the network's ``input_features``. numpy only.
"""

import os
import zipfile

import numpy as np

from .datafiles import to_codes
from .idx import read_idx

__all__ = ["NewInputs", "read_inputs"]


class NewInputs:
    """``codes`` (n, input_features) int64, ``labels`` (n,) or None, ``source`` (what was
    read)."""

    def __init__(self, codes, labels, source):
        self.codes, self.labels, self.source = codes, labels, source


def _read_pgm(path, raw):
    parts, pos = [], 2
    while len(parts) < 3:   # width, height, maxval, with comments and whitespace
        while pos < len(raw) and raw[pos:pos + 1].isspace():
            pos += 1
        if raw[pos:pos + 1] == b"#":
            pos = raw.index(b"\n", pos) + 1
            continue
        end = pos
        while end < len(raw) and not raw[end:end + 1].isspace():
            end += 1
        if end == pos:
            raise ValueError(f"{path}: truncated PGM header")
        parts.append(int(raw[pos:end]))
        pos = end
    width, height, maxval = parts
    if raw[:2] == b"P2":
        values = np.array(raw[pos:].split(), dtype=np.int64)
    else:
        if maxval > 255:
            raise ValueError(f"{path}: 16-bit PGM images are not supported (maxval {maxval})")
        values = np.frombuffer(raw[pos + 1:], dtype=np.uint8).astype(np.int64)
    if values.size != width * height:
        raise ValueError(f"{path}: PGM of {width}x{height} pixels holds {values.size} values")
    return values.reshape(1, height, width)


def _read_csv(path, text):
    rows = [line.strip() for line in text.splitlines() if line.strip()]
    if rows:
        try:
            [float(v) for v in rows[0].split(",")]
        except ValueError:
            rows = rows[1:]   # a header
    try:
        data = [[float(v) for v in line.split(",")] for line in rows]
    except ValueError as exc:
        raise ValueError(f"{path}: expected comma-separated numbers ({exc})") from None
    if not data:
        raise ValueError(f"{path}: no samples")
    widths = {len(r) for r in data}
    if len(widths) > 1:
        raise ValueError(f"{path}: rows have different numbers of values ({sorted(widths)})")
    a = np.array(data)
    return a.astype(np.int64) if np.all(a == np.round(a)) else a


def _read_npz(path):
    try:
        with np.load(path, allow_pickle=False) as f:
            names = list(f.files)
            x_name = next((n for n in ("x", "x_test") if n in names),
                          names[0] if len(names) == 1 else None)
            if x_name is None:
                raise ValueError(f"{path}: expected an array named x (or x_test, or a single "
                                 f"array), has {', '.join(names) or 'none'}")
            y_name = next((n for n in ("y", "y_test") if n in names), None)
            return f[x_name], (None if y_name is None else f[y_name])
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from None


def _read_any(path):
    with open(path, "rb") as f:
        head = f.read(8)
    lower = path.lower()
    if lower.endswith((".png", ".jpg", ".jpeg", ".bmp", ".gif")):
        raise ValueError(f"{path}: image files other than PGM are not read (no imaging "
                         f"library): save it as .pgm, or as an array in .npz/.npy")
    if head[:6] == b"\x93NUMPY":
        return np.load(path, allow_pickle=False), None
    if head[:2] == b"PK":
        return _read_npz(path)
    if head[:2] in (b"P5", b"P2"):
        with open(path, "rb") as f:
            return _read_pgm(path, f.read()), None
    if head[:2] in (b"\x00\x00", b"\x1f\x8b"):
        return read_idx(path), None
    if lower.endswith((".csv", ".txt")):
        with open(path, encoding="utf-8", errors="replace") as f:
            return _read_csv(path, f.read()), None
    raise ValueError(f"{path}: unknown input form; expected .npz, .npy, .csv, an IDX file "
                     f"(MNIST format, plain or .gz) or a .pgm image")


def read_inputs(path, network):
    """The samples in ``path`` as the network's input codes (:class:`NewInputs`); ValueError
    naming the file and what is wrong (form, shape, values)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file" if not os.path.exists(path)
                         else f"{path}: not a regular file")
    x, y = _read_any(path)
    x = np.asarray(x)
    features = network.input_features
    shape = getattr(network, "input_shape", None)
    if x.size == features:   # one sample
        x = x.reshape(1, features)
    elif x.ndim >= 2 and int(np.prod(x.shape[1:])) == features:
        x = x.reshape(len(x), features)
    else:
        want = f"{features}" + (f" ({shape[0]}x{shape[1]}x{shape[2]})" if shape else "")
        raise ValueError(f"{path}: samples of shape {x.shape[1:] if x.ndim > 1 else x.shape} "
                         f"({int(np.prod(x.shape[1:])) if x.ndim > 1 else x.size} values); "
                         f"the network takes {want} input codes per sample")
    if x.dtype.kind == "u":
        x = x.astype(np.int64)
    codes, _ = to_codes({"x": x}, network.input_bits, where=path)
    labels = None
    if y is not None:
        y = np.asarray(y)
        if y.shape != (len(x),) or y.dtype.kind not in "iu":
            raise ValueError(f"{path}: labels: expected {len(x)} integer labels, got "
                             f"{y.dtype} of shape {y.shape}")
        labels = y.astype(np.int64)
    return NewInputs(codes["x"], labels, f"{len(x)} samples from {path}")
