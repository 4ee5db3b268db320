"""Find Icarus Verilog (``iverilog`` + ``vvp``) for cocotb simulations.

Icarus is not on PyPI; it comes from the system package manager. cocotb 2 needs Icarus 11 or
newer. :func:`find_icarus` raises :class:`~qnnfab.sim.verilator_env.ToolNotFoundError` naming
``apt-get install iverilog`` when it is missing or too old.
"""

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .verilator_env import ToolNotFoundError

__all__ = ["IcarusInstall", "find_icarus", "MIN_ICARUS_VERSION", "ToolNotFoundError"]

#: Oldest Icarus release cocotb 2 supports.
MIN_ICARUS_VERSION = (11, 0)

_HOW = ("install it with `sudo apt-get install iverilog` (Debian/Ubuntu; `brew install "
        "icarus-verilog` on macOS), or build it from https://github.com/steveicarus/iverilog")


@dataclass(frozen=True)
class IcarusInstall:
    """Paths of ``iverilog`` and ``vvp`` and the version line, e.g. ``"Icarus Verilog version
    11.0 (stable)"``."""
    iverilog: Path
    vvp: Path
    version: str


_cache = {}


def find_icarus():
    """``iverilog`` and ``vvp`` from ``PATH``, checked to run and to be version >= 11.

    Raises :class:`ToolNotFoundError` (a ``RuntimeError``) with install instructions otherwise.
    The result is cached per process.
    """
    if "install" in _cache:
        return _cache["install"]
    found = {name: shutil.which(name) for name in ("iverilog", "vvp")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise ToolNotFoundError(f"Icarus Verilog not found ({' and '.join(missing)} not on "
                                f"PATH); {_HOW}")
    try:
        out = subprocess.run([found["iverilog"], "-V"], capture_output=True, text=True,
                             timeout=60)
    except OSError as exc:
        raise ToolNotFoundError(f"Icarus Verilog at {found['iverilog']} does not run ({exc}); "
                                f"{_HOW}") from exc
    line = (out.stdout or out.stderr).strip().splitlines()
    line = line[0] if line else ""
    match = re.search(r"version (\d+)\.(\d+)", line)
    if match is None:
        raise ToolNotFoundError(f"could not read the Icarus Verilog version from "
                                f"`iverilog -V` (got {line!r}); {_HOW}")
    version = (int(match.group(1)), int(match.group(2)))
    if version < MIN_ICARUS_VERSION:
        raise ToolNotFoundError(
            f"Icarus Verilog {version[0]}.{version[1]} is too old for cocotb 2 (needs >= "
            f"{MIN_ICARUS_VERSION[0]}.{MIN_ICARUS_VERSION[1]}); {_HOW}")
    install = IcarusInstall(iverilog=Path(found["iverilog"]), vvp=Path(found["vvp"]),
                            version=line)
    _cache["install"] = install
    return install
