"""Bitstreams: a network behind the UART board top, through Yosys + nextpnr from the YoWASP
PyPI packages, and ``report.json`` beside the bitstream.

:func:`build` is three steps, each usable on its own:

1. :func:`plan_build` — everything that is quick and can fail early: the clock (and PLL), the
   folding (:func:`qnnfab.boards.registry.board_folding` unless given), the fit check, the
   tools, the board top and the amaranth-boards platform's prepared files;
2. :func:`qnnfab.boards.toolchain.run_steps` — the platform's tool commands (the ones
   ``platform.build`` would run from its shell script) one by one, each timed, reported to
   ``progress`` and logged to ``gateware/<step>.log``; a failed step shows the tool's own
   error lines. Running them this way also avoids ``platform.build``'s check for the board's
   programmer (``openFPGALoader`` for the ULX3S), which a build with ``do_program=False`` does
   not use;
3. :func:`qnnfab.boards.report.make_report` — resources and fmax from nextpnr's report,
   timing, provenance.

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
import shutil
import time

from qnnfab import ir
from qnnfab.rtl import estimate as _estimate
from qnnfab.rtl.folding import check_folding

from .families import get_family
from .registry import UNROLLED_LC_SHARE, board_folding, board_styles, family_lane_scale, \
    get_board, lc_budget
from .report import make_report, timing_warning
from .toolchain import STEPS, ToolError, run_steps, tool_path, toolchain_env

__all__ = ["build", "plan_build", "BuildPlan", "check_fit", "estimate", "timing_warning",
           "toolchain_env", "tool_path", "FitError", "ToolError", "STEPS"]


class FitError(ValueError):
    """The network cannot fit the device; the message gives the numbers."""


def _folding_pairs(network, folding):
    """``[(pe, simd), ...]`` per layer (checked by :func:`qnnfab.rtl.folding.check_folding`,
    which names a bad entry), or None for no folding."""
    if folding is None:
        return None
    return [(f.pe, f.simd) for f in check_folding(network, folding)]


def estimate(network, folding=None, *, family=None, styles=None, input_buffer=False):
    """Crude resource needs, ``{"weight_bits", "lc"}``: :func:`qnnfab.rtl.estimate.estimate`
    of ``folding`` (checked first: :class:`~qnnfab.rtl.folding.FoldingError` names a bad
    entry); without a folding, one lane per layer. ``family`` (a name): scale the lane costs
    by the family's measured ``lane_scale`` (:func:`~qnnfab.boards.registry.family_lane_scale`).
    ``styles``: one per layer (None: all folded); an unrolled layer counts its adder graph, not
    lanes and block RAM. ``input_buffer``: the input vector in block RAM
    (:func:`qnnfab.rtl.estimate.estimate`)."""
    if styles is not None and "unrolled" not in styles:
        styles = None                       # all folded: the estimate as it always was
    lane_scale = (None if family is None else family_lane_scale(family) if styles
                  else get_family(family).lane_scale)
    return _estimate.estimate(network, _folding_pairs(network, folding), lane_scale=lane_scale,
                              styles=styles, input_buffer=input_buffer)


def check_fit(network, board, folding=None, *, styles=None, weights_in=None,
              input_buffer=False):
    """Refuse (:class:`FitError`) a network that cannot fit ``board``'s device: more weight bits
    than block RAM bits, or a crude logic estimate above the device's cells (``styles``: one
    per layer, see :func:`estimate`); ``weights_in``: one ``ebr``/``spram`` per layer (None:
    all in block RAM), the SPRAM layers counted against the board's SPRAMs
    (:func:`qnnfab.rtl.estimate.spram_blocks_for`), not its block RAM. Returns the estimate
    (with ``spram_blocks`` and ``spram_weight_bits`` when some layer is in SPRAM).
    ``input_buffer``: the input vector in block RAM (its bits count against the block RAM,
    beside the weights')."""
    board = get_board(board)
    est = estimate(network, folding, family=board.family, styles=styles,
                   input_buffer=input_buffer)
    if weights_in is not None and "spram" in weights_in:
        pairs = _folding_pairs(network, folding)
        if pairs is None:
            raise FitError("weights in SPRAM need a folding (their word width)")
        spram_bits = sum(int(layer.weight_bits) for layer, w in zip(network.layers, weights_in)
                         if w == "spram")
        blocks = _estimate.spram_blocks_for(network, pairs, weights_in)
        if blocks > board.spram_blocks:
            raise FitError(f"network does not fit {board.name} ({board.device}): its SPRAM "
                           f"layers need {blocks} SPRAMs, the device has "
                           f"{board.spram_blocks}")
        est = {**est, "weight_bits": est["weight_bits"] - spram_bits,
               "spram_weight_bits": spram_bits, "spram_blocks": blocks}
    if est["weight_bits"] + est["buffer_bits"] > board.bram_bits:
        also = (f" and {est['buffer_bits']:,} bits of input buffer" if est["buffer_bits"]
                else "")
        raise FitError(f"network does not fit {board.name} ({board.device}): "
                       f"{est['weight_bits']:,} weight bits{also} > {board.bram_bits:,} bits of "
                       f"block RAM ({board.bram_blocks} blocks)")
    share = UNROLLED_LC_SHARE.get(board.family)
    if share is not None and styles and "unrolled" in styles \
            and est["lc"] > lc_budget(board, styles):
        raise FitError(f"network does not fit {board.name} ({board.device}) with unrolled "
                       f"layers: an estimated {est['lc']:,} logic cells > {share:.0%} of "
                       f"{board.lut:,}, the most that placed with unrolled layers on the "
                       f"{board.family} (boards.registry.UNROLLED_LC_SHARE); unroll fewer "
                       f"layers (--style auto, or a list such as --style folded,unrolled,...)")
    if est["lc"] > board.lut:
        raise FitError(f"network does not fit {board.name} ({board.device}): an estimated "
                       f"{est['lc']:,} logic cells > {board.lut:,} available (folding "
                       f"{_folding_pairs(network, folding) or 'unknown'}"
                       + (f", style {','.join(styles)}" if styles and "unrolled" in styles
                          else "") + ")")
    return est


def _design_clock(board, clock_mhz):
    """``(clock_mhz, pll)``: the clock the design runs at (what the PLL really makes, or the
    oscillator) and the PLL settings (None without one)."""
    if clock_mhz is None:
        clock_mhz = board.design_clock_mhz
    if isinstance(clock_mhz, bool) or not isinstance(clock_mhz, numbers.Real):
        raise TypeError(f"clock_mhz must be a frequency in MHz (a number), not {clock_mhz!r}")
    if math.isclose(float(clock_mhz), board.clock_mhz):
        return float(board.clock_mhz), None
    if not float(clock_mhz) > 0:
        raise ValueError(f"clock_mhz must be a positive frequency in MHz, not {clock_mhz!r}")
    params, actual = get_family(board.family).pll_solve(board.clock_mhz * 1e6,
                                                        float(clock_mhz) * 1e6)
    pll = {"from_mhz": board.clock_mhz, "requested_mhz": float(clock_mhz), **params}
    return actual / 1e6, pll


#: A learning board's design clock at most, per FPGA family (the learner's errors-phase adder
#: is its critical path). Measured: digits-tnn's learning board on the iCEBreaker (1 update
#: lane, frozen folding 1:32,1:64,-): 4,603 LC, 23 EBR, fmax 30.7 MHz at a 24 MHz constraint
#: (28.0 MHz at 36 MHz, timing not met). Samples arrive over the UART, so the clock hardly
#: matters. ECP5 boards keep their design clock.
LEARNING_CLOCK_MHZ = {"ice40": 24.0}

#: A learning board's frozen layers get this share of the board's folding budget: its samples
#: arrive over the UART (milliseconds each), so speed is not the point, room for the learner
#: and its memories is.
LEARNING_LANE_SHARE = 4


def _learning_core(network, folding, seed):
    """The learning board's core and its report entry (the last layer learns on chip, one
    update lane: a sample takes ~2·n_in·n_out cycles, microseconds, far below its UART
    transfer)."""
    import numpy as np

    from qnnfab.rtl.learner import LearningNetwork
    from qnnfab.spec import learn_rule
    last = network.layers[-1]
    rule = learn_rule.DEFAULT_RULE
    state = learn_rule.init_state(np.random.default_rng(seed), last.out_features,
                                  last.in_features, rule)
    core = LearningNetwork(network, rule, state.weights, state.momentum, folding=folding,
                           lanes=1)
    return core, {"rule": dataclasses.asdict(rule), "init_seed": int(seed), "lanes": 1}


def _selftest_vectors(network, folding, board, n):
    """The first ``n`` test vectors and their labels (the golden classes for a network without
    a data set) for the on-chip self-test, and the report's entry; ValueError if their ROM
    does not fit beside the network's block RAMs."""
    import numpy as np

    from qnnfab.model.vectors import test_vectors
    from qnnfab.spec import golden

    from .registry import bram_blocks_for
    if isinstance(n, bool) or int(n) < 1 or int(n) >= 1 << 16:
        raise ValueError(f"--selftest: expected 1..65535 vectors, got {n}")
    vecs = test_vectors(network, int(n))
    classes = golden.forward(network, vecs.codes).classes
    labels = classes if vecs.labels is None else np.asarray(vecs.labels)
    block = board.bram_bits // board.bram_blocks
    need = -(-len(vecs.codes) * network.input_features * network.input_bits // block) + 1
    used = bram_blocks_for(network, folding, board)
    if used + need > board.bram_blocks:
        raise ValueError(f"--selftest {n}: the stored vectors need about {need} block RAMs, "
                         f"{board.bram_blocks - used} of {board.bram_blocks} are free beside "
                         f"the network's on {board.name}; store fewer")
    entry = {"vectors": len(vecs.codes), "source": vecs.source,
             "labels": "data set" if vecs.labels is not None else "golden classes",
             "golden_correct": int((classes == labels).sum())}
    return (vecs.codes, labels), entry


@dataclasses.dataclass
class BuildPlan:
    """What :func:`plan_build` settled before any tool runs.

    Attributes
    ----------
    network, board : the IR and the :class:`~qnnfab.boards.registry.Board`
    folding, folding_source : the folding built and where it came from
    styles, style_source : the layers' styles (``"folded"``/``"unrolled"``) and where they
        came from (``--style ...``)
    clock_mhz, pll : the design clock and PLL settings (None without a PLL)
    baud, seed, learning : UART rate, nextpnr seed, the learning rule (None)
    estimate : the fit estimate
    selftest : the stored self-test vectors (``vectors``, ``source``, ``golden_correct``,
        ``expected_cycles``), or None
    top : the :class:`~qnnfab.boards.top.BoardTop`
    out_dir, build_dir : the output folder and its ``gateware/``
    commands : the platform's tool commands (argv lists)
    env : the environment with the tool variables
    rtl_sha256 : sha256 of the RTLIL Yosys reads
    """
    network: object
    board: object
    folding: object
    folding_source: str
    clock_mhz: float
    pll: object
    baud: int
    seed: int
    learning: object
    estimate: dict
    top: object
    out_dir: str
    build_dir: str
    commands: list
    env: dict
    rtl_sha256: str
    selftest: "dict | None" = None
    name: str = "top"
    styles: "list | None" = None
    style_source: "str | None" = None
    weights_in: "list | None" = None
    input_buffer: bool = False

    @property
    def bitstream(self):
        """The bitstream's file name in ``out_dir``."""
        return f"{self.board.name}{get_family(self.board.family).bitstream_suffix}"

    @property
    def report_path(self):
        return os.path.join(self.out_dir, "report.json")


def plan_build(network, board, out_dir, *, folding=None, clock_mhz=None, seed=0, baud=None,
               learn=False, folding_source=None, selftest=0, style="folded",
               weights_in="ebr", input_buffer="auto"):
    """Step 1 of :func:`build` (same arguments): check everything quick, clear stale outputs
    from ``out_dir`` and write the tools' inputs into ``out_dir/gateware``; a
    :class:`BuildPlan`."""
    board = get_board(board)
    network.validate()
    chosen = folding
    if learn and clock_mhz is None and board.family in LEARNING_CLOCK_MHZ:
        clock_mhz = min(board.design_clock_mhz, LEARNING_CLOCK_MHZ[board.family])
    clock_mhz, pll = _design_clock(board, clock_mhz)
    baud = board.uart_baud if baud is None else int(baud)
    lanes = board.max_lanes if not learn else max(1, board.max_lanes // LEARNING_LANE_SHARE)
    default = board_folding(network, board, max_lanes=lanes)
    if folding is None:
        folding = default
    same = _folding_pairs(network, folding) == _folding_pairs(network, default)
    if folding_source is None:
        folding_source = (f"board {board.name} default (max_lanes={lanes}"
                          + (", a learning board" if learn else "") + ")") if same else "given"
    styles = board_styles(network, board, style, folding)
    if learn and "unrolled" in styles:
        raise ValueError("--style and --learn: a learning board's layers are folded (its "
                         "last layer's weights change); build it with the folded style")
    style_source = _style_source(style, styles)
    stores = None
    if not (isinstance(weights_in, str) and weights_in == "ebr"):
        if learn:
            raise ValueError("--weights-in and --learn: a learning board keeps its weights in "
                             "block RAM")
        from .registry import board_weights
        folding, stores, note = board_weights(network, board, weights_in,
                                              None if chosen is None else folding,
                                              styles=styles)
        if "spram" not in stores:
            stores = None
        elif chosen is None:
            folding_source = (f"board {board.name} default (max_lanes={lanes}), SPRAM layers "
                              f"at their ports' width")
    from .registry import input_buffer_for
    if learn and input_buffer == "ebr":
        raise ValueError("--input-buffer ebr and --learn: a learning board keeps its input "
                         "vector in flip-flops")
    buffered = not learn and input_buffer_for(network, board, input_buffer, folding, styles)
    if buffered and selftest:
        raise ValueError("--selftest: the self-test's stored vectors feed a network whose input "
                         "is in flip-flops; build with --input-buffer ff, or without "
                         "--selftest")
    est = check_fit(network, board, folding, styles=styles, weights_in=stores,
                    input_buffer=buffered)                            # before anything slow
    env = toolchain_env(board.family)                 # fail early on a missing tool

    from .top import BoardTop
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    if selftest and learn:
        raise ValueError("--selftest and --learn: a learning board has no self-test; give one")
    stored, selftest_entry = _selftest_vectors(network, folding, board, selftest) \
        if selftest else (None, None)
    core, learning = _learning_core(network, folding, seed) if learn else (None, None)
    options = {}                # only what differs from the default top
    if stores is not None:
        options["weights_in"] = stores
    if buffered:
        options["input_buffer"] = True
    top = BoardTop(network, folding, clk_freq=clock_mhz * 1e6, baud=baud, core=core,
                   selftest=stored, style=styles, **options)
    if selftest_entry is not None:
        from .selftest import expected_cycles
        selftest_entry["expected_cycles"] = expected_cycles(
            selftest_entry["vectors"], top.core.latency, top.core.interval)
    build_dir = os.path.join(out_dir, "gateware")
    plan = BuildPlan(network=network, board=board, folding=folding,
                     folding_source=folding_source, clock_mhz=clock_mhz, pll=pll, baud=baud,
                     seed=int(seed), learning=learning, estimate=est, top=top, out_dir=out_dir,
                     build_dir=build_dir, commands=[], env=env, rtl_sha256="",
                     selftest=selftest_entry, styles=styles, style_source=style_source,
                     weights_in=stores, input_buffer=buffered)
    return prepare_build_dir(plan)


def prepare_build_dir(plan):
    """Clear ``plan``'s old outputs and write its build folder: the board platform's files for
    ``plan.top`` (RTLIL, constraints, tool scripts); fills ``plan.rtl_sha256`` and
    ``plan.commands``. Returns ``plan``."""
    for stale in (plan.report_path, os.path.join(plan.out_dir, plan.bitstream)):
        if os.path.exists(stale):
            os.unlink(stale)
    if os.path.isdir(plan.build_dir):
        shutil.rmtree(plan.build_dir)
    # verbose: full tool logs in gateware/*.log (nextpnr's utilisation table on failure).
    # --timing-allow-fail: a design that misses the clock still gets a bitstream, and the
    # report says so (timing_met false, timing_warning) instead of the build failing.
    board = plan.board
    prepared = board.platform().prepare(
        plan.top, name=plan.name, verbose=True,
        nextpnr_opts=f"--seed {plan.seed} --report {plan.name}.report.json "
                     f"--timing-allow-fail {board.nextpnr_opts}".strip())
    prepared.extract(plan.build_dir)
    with open(os.path.join(plan.build_dir, f"{plan.name}.il"), "rb") as f:  # what Yosys reads
        plan.rtl_sha256 = hashlib.sha256(f.read()).hexdigest()
    plan.commands = json.loads(prepared.files[f"build_{plan.name}.json"])["commands"]
    return plan


def _style_source(style, styles):
    """What the report says the styles came from: ``"--style auto (board budget)"`` etc."""
    if isinstance(style, str):
        if style == "auto":
            return "auto (unrolled where the estimate fits the board)"
        return style + (" (default)" if style == "folded" else "")
    return "given (one per layer)"


def build(network, board, out_dir, *, folding=None, clock_mhz=None, seed=0, progress=None,
          extra=None, baud=None, learn=False, folding_source=None, selftest=0, style="folded",
          weights_in="ebr", input_buffer="auto"):
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

    selftest : int
        Store this many test vectors on chip for the self-test (0: none;
        :mod:`qnnfab.boards.selftest`, the 0x54 request of :mod:`qnnfab.boards.protocol`).
    style : str or list of str
        The layers' styles: ``"folded"`` (default; weights in block RAM), ``"unrolled"``
        (every dense layer's weights as constants in the logic, one inference per clock),
        ``"auto"`` (unrolled where the estimate fits the board,
        :func:`~qnnfab.boards.registry.board_styles`) or one per layer. The report records
        them (``style``, ``style_source``).
    weights_in : str or list of str
        Where the folded dense layers keep their weights: ``"ebr"`` (default, block RAM with
        the weights in the bitstream), ``"spram"``, ``"auto"`` (SPRAM only when block RAM does
        not suffice) or one per layer (:func:`~qnnfab.boards.registry.board_weights`; iCE40
        UP5K boards only). SPRAM starts empty: the host loads the weights over the UART
        (``qnnfab run`` does). The report records them (``weights_in``, ``resources.spram``,
        ``uart.load_bytes``).
    input_buffer : str
        Where the top keeps the input vector: ``"ff"`` (flip-flops), ``"ebr"`` (block RAM,
        :class:`~qnnfab.rtl.input_buffer.InputBuffer`: an MLP whose first layer reads
        slices) or ``"auto"`` (default: block RAM only when the flip-flops would take more
        than half the device, :func:`~qnnfab.boards.registry.input_buffer_for`). The report
        records a buffered input (``input_buffer``).

    Returns the report (also written to ``out_dir/report.json``, last: a failed build leaves
    none). Provenance: ``tools`` (versions), ``seed``, ``inputs`` (``ir_sha256`` of the IR
    file bytes, ``options``, ``sha256`` of both, and ``rtl_sha256`` of the RTLIL Yosys read)
    and ``bitstream_sha256``; the same IR and options rebuild the same bitstream
    (``tests/test_determinism.py``). ``synthesis`` says which LUT mapper made the netlist
    (``notes`` why, when a fallback was used). Raises :class:`FitError` before synthesis if
    the network cannot fit, :class:`ToolError` if a tool fails (with the tool's own error
    lines), FileNotFoundError if a YoWASP tool is missing.
    """
    started = time.monotonic()
    plan = plan_build(network, board, out_dir, folding=folding, clock_mhz=clock_mhz, seed=seed,
                      baud=baud, learn=learn,
                      folding_source=folding_source, selftest=selftest, style=style,
                      weights_in=weights_in, input_buffer=input_buffer)
    notes = []
    seconds = run_steps(plan.commands, plan.build_dir, plan.env, plan.board.family,
                        progress=progress, notes=notes)
    report = make_report(plan, seconds, notes, started=started, extra=extra)
    suffix = get_family(plan.board.family).bitstream_suffix
    with open(os.path.join(plan.build_dir, f"{plan.name}{suffix}"), "rb") as f:
        bitstream_bytes = f.read()
    report["bitstream_sha256"] = hashlib.sha256(bitstream_bytes).hexdigest()
    ir.atomic_write_bytes(os.path.join(plan.out_dir, plan.bitstream), bitstream_bytes)
    ir.atomic_write_bytes(plan.report_path, (json.dumps(report, indent=1) + "\n").encode())
    return report
