"""Files a cocotb test module writes for the process that started it (results, progress),
each written to a temporary name and renamed, so a reader never sees half a file."""

import json
import os

__all__ = ["write_json", "write_progress", "progress_writer"]


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


def progress_writer(path, total):
    """A callable(done) that writes ``done total`` to ``path`` about a hundred times over a
    run (every ``total // 100`` items, at least every item)."""
    every = max(1, total // 100)

    def write(done):
        if done % every == 0:
            write_progress(path, done, total)
    return write
