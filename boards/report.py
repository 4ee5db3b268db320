"""``report.json`` of a build: resources and fmax from nextpnr's report, timing, the UART's
rates, provenance. :func:`make_report` assembles it from a
:class:`~qnnfab.boards.build.BuildPlan` after the tools ran."""

import dataclasses
import hashlib
import json
import math
import os
import time
from importlib import metadata

from qnnfab import ir
from qnnfab.rtl.spram import SPRAM_WIDTH

from . import nextpnr_report
from .families import get_family

__all__ = ["make_report", "timing_warning", "build_problems", "bounds"]


def jsonable(value):
    """``value`` as JSON-ready data (dataclasses, foldings, numpy integers)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
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


def build_problems(report, out_dir):
    """What is wrong with a finished build in ``out_dir`` whose report is ``report``: a missing
    ``report.json`` or bitstream, timing not met. An empty list for a good build."""
    problems = []
    if not os.path.isfile(os.path.join(out_dir, "report.json")):
        problems.append("no report.json")
    bitstream = os.path.join(out_dir, report["bitstream"])
    if not os.path.isfile(bitstream) or os.path.getsize(bitstream) == 0:
        problems.append(f"no bitstream {report['bitstream']}")
    if not report.get("timing_met"):
        problems.append(report.get("timing_warning") or "timing not met")
    return problems


def _timing(plan):
    """``(cycles_per_inference, latency, source)``: a CNN's stages hand pixels over in bursts,
    so its interval is measured in simulation, not modelled."""
    top, network = plan.top, plan.network
    if network.input_shape is not None and plan.learning is None:
        from qnnfab.sim.amaranth_sim import measure_timing
        measured = measure_timing(network, top.folding, n=3,
                                  style=getattr(top.core, "styles", "folded"))
        return (measured["cycles_per_inference"], measured["latency"],
                "amaranth simulation (3 inputs back to back)")
    return int(top.cycles_per_inference), top.latency, "formula"


def make_report(plan, seconds, notes, *, started, extra=None):
    """The report of a finished build (without ``bitstream_sha256``, which the caller adds with
    the bitstream's bytes). ``seconds``: per tool step; ``notes``: what the toolchain said
    (e.g. a synthesis fallback)."""
    board, name = plan.board, plan.name
    family = get_family(board.family)
    build_dir = plan.build_dir
    pnr = nextpnr_report.parse_nextpnr_report(os.path.join(build_dir, f"{name}.report.json"))
    with open(os.path.join(build_dir, f"{name}.rpt"), encoding="utf-8", errors="replace") as f:
        yosys_log = f.read()
    cells = nextpnr_report.parse_yosys_cells(yosys_log)
    fmax = pnr.fmax_mhz
    cycles, latency, timing_source = _timing(plan)
    fmt = plan.top.frame
    tools = {"yosys": nextpnr_report.parse_yosys_version(yosys_log)}
    for package in ("amaranth", "amaranth-boards", *dict.fromkeys(t.package
                                                                  for t in family.tools)):
        tools[package] = _version(package)
    options = {"board": board.name, "folding": jsonable(plan.folding),
               "clock_mhz": plan.clock_mhz, "baud": plan.baud, "seed": plan.seed,
               "nextpnr_opts": board.nextpnr_opts,
               "selftest": plan.selftest["vectors"] if plan.selftest else 0}
    styles = list(getattr(plan, "styles", None) or ["folded"] * len(plan.network.layers))
    if "unrolled" in styles:        # folded builds keep the inputs' hash they had before
        options["style"] = styles
    stores = getattr(plan, "weights_in", None)
    if stores and "spram" in stores:   # so do block RAM builds
        options["weights_in"] = list(stores)
    buffered = getattr(plan, "input_buffer", False)
    if buffered:                       # and those with the input in flip-flops
        options["input_buffer"] = "ebr"
    ir_sha = hashlib.sha256(ir.to_bytes(plan.network)).hexdigest()
    clock_mhz = plan.clock_mhz
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
        "pll": plan.pll,
        "timing_met": fmax is not None and fmax >= clock_mhz,
        "cycles_per_inference": cycles,
        "latency_cycles": jsonable(latency),
        "timing_source": timing_source,
        "learning": plan.learning,
        "selftest": plan.selftest,
        "inferences_per_s": clock_mhz * 1e6 / cycles,
        "inferences_per_s_at_fmax": (fmax * 1e6 / cycles) if fmax else None,
        "folding": jsonable(plan.top.folding if plan.top.folding is not None
                            else plan.folding),
        "folding_source": plan.folding_source,
        "style": styles,
        "style_source": getattr(plan, "style_source", None) or "folded (default)",
        "uart": {"baud": plan.baud, "divisor": plan.top.divisor,
                 "request_bytes": fmt.request_length, "response_bytes": fmt.response_length,
                 "round_trips_per_s": plan.baud / 10 / (fmt.request_length
                                                        + fmt.response_length)},
        "estimate": plan.estimate,
        "synthesis": {"fallback": bool(notes), "notes": list(notes)},
        "bitstream": plan.bitstream,
        "build_dir": "gateware",
        "build_seconds": {**seconds, "total": round(time.monotonic() - started, 2)},
        "tools": tools,
        "inputs": {"ir_sha256": ir_sha, "options": options,
                   "sha256": hashlib.sha256(json.dumps({"ir": ir_sha, "options": options},
                                                       sort_keys=True).encode()).hexdigest(),
                   "rtl_sha256": plan.rtl_sha256},
        "seed": plan.seed,
    }
    if stores and "spram" in stores:
        # SPRAM layers: how many SPRAMs nextpnr placed, and the load frame the host sends.
        report["weights_in"] = list(stores)
        report["resources"]["spram"] = {
            "used": int(pnr.used("ICESTORM_SPRAM") or 0),
            "total": board.spram_blocks}
        words = plan.top.load_words
        report["uart"]["load_bytes"] = 1 + 2 * words
        report["uart"]["load_seconds"] = (1 + 2 * words) * 10 / plan.baud
    report["input_buffer"] = "ebr" if buffered else "ff"
    report["bounds"] = bounds(plan.network, board, report)
    if extra:
        report.update(extra)
    report["timing_warning"] = timing_warning(report)
    return report


def bounds(network, board, report):
    """What a build achieved beside what the chip allows: ``memory_bound_cycles``, the cycles
    per inference if every block RAM read port delivered weight bits every cycle
    (``ceil(weight bits / (blocks · port bits))``: the weights must come from block RAM),
    ``cycles_over_bound`` (the build's cycles per inference over it), and
    ``macs_per_lc_per_cycle`` (multiply-accumulates per inference / logic cells / cycles per
    inference: how busy the logic is; FINN's published binary designs reach ~0.11–0.18 per
    LUT4). On a device with SPRAM (the UP5K's four 16-bit ports) also
    ``memory_bound_cycles_spram``: the same with the SPRAMs' ports beside the block RAMs' (the
    weights may live in either, ``--weights-in``); None elsewhere."""
    ports = board.bram_blocks * board.bram_port_bits
    bound = -(-network.weight_bits // ports) if network.weight_bits else 0
    spram_ports = ports + board.spram_blocks * SPRAM_WIDTH
    cycles = report.get("cycles_per_inference")
    lut = ((report.get("resources") or {}).get("lut") or {}).get("used")
    return {"memory_bound_cycles": bound,
            "memory_bound_cycles_spram": (-(-network.weight_bits // spram_ports)
                                          if board.spram_blocks and network.weight_bits
                                          else None),
            "cycles_over_bound": (cycles / bound) if bound and cycles else None,
            "macs_per_lc_per_cycle": (network.macs / lut / cycles) if lut and cycles else None}
