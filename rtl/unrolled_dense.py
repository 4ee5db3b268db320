"""Unrolled dense layers: the weights are constants in the logic, every multiply-accumulate of a
layer happens in the same cycle, and a new input vector is taken every clock.

A binary weight times an input is the input or its negation, a ternary zero drops the input,
a codebook level is a few shifted copies (its canonical signed digits); what remains of a layer
is, for each neuron, a signed sum of its inputs. Those sums are shared adder trees built by
the greedy common-subexpression pass of :mod:`qnnfab.rtl.cse` and laid out as pipelined logic
by :class:`~qnnfab.rtl.adder_tree.AdderPipeline` (a register every ``levels_per_stage`` adder
levels). The activation is a set of constant comparators per neuron, the thresholds of the IR
moved onto the adder tree's output (:func:`~qnnfab.rtl.threshold.threshold_entries`); the
output layer emits its accumulators and, at the end of a network, their argmax through a
pipelined comparator tree.

Consecutive unrolled layers form one :class:`UnrolledChain`: one pipeline without clock
enables, one set of valid bits, and one output FIFO whose free entries are the credits that
let inputs in, so a stalled consumer stops the input (``i.ready`` low) without stopping the
pipeline and without losing a vector: the FIFO has room for every vector in flight.
"""

import operator

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, ResetSignal, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from . import timing
from ._checks import quiet_on_error
from .adder_tree import AdderPipeline, ge_const
from .argmax import argmax_layout, comparator_tree
from .cse import UnrollError, cached_graph, layer_matrix, tree_depth
from .threshold import threshold_entries

__all__ = ["UnrolledChain", "UnrolledDense", "UnrollError", "check_unrollable",
           "DEFAULT_LEVELS_PER_STAGE", "pipelined_argmax", "credit_fifo"]

#: Adder levels between pipeline registers by default. Two ~10-bit carry-chain adders and
#: their routing fit a 60 MHz cycle on the ECP5 with room to spare.
DEFAULT_LEVELS_PER_STAGE = 2


def check_unrollable(layer, where="layer"):
    """Raise :class:`~qnnfab.rtl.cse.UnrollError` naming ``where`` unless ``layer`` is a
    dense layer the unrolled style builds (binary, ternary or codebook weights; conv and pool
    layers stay folded)."""
    layer_matrix(layer, where)


def pipelined_argmax(m, scores, name="am"):
    """The argmax of signed ``scores`` (values, valid in the same cycle) as a comparator tree
    in module ``m``, a register after each of its ``ceil(log2 n)`` levels (no reset, no
    enable: the caller delays its valid bit alike). Returns ``(cls, scores, levels)``: the
    index of the first largest score and the scores, both ``levels`` cycles later
    (:func:`~qnnfab.rtl.argmax.comparator_tree`)."""
    return comparator_tree(m, scores, name=name, delay_scores=True)


def credit_fifo(m, i, o, width, depth, *, hold=None):
    """The back-pressure of a free-running pipeline: an output FIFO of ``depth`` entries
    (``SyncFIFOBuffered``) feeding stream ``o``, and a count of the vectors accepted on stream
    ``i`` and not yet taken from it; ``i.ready`` while the count is below ``depth``, so every
    vector in flight has its entry. Returns ``(accept, fifo)``: the caller's pipeline starts
    with ``accept`` (``i.valid & i.ready``) and writes ``fifo.w_data`` / ``fifo.w_en`` at its
    end. ``o`` is valid :data:`~qnnfab.rtl.timing.UNROLLED_FIFO_LATENCY` cycles after a write
    into an empty FIFO. ``hold`` (a 1-bit value): no input is taken while it is high."""
    m.submodules.fifo = fifo = SyncFIFOBuffered(width=width, depth=depth)
    count = Signal(range(depth + 1))
    accept = Signal()
    pop = Signal()
    ready = count < depth
    if hold is not None:
        ready = ready & ~hold
    m.d.comb += [i.ready.eq(ready),
                 accept.eq(i.valid & i.ready),
                 o.valid.eq(fifo.r_rdy), fifo.r_en.eq(o.ready),
                 pop.eq(o.valid & o.ready),
                 o.payload.eq(fifo.r_data)]
    m.d.sync += count.eq(count + accept - pop)
    return accept, fifo


class UnrolledChain(wiring.Component):
    """Consecutive dense layers, unrolled into one pipeline (see the module docstring).

    Parameters
    ----------
    layers : list of ir.DenseLayer
        Consecutive layers (each one's ``in_features``/``in_bits`` the previous one's
        ``out_features``/``out_bits``); only the last may be an output layer.
    argmax : bool
        End with the pipelined argmax (the last layer must be the output layer): ``o`` is then
        a network's output, :func:`~qnnfab.rtl.argmax.argmax_layout`.
    levels_per_stage : int
        Adder levels between pipeline registers (>= 1): fewer is faster and costs more
        flip-flops.
    cse : bool
        Share partial sums between neurons (:mod:`qnnfab.rtl.cse`); False builds one private
        tree per neuron (to measure what sharing saves).
    names : list of str, optional
        How errors name the layers (default ``layers[k]``).
    shared_chains : bool
        Compute the adders of a level as segments of shared carry chains
        (:mod:`qnnfab.rtl.adder_tree`). Off by default, on every family: it saves LUT4s on the
        ECP5 (a sixth to a fifth: digits-tnn(d32,d10) on the ULX3S-25F packed to 7,621 with
        shared chains, 8,864 without), but chains of unrelated adders pull their operands
        from all over the chip and do not route well: that build took router2 59 iterations
        and reached 57.5 MHz with shared chains, 19 iterations and 106.1 MHz without; the
        64-wide and the full digits-tnn did not route with them at all. On the iCE40 they
        cost cells (64x5b-8-10 packed to 3,422 cells with shared chains, 3,195 without).

    Members
    -------
    i : In(stream.Signature(ArrayLayout(unsigned(in_bits), in_features)))
        One whole input vector per transfer; ``i.ready`` is high while the output FIFO has a
        free entry for every vector in flight (a credit count, from a register).
    o : Out(stream.Signature(...))
        The last layer's output codes, ``ArrayLayout(unsigned(out_bits), out_features)``; for
        an output layer its accumulators, ``ArrayLayout(signed(acc_width), out_features)``, or
        with ``argmax`` the class and the scores. The payload is held until taken.

    Timing (:func:`qnnfab.rtl.timing.unrolled_chain`): :attr:`interval` 1, one input per
    cycle with an eager source and sink. :attr:`latency`: from the cycle an input is accepted
    (chain idle) to its ``o.valid``, the pipeline :attr:`registers` (per layer
    ``levels // levels_per_stage + 1``, plus ``ceil(log2 n)`` for the argmax) plus the FIFO's
    two cycles. A stalled sink fills the FIFO; ``i.ready`` falls when the vectors in flight
    would fill it, and nothing is lost.
    """

    @quiet_on_error
    def __init__(self, layers, *, argmax=False, levels_per_stage=DEFAULT_LEVELS_PER_STAGE,
                 cse=True, names=None, shared_chains=False):
        layers = list(layers)
        if not layers:
            raise ValueError("UnrolledChain: needs at least one layer")
        names = [f"layers[{k}]" for k in range(len(layers))] if names is None else list(names)
        if len(names) != len(layers):
            raise ValueError(f"names: expected {len(layers)}, got {len(names)}")
        for layer, name in zip(layers, names):
            check_unrollable(layer, name)
        for k, (a, b) in enumerate(zip(layers, layers[1:])):
            if a.is_output:
                raise UnrollError(f"{names[k]}: an output layer (no thresholds) must be the "
                                  f"last of the chain")
            if (a.out_features, a.out_bits) != (b.in_features, b.in_bits):
                raise UnrollError(f"{names[k + 1]}: expects {b.in_features}x{b.in_bits}b "
                                  f"inputs, {names[k]} gives {a.out_features}x{a.out_bits}b")
        self.argmax = bool(argmax)
        if self.argmax and not layers[-1].is_output:
            raise UnrollError(f"{names[-1]}: argmax needs the output layer (raw scores) last")
        self.levels_per_stage = operator.index(levels_per_stage)
        if self.levels_per_stage < 1:
            raise ValueError(f"levels_per_stage must be >= 1, not {self.levels_per_stage}")
        self.layers = layers
        self.names = names
        self.cse = bool(cse)
        self.shared_chains = bool(shared_chains)
        self.levels = [tree_depth(layer_matrix(layer)) for layer in layers]
        first, last = layers[0], layers[-1]
        if self.argmax:
            out_layout = argmax_layout(last.out_features, last.acc_width)
        elif last.is_output:
            out_layout = data.ArrayLayout(signed(last.acc_width), last.out_features)
        else:
            out_layout = data.ArrayLayout(unsigned(last.out_bits), last.out_features)
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(unsigned(first.in_bits),
                                                      first.in_features))),
            "o": Out(stream.Signature(out_layout)),
        })

    @property
    def _timing(self):
        n = self.layers[-1].out_features if self.argmax else None
        return timing.unrolled_chain(self.levels, self.levels_per_stage, n)

    @property
    def latency(self):
        """Cycles from the input's transfer (chain idle) to ``o.valid``."""
        return self._timing.latency

    @property
    def interval(self):
        """Cycles between inputs with an eager source and sink: 1."""
        return self._timing.interval

    @property
    def registers(self):
        """Pipeline stages (valid bits) from the input to the output FIFO."""
        return self.latency - timing.UNROLLED_FIFO_LATENCY

    @property
    def fifo_depth(self):
        """Entries of the output FIFO (:func:`~qnnfab.rtl.timing.unrolled_fifo_depth`)."""
        return timing.unrolled_fifo_depth(self.registers)

    @property
    def graphs(self):
        """The adder graph of each layer (:func:`qnnfab.rtl.cse.cached_graph`)."""
        return [cached_graph(layer, cse=self.cse) for layer in self.layers]

    def _layer_outputs(self, m, pipe, layer, name):
        """The layer's outputs in the pipeline's last stage: codes, or accumulators."""
        g = pipe.g
        in_bits = layer.in_bits
        w = layer_matrix(layer)
        scale = 2 if in_bits == 1 else 1
        # acc = scale·Σ w·x + c0: a binary activation x ∈ {0, 1} stands for 2x - 1.
        c0 = -w.sum(axis=1) if in_bits == 1 else np.zeros(layer.out_features, np.int64)
        outs = []
        for r in range(layer.out_features):
            v, rs = pipe.root(r)
            node = g.rows[r][0]
            lo, hi = (0, 0) if node is None else (g.lo[node], g.hi[node])
            if layer.is_output:
                acc = Signal(signed(layer.acc_width), name=f"{name}_acc{r}")
                scaled = v if scale == 1 else (v << 1)
                c = int(c0[r])
                m.d.comb += acc.eq(scaled + c if rs > 0 else c - scaled)
                outs.append(acc)
                continue
            # sign·acc >= T  with  acc = scale·rs·V + c0:  rs·acc = scale·V + rs·c0.
            tp, neg = threshold_entries(layer.thresholds[r:r + 1],
                                        [int(layer.threshold_sign[r]) * rs], scale=scale,
                                        offsets=[rs * int(c0[r])], lo=lo, hi=hi)
            n_thr = layer.n_thresholds
            bits = []
            for t in tp[0].tolist():
                if t <= lo:
                    bits.append(Const(1, 1))
                elif t > hi:
                    bits.append(Const(0, 1))
                else:
                    bits.append(ge_const(v, t))
            code = Signal(unsigned(layer.out_bits), name=f"{name}_code{r}")
            if n_thr == 1:
                m.d.comb += code.eq(bits[0] ^ int(neg[0]))
            else:
                count = sum(bits[1:], bits[0])
                m.d.comb += code.eq(n_thr - count if neg[0] else count)
            outs.append(code)
        return outs

    def elaborate(self, platform):
        m = Module()
        k = self.levels_per_stage
        depth = self.fifo_depth
        chains = self.shared_chains
        last = self.layers[-1]
        out_width = self.o.payload.shape().size
        # The separator bits of the shared carry chains (adder_tree): one flip-flop per chain,
        # a shift register of the reset (no reset of their own, all different, so neither
        # constants nor merged by Yosys, and no net to every chain); inputs wait while the
        # last is high, after a reset.
        seps = [ResetSignal(allow_reset_less=True)]

        def separator():
            sep = Signal(name=f"chain_sep{len(seps)}", reset_less=True)
            m.d.sync += sep.eq(seps[-1])
            seps.append(sep)
            return sep
        hold = Signal()
        accept, fifo = credit_fifo(m, self.i, self.o, out_width, depth, hold=hold)

        valid = accept
        n_valid = 0

        def delay_valid(v, n):
            nonlocal n_valid
            for _ in range(n):
                r = Signal(name=f"valid{n_valid}")
                m.d.sync += r.eq(v)
                v, n_valid = r, n_valid + 1
            return v

        # -- the layers --------------------------------------------------------------------
        xs = [self.i.payload[j] for j in range(self.layers[0].in_features)]
        for li, (layer, graph) in enumerate(zip(self.layers, self.graphs)):
            name = f"l{li}"
            pipe = AdderPipeline(m, graph, xs, levels_per_stage=k, name=name,
                                 separator=separator, chains=chains)
            assert graph.levels == self.levels[li]
            outs = self._layer_outputs(m, pipe, layer, name)
            regs = []
            for r, v in enumerate(outs):
                reg = Signal(v.shape(), name=f"{name}_out{r}", reset_less=True)
                m.d.sync += reg.eq(v)
                regs.append(reg)
            valid = delay_valid(valid, timing.unrolled_registers(graph.levels, k))
            xs = regs

        # -- the argmax: a comparator tree, a register after each level -----------------------
        if self.argmax:
            n = last.out_features
            cls, scores, level = pipelined_argmax(m, xs)
            valid = delay_valid(valid, level)
            assert level == timing.argmax_tree(n).latency
            word = Cat(cls, *scores)
        else:
            word = Cat(*xs)
        assert n_valid == self.registers, (n_valid, self.registers)
        if len(seps) > 1:
            # A reset shorter than the shift register leaves a pulse of ones travelling down
            # it after the reset (found by the fuzz in Verilator, whose testbench resets for 2
            # cycles): wait until it has passed the last separator. The counter is loaded by
            # the reset (not reset to a value: at power-up the separators are 0 already, and
            # no input waits).
            n = len(seps) - 1
            wait = Signal(range(n + 1), name="sep_wait", reset_less=True)
            m.d.sync += wait.eq(Mux(ResetSignal(allow_reset_less=True), n,
                                    Mux(wait != 0, wait - 1, 0)))
            m.d.comb += hold.eq(wait != 0)
        m.d.comb += [fifo.w_en.eq(valid), fifo.w_data.eq(word)]
        return m


class UnrolledDense(UnrolledChain):
    """One dense layer, unrolled: :class:`UnrolledChain` of ``[layer]`` (same members and
    timing); an output layer emits its accumulators (``argmax=True``: and their argmax)."""

    def __init__(self, layer, *, argmax=False, levels_per_stage=DEFAULT_LEVELS_PER_STAGE,
                 cse=True, name="layer", shared_chains=False):
        super().__init__([layer], argmax=argmax, levels_per_stage=levels_per_stage, cse=cse,
                         names=[name], shared_chains=shared_chains)

    @property
    def layer(self):
        return self.layers[0]
