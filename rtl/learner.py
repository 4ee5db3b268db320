"""On-chip learning of a dense layer: :class:`OnlineLearner` (the layer, its memories and its
learning rule) and :class:`LearningNetwork` (a network's frozen layers feeding one).

The rule is :mod:`qnnfab.spec.learn_rule` (integers, shifts and saturating adds; no
multiplier); the hardware is bit-exact with :func:`qnnfab.spec.learn_rule.step` after every
sample, which the ``trace`` stream lets a testbench check weight by weight.

The layer is folded by ``lanes`` (a divisor of ``n_out``; default all of them): its work is
``n_in·G`` *items* ``(i, g)``, input ``i`` and lane group ``g`` (``G = n_out / lanes``
groups of ``lanes`` lanes), one item per cycle. Weights and momenta are memories of
``n_in·G`` words of ``lanes`` lanes (word ``i·G + g``), read and written in item order by one
address counter. Per sample (learner idle, ``i.valid``), one phase after the other::

    idle      1 cycle              i.valid seen (and the previous output taken); clear
    forward   n_in·G cycles + 4    per item: read the word, w·v by shift-add (no multiplier),
                                   add into the accumulator ring
    errors    n_out cycles + 3     per lane (at the head of the ring, rotating by one):
                                   |e| = max(0, ±s + T), then its leading one -> q (sign,
                                   exponent) into the q ring; the argmax on the way
    output    1 cycle              o.valid: the class and the scores (before the update)
    update    n_in·G cycles + 6    only if learn: per item read W, M; the UpdateUnit (4
                                   register stages); write back; trace
    done      1 cycle              i.ready: the sample is acknowledged

so a learning sample takes :attr:`OnlineLearner.interval` = ``2·n_in·G + n_out + 16``
cycles (``2·n_in + n_out + 16`` with all lanes) and an inference-only one
:attr:`OnlineLearner.inference_interval` = ``n_in·G + n_out + 10``, with an eager source and
sinks; ``o.valid`` rises :attr:`OnlineLearner.latency` = ``n_in·G + n_out + 9`` cycles after
``i.valid`` is first seen. These come from :func:`qnnfab.rtl.timing.online_learner` with the
learner's register stages (:data:`ITEM_STAGES`, :data:`PRODUCT_STAGES`,
:data:`ABS_ERROR_STAGES`) and its units' latencies (the error quantizer's, the
:class:`~qnnfab.rtl.update_unit.UpdateUnit`'s). Each item passes two register stages before
the memories' data (the address, and the input code: first the 16-code chunk holding it, then
the code), so no path selects one of ``n_in`` codes in one cycle.

The accumulators form a ring: each item's sums enter at the tail while the ring rotates by
``lanes``, so the lanes being accumulated are always at its head and every accumulator is
back in place after each input; the errors phase rotates it by one, so the scores are read
at ``acc[0]`` in lane order. The errors, in lane order, shift into a ring of ``q`` that the
update phase rotates by ``lanes`` per item. Nothing multiplexes one lane out of ``n_out``.

Resources, measured before the momentum was stored as a code (iCE40 UP5K, Yosys
``synth_ice40`` + nextpnr, default rule, 128 2-bit inputs, 10 classes, the learner alone
behind a few pins): ``lanes=1`` ~1570 logic cells, 10 EBR, 37 MHz (the critical path is the
errors phase's adder); ``lanes=10`` ~5400 cells and 20 EBR, more than the device has. The
update unit is ~200 cells a lane and the memories ``n_in·n_out·(weight_bits +
momentum_code_bits)`` bits (16 + 6 by default, was 16 + 16: the momentum is stored as
``logq`` of itself, a sign, a non-zero flag and an exponent), so a small device wants
``lanes`` of 1 or 2: a sample then takes ``~2·n_in·n_out`` cycles (~75 µs at 36 MHz), far
less than its transfer over a UART.
"""

import operator

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out, connect, flipped
from amaranth.utils import ceil_log2

from qnnfab import ir, numerics
from qnnfab.spec.learn_rule import LearnRule, LearnState

from . import timing
from ._checks import mark_used, quiet_on_error
from .argmax import argmax_layout
from .estimate import BLOCK_RAM_MIN_BITS
from .network import Network
from .update_unit import UpdateUnit, encode_momentum, logq_exponent, q_layout

__all__ = ["OnlineLearner", "LearningNetwork", "learner_input_layout", "trace_layout",
           "ITEM_STAGES", "PRODUCT_STAGES", "ABS_ERROR_STAGES"]

#: Registers an item passes before the memories' data: the address (with the 16-code chunk of
#: the input), then the memories' synchronous read (with the code itself).
ITEM_STAGES = 2
#: The forward product register (``w·v`` by shift-add) before the accumulator ring.
PRODUCT_STAGES = 1
#: The ``|e|`` register between the accumulator at the ring's head and the error quantizer.
ABS_ERROR_STAGES = 1


def learner_input_layout(n_in, in_bits, n_out):
    """``i.payload``: ``{"x": ArrayLayout(unsigned(in_bits), n_in), "label":
    unsigned(max(1, ceil_log2(n_out))), "learn": unsigned(1)}`` (fields LSB first)."""
    return data.StructLayout({
        "x": data.ArrayLayout(unsigned(in_bits), n_in),
        "label": unsigned(max(1, ceil_log2(n_out))),
        "learn": unsigned(1),
    })


def trace_layout(n_in, n_out, rule, lanes=None):
    """``trace.payload``: ``{"index": unsigned(max(1, ceil_log2(n_in))), "group":
    unsigned(max(1, ceil_log2(n_out // lanes))), "w": ArrayLayout(signed(weight_bits), lanes),
    "m": ArrayLayout(signed(momentum_bits + 1), lanes)}``: what one update cycle writes back,
    ``W[g·lanes : (g+1)·lanes, index]`` and the same of the stored momentum ``M = logq(m)``
    (its value; the memory holds its code) for ``g = group`` (always 0 when
    ``lanes == n_out``, the default)."""
    lanes = n_out if lanes is None else lanes
    return data.StructLayout({
        "index": unsigned(max(1, ceil_log2(n_in))),
        "group": unsigned(max(1, ceil_log2(n_out // lanes))),
        "w": data.ArrayLayout(signed(rule.weight_bits), lanes),
        "m": data.ArrayLayout(signed(rule.momentum_bits + 1), lanes),
    })


def _pick(value, index, width):
    """Part ``index`` of ``value`` cut into ``width``-bit parts: a multiplexer (Amaranth's
    ``word_select`` would multiply the index by ``width``, a ``$mul`` in the netlist)."""
    parts = [value[k:k + width] for k in range(0, len(value), width)]
    return Array(parts)[index] if len(parts) > 1 else parts[0]


def _check_state(rule, n_out, n_in, init_weights, init_momentum):
    w = np.asarray(init_weights)
    if w.shape != (n_out, n_in):
        raise ValueError(f"init_weights: expected shape ({n_out}, {n_in}) (n_out, n_in), "
                         f"got {w.shape}")
    mom = np.zeros_like(w, dtype=np.int64) if init_momentum is None \
        else np.asarray(init_momentum)
    if mom.shape != (n_out, n_in):
        raise ValueError(f"init_momentum: expected shape ({n_out}, {n_in}), got {mom.shape}")
    return LearnState(w, mom).check(rule)


class OnlineLearner(wiring.Component):
    """A dense layer that infers and learns, one labelled sample at a time.

    Parameters
    ----------
    n_in, n_out : int
        Inputs and outputs (classes) of the layer.
    in_bits : int
        Bits of each input activation code (1: ±1, else unsigned).
    rule : qnnfab.spec.learn_rule.LearnRule
    init_weights : int array (n_out, n_in)
        The starting weights (e.g. :func:`qnnfab.spec.learn_rule.init_state`).
    init_momentum : int array (n_out, n_in), optional
        The starting momenta (default zero).
    lanes : int, optional
        Output lanes computed per cycle (forward products and accumulations, and the
        :class:`~qnnfab.rtl.update_unit.UpdateUnit`'s lanes), a divisor of ``n_out``; default
        ``n_out`` (one input per cycle). The update unit is most of the learner's logic (~200
        iCE40 cells a lane at 16-bit widths), so a small device wants 1 or 2.

    Members
    -------
    i : In(stream.Signature(learner_input_layout(n_in, in_bits, n_out)))
        A sample: its codes ``x``, its ``label`` and ``learn`` (0: infer only). Held by the
        source until ``i.ready``, which rises when the sample is finished (after the update);
        ``x`` is read from the held payload, not copied. A label ``>= n_out`` is taken as
        "no class is right" (the golden rule refuses it).
    o : Out(stream.Signature(argmax_layout(n_out, acc_width)))
        The class (first index of the largest score) and the scores ``W @ v``, before the
        update. The scores are read from the accumulators, which the next sample reuses:
        a sample's forward pass waits until the previous output is taken.
    trace : Out(stream.Signature(trace_layout(n_in, n_out, rule, lanes)))
        Every part written back by an update, in order of ``index`` (0 .. n_in - 1) and
        ``group``; the update waits while ``trace.ready`` is low. Hold it high if it is not
        needed.

    Weights and momenta live in two :class:`~amaranth.lib.memory.Memory` of ``n_in·G`` words
    of ``lanes`` lanes (:meth:`memory_words`; ``ram_style = "block"`` when large). Timing (see
    the module docstring): :attr:`interval`, :attr:`inference_interval`, :attr:`latency`.
    """

    @quiet_on_error
    def __init__(self, n_in, n_out, in_bits, rule, init_weights, init_momentum=None, *,
                 lanes=None):
        self.n_in = operator.index(n_in)
        self.n_out = operator.index(n_out)
        self.in_bits = operator.index(in_bits)
        if self.n_in < 1 or self.n_out < 1:
            raise ValueError(f"n_in and n_out must be >= 1, not n_in={self.n_in} "
                             f"n_out={self.n_out}")
        if not 1 <= self.in_bits <= ir.MAX_ACTIVATION_BITS:
            raise ValueError(f"in_bits must be in 1..{ir.MAX_ACTIVATION_BITS}, not "
                             f"{self.in_bits}")
        if not isinstance(rule, LearnRule):
            raise TypeError(f"rule must be a LearnRule, not {rule!r}")
        self.lanes = self.n_out if lanes is None else operator.index(lanes)
        if self.lanes < 1 or self.n_out % self.lanes:
            raise ValueError(f"lanes must divide n_out = {self.n_out}, not {self.lanes}")
        self.groups = self.n_out // self.lanes
        self.rule = rule
        state = _check_state(rule, self.n_out, self.n_in, init_weights, init_momentum)
        self.init_weights, self.init_momentum = state.weights, state.momentum
        bound = rule.score_bound(self.n_in, self.in_bits)
        self.acc_width = numerics.signed_width(-bound, bound)
        super().__init__({
            "i": In(stream.Signature(learner_input_layout(self.n_in, self.in_bits,
                                                          self.n_out))),
            "o": Out(stream.Signature(argmax_layout(self.n_out, self.acc_width))),
            "trace": Out(stream.Signature(trace_layout(self.n_in, self.n_out, rule,
                                                       self.lanes))),
        })

    @property
    def _timing(self):
        return timing.online_learner(
            self.n_in * self.groups, self.n_out, item_stages=ITEM_STAGES,
            product_stages=PRODUCT_STAGES, error_stages=ABS_ERROR_STAGES + _Quantizer.LATENCY,
            update_latency=timing.update_unit(pipelined=True).latency)

    @property
    def interval(self):
        """Cycles of a learning sample, from the first cycle ``i.valid`` is seen (learner
        idle) to the next such cycle: ``2·n_in·G + n_out + 16``, ``G = n_out / lanes``."""
        return self._timing.interval

    @property
    def inference_interval(self):
        """The same for a sample with ``learn = 0``: ``n_in·G + n_out + 10``."""
        return self._timing.inference_interval

    @property
    def latency(self):
        """Cycles from the first cycle ``i.valid`` is seen (learner idle, ``o`` free) to
        ``o.valid``: ``n_in·G + n_out + 9``."""
        return self._timing.latency

    @property
    def memory_bits(self):
        """Bits of weight and momentum memory: ``weight_bits`` and the momentum's code
        (:attr:`LearnRule.momentum_code_bits
        <qnnfab.spec.learn_rule.LearnRule.momentum_code_bits>`) per learned weight."""
        return self.n_in * self.n_out * self.rule.state_bits_per_weight

    def memory_words(self, state):
        """The contents of a weight or momentum memory for ``state`` (n_out, n_in): word
        ``i·G + g`` holds lanes ``g·lanes .. (g+1)·lanes - 1`` of input ``i``."""
        a = np.asarray(state, dtype=np.int64)
        return [[int(v) for v in a[g * self.lanes:(g + 1) * self.lanes, i]]
                for i in range(self.n_in) for g in range(self.groups)]

    def momentum_words(self, momentum):
        """The momentum memory's contents: :meth:`memory_words` of the codes of
        ``logq(momentum)`` (:func:`~qnnfab.rtl.update_unit.encode_momentum`), each word the
        lanes' codes packed, lane 0 lowest."""
        width = self.rule.momentum_code_bits
        return [sum(encode_momentum(v, self.rule) << (width * j) for j, v in enumerate(word))
                for word in self.memory_words(momentum)]

    def _memory(self, shape, init):
        depth = self.n_in * self.groups
        bits = data.Layout.cast(shape).size if isinstance(shape, data.Layout) \
            else len(Const(0, shape))
        attrs = {"ram_style": "block"} if depth * bits >= BLOCK_RAM_MIN_BITS else {}
        return Memory(shape=shape, depth=depth, init=init, attrs=attrs)

    def elaborate(self, platform):
        m = Module()
        rule = self.rule
        n_in, n_out, b = self.n_in, self.n_out, self.in_bits
        groups, lanes = self.groups, self.lanes
        depth = n_in * groups
        m.submodules.weights = wmem = self._memory(
            data.ArrayLayout(signed(rule.weight_bits), lanes),
            self.memory_words(self.init_weights))
        m.submodules.momenta = mmem = self._memory(
            unsigned(lanes * rule.momentum_code_bits), self.momentum_words(self.init_momentum))
        w_rd, w_wr = wmem.read_port(), wmem.write_port()
        m_rd, m_wr = mmem.read_port(), mmem.write_port()
        m.submodules.update = upd = UpdateUnit(n_lanes=lanes, in_bits=b, rule=rule)
        assert upd.latency == timing.update_unit(pipelined=True).latency

        # -- items: counters, then two register stages before the memories' data -------------
        # issue (cycle t): counters k = i·G + g, i (input), g (lane group).
        # s1 (t+1): the memory address is s1_k; the 16-input chunk holding x[i] is registered.
        # s2 (t+2): the memories' data and s2_v = x[i] (from the chunk) are there.
        # No path selects one code out of n_in in one cycle. ``move`` advances every stage
        # (``en`` in the update phase, where the trace can stall; always in the forward one).
        k = Signal(range(depth + 1))
        i = Signal(range(n_in + 1))
        g = Signal(range(max(2, groups)))
        last_g = (g == groups - 1) if groups > 1 else Const(1, 1)
        issued_all = k == depth
        restart, issue, move = Signal(), Signal(), Signal()
        with m.If(restart):
            m.d.sync += [k.eq(0), i.eq(0), g.eq(0)]
        with m.Elif(issue):
            m.d.sync += k.eq(k + 1)
            with m.If(last_g):
                m.d.sync += [i.eq(i + 1), g.eq(0)]
            with m.Else():
                m.d.sync += g.eq(g + 1)
        x = self.i.payload.x.as_value()
        label = self.i.payload.label
        chunk = min(n_in, 16)
        n_chunks = -(-n_in // chunk)
        s1_valid, s2_valid = Signal(), Signal()
        s1_k, s2_k = Signal.like(k), Signal.like(k)
        s1_i, s2_i = Signal.like(self.trace.payload.index), Signal.like(self.trace.payload.index)
        s1_g, s2_g = Signal.like(self.trace.payload.group), Signal.like(self.trace.payload.group)
        s2_v = Signal(b)
        with m.If(move):
            m.d.sync += [s1_valid.eq(issue), s1_k.eq(k), s1_i.eq(i), s1_g.eq(g),
                         s2_valid.eq(s1_valid), s2_k.eq(s1_k), s2_i.eq(s1_i), s2_g.eq(s1_g)]
            if n_chunks == 1:
                m.d.sync += s2_v.eq(_pick(x, s1_i[:max(1, ceil_log2(n_in))], b))
            else:
                low = ceil_log2(chunk)              # chunk is 16: a power of two
                x_pad = Cat(x, Const(0, (n_chunks * chunk - n_in) * b))
                s1_chunk = Signal(chunk * b)
                m.d.sync += [s1_chunk.eq(_pick(x_pad, i[low:], chunk * b)),
                             s2_v.eq(_pick(s1_chunk, s1_i[:low], b))]
        m.d.comb += [w_rd.addr.eq(s1_k), m_rd.addr.eq(s1_k), w_rd.en.eq(move),
                     m_rd.en.eq(move)]

        # -- the accumulators: a ring ---------------------------------------------------------
        # acc[0 .. lanes-1] are the lanes of the group being accumulated; each accumulation
        # rotates the ring by ``lanes`` (the sums enter at the tail), so after every group of
        # an input (and after all inputs) each accumulator is back at its lane. The errors
        # phase rotates by one to look at each score in turn at acc[0]. No multiplexer picks
        # a lane out of n_out.
        acc = [Signal(signed(self.acc_width), name=f"acc{j}") for j in range(n_out)]
        m.d.comb += [self.o.payload.scores[j].eq(acc[j]) for j in range(n_out)]
        clear, rot_add, rot_one = Signal(), Signal(), Signal()
        prod_width = rule.weight_bits + b + 1
        prods = [Signal(signed(prod_width), name=f"prod{j}") for j in range(lanes)]
        with m.If(clear):
            m.d.sync += [a.eq(0) for a in acc]
        with m.Elif(rot_add):
            m.d.sync += [acc[j].eq(acc[j + lanes]) for j in range(n_out - lanes)]
            m.d.sync += [acc[n_out - lanes + j].eq(acc[j] + prods[j]) for j in range(lanes)]
        with m.Elif(rot_one):
            m.d.sync += [acc[j].eq(acc[(j + 1) % n_out]) for j in range(n_out)]

        # -- forward: s2 -> product (s3) -> accumulate ----------------------------------------
        forward = Signal()
        s3_valid = Signal()
        m.d.sync += s3_valid.eq(forward & s2_valid)
        with m.If(s2_valid):
            for j in range(lanes):
                w = w_rd.data[j]
                if b == 1:
                    p = Mux(s2_v[0], w, -w)          # code 1 is +1, code 0 is -1
                else:
                    p = 0
                    for bit in range(b):
                        p = p + Mux(s2_v[bit], w << bit, 0)
                m.d.sync += prods[j].eq(p)
        m.d.comb += rot_add.eq(s3_valid)

        # -- error pipeline: acc[0] -> |e| (and argmax) -> exponent -> q ring ------------------
        lane = Signal(range(n_out + 1))
        cls_shape = unsigned(max(1, ceil_log2(n_out)))
        best = Signal(signed(self.acc_width))
        best_idx = Signal(cls_shape)
        m.d.comb += self.o.payload.cls.eq(best_idx)
        mag_width = rule.error_bound(n_in, b).bit_length()
        a2_valid, a2_neg = Signal(), Signal()
        a2_mag = Signal(mag_width)
        a3_valid, a3_neg, a3_nz = Signal(), Signal(), Signal()
        m.d.sync += [a3_valid.eq(a2_valid), a3_neg.eq(a2_neg), a3_nz.eq(a2_mag != 0)]
        s0 = acc[0]
        is_label = lane == label
        # |e| = max(0, s + T) for j != y, and max(0, T - s) = |min(0, s - T)| at the label,
        # with -s = ~s + 1 folded into the constant: one adder.
        u = Mux(is_label, ~s0, s0) + Mux(is_label, rule.margin + 1, rule.margin)
        with m.If(rot_one):
            m.d.sync += [a2_mag.eq(Mux(u < 0, 0, u[:mag_width])), a2_neg.eq(is_label)]
            with m.If((lane == 0) | (s0 > best)):          # first index on ties
                m.d.sync += [best.eq(s0), best_idx.eq(lane)]
        m.d.sync += a2_valid.eq(rot_one)
        m.submodules.quantize = quant = _Quantizer(len(a2_mag), rule)  # a3: registered exp
        m.d.comb += quant.mag.eq(a2_mag)
        # q ring: filled from the tail in lane order by the errors phase; rotated by ``lanes``
        # per item by the update phase, so qs[0 .. lanes-1] are the item's lanes.
        ql = q_layout(rule)
        qs = [Signal(ql, name=f"q{j}") for j in range(n_out)]
        q_new = Signal(ql)
        m.d.comb += [q_new.exp.eq(quant.exp), q_new.neg.eq(a3_neg), q_new.nz.eq(a3_nz)]
        q_shift, q_rot = Signal(), Signal()
        with m.If(q_shift):
            m.d.sync += [qs[j].eq(qs[j + 1]) for j in range(n_out - 1)]
            m.d.sync += qs[-1].eq(q_new)
        with m.Elif(q_rot):
            m.d.sync += [qs[j].eq(qs[(j + lanes) % n_out]) for j in range(n_out)]
        m.d.comb += q_shift.eq(a3_valid)

        # -- update: s2 -> UpdateUnit (pipelined) -> write back, trace -------------------------
        # ``en`` stalls everything while a traced word waits for ``trace.ready``.
        latency = upd.latency
        vld = Signal(latency)
        p_k = [Signal.like(k, name=f"p_k{n}") for n in range(latency)]
        p_i = [Signal.like(s2_i, name=f"p_i{n}") for n in range(latency)]
        p_g = [Signal.like(s2_g, name=f"p_g{n}") for n in range(latency)]
        out_valid = vld[-1]
        en = Signal()
        m.d.comb += en.eq(~out_valid | self.trace.ready)
        step = Signal()                     # an item enters the update unit
        with m.If(en):
            m.d.sync += vld.eq(Cat(step, vld[:-1]))
            for regs, first in ((p_k, s2_k), (p_i, s2_i), (p_g, s2_g)):
                m.d.sync += [regs[0].eq(first)]
                m.d.sync += [a.eq(b_) for a, b_ in zip(regs[1:], regs[:-1])]
        m.d.comb += q_rot.eq(step)
        m.d.comb += [upd.w.eq(w_rd.data), upd.m.as_value().eq(m_rd.data), upd.v.eq(s2_v),
                     upd.q.eq(Cat(*qs[:lanes]))]
        m.d.comb += [self.trace.valid.eq(out_valid),
                     self.trace.payload.index.eq(p_i[-1]),
                     self.trace.payload.group.eq(p_g[-1]),
                     self.trace.payload.w.eq(upd.w_new),
                     self.trace.payload.m.eq(upd.m_value)]
        write = Signal()
        m.d.comb += write.eq(out_valid & self.trace.ready)
        m.d.comb += [w_wr.addr.eq(p_k[-1]), w_wr.data.eq(upd.w_new), w_wr.en.eq(write),
                     m_wr.addr.eq(p_k[-1]), m_wr.data.eq(upd.m_new.as_value()),
                     m_wr.en.eq(write)]

        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM(name="learner"):
            with m.State("IDLE"):
                with m.If(self.i.valid & ~self.o.valid):
                    m.d.comb += [clear.eq(1), restart.eq(1)]
                    m.next = "FORWARD"
            with m.State("FORWARD"):
                m.d.comb += [forward.eq(1), move.eq(1), issue.eq(~issued_all)]
                with m.If(issued_all & ~s1_valid & ~s2_valid & ~s3_valid):
                    m.d.sync += lane.eq(0)
                    m.next = "ERRORS"
            with m.State("ERRORS"):
                with m.If(lane != n_out):
                    m.d.comb += rot_one.eq(1)
                    m.d.sync += lane.eq(lane + 1)
                with m.Elif(~a2_valid & ~a3_valid):
                    m.next = "OUTPUT"
            with m.State("OUTPUT"):
                m.d.comb += restart.eq(1)
                m.d.sync += self.o.valid.eq(1)
                with m.If(self.i.payload.learn):
                    m.next = "UPDATE"
                with m.Else():
                    m.next = "DONE"
            with m.State("UPDATE"):
                m.d.comb += [move.eq(en), issue.eq(en & ~issued_all), step.eq(en & s2_valid),
                             upd.en.eq(en)]
                # Nothing left to read, and the last item leaves the unit this cycle.
                with m.If(issued_all & ~s1_valid & ~s2_valid & (vld[:-1] == 0) & en):
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += self.i.ready.eq(1)
                m.next = "IDLE"
        return m


class _Quantizer(wiring.Component):
    """``exp``: the exponent of ``logq(mag)`` (see :func:`~qnnfab.rtl.update_unit.logq_exponent`),
    clamped to ``rule.max_shift``, registered (:data:`LATENCY` cycle after ``mag``)."""

    LATENCY = 1

    @property
    def latency(self):
        return self.LATENCY

    def __init__(self, width, rule):
        self.rule = rule
        super().__init__({"mag": In(width), "exp": Out(q_layout(rule).members["exp"])})

    def elaborate(self, platform):
        m = Module()
        exp = logq_exponent(m, self.mag, self.rule.rounding)
        m.d.sync += self.exp.eq(Mux(exp > self.rule.max_shift, self.rule.max_shift, exp))
        return m


class LearningNetwork(wiring.Component):
    """A network whose last layer learns on chip: its ``layers[:-1]`` frozen (the stages of
    :class:`~qnnfab.rtl.network.Network`: matrix-vector units, and for a CNN the conv, pool,
    serializer and flatten stages) feeding an :class:`OnlineLearner` of the last layer's
    shape (``n_in`` its ``in_features``, ``in_bits`` its ``in_bits``). The last layer's own
    weights are not used: the learner starts from ``init_weights``.

    Parameters
    ----------
    network : ir.Network
    rule : LearnRule
    init_weights, init_momentum : int arrays (n_out, n_in)
        As for :class:`OnlineLearner`.
    folding : list of LayerFolding or (pe, simd), optional
        The folding of every layer of ``network`` as for :class:`~qnnfab.rtl.network.Network`
        (the last layer's entry is not used); None: automatic.
    lanes : int, optional
        The learner's update lanes per cycle (see :class:`OnlineLearner`).
    pipelined : bool
        Pipeline registers inside the frozen layers' dot units.

    Members
    -------
    i : In(stream.Signature(learner_input_layout(input_features, input_bits, n_out)))
        ``x`` the network's input codes, with ``label`` and ``learn``.
    o, trace : as :class:`OnlineLearner`.

    ``label`` and ``learn`` travel beside the frozen layers in a small FIFO (one entry per
    vector in flight, at most two per stage), written when the first stage accepts a vector
    and read when the learner does. The frozen stages work on the next inputs while the
    learner is busy: in steady state a sample takes the slower of the learner's
    :attr:`~OnlineLearner.interval` and the frozen stages' interval (:attr:`interval`).
    """

    @quiet_on_error
    def __init__(self, network, rule, init_weights, init_momentum=None, *, folding=None,
                 lanes=None, pipelined=True):
        if not isinstance(network, ir.Network):
            raise TypeError(f"network must be a qnnfab.ir.Network, not {network!r}")
        network.validate()
        network.require_integer("hardware")
        last = network.layers[-1]
        if not isinstance(last, ir.DenseLayer):
            raise ValueError(f"the last layer must be dense to be learnt, not {last.kind}")
        self.network = network
        self.frozen = Network(network, folding, pipelined=pipelined)
        self.learner = OnlineLearner(last.in_features, last.out_features, last.in_bits, rule,
                                     init_weights, init_momentum, lanes=lanes)
        # Built here for its interface and timing; elaborated (only) by this component.
        mark_used(self.learner)
        self.rule = rule
        super().__init__({
            "i": In(stream.Signature(learner_input_layout(
                network.input_features, network.input_bits, last.out_features))),
            "o": Out(self.learner.o.signature),
            "trace": Out(self.learner.trace.signature),
        })

    @property
    def folding(self):
        return self.frozen.folding

    @property
    def interval(self):
        """Steady-state cycles per learning sample: the learner's, or the frozen stages'
        interval if that is longer."""
        return max(self.learner.interval, self._frozen_interval())

    def _frozen_interval(self):
        stages = self.frozen.stage_intervals[:-2] if len(self.network.layers) > 1 else [0]
        return max(stages) if stages else 0

    @property
    def fifo_depth(self):
        """Entries of the label FIFO: two per frozen stage, plus two."""
        return 2 * (len(self.frozen.stage_intervals) - 2) + 2

    def elaborate(self, platform):
        m = Module()
        m.submodules.learner = learner = self.learner
        stages = self.frozen.stages()
        for _, unused in stages[-2:]:            # the last layer's unit and the argmax
            mark_used(unused)
        stages = stages[:-2]
        connect(m, learner.o, flipped(self.o))
        connect(m, learner.trace, flipped(self.trace))
        if not stages:
            connect(m, flipped(self.i), learner.i)
            return m
        for name, unit in stages:
            m.submodules[name] = unit
        units = [unit for _, unit in stages]
        for a, b in zip(units, units[1:]):
            connect(m, a.o, b.i)
        first, last = units[0].i, units[-1].o
        side = Cat(self.i.payload.label, self.i.payload.learn)
        m.submodules.labels = fifo = SyncFIFO(width=len(side), depth=self.fifo_depth)
        m.d.comb += [
            first.payload.eq(self.i.payload.x),
            first.valid.eq(self.i.valid & fifo.w_rdy),
            self.i.ready.eq(first.ready & fifo.w_rdy),
            fifo.w_data.eq(side), fifo.w_en.eq(self.i.valid & self.i.ready),
            learner.i.payload.x.eq(last.payload),
            Cat(learner.i.payload.label, learner.i.payload.learn).eq(fifo.r_data),
            learner.i.valid.eq(last.valid & fifo.r_rdy),
            last.ready.eq(learner.i.ready & fifo.r_rdy),
            fifo.r_en.eq(learner.i.valid & learner.i.ready),
        ]
        return m
