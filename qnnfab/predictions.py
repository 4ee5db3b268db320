"""Per-vector answers written to a file a user can open: ``.npz`` (numpy arrays) or ``.csv``
(one row per vector), chosen by the suffix, written atomically (a half-written file never
appears under the name).

Columns / arrays: ``index``, ``class`` and ``score0 .. scoreN-1`` always; ``label`` when the
vectors are labelled; ``golden_class`` and ``golden_score*`` when a simulation is compared with
the golden model (``qnnfab sim --dump``). In the ``.npz``, scores are one ``(n, outputs)``
array per source (``scores``, ``golden_scores``).
"""

import io
import os

import numpy as np

from . import ir

__all__ = ["SUFFIXES", "check_dump_path", "write_predictions"]

SUFFIXES = (".npz", ".csv")


def check_dump_path(path):
    """ValueError now (before long work) if ``path`` is not a .npz/.csv file in a writable
    folder."""
    path = os.fspath(path)
    if not path.lower().endswith(SUFFIXES):
        raise ValueError(f"{path}: the answers are written as .npz or .csv (by the suffix)")
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a folder; give a file name ending in .npz or .csv")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise ValueError(f"{path}: folder {folder} does not exist or is not writable")


def write_predictions(path, classes, scores, *, labels=None, golden_classes=None,
                      golden_scores=None):
    """Write the answers to ``path`` (``.npz`` or ``.csv``); returns ``path``."""
    check_dump_path(path)
    classes = np.asarray(classes, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.int64).reshape(len(classes), -1)
    arrays = {"index": np.arange(len(classes)), "class": classes, "scores": scores}
    if labels is not None:
        arrays["label"] = np.asarray(labels, dtype=np.int64)
    if golden_classes is not None:
        arrays["golden_class"] = np.asarray(golden_classes, dtype=np.int64)
        arrays["golden_scores"] = np.asarray(golden_scores, dtype=np.int64).reshape(
            scores.shape)
    if os.fspath(path).lower().endswith(".npz"):
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        ir.atomic_write_bytes(path, buf.getvalue())
        return path
    header, columns = [], []
    for name, a in arrays.items():
        if a.ndim == 1:
            header.append(name)
            columns.append(a[:, None])
        else:
            stem = name[:-1]   # scores -> score0, score1, ...
            header += [f"{stem}{j}" for j in range(a.shape[1])]
            columns.append(a)
    table = np.hstack(columns) if columns else np.zeros((0, 0), dtype=np.int64)
    lines = [",".join(header)] + [",".join(str(int(v)) for v in row) for row in table]
    ir.atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path
