"""Readers for a user's own data files: ``npz:FILE`` and ``csv:FILE`` (:mod:`qnnfab.model.data`).

Both give input *codes*, the unsigned integers the network's first layer takes, by one rule:

* **Integer** features (any numpy integer or bool dtype; in a CSV, fields without ``.``, ``e``
  or ``n``) are the codes themselves. They must be ``>= 0``; the input width is the bits of the
  largest code in the file (at least 2), or ``bits=K`` (2..8) when given.
* **Float** features must lie in ``[0, 1]`` and are quantized to ``K``-bit codes
  ``floor(x · (2**K − 1) + 0.5)``, ``K = bits`` (default 8, so ``x = v / 255`` comes back as
  ``v``).

A 1-bit input code would mean ``±1`` in qnnfab's numerics, so inputs are never narrower than 2
bits (0/1 features are 2-bit codes 0 and 1). Codes wider than 8 bits are refused (scale them).

Labels are integers ``0 .. C−1`` (every class present in the training data), or text (CSV
fields, numpy string arrays), which become the classes in sorted order.

``npz:FILE``
    A numpy ``.npz`` (``np.savez``) with arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``
    and optionally ``x_val``, ``y_val`` (both or neither) and ``classes`` (one name per class).
    Inputs are ``(N, F)``, ``(N, H, W)`` or ``(N, H, W, C)``; images are flattened
    ``(y, x, c)`` and their shape ``(H, W, C)`` (``C = 1`` for 3-D arrays) is the network's
    input shape.
``csv:FILE``
    Comma-separated values, one sample per line; the first line is a header when it holds
    text where the second line has a number. The label column is ``label=first`` (default),
    ``label=last``, ``label=N`` (a 0-based column index) or ``label=NAME`` (a header name); every
    other column is a feature.
    The file holds all samples; :mod:`qnnfab.model.data` splits them.

Options follow the path, comma-separated: ``npz:data.npz,bits=4``,
``csv:iris.csv,label=last,bits=6`` (so a path itself cannot contain a comma).

Errors are ValueErrors naming the file, the array or line and column, and what was expected.
numpy only.
"""

import csv
import os
import zipfile
from dataclasses import dataclass

import numpy as np

__all__ = ["FileData", "parse_file_spec", "read_npz", "read_csv", "to_codes", "DEFAULT_BITS",
           "MIN_BITS", "MAX_BITS", "NPZ_ARRAYS"]

#: Bits of the codes float features are quantized to unless ``bits=K`` says otherwise.
DEFAULT_BITS = 8
#: Narrowest input codes (a 1-bit code means ±1).
MIN_BITS = 2
#: Widest input codes (:data:`qnnfab.ir.MAX_ACTIVATION_BITS`).
MAX_BITS = 8

#: The arrays an npz file may hold: name -> required.
NPZ_ARRAYS = {"x_train": True, "y_train": True, "x_test": True, "y_test": True,
              "x_val": False, "y_val": False, "classes": False}

#: Options each file kind takes.
_OPTIONS = {"npz": ("bits",), "csv": ("label", "bits")}


@dataclass(frozen=True, eq=False)
class FileData:
    """What a file holds, as codes.

    Attributes
    ----------
    x_train, y_train : ndarray
        int64 codes ``(n, features)`` and int64 class indices ``(n,)`` (for a CSV file: every
        sample).
    x_val, y_val, x_test, y_test : ndarray or None
        Further splits when the file has them.
    classes : tuple of str
    input_bits : int
    input_shape : tuple (H, W, C) or None
        The image shape when the file's arrays have one.
    """
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: "np.ndarray | None"
    y_val: "np.ndarray | None"
    x_test: "np.ndarray | None"
    y_test: "np.ndarray | None"
    classes: tuple
    input_bits: int
    input_shape: "tuple | None"


def parse_file_spec(kind, arg):
    """``(path, options)`` of ``kind:PATH[,key=value...]``'s ``arg``; ``path`` made absolute
    (``~`` expanded), ``options`` a dict of the given options (strings)."""
    if not arg:
        raise ValueError(f"{kind} needs a file: --data {kind}:FILE")
    path, *opts = arg.split(",")
    options = {}
    for opt in opts:
        key, eq, value = opt.partition("=")
        key = key.strip()
        if not eq or key not in _OPTIONS[kind] or not value.strip():
            raise ValueError(f"{kind}:{arg}: unknown option {opt!r}; {kind} takes "
                             + ", ".join(f"{k}=..." for k in _OPTIONS[kind])
                             + " (a path cannot contain a comma)")
        if key in options:
            raise ValueError(f"{kind}:{arg}: option {key} given twice")
        options[key] = value.strip()
    if not path.strip():
        raise ValueError(f"{kind}:{arg}: no file name")
    return os.path.abspath(os.path.expanduser(path.strip())), options


def _bits_option(where, text):
    if text is None:
        return None
    try:
        bits = int(text)
    except ValueError:
        bits = None
    if bits is None or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"{where}: bits={text}: expected an integer {MIN_BITS}..{MAX_BITS} "
                         f"(a 1-bit input code would mean ±1)")
    return bits


def to_codes(arrays, bits=None, *, where):
    """Input arrays (dict name -> ndarray, all integer or all float) as int64 codes.

    Returns ``(codes, bits)``: ``codes`` a dict like ``arrays``. Integers are the codes
    (``>= 0``; ``bits`` None: the bits of the largest, at least :data:`MIN_BITS`); floats in
    ``[0, 1]`` become ``floor(x · (2**bits − 1) + 0.5)`` (``bits`` None: :data:`DEFAULT_BITS`).
    ``where`` (the file) starts every error message.
    """
    kinds = {name: ("int" if a.dtype == bool or np.issubdtype(a.dtype, np.integer) else
                    "float" if np.issubdtype(a.dtype, np.floating) else None)
             for name, a in arrays.items()}
    for name, kind in kinds.items():
        if kind is None:
            raise ValueError(f"{where}: {name}: expected numbers (integer codes, or floats in "
                             f"[0, 1]), got dtype {arrays[name].dtype}")
    if len(set(kinds.values())) > 1:
        desc = ", ".join(f"{n} {arrays[n].dtype}" for n in arrays)
        raise ValueError(f"{where}: inputs mix integer codes and floats ({desc}); give all "
                         f"splits the same kind")
    if next(iter(kinds.values())) == "float":
        bits = DEFAULT_BITS if bits is None else bits
        top = (1 << bits) - 1
        codes = {}
        for name, a in arrays.items():
            bad = ~(np.isfinite(a) & (a >= 0) & (a <= 1))
            if bad.any():
                i = np.unravel_index(int(np.argmax(bad)), a.shape)
                at = [int(v) for v in i]
                raise ValueError(f"{where}: {name}{at} = {float(a[i])!r}: float inputs must "
                                 f"lie in [0, 1] (they are quantized to {bits}-bit codes "
                                 f"round(x * {top})); scale them, or store integer codes")
            codes[name] = np.floor(a.astype(np.float64) * top + 0.5).astype(np.int64)
        return codes, bits
    codes = {name: a.astype(np.int64) for name, a in arrays.items()}
    for name, a in codes.items():
        if a.size and a.min() < 0:
            i = np.unravel_index(int(np.argmin(a)), a.shape)
            at = [int(v) for v in i]
            raise ValueError(f"{where}: {name}{at} = {int(a[i])}: input codes must be >= 0 "
                             f"(unsigned)")
    top = max((int(a.max()) for a in codes.values() if a.size), default=0)
    need = max(MIN_BITS, top.bit_length())
    if need > MAX_BITS:
        name = next(n for n, a in codes.items() if a.size and int(a.max()) == top)
        raise ValueError(f"{where}: {name}: codes up to {top} need {need} bits; inputs have "
                         f"at most {MAX_BITS} (scale them to 0..{(1 << MAX_BITS) - 1}, or store "
                         f"floats in [0, 1])")
    if bits is not None and need > bits:
        name = next(n for n, a in codes.items() if a.size and int(a.max()) == top)
        raise ValueError(f"{where}: {name}: code {top} does not fit bits={bits} "
                         f"(0..{(1 << bits) - 1})")
    return codes, need if bits is None else bits


def _labels(ys, names, *, where):
    """Label arrays (dict split -> ndarray) as int64 class indices, and the class names.

    ``names``: the file's class names (or None). The first split is the training one: integer
    labels must be 0..C−1 with every class present there; text labels' classes are its sorted
    distinct values."""
    first = next(iter(ys))
    train = ys[first]
    text = train.dtype.kind in "US"
    out = {}
    for split, y in ys.items():
        if (y.dtype.kind in "US") != text or not (text or y.dtype == bool
                                                  or np.issubdtype(y.dtype, np.integer)):
            raise ValueError(f"{where}: {split}: labels must be integers 0..C-1 (or text, in "
                             f"every split), got dtype {y.dtype}"
                             + (" (convert with y.astype(int))"
                                if np.issubdtype(y.dtype, np.floating) else ""))
    if text:
        classes = tuple(sorted(set(train.tolist())))
        index = {c: i for i, c in enumerate(classes)}
        for split, y in ys.items():
            unknown = sorted(set(y.tolist()) - set(classes))
            if unknown:
                raise ValueError(f"{where}: {split}: label {unknown[0]!r} is not among the "
                                 f"classes of {first}: {', '.join(classes[:10])}")
            out[split] = np.array([index[v] for v in y.tolist()], dtype=np.int64)
        if names is not None:
            raise ValueError(f"{where}: classes: text labels name their classes themselves; "
                             f"leave classes out")
        return out, classes
    out = {split: y.astype(np.int64) for split, y in ys.items()}
    labels = np.unique(out[first])
    if labels.size and labels[0] < 0:
        raise ValueError(f"{where}: {first}: label {int(labels[0])}: labels must be 0..C-1")
    n_classes = int(labels[-1]) + 1 if labels.size else 0
    missing = sorted(set(range(n_classes)) - set(labels.tolist()))
    if n_classes < 2 or missing:
        raise ValueError(f"{where}: {first}: labels must be 0..C-1 with every class present and "
                         f"C >= 2; got {len(labels)} distinct labels up to {n_classes - 1}"
                         + (f", missing {missing[:10]}" if missing else ""))
    for split, y in out.items():
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            bad = int(y.min()) if y.min() < 0 else int(y.max())
            raise ValueError(f"{where}: {split}: label {bad} is outside the classes "
                             f"0..{n_classes - 1} of {first}")
    if names is None:
        return out, tuple(str(c) for c in range(n_classes))
    names = tuple(str(n) for n in names.tolist())
    if len(names) != n_classes:
        raise ValueError(f"{where}: classes: {len(names)} names for {n_classes} classes "
                         f"(labels 0..{n_classes - 1})")
    return out, names


# -- npz ---------------------------------------------------------------------------------------

def _load_npz_arrays(path):
    if not os.path.exists(path):
        raise ValueError(f"npz: {path} does not exist")
    if not os.path.isfile(path):
        raise ValueError(f"npz: {path} is not a file")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY":
        raise ValueError(f"{path}: a single .npy array, not an .npz archive of x_train, "
                         f"y_train, x_test, y_test (np.savez)")
    if magic[:2] != b"PK":
        raise ValueError(f"{path}: not an .npz file (the zip archive np.savez writes; it starts "
                         f"with {magic[:4].hex(' ') or 'nothing'}, not 50 4b)")
    try:
        with np.load(path, allow_pickle=False) as f:
            names = list(f.files)
            unknown = [n for n in names if n not in NPZ_ARRAYS]
            if unknown:
                raise ValueError(f"{path}: unexpected array {unknown[0]!r}; an npz data file "
                                 f"holds x_train, y_train, x_test, y_test and optionally x_val, "
                                 f"y_val, classes")
            missing = [n for n, required in NPZ_ARRAYS.items() if required and n not in names]
            if missing:
                raise ValueError(f"{path}: missing array {missing[0]!r} (has "
                                 f"{', '.join(names) or 'none'}); expected x_train, y_train, "
                                 f"x_test, y_test and optionally x_val, y_val, classes")
            arrays = {}
            for n in names:
                try:
                    arrays[n] = f[n]
                except ValueError as exc:  # object arrays need pickle
                    raise ValueError(f"{path}: {n}: cannot be read without pickle ({exc}); "
                                     f"store numbers (or strings for labels and classes)") \
                        from None
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from None
    if ("x_val" in arrays) != ("y_val" in arrays):
        have, lack = ("x_val", "y_val") if "x_val" in arrays else ("y_val", "x_val")
        raise ValueError(f"{path}: has {have} but not {lack}; give both or neither")
    return arrays


def read_npz(path, *, bits=None):
    """The splits in npz file ``path`` as codes (:class:`FileData`). ``bits``: see the module
    docstring (None: from the data)."""
    path = os.fspath(path)
    bits = _bits_option(path, bits)
    arrays = _load_npz_arrays(path)
    splits = ["train", "val", "test"] if "x_val" in arrays else ["train", "test"]
    shape = None
    for s in splits:
        x, y = arrays[f"x_{s}"], arrays[f"y_{s}"]
        if x.ndim not in (2, 3, 4) or 0 in x.shape[1:]:
            raise ValueError(f"{path}: x_{s}: expected shape (N, features), (N, H, W) or "
                             f"(N, H, W, C), got {x.shape}")
        if y.ndim != 1:
            raise ValueError(f"{path}: y_{s}: labels must be 1-D (N,), got shape {y.shape}")
        if len(x) != len(y):
            raise ValueError(f"{path}: y_{s}: {len(y)} labels for the {len(x)} inputs of "
                             f"x_{s}")
        if len(x) == 0:
            raise ValueError(f"{path}: x_{s}: no samples")
        if shape is None:
            shape = x.shape[1:]
        elif x.shape[1:] != shape:
            raise ValueError(f"{path}: x_{s}: samples of shape {x.shape[1:]}, those of x_train "
                             f"are {shape}")
    names = arrays.get("classes")
    if names is not None and (names.ndim != 1 or names.dtype.kind not in "USiu"):
        raise ValueError(f"{path}: classes: expected a 1-D array of names, got "
                         f"{names.dtype} of shape {names.shape}")
    codes, bits = to_codes({f"x_{s}": arrays[f"x_{s}"] for s in splits}, bits, where=path)
    labels, classes = _labels({f"y_{s}": arrays[f"y_{s}"] for s in splits}, names, where=path)
    image = None
    if len(shape) >= 2:
        image = (int(shape[0]), int(shape[1]), int(shape[2]) if len(shape) == 3 else 1)

    def get(d, key):
        a = d.get(key)
        return None if a is None else a.reshape(len(a), -1)
    return FileData(x_train=get(codes, "x_train"), y_train=labels["y_train"],
                    x_val=get(codes, "x_val"), y_val=labels.get("y_val"),
                    x_test=get(codes, "x_test"), y_test=labels["y_test"], classes=classes,
                    input_bits=bits, input_shape=image)


# -- csv ---------------------------------------------------------------------------------------

def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _label_column(where, label, header, n_columns):
    """0-based index of the label column for option ``label``."""
    if label in (None, "first"):
        return 0
    if label == "last":
        return n_columns - 1
    try:
        index = int(label)
    except ValueError:
        index = None
    if index is not None:
        if not 0 <= index < n_columns:
            raise ValueError(f"{where}: label={label}: expected a column index "
                             f"0..{n_columns - 1}")
        return index
    if header is None:
        raise ValueError(f"{where}: label={label}: the file has no header line to find a "
                         f"column name in; give label=first, last or a 0-based index")
    if label not in header:
        raise ValueError(f"{where}: label={label}: no such column; the header has "
                         f"{', '.join(header[:8])}{', ...' if len(header) > 8 else ''}")
    return header.index(label)


def read_csv(path, *, label=None, bits=None):
    """Every sample of CSV file ``path`` as codes (:class:`FileData`, all in ``x_train``,
    ``y_train``). ``label``, ``bits``: see the module docstring."""
    path = os.fspath(path)
    bits = _bits_option(path, bits)
    if not os.path.exists(path):
        raise ValueError(f"csv: {path} does not exist")
    if not os.path.isfile(path):
        raise ValueError(f"csv: {path} is not a file")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [(n, [v.strip() for v in row]) for n, row in enumerate(csv.reader(f), 1)
                    if row and any(v.strip() for v in row)]
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a UTF-8 text file ({exc.reason} at byte "
                         f"{exc.start})") from None
    except csv.Error as exc:
        raise ValueError(f"{path}: not a CSV file ({exc})") from None
    if not rows:
        raise ValueError(f"{path}: empty (expected a label column and feature columns)")
    header = None
    first_line, first = rows[0]
    # A header: the first line has text where the second has a number (text labels are text
    # on every line).
    second = rows[1][1] if len(rows) > 1 else [""] * len(first)
    if any(not _is_number(a) and _is_number(b) for a, b in zip(first, second)) \
            or len(rows) == 1 and not all(_is_number(v) for v in first):
        header, rows = first, rows[1:]
    n_columns = len(first)
    if n_columns < 2:
        raise ValueError(f"{path}: line {first_line}: {n_columns} column; expected a label "
                         f"column and at least one feature column")
    column = _label_column(path, label, header, n_columns)
    if not rows:
        raise ValueError(f"{path}: no samples after the header line")
    for line, row in rows:
        if len(row) != n_columns:
            raise ValueError(f"{path}: line {line}: {len(row)} fields, expected {n_columns} "
                             f"(as in line {first_line})")
    features = [[v for j, v in enumerate(row) if j != column] for _, row in rows]
    try:
        x = np.array(features, dtype=np.float64)
    except ValueError:
        for (line, row) in rows:
            for j, v in enumerate(row):
                if j != column and not _is_number(v):
                    raise ValueError(f"{path}: line {line}, column {j}: {v!r} is not a number "
                                     f"(features must be numbers)") from None
        raise
    raw = "".join("".join(r) for r in features)
    if not set(raw) & set(".eEnNiI"):  # integer text: codes as written
        x = x.astype(np.int64)
    y_text = [row[column] for _, row in rows]
    try:
        y = np.array([int(v) for v in y_text], dtype=np.int64)
    except ValueError:
        y = np.array(y_text)
    codes, bits = to_codes({"features": x}, bits, where=path)
    labels, classes = _labels({"labels": y}, None, where=path)
    return FileData(x_train=codes["features"], y_train=labels["labels"], x_val=None, y_val=None,
                    x_test=None, y_test=None, classes=classes, input_bits=bits,
                    input_shape=None)
