"""The folded matrix-vector unit (MVU): one dense layer, ``PE`` outputs × ``SIMD`` inputs per
cycle.

Datapath (each arrow one register, all gated by one clock enable ``en``)::

    issue: counters, weight ROM address
      -> weight ROM word + input slice (a mux on the held ``i.payload``) -> dot unit
      -> [dot unit register] -> accumulate ``S`` (PE sums, restarted on a group's first slice)
      -> threshold on ``S`` (or ``acc = scale·S + offset``, the raw scores, for the last layer)
      -> result shift register / output register (``o.payload``)

The dot unit is chosen by weight kind and input bits in :func:`dot_unit_class`
(:mod:`qnnfab.rtl.kinds`, re-exported here); each unit sums something cheap (a popcount,
``a XOR ~w``, ``(a XOR neg) AND nz``, ``(a XOR neg)·|level|``) whose affine map back to
``Σ a·w`` (``acc = scale·S + offset``) is folded into the thresholds at elaboration; the
protocol every unit follows is declared on :class:`~qnnfab.rtl.dot_unit.DotUnit`. A codebook
layer's weight memory holds k-bit indices; its unit decodes them through the layer's level
table, a constant beside the datapath. ``en`` is low only while the last group of a vector
waits for the output register to be taken downstream, so a layer computes its next vector
while the next layer still works on the previous one.
"""

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from qnnfab import ir, numerics

from . import timing
from ._checks import quiet_on_error
from .estimate import BLOCK_RAM_MIN_BITS
from .folding import LayerFolding, check_folding
from .input_buffer import InputBuffer
from .kernel_memory import KernelCodebookMemory
from .kinds import dot_unit_class
from .spram import SPRAM_DEPTH, SPRAMWeightStore, load_signature, spram_blocks, spram_words
from .threshold import MultiThreshold

__all__ = ["MatrixVectorUnit", "dot_unit_class", "dot_unit_for", "weight_words",
           "weight_code_bits"]


def dot_unit_for(layer, pe, simd, *, pipelined=True):
    """A dot-product unit instance for ``layer`` (see :func:`dot_unit_class`)."""
    return dot_unit_class(layer)(pe=pe, simd=simd, in_bits=layer.in_bits, pipelined=pipelined)


def weight_code_bits(layer):
    """Bits of one weight code of ``layer`` in the weight ROM."""
    return numerics.weight_code_bits(layer.weight_levels)


def weight_words(layer, pe, simd):
    """The weight ROM contents: word ``nf * SF + sf`` holds, for PE ``p`` and lane ``s``, the
    weight code of neuron ``nf*pe + p`` and input ``sf*simd + s`` at bits
    ``(p*simd + s)*wbits`` (a codebook layer's code is its k-bit index)."""
    wbits = weight_code_bits(layer)
    sf_n = layer.in_features // simd
    nf_n = layer.out_features // pe
    w = np.asarray(layer.weights, dtype=np.int64)
    # (nf, p, sf, s) -> (nf, sf, p, s)
    blocks = w.reshape(nf_n, pe, sf_n, simd).transpose(0, 2, 1, 3).reshape(nf_n * sf_n, pe * simd)
    words = []
    shifts = [k * wbits for k in range(pe * simd)]
    for row in blocks:
        value = 0
        for code, sh in zip(row.tolist(), shifts):
            value |= int(code) << sh
        words.append(value)
    return words


class MatrixVectorUnit(wiring.Component):
    """One dense layer, folded: ``pe`` output neurons × ``simd`` inputs per cycle.

    Parameters
    ----------
    layer : ir.DenseLayer or ir.ConvLayer
        A conv layer is computed one window per vector (its :meth:`~qnnfab.ir.ConvLayer.dense_view`,
        inputs in ``(c, ky, kx)`` order); with a kernel codebook its weights come from a
        :class:`~qnnfab.rtl.kernel_memory.KernelCodebookMemory` (``simd`` a multiple of
        ``kernel_size²``).
    folding : LayerFolding or (pe, simd)
    pipelined : bool
        Pipeline registers in the dot unit (one or two more cycles of latency, shorter paths).
    weight_store : str
        ``"ebr"`` (default): the weights in a ``lib.memory.Memory`` with its contents as init
        (block RAM when large). ``"spram"``: in a :class:`~qnnfab.rtl.spram.SPRAMWeightStore`
        (iCE40 UP5K single-port RAM, dense layers only), written through :attr:`load`.
    weights_loaded : bool
        With ``weight_store="spram"``: the simulation model starts with the weights (the
        state after a load; default) or with zeros (``False``, a board right after
        configuration).
    input_buffer : bool
        Take the input one code per transfer into an
        :class:`~qnnfab.rtl.input_buffer.InputBuffer` (the vector in block RAM, two banks)
        instead of a whole vector held by the source (dense layers with ``simd <
        in_features``).

    Members
    -------
    i : In(stream.Signature(ArrayLayout(unsigned(in_bits), in_features)))
        One whole input vector per transfer; with ``input_buffer``
        ``In(stream.Signature(unsigned(in_bits)))``, one code per transfer, element 0 first.
    restart : In(1), only with ``input_buffer``
        Drop the codes of an incomplete vector (:class:`~qnnfab.rtl.input_buffer.InputBuffer`).
    o : Out(stream.Signature(ArrayLayout(unsigned(out_bits), out_features)))
        Output codes; for the output layer (no thresholds) ``ArrayLayout(signed(acc_width),
        out_features)``, the raw accumulators.
    load : In(load_signature(spram_words)), only with ``weight_store="spram"``
        The weight store's write port (:class:`~qnnfab.rtl.spram.SPRAMWeightStore`'s ``w``):
        16-bit word ``b·steps + row`` is bits ``[16·b, 16·b + 16)`` of :func:`weight_words`'s
        word ``row``. Write only while the unit is idle.

    Timing (:func:`qnnfab.rtl.timing.mvu`): :attr:`steps` = ``(in/simd)·(out/pe)`` issue steps
    per vector, one weight word each. The unit keeps no copy of its input vector: slices are
    read from ``i.payload`` (held by the stream rules while ``i.valid`` and not ``i.ready``),
    into a ``simd``-wide register at each issue, or whole, a cycle after the issue, when
    ``simd == in_features``; ``i.ready`` rises when the last slice has been read. Vectors go
    in every :attr:`interval` cycles from an eager source (one more when the source is another
    unit, whose output register refills the cycle after a transfer). :attr:`latency` cycles
    pass from the first cycle ``i.valid`` is high (unit idle) to ``o.valid``. With
    ``input_buffer`` the codes go in one per cycle: ``in_features`` more cycles of latency,
    interval ``max(steps, in_features)`` (the buffer's second bank fills while the unit
    reads the first).
    """

    @quiet_on_error
    def __init__(self, layer, folding, *, pipelined=True, weight_store="ebr",
                 weights_loaded=True, input_buffer=False):
        self.conv = None
        if isinstance(layer, ir.ConvLayer):
            # One window per vector: the matrix applied to each window.
            self.conv, layer = layer, layer.dense_view()
        if not isinstance(layer, ir.DenseLayer):
            raise TypeError(f"layer must be a qnnfab.ir.DenseLayer or ConvLayer, not {layer!r}")
        if not isinstance(folding, LayerFolding):
            folding = LayerFolding(*folding)
        net = ir.Network(input_features=layer.in_features, input_bits=layer.in_bits,
                         layers=[layer])
        # check_folding names the layer "layers[0]"; callers re-raise with their own index.
        check_folding(net, [folding])
        self.kernel_memory = None
        if self.conv is not None and self.conv.kernel_codebook is not None:
            # Raises ValueError when SIMD does not cover whole kernels.
            self.kernel_memory = KernelCodebookMemory(self.conv, folding.pe, folding.simd)
        self.layer = layer
        self.folding = folding
        self.pe, self.simd = folding.pe, folding.simd
        self.sf = layer.in_features // self.simd
        self.nf = layer.out_features // self.pe
        self.pipelined = bool(pipelined)
        self.dot_class = dot_unit_class(layer)
        if layer.is_output:
            out_shape = signed(layer.acc_width)
        else:
            out_shape = unsigned(layer.out_bits)
        self.out_shape = out_shape
        members = {
            "i": In(stream.Signature(data.ArrayLayout(unsigned(layer.in_bits),
                                                      layer.in_features))),
            "o": Out(stream.Signature(data.ArrayLayout(out_shape, layer.out_features))),
        }
        self.input_buffer = bool(input_buffer)
        if self.input_buffer:
            if self.conv is not None:
                raise ValueError("input_buffer: only a dense layer reads its input from a "
                                 "buffer (a conv layer's comes from its window generator)")
            if self.sf == 1:
                raise ValueError(f"input_buffer: SIMD {self.simd} reads all "
                                 f"{layer.in_features} inputs at once; a buffered input needs "
                                 f"a SIMD below in_features")
            members["i"] = In(stream.Signature(unsigned(layer.in_bits)))
            members["restart"] = In(1)
        if weight_store not in ("ebr", "spram"):
            raise ValueError(f"weight_store must be 'ebr' or 'spram', not {weight_store!r}")
        self.weight_store = weight_store
        self.weights_loaded = bool(weights_loaded)
        if weight_store == "spram":
            if self.conv is not None:
                raise ValueError("weight_store='spram': only dense layers keep their weights "
                                 "in SPRAM")
            if self.steps > SPRAM_DEPTH:
                raise ValueError(f"weight_store='spram': {self.steps} weight words (steps "
                                 f"per vector), more than an SPRAM's {SPRAM_DEPTH} (raise PE "
                                 f"or SIMD)")
            members["load"] = In(load_signature(self.spram_words))
        super().__init__(members)

    @property
    def weight_word_width(self):
        """Bits of one weight memory word, ``pe·simd·wbits``."""
        return self.pe * self.simd * weight_code_bits(self.layer)

    @property
    def spram_blocks(self):
        """SPRAMs the weights take with ``weight_store="spram"`` (0 otherwise)."""
        if self.weight_store != "spram":
            return 0
        return spram_blocks(self.weight_word_width)

    @property
    def spram_words(self):
        """16-bit words of the SPRAM load address space, ``spram_blocks · steps``."""
        return spram_words(self.weight_word_width, self.steps)

    @property
    def steps(self):
        """Issue steps per vector, ``(in/simd)·(out/pe)``: the weight memory's depth."""
        return self.sf * self.nf

    @property
    def _timing(self):
        t = timing.mvu(self.layer.in_features, self.layer.out_features, self.pe, self.simd,
                       self.dot_latency)
        if self.input_buffer:
            t = timing.fed_by_input_buffer(t, self.layer.in_features)
        return t

    @property
    def interval(self):
        """Cycles between input transfers from an eager source: :attr:`steps`, plus one when
        ``simd == in_features`` (the whole payload is read a cycle after the issue)."""
        return self._timing.interval

    @property
    def latency(self):
        """Cycles from the first cycle the input is offered (unit idle) to ``o.valid``:
        ``steps + MVU_STAGES + dot_latency`` (:func:`qnnfab.rtl.timing.mvu`)."""
        return self._timing.latency

    @property
    def dot_latency(self):
        """Pipeline registers in the dot-product unit."""
        return self.dot_class.pipeline_latency(self.simd, self.pipelined, self.layer.in_bits)

    @property
    def scale(self):
        """``acc = scale·S + offset``: the dot unit's scale for this layer's input bits."""
        return self.dot_class.scale_for(self.layer.in_bits)

    @property
    def weight_memory_bits(self):
        if self.kernel_memory is not None:
            return self.kernel_memory.index_memory_bits
        return self.layer.weights.size * weight_code_bits(self.layer)

    def elaborate(self, platform):
        m = Module()
        layer = self.layer
        pe, simd, sf_n, nf_n = self.pe, self.simd, self.sf, self.nf
        n = self.steps
        in_bits = layer.in_bits
        wbits = weight_code_bits(layer)
        word_width = pe * simd * wbits
        dot_cls = self.dot_class

        en = Signal(init=1)
        cnt = Signal(range(max(2, n)))
        sf = Signal(range(max(2, sf_n)))
        # ``cnt == n - 1`` kept in a flip-flop: it gates ``i.ready`` (a path into the producer).
        last_cnt = Signal(init=int(n == 1))
        if self.input_buffer:
            # The input vector lives in the buffer's block RAM; slice ``sf`` is read at the
            # issue, like the payload's slice below.
            m.submodules.input = buf = InputBuffer(in_bits, layer.in_features, simd)
            wiring.connect(m, wiring.flipped(self.i), buf.i)
            m.d.comb += buf.restart.eq(self.restart)
            in_valid, in_ready = buf.o.valid, buf.o.ready
        else:
            payload = self.i.payload.as_value()
            in_valid, in_ready = self.i.valid, self.i.ready

        # -- issue: addresses only. Slices are read from the held ``i.payload`` one cycle later,
        # and ``i.ready`` is raised then, with the last slice: no copy of the input is kept.
        a_valid, a_first, a_last, a_final = Signal(), Signal(), Signal(), Signal()
        issue = Signal()
        if sf_n == 1:
            # The whole payload feeds the dot unit one cycle after the issue: hold it until then.
            # ``a_hold`` = ``a_valid & a_final`` in one flip-flop: one LUT from the registers
            # to ``issue`` (the clock enable of the counters).
            a_hold = Signal()
            with m.If(en):
                m.d.sync += a_hold.eq(issue & last_cnt)
            m.d.comb += [issue.eq(en & in_valid & ~a_hold),
                         in_ready.eq(en & a_hold)]
        else:
            # The slice is selected at the issue into a register: the payload is free after
            # the last issue.
            m.d.comb += [issue.eq(en & in_valid), in_ready.eq(issue & last_cnt)]
        with m.If(issue):
            m.d.sync += cnt.eq(Mux(last_cnt, 0, cnt + 1))
            if n > 1:
                m.d.sync += last_cnt.eq(~last_cnt & (cnt == n - 2))
            if sf_n > 1:
                with m.If(sf == sf_n - 1):
                    m.d.sync += sf.eq(0)
                with m.Else():
                    m.d.sync += sf.eq(sf + 1)
        with m.If(en):
            m.d.sync += [a_valid.eq(issue), a_first.eq(sf == 0), a_last.eq(sf == sf_n - 1),
                         a_final.eq(last_cnt)]
        if self.kernel_memory is not None:
            m.submodules.weights = kmem = self.kernel_memory
            m.d.comb += [kmem.addr.eq(cnt), kmem.en.eq(en)]
            w_word = kmem.data
        elif self.weight_store == "spram":
            store = SPRAMWeightStore(
                width=word_width, depth=n,
                init=weight_words(layer, pe, simd) if self.weights_loaded else None)
            m.submodules.weights = store
            m.d.comb += [store.addr.eq(cnt), store.en.eq(en)]
            wiring.connect(m, wiring.flipped(self.load), store.w)
            w_word = store.data
        elif n == 1:
            w_word = Const(weight_words(layer, pe, simd)[0], word_width)
        else:
            attrs = {}
            if self.weight_memory_bits >= BLOCK_RAM_MIN_BITS:
                attrs["ram_style"] = "block"
            wmem = Memory(shape=word_width, depth=n, init=weight_words(layer, pe, simd),
                          attrs=attrs)
            m.submodules.weights = wmem
            rd = wmem.read_port()
            m.d.comb += [rd.addr.eq(cnt), rd.en.eq(en)]
            w_word = rd.data

        # -- stage A: dot unit on the weight word and the input slice ---------------------------
        m.submodules.dot = dot = dot_unit_for(layer, pe, simd, pipelined=self.pipelined)
        assert dot.latency == self.dot_latency and dot.scale == self.scale
        if self.input_buffer:
            m.d.comb += [buf.rd_addr.eq(sf), buf.rd_en.eq(en)]
            xs = buf.rd_data
        elif sf_n == 1:
            xs = payload
        else:
            xs = Signal(simd * in_bits)
            with m.If(en):
                m.d.sync += xs.eq(payload.word_select(sf, simd * in_bits))
        m.d.comb += [dot.x.eq(xs), dot.w.eq(w_word), dot.en.eq(en)]
        b_valid, b_first, b_last, b_final = a_valid, a_first, a_last, a_final
        for k in range(dot.latency):
            regs = [Signal(name=f"b{k}_valid"), Signal(name=f"b{k}_first"),
                    Signal(name=f"b{k}_last"), Signal(name=f"b{k}_final")]
            with m.If(en):
                m.d.sync += [r.eq(s) for r, s in
                             zip(regs, (b_valid, b_first, b_last, b_final))]
            b_valid, b_first, b_last, b_final = regs
        # The neuron group finishing: groups finish in order, so a counter of finished groups
        # at this stage replaces a group number carried down the dot unit's pipeline.
        b_nf = Signal(range(max(2, nf_n)))
        if nf_n > 1:
            with m.If(en & b_valid & b_last):
                m.d.sync += b_nf.eq(Mux(b_nf == nf_n - 1, 0, b_nf + 1))

        # -- stage B: accumulate the sums S ---------------------------------------------------
        sum_shape = dot_cls.sum_shape(layer.in_features, in_bits)
        sums = [Signal(sum_shape, name=f"sum{p}") for p in range(pe)]
        c_done, c_final = Signal(), Signal()
        with m.If(en):
            for p in range(pe):
                with m.If(b_valid):
                    if sf_n == 1:
                        m.d.sync += sums[p].eq(dot.o[p])
                    else:
                        with m.If(b_first):
                            m.d.sync += sums[p].eq(dot.o[p])
                        with m.Else():
                            m.d.sync += sums[p].eq(sums[p] + dot.o[p])
            m.d.sync += c_done.eq(b_valid & b_last)
        c_final_next = Signal()
        m.d.comb += c_final_next.eq(Mux(en, b_valid & b_last & b_final, c_final))
        m.d.sync += c_final.eq(c_final_next)

        # -- stage C: activation (or scores), result and output registers ---------------------
        offsets = dot_cls.offsets(layer)
        scale = self.scale
        if layer.is_output:
            ys = [Signal(signed(layer.acc_width), name=f"acc{p}") for p in range(pe)]
            if np.all(offsets == offsets[0]):
                group_offsets = [int(offsets[0])] * pe
            else:
                # Per-neuron offsets: a small ROM read beside the threshold-less datapath.
                ow = numerics.signed_width(int(offsets.min()), int(offsets.max()))
                words = []
                for g in range(nf_n):
                    word = 0
                    for p in range(pe):
                        word |= (int(offsets[g * pe + p]) & ((1 << ow) - 1)) << (p * ow)
                    words.append(word)
                if nf_n == 1:
                    oword = Const(words[0], pe * ow)
                else:
                    m.submodules.offsets = omem = Memory(shape=pe * ow, depth=nf_n, init=words)
                    ord_ = omem.read_port()
                    m.d.comb += [ord_.addr.eq(b_nf), ord_.en.eq(en)]
                    oword = ord_.data
                group_offsets = [oword[p * ow:(p + 1) * ow].as_signed() for p in range(pe)]
            for p in range(pe):
                m.d.comb += ys[p].eq(sums[p] * scale + group_offsets[p])
        else:
            m.submodules.threshold = thr = MultiThreshold(
                thresholds=layer.thresholds, signs=layer.threshold_sign, pe=pe,
                in_shape=sum_shape, scale=scale, offsets=offsets)
            m.d.comb += [thr.addr.eq(b_nf), thr.en.eq(en)]
            for p in range(pe):
                m.d.comb += thr.acc[p].eq(sums[p])
            ys = [thr.o[p] for p in range(pe)]

        # ``en = ~(c_final & o.valid)``, kept in a flip-flop (computed from the next values of
        # both): ``i.ready`` is then one LUT from flip-flops, for the producer's sake.
        o_valid_next = Signal()
        m.d.comb += o_valid_next.eq(Mux(self.o.valid, ~self.o.ready, c_final))
        m.d.sync += [self.o.valid.eq(o_valid_next), en.eq(~(c_final_next & o_valid_next))]
        # Results of groups 0 .. nf-2 shift in from the top; the last group completes the
        # output word. Plain enabled flip-flops, no write decoding.
        group = Cat(*ys)
        if nf_n > 1:
            res = Signal(len(group) * (nf_n - 1))
        if nf_n > 1:
            with m.If(en & c_done):
                m.d.sync += res.eq(Cat(res[len(group):], group))
        # ``en & c_done & c_final`` is ``c_final & ~o.valid`` (``c_final`` implies ``c_done``):
        # spelled out, one LUT in front of the output register's clock enable.
        with m.If(c_final & ~self.o.valid):
            if nf_n > 1:
                m.d.sync += self.o.payload.as_value().eq(Cat(res, group))
            else:
                m.d.sync += self.o.payload.as_value().eq(group)
        # ``o.valid`` (above) rises with the last group (``c_final`` while not stalled, i.e.
        # while ``o.valid`` is low) and falls on a transfer.
        return m
