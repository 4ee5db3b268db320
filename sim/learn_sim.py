"""Simulate the on-chip learner and check it against the integer learning rule, step by step.

:func:`run_learning` streams labelled samples through :class:`~qnnfab.rtl.learner.OnlineLearner`
(features in) or :class:`~qnnfab.rtl.learner.LearningNetwork` (network inputs in, frozen
layers in front) in Amaranth's simulator or in Verilator (cocotb), and returns every step's
class and scores and the weights and momenta after every step, rebuilt from the ``trace``
stream. :func:`compare_learning` replays :func:`qnnfab.spec.learn_rule.step` from the same
start and reports the first difference::

    run = run_learning(net, rule, state, codes, labels, simulator="verilator")
    cmp = compare_learning(rule, net, state, codes, labels, run)
    print(cmp.summary())        # "1000/1000 update steps bit-exact"
    print(cmp.report())         # ... "step 17, weight (3, 41): expected 120, got 118"

Verilator runs reuse the cached build of :mod:`qnnfab.sim.runner` (one compile per design
and tool version) and run :mod:`qnnfab.sim.cocotb_learner`, which drives ``i`` and takes ``o``
and ``trace`` with optional random stalls on all three.
"""

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from amaranth.hdl import Shape

from qnnfab import ir
from qnnfab.spec import golden
from qnnfab.spec import learn_rule as lr

from .arguments import check_probabilities, check_progress, check_simulator
from .runner import build_cached, default_cache_dir, run_cocotb_job, tool_version
from .stream_io import StreamSink, StreamSource, chance, run_streams

__all__ = ["LearnerDims", "LearnRun", "LearnMismatch", "LearnComparison", "SIMULATORS",
           "TOPLEVEL", "TEST_MODULE", "CONFIG_ENV", "run_learning", "compare_learning",
           "learner_features", "build_learner"]

SIMULATORS = ("amaranth", "verilator")
#: Name of the generated top-level Verilog module.
TOPLEVEL = "qnnfab_learner"
#: The cocotb test module, and the variable naming its job file (as in
#: :mod:`qnnfab.sim.cocotb_learner`, not imported here: importing it imports cocotb).
TEST_MODULE = "qnnfab.sim.cocotb_learner"
CONFIG_ENV = "QNNFAB_LEARN_CONFIG"


@dataclass(frozen=True)
class LearnerDims:
    """The learner alone: ``n_in`` features of ``in_bits`` bits, ``n_out`` classes."""
    n_in: int
    n_out: int
    in_bits: int


@dataclass
class LearnRun:
    """What :func:`run_learning` returned.

    Attributes
    ----------
    classes : ndarray (n,)
    scores : ndarray (n, n_out)
        The class and scores of each step, before its update.
    weights, momentum : ndarray (n, n_out, n_in)
        The state after each step, rebuilt from the trace words (a step without learning
        repeats the previous state).
    learn : ndarray (n,) of bool
    simulator : str
    cycles : int
        Clock cycles from the first sample offered to the last trace word or output taken.
    seconds : float
        Wall time of the simulation loop (no compile).
    compile_seconds : float
        0.0 when a cached Verilator build was reused, and for Amaranth.
    build_dir : Path or None
    trace_errors : list of str
        Anything wrong with the trace stream itself (an index out of order, words missing).
    """
    classes: np.ndarray
    scores: np.ndarray
    weights: np.ndarray
    momentum: np.ndarray
    learn: np.ndarray
    simulator: str
    cycles: int
    seconds: float
    compile_seconds: float = 0.0
    build_dir: "Path | None" = None
    trace_errors: list = field(default_factory=list)

    @property
    def steps_per_second(self):
        return len(self.classes) / self.seconds if self.seconds > 0 else 0.0

    @property
    def cycles_per_second(self):
        return self.cycles / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class LearnMismatch:
    """One difference: ``what`` is ``"score"`` (index ``(j,)``), ``"class"``, ``"weight"`` or
    ``"momentum"`` (index ``(j, i)``), or ``"trace"`` (a broken trace stream)."""
    step: int
    what: str
    index: tuple
    expected: int
    got: int

    def __str__(self):
        if self.what == "class":
            return f"step {self.step}, class: expected {self.expected}, got {self.got}"
        where = ", ".join(str(i) for i in self.index)
        return (f"step {self.step}, {self.what} ({where}): expected {self.expected}, "
                f"got {self.got}")


@dataclass
class LearnComparison:
    """Outcome of :func:`compare_learning`: ``checked`` steps, ``bit_exact`` of them equal
    in class, scores, weights and momenta; ``mismatches`` lists differences in step order
    (at most ``limit`` per step, as asked)."""
    checked: int
    bit_exact: int
    mismatches: list = field(default_factory=list)
    trace_errors: list = field(default_factory=list)

    @property
    def ok(self):
        return self.bit_exact == self.checked and not self.trace_errors

    @property
    def first_mismatch(self):
        return self.mismatches[0] if self.mismatches else None

    def summary(self):
        """``"N/M update steps bit-exact"``."""
        return f"{self.bit_exact}/{self.checked} update steps bit-exact"

    def report(self, limit=10):
        lines = [self.summary()] + list(self.trace_errors[:limit])
        lines += [str(m) for m in self.mismatches[:limit]]
        if len(self.mismatches) > limit:
            lines.append(f"... and {len(self.mismatches) - limit} more differences")
        return "\n".join(lines)


# --- shapes ------------------------------------------------------------------------------------

def _dims(network_or_dims):
    """``(dims, network)``: the learner's dimensions, and the network (None for dims)."""
    if isinstance(network_or_dims, ir.Network):
        net = network_or_dims
        net.validate()
        net.require_integer("the learner")
        last = net.layers[-1]
        if not isinstance(last, ir.DenseLayer):
            raise ValueError(f"the last layer must be dense to be learnt, not {last.kind}")
        return LearnerDims(last.in_features, last.out_features, last.in_bits), net
    if isinstance(network_or_dims, LearnerDims):
        return network_or_dims, None
    try:
        n_in, n_out, in_bits = (int(v) for v in network_or_dims)
    except (TypeError, ValueError):
        raise TypeError(f"network_or_dims must be an ir.Network or (n_in, n_out, in_bits), "
                        f"not {network_or_dims!r}") from None
    return LearnerDims(n_in, n_out, in_bits), None


def learner_features(network_or_dims, codes):
    """The learner's input codes for ``codes``: the codes themselves for dims, the golden
    output of the frozen layers (``layers[:-1]``) for a network."""
    dims, net = _dims(network_or_dims)
    if net is None:
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 2 or codes.shape[1] != dims.n_in:
            raise ValueError(f"codes: expected shape (n, {dims.n_in}), got {codes.shape}")
        return codes
    x = golden.check_inputs(net, codes)
    for layer in net.layers[:-1]:
        _, x = golden.layer_forward(layer, x)
    return x


def _inputs(network_or_dims, codes, labels, learn):
    dims, net = _dims(network_or_dims)
    if net is None:
        codes = learner_features(dims, codes)
        hi = (1 << dims.in_bits) - 1
        if codes.size and (codes.min() < 0 or codes.max() > hi):
            raise ValueError(f"codes: must lie in 0..{hi} ({dims.in_bits} bits)")
    else:
        codes = golden.check_inputs(net, codes)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(codes),):
        raise ValueError(f"labels: expected shape ({len(codes)},), got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= dims.n_out):
        raise ValueError(f"labels: must lie in 0..{dims.n_out - 1}")
    flags = np.broadcast_to(np.asarray(learn, dtype=bool), (len(codes),)).copy()
    return dims, net, codes, labels, flags


def build_learner(network_or_dims, rule, init_state, *, folding=None, lanes=None):
    """The component :func:`run_learning` simulates: an ``OnlineLearner`` for dims, a
    ``LearningNetwork`` for a network."""
    from qnnfab.rtl.learner import LearningNetwork, OnlineLearner
    dims, net = _dims(network_or_dims)
    if net is None:
        return OnlineLearner(dims.n_in, dims.n_out, dims.in_bits, rule, init_state.weights,
                             init_state.momentum, lanes=lanes)
    return LearningNetwork(net, rule, init_state.weights, init_state.momentum,
                           folding=folding, lanes=lanes)


def _pack(layout, codes, labels, flags):
    return [int(layout.const({"x": [int(c) for c in row], "label": int(y),
                              "learn": int(f)}).as_bits())
            for row, y, f in zip(codes, labels, flags)]


def _rebuild(dims, lanes, init_state, flags, trace_words):
    """Weights and momenta after each step from ``(index, group, w, m)`` trace words (one per
    input index and group of ``lanes`` lanes, index-major)."""
    n = len(flags)
    groups = dims.n_out // lanes
    w = np.array(init_state.weights, dtype=np.int64)
    mom = np.array(init_state.momentum, dtype=np.int64)
    weights = np.zeros((n, dims.n_out, dims.n_in), dtype=np.int64)
    momentum = np.zeros_like(weights)
    errors = []
    per_step = dims.n_in * groups
    pos = 0
    for k, flag in enumerate(flags):
        if flag:
            for i in range(dims.n_in):
                for g in range(groups):
                    if pos >= len(trace_words):
                        if not errors:
                            errors.append(f"step {k}: trace ended after {pos} words "
                                          f"(expected {int(flags.sum()) * per_step})")
                        break
                    index, group, wv, mv = trace_words[pos]
                    pos += 1
                    if (index, group) != (i, g) and not errors:
                        errors.append(f"step {k}: trace word {pos - 1} is (index {index}, "
                                      f"group {group}), expected (index {i}, group {g})")
                    if 0 <= index < dims.n_in and 0 <= group < groups:
                        rows = slice(group * lanes, (group + 1) * lanes)
                        w[rows, index] = wv
                        mom[rows, index] = mv
        weights[k], momentum[k] = w, mom
    if pos < len(trace_words) and not errors:
        errors.append(f"{len(trace_words) - pos} trace words more than the learning steps need")
    return weights, momentum, errors


# --- Amaranth --------------------------------------------------------------------------------

def _run_amaranth(dut, words, n_trace, *, progress, ready_probability,
                  valid_probability, trace_ready_probability, seed):
    """Drive ``i`` and take ``o`` and ``trace`` with :func:`qnnfab.sim.stream_io.run_streams`
    (one testbench, one loop iteration per clock cycle); the stalls come from one generator,
    drawn in the order ``i`` valid, ``o`` ready, ``trace`` ready."""
    n = len(words)
    rng = np.random.default_rng(seed)
    offer = chance(valid_probability, rng)
    source = StreamSource(dut.i, words, raw=True, idle=lambda k: not offer())
    outputs = StreamSink(dut.o, n, raw=True, ready=chance(ready_probability, rng),
                         on_transfer=None if progress is None else (lambda d: progress(d, n)))
    traces = StreamSink(dut.trace, n_trace, raw=True,
                        ready=chance(trace_ready_probability, rng))
    start = time.perf_counter()
    cycles = run_streams(dut, [source], [outputs, traces]) if n else 0
    seconds = time.perf_counter() - start
    decoded_outputs, decoded_traces = _decode(dut, outputs.payloads, traces.payloads)
    return decoded_outputs, decoded_traces, cycles, seconds


def _decode(dut, raw_outputs, raw_traces):
    """``(cls, scores)`` per output word and ``(index, group, w, m)`` per trace word, read
    with the payload layouts' field offsets."""
    o_layout = dut.o.payload.shape()
    t_layout = dut.trace.payload.shape()

    def array(word, fld):
        shape = fld.shape
        width = Shape.cast(shape.elem_shape).width
        return [_field(word, fld.offset + k * width, width, True)
                for k in range(shape.length)]

    def scalar(word, fld):
        return _field(word, fld.offset, Shape.cast(fld.shape).width, False)

    outputs = [(scalar(w, o_layout["cls"]), array(w, o_layout["scores"]))
               for w in raw_outputs]
    traces = [(scalar(w, t_layout["index"]), scalar(w, t_layout["group"]),
               array(w, t_layout["w"]), array(w, t_layout["m"])) for w in raw_traces]
    return outputs, traces


def _field(word, offset, width, signed):
    value = (word >> offset) & ((1 << width) - 1)
    if signed and value >> (width - 1):
        value -= 1 << width
    return value


# --- Verilator -------------------------------------------------------------------------------

def stall_limit(dims, net, probability):
    serial = 2 * dims.n_in * dims.n_out + dims.n_out + 100
    if net is not None:
        serial += sum(max(layer.macs, layer.in_size) for layer in net.layers[:-1])
    return int((4 * serial + 10_000) / probability)


def _run_verilog(dut, words, n_trace, *, build_dir, progress, ready_probability,
                 valid_probability, trace_ready_probability, seed, stall_limit, log):
    from amaranth.back import verilog as averilog
    simulator = "verilator"
    tool_version(simulator)
    text = averilog.convert(dut, name=TOPLEVEL, emit_src=False)
    # Absolute: the cocotb job runs in its own folder, where a relative path means another.
    root = (Path(build_dir) if build_dir is not None else default_cache_dir()).resolve()
    bdir, compile_seconds = build_cached(simulator, text, TOPLEVEL, root, log)
    out, run_dir = run_cocotb_job(
        simulator, TEST_MODULE, TOPLEVEL, bdir, CONFIG_ENV, {
            "inputs": [format(w, "x") for w in words], "n_trace": n_trace,
            "ready_probability": float(ready_probability),
            "valid_probability": float(valid_probability),
            "trace_ready_probability": float(trace_ready_probability), "seed": int(seed),
            "reset_cycles": 2, "stall_limit": int(stall_limit)},
        progress=progress, total=len(words), what="learner simulation", prefix="learn-")
    outputs, traces = _decode(dut, [int(w, 16) for w in out["outputs"]],
                              [int(w, 16) for w in out["trace"]])
    shutil.rmtree(run_dir, ignore_errors=True)
    return outputs, traces, int(out["cycles"]), float(out["seconds"]), compile_seconds, bdir


# --- the public entry points -------------------------------------------------------------------

def run_learning(network_or_dims, rule, init_state, codes, labels, *, simulator="amaranth",
                 learn=True, build_dir=None, progress=None, folding=None, lanes=None,
                 ready_probability=1.0, valid_probability=1.0, trace_ready_probability=1.0,
                 seed=0, log=None):
    """Stream labelled samples through the learner hardware; returns a :class:`LearnRun`.

    Parameters
    ----------
    network_or_dims : ir.Network or (n_in, n_out, in_bits)
        A network: its ``layers[:-1]`` frozen in front of a learner of the last layer's shape
        (:class:`~qnnfab.rtl.learner.LearningNetwork`; ``codes`` are network inputs). Dims:
        the learner alone (``codes`` are its input codes).
    rule : LearnRule
    init_state : LearnState
        The learner's starting weights and momenta, ``(n_out, n_in)``.
    codes, labels : int arrays (n, features), (n,)
    simulator : ``"amaranth"`` or ``"verilator"``
    learn : bool or array of bool (n,)
        Learn from each sample (else infer only).
    build_dir : path, optional
        Root of cached Verilator builds (default :func:`qnnfab.sim.runner.default_cache_dir`).
    progress : callable(done, total), optional
        Called as outputs arrive.
    folding : the frozen layers' folding (a network's whole folding list; None: automatic).
    lanes : the learner's update lanes per cycle (None: all).
    ready_probability, valid_probability, trace_ready_probability : float in (0, 1]
        Random stalls: ``o.ready``, gaps before ``i.valid``, ``trace.ready`` (seeded by
        ``seed``).
    log : callable(str), optional
        Told about the Verilator compile step.
    """
    check_simulator(simulator, SIMULATORS)
    if not isinstance(rule, lr.LearnRule):
        raise TypeError(f"rule must be a LearnRule, not {rule!r}")
    check_probabilities(ready_probability=ready_probability, valid_probability=valid_probability,
                        trace_ready_probability=trace_ready_probability)
    check_progress(progress)
    dims, net, codes, labels, flags = _inputs(network_or_dims, codes, labels, learn)
    init_state = init_state.check(rule)
    if init_state.weights.shape != (dims.n_out, dims.n_in):
        raise ValueError(f"init_state: expected shape ({dims.n_out}, {dims.n_in}), got "
                         f"{init_state.weights.shape}")
    dut = build_learner(dims if net is None else net, rule, init_state, folding=folding,
                        lanes=lanes)
    learner = dut if net is None else dut.learner
    n_trace = int(flags.sum()) * dims.n_in * learner.groups
    words = _pack(dut.i.payload.shape(), codes, labels, flags)
    kwargs = dict(progress=progress, ready_probability=ready_probability,
                  valid_probability=valid_probability,
                  trace_ready_probability=trace_ready_probability, seed=seed)
    compile_seconds, bdir = 0.0, None
    if simulator == "amaranth":
        outputs, traces, cycles, seconds = _run_amaranth(dut, words, n_trace, **kwargs)
    else:
        limit = stall_limit(dims, net, min(ready_probability, valid_probability,
                                            trace_ready_probability))
        outputs, traces, cycles, seconds, compile_seconds, bdir = _run_verilog(
            dut, words, n_trace, build_dir=build_dir, stall_limit=limit, log=log,
            **kwargs)
    n = len(codes)
    classes = np.array([c for c, _ in outputs], dtype=np.int64).reshape(n)
    scores = np.array([s for _, s in outputs], dtype=np.int64).reshape(n, dims.n_out)
    weights, momentum, errors = _rebuild(dims, learner.lanes, init_state, flags, traces)
    return LearnRun(classes=classes, scores=scores, weights=weights, momentum=momentum,
                    learn=flags, simulator=simulator, cycles=cycles, seconds=seconds,
                    compile_seconds=compile_seconds, build_dir=bdir, trace_errors=errors)


def compare_learning(rule, network_or_dims, init_state, codes, labels, run, *, limit=5):
    """Replay :func:`qnnfab.spec.learn_rule.step` over the samples (learning where
    ``run.learn`` says) and compare every step's class, scores, weights and momenta with
    ``run``; returns a :class:`LearnComparison` (at most ``limit`` differences listed per
    step)."""
    dims, net = _dims(network_or_dims)
    feats = learner_features(network_or_dims, codes)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(feats)
    for name, arr, shape in (("classes", run.classes, (n,)),
                             ("scores", run.scores, (n, dims.n_out)),
                             ("weights", run.weights, (n, dims.n_out, dims.n_in)),
                             ("momentum", run.momentum, (n, dims.n_out, dims.n_in))):
        if np.shape(arr) != shape:
            raise ValueError(f"run.{name}: expected shape {shape}, got {np.shape(arr)}")
    state = init_state.check(rule)
    mismatches = []
    exact = 0
    for k in range(n):
        r = lr.step(rule, state, feats[k], int(labels[k]), dims.in_bits,
                    learn=bool(run.learn[k]))
        state = r.state
        found = []
        if int(run.classes[k]) != r.cls:
            found.append(LearnMismatch(k, "class", (), r.cls, int(run.classes[k])))
        for j in np.flatnonzero(run.scores[k] != r.scores):
            found.append(LearnMismatch(k, "score", (int(j),), int(r.scores[j]),
                                       int(run.scores[k, j])))
        for what, got, exp in (("weight", run.weights[k], state.weights),
                               ("momentum", run.momentum[k], state.momentum)):
            for j, i in np.argwhere(got != exp):
                found.append(LearnMismatch(k, what, (int(j), int(i)), int(exp[j, i]),
                                           int(got[j, i])))
        if found:
            mismatches.extend(found[:limit])
        else:
            exact += 1
    return LearnComparison(checked=n, bit_exact=exact, mismatches=mismatches,
                           trace_errors=list(run.trace_errors))
