"""The timing model: every stage's latency and interval from its parameters (ints in, ints out).

One name for throughput: the **interval**, cycles between accepted inputs with an eager source
and sink. The **latency** is the cycles from the first cycle an input is offered (stage idle)
to the output's ``valid``, without back-pressure (a stage documents the event it counts from
where it is another one). The components (:class:`~qnnfab.rtl.mvu.MatrixVectorUnit`,
:class:`~qnnfab.rtl.conv.ConvUnit`, ...) expose ``latency`` and ``interval`` properties that
call these functions; :class:`~qnnfab.rtl.network.Network`, the fit estimate and the build
report read the same numbers. ``cycles_per_inference`` is only the report's name for a whole
network's interval.

Chains of stages (:func:`chained`): a stage that reads a whole vector out of its source's
output register (a matrix-vector unit, the flatten, the argmax) takes one cycle more per
input when that source is another stage, whose output register refills the cycle after a
transfer. A dense network's interval is exact; a CNN's is a lower bound (pixel stages hand
over through one-deep registers, so a bursty producer can stall the next stage): simulate
for the exact figure (:func:`qnnfab.sim.amaranth_sim.measure_timing`).

Nothing here imports Amaranth.
"""

import operator
from dataclasses import dataclass

__all__ = ["Timing", "fold_steps", "mvu", "multi_threshold", "argmax", "vector_to_pixels",
           "pixels_to_vector", "max_pool", "sliding_window", "conv_unit", "update_unit",
           "online_learner", "LearnerTiming", "chained", "MVU_STAGES", "FED_BY_STAGE",
           "UNROLLED_FIFO_LATENCY", "unrolled_registers", "argmax_tree", "unrolled_chain",
           "unrolled_fifo_depth", "argmax_needs_tree"]

#: Registers of a matrix-vector unit around its dot unit: the issue register (weight address,
#: input slice) and the accumulator; the thresholds are combinational from the accumulator
#: into the output register, which is loaded at the last group's accumulation.
MVU_STAGES = 2

#: Extra cycles per input of a stage that reads a whole vector from another stage's output
#: register (it refills the cycle after a transfer).
FED_BY_STAGE = 1

#: Cycles from the last pipeline register of an unrolled chain to its ``o.valid``: the output
#: FIFO (``amaranth.lib.fifo.SyncFIFOBuffered``) writes its memory, then reads it into its
#: output register.
UNROLLED_FIFO_LATENCY = 2


@dataclass(frozen=True)
class Timing:
    """A stage's timing.

    Attributes
    ----------
    latency : int or None
        Cycles from the first cycle an input is offered (stage idle) to ``o.valid``; None where
        it is not modelled.
    interval : int
        Cycles between accepted inputs, eager source and sink.
    """
    latency: "int | None"
    interval: int


def _positive(name, value):
    value = operator.index(value)
    if value < 1:
        raise ValueError(f"{name} must be >= 1, not {value}")
    return value


def fold_steps(in_features, out_features, pe, simd):
    """Issue steps of a folded layer per input vector, ``(in/simd)·(out/pe)``: one weight word
    (``pe·simd`` weights) each."""
    return (operator.index(in_features) // _positive("simd", simd)) \
        * (operator.index(out_features) // _positive("pe", pe))


def mvu(in_features, out_features, pe, simd, dot_latency):
    """A matrix-vector unit: latency ``steps + MVU_STAGES + dot_latency`` (``dot_latency``: the
    dot unit's pipeline registers); interval ``steps``, plus one when ``simd == in_features``
    (the whole payload is read a cycle after the issue)."""
    steps = fold_steps(in_features, out_features, pe, simd)
    return Timing(latency=steps + MVU_STAGES + operator.index(dot_latency),
                  interval=steps + int(simd == in_features))


def input_buffer(n):
    """The input vector in block RAM (:class:`~qnnfab.rtl.input_buffer.InputBuffer`): one code
    per cycle, so latency and interval ``n`` from an eager source; the layer it feeds reads
    the next vector at once (no refill bubble: the second bank is offered the cycle after the
    first is released)."""
    n = _positive("n", n)
    return Timing(latency=n, interval=n)


def fed_by_input_buffer(layer_timing, n):
    """A layer's :class:`Timing` with an :func:`input_buffer` of ``n`` codes in front: the
    codes' ``n`` cycles before it, and an interval of at least ``n``."""
    b = input_buffer(n)
    return Timing(latency=b.latency + layer_timing.latency,
                  interval=max(b.interval, layer_timing.interval))


def multi_threshold():
    """The threshold unit: 1 cycle from the group address (a ROM read), 0 from the sums; one
    group per cycle."""
    return Timing(latency=1, interval=1)


def argmax(n, *, tree=False):
    """The argmax over ``n`` scores held in its source's output register. Sequential (one
    score every two cycles): latency ``2n + 1``, interval ``2n + 2``. ``tree``: a comparator
    tree with a register after each of its ``L = max(1, ceil(log2 n))`` levels, latency ``L``,
    interval ``L + 1`` (the held scores are acknowledged with the result)."""
    n = _positive("n", n)
    if tree:
        levels = max(1, (n - 1).bit_length())
        return Timing(latency=levels, interval=levels + 1)
    return Timing(latency=2 * n + 1, interval=2 * n + 2)


def argmax_needs_tree(n, slowest_other_interval):
    """Whether a folded network ends with the tree argmax: when the sequential one's interval
    (``2n + 2``) is at least that of the slowest other stage, i.e. when it would set (or tie)
    the network's throughput. Otherwise the sequential one costs fewer cells for free."""
    return argmax(n).interval >= operator.index(slowest_other_interval)


def vector_to_pixels(height, width):
    """The pixel serializer: latency 1, one pixel per cycle (interval ``H·W``)."""
    return Timing(latency=1, interval=_positive("height", height) * _positive("width", width))


def pixels_to_vector(height, width):
    """The flatten: latency 1 from the last pixel's transfer, interval ``H·W``."""
    return Timing(latency=1, interval=_positive("height", height) * _positive("width", width))


def max_pool(height, width):
    """Max-pooling: latency 1 from a block's last input transfer, interval ``H·W`` (one input
    pixel per cycle)."""
    return Timing(latency=1, interval=_positive("height", height) * _positive("width", width))


def sliding_window(height, width, kernel_size, padding, consumer_interval=1):
    """The window generator over the padded ``Hp × Wp`` scan: latency ``(k - 1)·Wp + k`` from a
    frame's first scan cycle to its first window; interval ``Hp·Wp + Ho·Wo·(N - 1)`` with a
    consumer taking each window ``N = consumer_interval`` cycles after it is offered (1: an
    eager sink): windows come every ``N`` cycles, each position without a window costs one."""
    k, p = operator.index(kernel_size), operator.index(padding)
    n = _positive("consumer_interval", consumer_interval)
    hp, wp = operator.index(height) + 2 * p, operator.index(width) + 2 * p
    ho, wo = hp - k + 1, wp - k + 1
    return Timing(latency=(k - 1) * wp + k, interval=hp * wp + ho * wo * (n - 1))


def conv_unit(height, width, kernel_size, padding, in_features, out_features, pe, simd,
              dot_latency):
    """A conv unit (window generator + matrix-vector unit over ``in_features = C_in·k²``):
    interval the window generator's with the unit as its consumer (each window costs the unit's
    interval, each padded position without a window one cycle; at most that on its own with an
    eager source and sink); latency the window's first ``o.valid`` plus the unit's latency."""
    unit = mvu(in_features, out_features, pe, simd, dot_latency)
    window = sliding_window(height, width, kernel_size, padding, unit.interval)
    return Timing(latency=window.latency + unit.latency, interval=window.interval)


def update_unit(pipelined=True):
    """The learner's update datapath: 4 enabled register stages (0 when not pipelined), one
    set of inputs per enabled cycle."""
    return Timing(latency=4 if pipelined else 0, interval=1)


@dataclass(frozen=True)
class LearnerTiming:
    """The on-chip learner's timing, eager source and sinks.

    Attributes
    ----------
    latency : int
        From the first cycle ``i.valid`` is seen (learner idle) to ``o.valid``.
    interval : int
        Cycles of a learning sample (to the next sample's first cycle).
    inference_interval : int
        The same for a sample with ``learn = 0`` (no update phase).
    """
    latency: int
    interval: int
    inference_interval: int


def online_learner(items, n_out, *, item_stages, product_stages, error_stages,
                   update_latency):
    """The phases of :class:`~qnnfab.rtl.learner.OnlineLearner`, one after the other::

        idle     1
        forward  items + item_stages + product_stages + 1   (the accumulation of the last item)
        errors   n_out + error_stages + 1                    (the last q enters its ring)
        output   1                                           (o.valid)
        update   items + item_stages + update_latency        (only when learning)
        done     1                                           (i.ready)

    ``items = n_in·G``; the stage counts are the learner's registers and its units' latencies.
    """
    items, n_out = operator.index(items), operator.index(n_out)
    forward = items + item_stages + product_stages + 1
    errors = n_out + error_stages + 1
    update = items + item_stages + update_latency
    latency = 1 + forward + errors + 1
    return LearnerTiming(latency=latency, interval=latency + update + 1,
                         inference_interval=latency + 1)


def unrolled_registers(levels, levels_per_stage):
    """Pipeline registers of an unrolled dense layer whose adder graph is ``levels`` deep,
    with a register every ``levels_per_stage`` levels: ``levels // levels_per_stage + 1``
    (the thresholds or the scores are level ``levels + 1``; the last register is the
    layer's output)."""
    levels = operator.index(levels)
    if levels < 0:
        raise ValueError(f"levels must be >= 0, not {levels}")
    return levels // _positive("levels_per_stage", levels_per_stage) + 1


def argmax_tree(n):
    """The pipelined argmax of an unrolled chain: a register after each of its
    ``ceil(log2 n)`` comparator levels; one vector per cycle."""
    n = _positive("n", n)
    return Timing(latency=(n - 1).bit_length(), interval=1)


def unrolled_fifo_depth(registers):
    """Entries of an unrolled chain's output FIFO: enough for every input in flight when the
    sink takes one output per cycle, ``registers + UNROLLED_FIFO_LATENCY + 1``, so the chain
    accepts an input every cycle."""
    return operator.index(registers) + UNROLLED_FIFO_LATENCY + 1


def unrolled_chain(levels, levels_per_stage, argmax_n=None):
    """A chain of unrolled dense layers (adder graphs ``levels`` deep, one entry per layer),
    with the pipelined argmax when ``argmax_n`` is given: latency the registers
    (:func:`unrolled_registers` per layer, :func:`argmax_tree`) plus the output FIFO's
    :data:`UNROLLED_FIFO_LATENCY`; interval 1 (one input per cycle)."""
    regs = sum(unrolled_registers(d, levels_per_stage) for d in levels)
    if argmax_n is not None:
        regs += argmax_tree(argmax_n).latency
    return Timing(latency=regs + UNROLLED_FIFO_LATENCY, interval=1)


def chained(stages):
    """Intervals of stages in a chain. ``stages``: ``(timing, reads_vector)`` or ``(timing,
    reads_vector, refills)`` per stage, input to output, ``reads_vector`` true for a stage that
    reads a whole vector from its source's output register (:data:`FED_BY_STAGE` more per
    input when that source is another stage whose output register refills the cycle after a
    transfer, i.e. for every stage but the first, unless the source's ``refills`` is false:
    an unrolled chain's output FIFO offers its next vector at once). Returns the list of
    intervals; the chain's interval is their maximum (exact for a chain of vector stages, a
    lower bound with pixel stages)."""
    out = []
    prev_refills = True
    for k, stage in enumerate(stages):
        t, reads_vector = stage[0], stage[1]
        bubble = reads_vector and k > 0 and prev_refills
        out.append(t.interval + (FED_BY_STAGE if bubble else 0))
        prev_refills = stage[2] if len(stage) > 2 else True
    return out
