"""Files a cocotb test module writes for the process that started it (results, progress),
each written to a temporary name and renamed, so a reader never sees half a file."""

import json
import os

__all__ = ["write_json", "write_progress"]


def write_json(path, obj):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def write_progress(path, done, total):
    """``done total`` in ``path`` (nothing when ``path`` is empty)."""
    if path:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{done} {total}\n")
        os.replace(tmp, path)
