"""Folded against unrolled (weights in logic, one inference per clock), real bitstreams.

    python benchmarks/bench_unrolled.py [--nets digits-tnn digits-bnn] [--boards ...]
                                        [--styles folded unrolled auto] [--reuse]
                                        [--only NET/BOARD/STYLE ...] [--out build/bench-unrolled]

For each network (trained with :func:`qnnfab.flow.preset_network`, seed 0), board and style
it builds the UART board top (:class:`qnnfab.boards.top.BoardTop`) around
:class:`qnnfab.rtl.network.Network` in that style and reads ``report.json``: LUTs, block RAMs,
nextpnr's fmax, cycles per inference, inferences per second at fmax and per LUT. ``folded`` is
:func:`qnnfab.boards.build.build` as ``qnnfab build`` runs it (the board's folding and clock);
``unrolled`` unrolls every dense layer; ``auto`` unrolls what the fit estimate puts within the
device (:func:`qnnfab.rtl.network.resolve_styles`). A design the estimate puts above the device
is reported as "does not fit" with the numbers, not built. The iCEBreaker and the ULX3S-25F
also get the largest ``d<N>,d10`` variant of digits-tnn that the estimate lets unroll there
(``--ice-hidden`` caps the iCEBreaker's). The network column gives the integer (golden) test
accuracy.

``--reuse`` takes the report of a finished build (``OUT/<net>/<board>/<style>/report.json``)
instead of building again: run the slow builds one at a time with ``--only`` and print the
whole table at the end (``--reuse --no-build``: and build nothing, a row without a report
says "not built", one the estimate puts above the device "does not fit"). ``--da4ml`` adds
da4ml's row (an optional peer: ``pip install da4ml``) for each network: its Verilog of the
same integer network, synthesized and placed out-of-context (no UART top) on the same device.

Slow: an ULX3S-85F place and route of an unrolled network takes 15-30 minutes.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from doc_tables import (RESULTS, add_docs_arguments, check_docs_page, docs_page,  # noqa: E402
                        write_tables)

from qnnfab import ir  # noqa: E402

__all__ = ["build_styled", "main"]

#: The tables of docs/results.md this benchmark writes (not with --only: a partial table).
DOC_TABLES = ("unrolled",)
#: The README's short table (the measured rows only), written with the default docs page.
README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
README_TABLE = "unrolled-measured"

BOARDS = ("ulx3s-85f", "ulx3s-25f", "icebreaker")
NETS = ("digits-tnn", "digits-bnn")

#: Design clocks of the unrolled builds (the folded builds use the board's default): the goal
#: is 60 MHz on the ECP5; the PLL makes the nearest frequency it can.
UNROLLED_CLOCK_MHZ = {"ulx3s-85f": 65.0, "ulx3s-25f": 65.0, "icebreaker": 36.0}

#: Hidden widths tried for the iCEBreaker's network, widest first.
ICE_WIDTHS = (64, 48, 32, 24, 16, 12, 8, 4)

#: Share of the UP5K's cells the iCEBreaker's unrolled network may take: the 12-wide one packed
#: to 5,064 of 5,280 cells (95 %), placed, and did not route in 10 minutes (that build still
#: shared carry chains between adders, since dropped on the iCE40); the 8-wide one routes.
SMALL_HEADROOM = 0.85

def log(msg):
    print(msg, file=sys.stderr, flush=True)


def styles_for(network, board, style, folding):
    """Per-layer styles of ``style`` on ``board`` (``auto``: what the estimate fits)."""
    from qnnfab.boards.registry import family_lane_scale, get_board, lc_budget
    from qnnfab.rtl.network import resolve_styles
    b = get_board(board)
    return resolve_styles(network, style, folding=folding, budget_lc=lc_budget(b),
                          lane_scale=family_lane_scale(b.family))


class DoesNotFit(ValueError):
    pass


def check_styled_fit(network, board, style):
    """The styles of ``style`` on ``board`` and their estimate; :class:`DoesNotFit` above
    the board's logic budget (:func:`qnnfab.boards.registry.lc_budget`: less with unrolled
    layers on the ECP5) or its block RAM."""
    from qnnfab.boards.registry import board_folding, family_lane_scale, get_board, lc_budget
    from qnnfab.rtl import estimate as E
    board = get_board(board)
    folding = board_folding(network, board)
    styles = styles_for(network, board, style, folding)
    est = E.estimate(network, [(f.pe, f.simd) for f in folding], styles=styles,
                     lane_scale=family_lane_scale(board.family))
    budget = lc_budget(board, styles)
    if est["lc"] > budget:
        raise DoesNotFit(f"an estimated {est['lc']:,} LUTs > {budget / board.lut:.0%} of "
                         f"{board.lut:,} ({', '.join(styles)})")
    if est["weight_bits"] > board.bram_bits:
        raise DoesNotFit(f"{est['weight_bits']:,} weight bits > {board.bram_bits:,} bits of "
                         f"block RAM")
    return styles, est


def build_styled(network, board, out_dir, *, style, clock_mhz=None, seed=0, extra=None,
                 core=None, pack_only=False):
    """Build ``network`` on ``board`` into ``out_dir`` in ``style`` (``folded``, ``unrolled``,
    ``auto`` or one style per layer); returns the report.

    ``folded`` is :func:`qnnfab.boards.build.build`, as ``qnnfab build`` runs it; so is
    ``unrolled``/``auto`` (``qnnfab build --style``, with the styles :func:`styles_for`
    resolved and the fit checked first with the styled estimate, :class:`DoesNotFit`). A
    peer's ``core`` (da4ml) and ``pack_only`` take the same three steps as
    :func:`qnnfab.boards.build.plan_build` / ``build`` here, with that core given to the board
    top."""
    from qnnfab.boards import build as B
    from qnnfab.boards.families import get_family
    from qnnfab.boards.registry import board_folding, get_board
    from qnnfab.boards.report import make_report
    from qnnfab.boards.top import BoardTop
    from qnnfab.rtl.network import Network

    if style == "folded":
        return B.build(network, board, out_dir, clock_mhz=clock_mhz, seed=seed,
                       progress=lambda step: log(f"  {step}"), extra=extra)
    started = time.monotonic()
    board = get_board(board)
    network.validate()
    requested_mhz = clock_mhz
    clock_mhz, pll = B._design_clock(board, clock_mhz)
    folding = board_folding(network, board)
    family = get_family(board.family)
    if core is not None:                 # a peer's core (da4ml): no estimate of ours
        styles = [style]
        est = {"lc": 0, "weight_bits": 0}
    else:
        styles, est = check_styled_fit(network, board, style)
    if core is None and not pack_only:          # what `qnnfab build --style` runs
        from qnnfab.rtl.cse import cached_graph
        stats = [cached_graph(layer).stats.__dict__
                 for layer, s in zip(network.layers, styles) if s == "unrolled"]
        return B.build(network, board, out_dir, clock_mhz=requested_mhz, seed=seed,
                       progress=lambda step: log(f"  {step}"), style=styles,
                       extra={"cse": stats, **(extra or {})})
    env = B.toolchain_env(board.family)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    log(f"  elaborating ({styles})")
    if core is None:
        core = Network(network, folding, style=styles)
    top = BoardTop(network, folding, clk_freq=clock_mhz * 1e6, baud=board.uart_baud,
                   core=core)
    build_dir = os.path.join(out_dir, "gateware")
    plan = B.BuildPlan(network=network, board=board, folding=core.folding or folding,
                       folding_source=f"style {styles}", clock_mhz=clock_mhz, pll=pll,
                       baud=board.uart_baud, seed=int(seed), learning=None, estimate=est,
                       top=top, out_dir=out_dir, build_dir=build_dir, commands=[], env=env,
                       rtl_sha256="")
    B.prepare_build_dir(plan)
    notes = []
    if pack_only:                       # synthesis, then nextpnr --pack-only: LUTs, no fmax
        B.run_steps(plan.commands[:1], plan.build_dir, plan.env, board.family,
                    progress=lambda step: log(f"  {step}"), notes=notes)
        argv = [a for a in plan.commands[1] if a not in ("--textcfg", "top.config")]
        B.run_steps([argv + ["--pack-only"]], plan.build_dir, plan.env, board.family,
                    progress=lambda step: log(f"  {step} (pack only)"), notes=notes)
        with open(os.path.join(build_dir, f"{plan.name}.report.json")) as f:
            util = json.load(f)["utilization"]
        cells = family.cell_types
        report = {"resources": {"lut": {"used": util[cells["lut"]]["used"],
                                        "total": board.lut},
                                "bram": {"used": util.get(cells["bram"], {}).get("used", 0)}},
                  "fmax_mhz": None, "clock_mhz": clock_mhz, "timing_met": None,
                  "cycles_per_inference": core.interval, "packed_only": True,
                  "style": styles, **(extra or {})}
        ir.atomic_write_bytes(plan.report_path, (json.dumps(report, indent=1) + "\n").encode())
        return report
    seconds = B.run_steps(plan.commands, plan.build_dir, plan.env, board.family,
                          progress=lambda step: log(f"  {step}"), notes=notes)
    stats = [s.__dict__ for s in core_stats(core)] if hasattr(core, "styles") else None
    report = make_report(plan, seconds, notes, started=started,
                         extra={"style": styles, "cse": stats, **(extra or {})})
    with open(os.path.join(build_dir, f"{plan.name}{family.bitstream_suffix}"), "rb") as f:
        bits = f.read()
    report["bitstream_sha256"] = hashlib.sha256(bits).hexdigest()
    ir.atomic_write_bytes(os.path.join(out_dir, plan.bitstream), bits)
    ir.atomic_write_bytes(plan.report_path, (json.dumps(report, indent=1) + "\n").encode())
    return report


def core_stats(core):
    """CSE statistics (:class:`qnnfab.rtl.cse.CseStats`) of each unrolled layer of a Network."""
    from qnnfab.rtl.cse import cached_graph
    return [cached_graph(layer).stats for layer, s in zip(core.network.layers, core.styles)
            if s == "unrolled"]


def small_network(board, max_hidden=64):
    """The largest ``d<N>,d10`` digits-tnn variant (N of :data:`ICE_WIDTHS`, at most
    ``max_hidden``) whose all-unrolled estimate fits ``board`` (:data:`SMALL_HEADROOM`):
    ``(name, network)``, for the boards the digits networks do not unroll on."""
    from qnnfab.boards.registry import family_lane_scale, get_board, lc_budget
    from qnnfab.model.presets import customize
    from qnnfab.model.train import train
    from qnnfab.rtl import estimate as E
    board = get_board(board)
    for n in [w for w in ICE_WIDTHS if w <= max_hidden]:
        preset = customize("digits-tnn", arch=f"d{n},d10")
        net = train(preset, seed=0, progress=False).network
        est = E.estimate(net, None, styles=["unrolled"] * len(net.layers),
                         lane_scale=family_lane_scale(board.family))
        log(f"{board.name}: d{n},d10 unrolled estimate {est['lc']} of {board.lut}")
        if est["lc"] <= min(SMALL_HEADROOM * board.lut, lc_budget(board)):
            return f"digits-tnn(d{n},d10)", net
    raise DoesNotFit(f"no d<N>,d10 network fits the {board.name} unrolled")


#: Boards that also get the largest ``d<N>,d10`` network that unrolls there
#: (:func:`small_network`), and the most hidden neurons tried. On the ULX3S-25F the 64-wide one
#: (estimate 18,298 LUTs, 75 %) is over the ECP5's budget for unrolled layers
#: (:data:`qnnfab.boards.registry.UNROLLED_LC_SHARE`): packed to 17,717 it found no legal
#: placement; the 48-wide one (54 %) places and routes.
SMALL_BOARDS = {"icebreaker": 64, "ulx3s-25f": 64}


def row_of(net_name, board, style, report=None, status="ok", detail=""):
    row = {"generator": "qnnfab", "network": net_name, "board": board, "style": style,
           "status": status, "detail": detail}
    if report is None:
        return row
    res = report["resources"]
    fmax = report.get("fmax_mhz")
    cycles = report["cycles_per_inference"]
    lut = res["lut"]["used"]
    inf = fmax * 1e6 / cycles if fmax else None
    row.update(lut=lut, lut_total=res["lut"]["total"], bram=res["bram"]["used"], fmax=fmax,
               clock=report["clock_mhz"], timing_met=report.get("timing_met"),
               cycles=cycles, inf_per_s=inf, per_lut=inf / lut if inf else None,
               styles=report.get("style"))
    if report.get("packed_only"):
        row["timing_met"] = True
        row["note"] = "LUTs after nextpnr packing; not placed and routed"
    return row


def _fmt_int(v):
    return "-" if v is None else f"{v:,}"


def _figures(r):
    """A finished build's LUT, EBR, fmax and inferences/s cells, as both tables print them."""
    inf = r["inf_per_s"]
    return (f"{_fmt_int(r['lut'])} | {_fmt_int(r['bram'])} "
            f"| {'-' if r['fmax'] is None else format(r['fmax'], '.1f')}",
            '-' if inf is None else format(inf / 1e6, '.2f') + ' M')


def table(rows):
    head = ("| generator | network | board | style | LUT | EBR | fmax (MHz) | cycles/inference "
            "| inferences/s | per LUT | note |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        if "lut" not in r:
            lines.append(f"| {r['generator']} | {r['network']} | {r['board']} | {r['style']} "
                         f"| - | - | - | - | - | - | {r['status']}: {r.get('detail', '')} |")
            continue
        note = "" if r.get("timing_met", True) else f"timing not met at {r['clock']:g} MHz"
        if r.get("note"):
            note = (note + "; " if note else "") + r["note"]
        resources, inf = _figures(r)
        lines.append(
            f"| {r['generator']} | {r['network']} | {r['board']} | {r['style']} "
            f"| {resources} | {r['cycles']} | {inf} "
            f"| {'-' if r['per_lut'] is None else format(r['per_lut'], ',.0f')} | {note} |")
    return "\n".join(lines)


def readme_table(rows):
    """The README's short form: the finished builds (style ``da4ml``: da4ml's), then the
    refusals in a line."""
    lines = ["| network | board | style | LUT | EBR | fmax MHz | inferences/s |",
             "|" + "---|" * 7]
    for r in rows:
        if "lut" in r:
            resources, inf = _figures(r)
            lines.append(f"| {r['network']} | {r['board']} | {r['style']} | {resources} "
                         f"| {inf} |")
    misfits = {}
    for r in rows:
        if "lut" not in r and r["status"] == "does not fit":
            key = f"{r['network'].split(' (')[0]} {r['style']}"
            misfits.setdefault(key, []).append(r["board"])
    if misfits:
        lines.append("\nDoes not fit: " + "; ".join(f"{k} ({', '.join(b)})"
                                                    for k, b in misfits.items()) + ".")
    return "\n".join(lines)


def cse_table(networks):
    """What the CSE pass saves, per layer: adders and modelled LUT4s against one private tree
    per neuron."""
    from qnnfab.rtl.cse import cached_graph
    lines = ["| network | layer | shape | adders (plain) | adders (CSE) | saved | modelled LUT4 "
             "(plain) | (CSE) | saved |", "|" + "---|" * 9]
    for name, net in networks:
        for k, layer in enumerate(net.layers):
            st = cached_graph(layer).stats
            lines.append(f"| {name} | {k} | {layer.in_features}x{layer.in_bits}b -> "
                         f"{layer.out_features} {layer.weight_kind} | {st.adders_plain:,} "
                         f"| {st.adders:,} | {st.saved:.0%} | {st.cost_plain:,} | {st.cost:,} "
                         f"| {st.cost_saved:.0%} |")
    return "\n".join(lines)


def da4ml_comb(network, *, check=64):
    """da4ml's constant-matrix trace of the integer network (thresholds as comparisons, the
    last layer's accumulators as outputs), checked with da4ml's own ``predict`` against the
    golden model on ``check`` random inputs."""
    import numpy as np
    from da4ml.trace import FixedVariableArrayInput, HWConfig, comb_trace

    from qnnfab import random_net
    from qnnfab.spec import golden
    n = network.input_features
    inp = FixedVariableArrayInput((n,), hwconf=HWConfig(1, -1, -1))
    x = inp.quantize(k=np.zeros(n, int), i=np.full(n, network.input_bits), f=np.zeros(n, int))
    acc = None
    for layer in network.layers:
        w = golden.weight_values(layer).astype(np.float64)
        acc = (x * 2 - 1 if layer.in_bits == 1 else x) @ w.T
        if layer.is_output:
            break
        s = layer.threshold_sign.astype(np.float64)
        code = None
        for t in range(layer.thresholds.shape[1]):
            bit = (acc * s) >= layer.thresholds[:, t].astype(np.float64)
            code = bit if code is None else code + bit
        x = code
    comb = comb_trace(inp, acc)
    codes = random_net.random_inputs(np.random.default_rng(0), network, check)
    got = comb.predict(codes.astype(np.float64))
    want = golden.forward(network, codes).scores
    if not np.array_equal(got, want):
        raise AssertionError("da4ml's trace does not compute the golden scores")
    return comb


def da4ml_core(network, work_dir, *, latency_cutoff=5):
    """A board-top core around da4ml's pipelined Verilog of ``network`` (written into
    ``work_dir``): the same ``i``/``o`` streams as :class:`qnnfab.rtl.network.Network`, the
    same credit FIFO and pipelined argmax as the unrolled chain, da4ml's module (its
    ``_wrapper``, which sign-extends the outputs to one width) for the scores."""
    import glob

    from amaranth.hdl import Cat, ClockSignal, Instance, Module, Signal, signed, unsigned
    from amaranth.lib import data, stream, wiring
    from amaranth.lib.wiring import In, Out
    from da4ml.codegen import VerilogModel

    from qnnfab.rtl import timing
    from qnnfab.rtl.argmax import argmax_layout
    from qnnfab.rtl.unrolled_dense import credit_fifo, pipelined_argmax

    comb = da4ml_comb(network)
    shutil.rmtree(work_dir, ignore_errors=True)
    VerilogModel(comb, "da4ml_net", work_dir, latency_cutoff=latency_cutoff,
                 print_latency=False).write()
    files = {}
    for path in sorted(glob.glob(os.path.join(work_dir, "src", "*.v"))
                       + glob.glob(os.path.join(work_dir, "src", "static", "*.v"))):
        if os.path.basename(path) == "lookup_table.v":   # unused, and Yosys trips on it
            continue
        with open(path) as f:
            files[f"da4ml/{os.path.basename(path)}"] = f.read()
    stages = len(glob.glob(os.path.join(work_dir, "src", "da4ml_net_stage*.v")))
    da_latency = stages + 1          # the input register, one per stage
    last = network.layers[-1]
    n = last.out_features
    out_bits = comb.out_kifs.sum(axis=0).max()
    out_width = int(out_bits)

    class Da4mlCore(wiring.Component):
        """da4ml's logic for the scores, qnnfab's streams and argmax around it."""
        folding = None

        def __init__(self):
            super().__init__({
                "i": In(stream.Signature(data.ArrayLayout(unsigned(network.input_bits),
                                                          network.input_features))),
                "o": Out(stream.Signature(argmax_layout(n, last.acc_width))),
            })
            self.registers = da_latency + 1 + timing.argmax_tree(n).latency

        @property
        def latency(self):
            return self.registers + timing.UNROLLED_FIFO_LATENCY

        interval = 1

        def elaborate(self, platform):
            m = Module()
            if platform is not None:
                for name, text in files.items():
                    platform.add_file(name, text)
            accept, fifo = credit_fifo(m, self.i, self.o, self.o.payload.shape().size,
                                       timing.unrolled_fifo_depth(self.registers))
            out = Signal(n * out_width)
            m.submodules.da4ml = Instance("da4ml_net_wrapper", i_clk=ClockSignal(),
                                          i_model_inp=self.i.payload.as_value(),
                                          o_model_out=out)
            valid = accept
            for k in range(da_latency + 1):
                r = Signal(name=f"v{k}")
                m.d.sync += r.eq(valid)
                valid = r
            scores = []
            for j in range(n):
                s = Signal(signed(last.acc_width), name=f"score{j}", reset_less=True)
                m.d.sync += s.eq(out[j * out_width:(j + 1) * out_width].as_signed())
                scores.append(s)
            cls, scores, levels = pipelined_argmax(m, scores)
            for k in range(levels):
                r = Signal(name=f"va{k}")
                m.d.sync += r.eq(valid)
                valid = r
            m.d.comb += [fifo.w_en.eq(valid), fifo.w_data.eq(Cat(cls, *scores))]
            return m

    return Da4mlCore(), {"stages": stages, "cost": float(comb.cost),
                         "latency_cutoff": latency_cutoff}


def da4ml_row(net_name, network, board, out_dir, *, reuse, pack_only=False, build=True):
    """da4ml's row: its Verilog behind the same board top, same device, same tools
    (``build=False``: only a finished build's report)."""
    report_path = os.path.join(out_dir, "report.json")
    if reuse and os.path.exists(report_path):
        with open(report_path) as f:
            row = row_of(net_name, board, "da4ml", json.load(f))
        row["generator"] = "da4ml"
        return row
    if not build:
        return {**row_of(net_name, board, "da4ml", status="not built",
                         detail="no finished build; `--da4ml` without `--no-build` builds it"),
                "generator": "da4ml"}
    try:
        import da4ml  # noqa: F401
    except ImportError:
        return {**row_of(net_name, board, "da4ml", status="skipped",
                         detail="da4ml not installed"), "generator": "da4ml"}
    log(f"{net_name} on {board}, da4ml")
    core, info = da4ml_core(network, os.path.join(out_dir, "da4ml-src"))
    try:
        report = build_styled(network, board, out_dir, style="da4ml", core=core,
                              clock_mhz=UNROLLED_CLOCK_MHZ[board], extra={"da4ml": info},
                              pack_only=pack_only)
    except Exception as exc:
        return {**row_of(net_name, board, "da4ml", status="FAILED",
                         detail=str(exc).splitlines()[0]), "generator": "da4ml"}
    row = row_of(net_name, board, "da4ml", report)
    row["generator"] = "da4ml"
    return row


def mark_da4ml_misfits(rows):
    """A da4ml row without a build whose network packed, on another board, to more LUTs than
    this board has: "does not fit", with the numbers (no tool run needed to know)."""
    from qnnfab.boards.registry import get_board
    packed = {r["network"]: r for r in rows
              if r["generator"] == "da4ml" and r.get("lut") is not None}
    for r in rows:
        other = packed.get(r["network"])
        if r["generator"] != "da4ml" or r.get("lut") is not None or other is None:
            continue
        total = get_board(r["board"]).lut
        if other["lut"] > total:
            r["status"] = "does not fit"
            r["detail"] = (f"its {other['board']} build packs {other['lut']:,} LUTs "
                           f"> the {total:,} of {r['board']}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    parser.add_argument("--boards", nargs="+", default=list(BOARDS), choices=list(BOARDS))
    parser.add_argument("--styles", nargs="+", default=["folded", "unrolled"],
                        choices=["folded", "unrolled", "auto"])
    parser.add_argument("--only", nargs="+", default=None, metavar="NET/BOARD/STYLE",
                        help="build only these (the rest come from --reuse or are skipped)")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse finished builds' report.json instead of building again")
    parser.add_argument("--no-build", action="store_true",
                        help="with --reuse: build nothing (rows without a report: not built, "
                             "or does not fit by the estimate)")
    parser.add_argument("--da4ml", action="store_true", help="add da4ml's rows (if installed)")
    parser.add_argument("--da4ml-pack-only", action="store_true",
                        help="da4ml's rows: synthesis and nextpnr --pack-only (LUTs, no fmax; "
                             "its place and route of digits-tnn on the 85F did not finish)")
    parser.add_argument("--ice-hidden", type=int, default=64,
                        help="the iCEBreaker network: the largest d<N>,d10 (N at most "
                             "this) that unrolls there")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="build/bench-unrolled")
    add_docs_arguments(parser)
    args = parser.parse_args(argv)
    if args.no_build and (not args.reuse or args.only):
        parser.error("--no-build goes with --reuse and without --only")
    if args.only:
        args.docs = None
    check_docs_page(args, DOC_TABLES)
    if args.docs == RESULTS:
        check_docs_page(argparse.Namespace(docs=README), (README_TABLE,))

    from qnnfab.flow import preset_network

    os.makedirs(args.out, exist_ok=True)
    cached = {}

    def network(name):
        if name not in cached:
            path = os.path.join(args.out, f"{name}.qnn")
            if os.path.exists(path):
                cached[name] = ir.load(path)
            else:
                log(f"training {name}")
                cached[name] = preset_network(name, seed=0)
                ir.save(cached[name], path)
        return cached[name]

    jobs = []
    for board in args.boards:
        if board != "icebreaker":
            jobs += [(n, board, s) for n in args.nets for s in args.styles]
        if board in SMALL_BOARDS:
            jobs += [("small", board, s) for s in args.styles]
    rows = []
    small_names = {}
    for net_key, board, style in jobs:
        if net_key == "small":
            path = os.path.join(args.out, f"{board}-net.qnn")
            if os.path.exists(path):
                net = ir.load(path)
                name = net.meta["bench_name"]
            else:
                hidden = args.ice_hidden if board == "icebreaker" else SMALL_BOARDS[board]
                name, net = small_network(board, hidden)
                net.meta["bench_name"] = name
                ir.save(net, path)
            small_names[name] = path
        else:
            name, net = net_key, network(net_key)
        out_dir = os.path.join(args.out, name, board, style)
        report_path = os.path.join(out_dir, "report.json")
        key = f"{net_key}/{board}/{style}"
        wanted = args.only is None or key in args.only or f"{name}/{board}/{style}" in args.only
        if args.reuse and os.path.exists(report_path) and not (args.only and wanted):
            with open(report_path) as f:
                rows.append(row_of(name, board, style, json.load(f)))
            continue
        if not wanted:
            rows.append(row_of(name, board, style, status="skipped", detail="not built"))
            continue
        if args.no_build:
            try:
                if style != "folded":
                    check_styled_fit(net, board, style)
                rows.append(row_of(name, board, style, status="not built",
                                   detail=f"no finished build; `--reuse --only {key}` builds it"))
            except DoesNotFit as exc:
                rows.append(row_of(name, board, style, status="does not fit",
                                   detail=str(exc)))
            continue
        log(f"{name} on {board}, {style}")
        start = time.monotonic()
        try:
            clock = None if style == "folded" else UNROLLED_CLOCK_MHZ[board]
            report = build_styled(net, board, out_dir, style=style, clock_mhz=clock,
                                  seed=args.seed)
        except DoesNotFit as exc:
            rows.append(row_of(name, board, style, status="does not fit", detail=str(exc)))
            log(f"  {exc}")
            continue
        except Exception as exc:       # a failed tool: report it, go on with the next build
            from qnnfab.boards.build import FitError
            status = "does not fit" if isinstance(exc, FitError) else "FAILED"
            rows.append(row_of(name, board, style, status=status,
                               detail=str(exc).splitlines()[0]))
            log(f"  {status}: {exc}")
            continue
        log(f"  done in {time.monotonic() - start:.0f} s")
        rows.append(row_of(name, board, style, report))
    if args.da4ml:
        for n in args.nets:
            for board in args.boards:
                if board != "icebreaker":
                    rows.append(da4ml_row(n, network(n), board,
                                          os.path.join(args.out, n, board, "da4ml"),
                                          reuse=args.reuse, pack_only=args.da4ml_pack_only,
                                          build=not args.no_build))
    if args.da4ml:
        mark_da4ml_misfits(rows)
    from qnnfab.flow import test_accuracy
    accuracy = {}
    for r in rows:
        if r["network"] not in accuracy:
            net = network(r["network"]) if r["network"] in NETS else \
                ir.load(small_names[r["network"]])
            accuracy[r["network"]] = test_accuracy(net)
        acc = accuracy[r["network"]]
        r["accuracy"] = acc
        if acc is not None:
            r["network"] = f"{r['network']} ({100 * acc:.1f} %)"
    text = table(rows)
    nets = [(n, network(n)) for n in args.nets]
    text += "\n\nCSE (greedy pairwise sharing of partial sums, `qnnfab.rtl.cse`):\n\n"
    text += cse_table(nets)
    print(text)
    with open(os.path.join(args.out, "unrolled.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(args.out, "unrolled.json"), "w") as f:
        json.dump(rows, f, indent=1, default=str)
    docs_page(args, {"unrolled": text}, log=log)
    if args.docs == RESULTS:
        changed = write_tables(README, {README_TABLE: readme_table(rows)})
        log(f"docs: {README}: " + ("rewrote" if changed else "unchanged") +
            f" table {README_TABLE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
