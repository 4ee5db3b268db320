"""Where simulator builds are cached, and the small helpers every cached build uses.

A cache root holds one folder per build, ``<root>/<kind>-<hash>``, finished when it holds a
``qnnfab-build.json`` stamp; a build is made under an exclusive ``flock`` on
``<root>/<kind>-<hash>.lock`` (so pytest-xdist workers and parallel fuzz workers build each
design once), and :func:`prune` deletes the least recently used folders past
:data:`KEEP_BUILDS` once they have not been used for a day. Used by the cocotb builds
(:func:`qnnfab.sim.runner.build_cached`) and the bulk Verilator builds
(:func:`qnnfab.sim.verilator_bulk.build_bulk`); :mod:`qnnfab.sim.runner` re-exports these
names.
"""

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from pathlib import Path

__all__ = ["STAMP", "KEEP_BUILDS", "default_cache_dir", "file_lock", "log_tail", "prune"]

#: The file that marks a finished build folder (its mtime: when the build was last used).
STAMP = "qnnfab-build.json"
#: Cached builds kept per cache root; older ones unused for a day are deleted.
KEEP_BUILDS = 16


def default_cache_dir():
    """Root of cached simulator builds: ``$QNNFAB_SIM_CACHE``, else
    ``$XDG_CACHE_HOME/qnnfab/sim`` (``~/.cache/qnnfab/sim``), else a folder in the temp dir."""
    env = os.environ.get("QNNFAB_SIM_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    root = Path(base) / "qnnfab" / "sim"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if os.access(root, os.W_OK):
            return root
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / f"qnnfab-sim-{os.getuid()}"


@contextlib.contextmanager
def file_lock(path):
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block:
    serializes builds of one cache entry across processes (pytest-xdist workers)."""
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def log_tail(path, lines=40):
    """The last ``lines`` lines of a log file (for error messages)."""
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def prune(root, keep):
    """Delete build folders of ``root`` past the :data:`KEEP_BUILDS` most recently used that
    have not been used for a day (never ``keep``, the folder just built)."""
    stamps = []
    for stamp in Path(root).glob(f"*-*/{STAMP}"):
        with contextlib.suppress(OSError):
            stamps.append((stamp.stat().st_mtime, stamp.parent))
    stamps.sort(reverse=True)
    now = time.time()
    for mtime, folder in stamps[KEEP_BUILDS:]:
        if folder != keep and now - mtime > 24 * 3600:
            shutil.rmtree(folder, ignore_errors=True)
