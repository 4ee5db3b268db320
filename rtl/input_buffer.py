"""The network's input vector in block RAM instead of flip-flops.

A dense first layer folded to ``simd`` inputs per cycle reads its input vector one ``simd``-code
slice at a time, ``in/simd`` slices per neuron group (:class:`~qnnfab.rtl.mvu.
MatrixVectorUnit`). Held whole in a register, a 784-code 8-bit image is 6,272 flip-flops, more
than the iCE40 UP5K has cells. :class:`InputBuffer` takes the codes one per transfer and keeps
the vector in a memory of ``in/simd`` words of ``simd`` codes, two banks deep: one is written
while the layer reads the other.
"""

import operator

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import timing
from ._checks import quiet_on_error

__all__ = ["InputBuffer", "input_buffer_bits", "why_no_input_buffer"]


def input_buffer_bits(n, bits):
    """Memory bits of an :class:`InputBuffer` of ``n`` codes of ``bits`` bits: two banks."""
    return 2 * operator.index(n) * operator.index(bits)


def why_no_input_buffer(network, folding=None, styles=None):
    """Why ``network`` (an ``ir.Network``) cannot read its input from an :class:`InputBuffer`
    at ``folding`` (``LayerFolding``s or ``(pe, simd)`` pairs; None: not asked) with
    ``styles`` (None: all folded): a sentence, or None when it can. It needs a folded dense
    first layer (an MLP: a CNN's image streams through line buffers anyway) with SIMD below
    its inputs."""
    from qnnfab import ir
    first = network.layers[0]
    if network.input_shape is not None or not isinstance(first, ir.DenseLayer):
        return ("only a network whose first layer is dense (an MLP) keeps its input vector in "
                "block RAM; a CNN's image already streams through line buffers")
    if styles is not None and styles[0] != "folded":
        return ("layers[0] is unrolled (it reads all inputs at once); fold it, or keep the "
                "input in flip-flops")
    if folding is not None:
        f = folding[0]
        pe, simd = (f.pe, f.simd) if hasattr(f, "pe") else tuple(f)
        if simd >= first.in_features:
            return (f"layers[0] at folding {pe}:{simd} reads all {first.in_features} inputs at "
                    f"once; a buffered input needs a SIMD below {first.in_features}")
    return None


class InputBuffer(wiring.Component):
    """A double-buffered input vector: codes in one per transfer, ``simd``-code slices out by
    address.

    Parameters
    ----------
    bits : int, bits per code
    n : int, codes per vector
    simd : int, codes per slice (a divisor of ``n`` below ``n``)

    Members
    -------
    i : In(stream.Signature(unsigned(bits)))
        The codes of a vector, element 0 first, one per transfer. ``i.ready`` is low while
        both banks hold a vector not yet released.
    restart : In(1)
        Drop the codes of a vector not yet complete (a sender that gave up mid-vector): the
        next code is element 0 again (a code transferred in the same cycle is dropped too).
        Complete vectors are kept.
    o : Out(stream.Signature(unsigned(1)))
        ``o.valid``: a complete vector is in the read bank (``o.payload``, for
        inspection). A transfer releases it: the reader has read its last slice, and the
        bank is free to be written again.
    rd_addr : In(range(n // simd)), rd_en : In(1)
        Read slice ``rd_addr`` of the vector offered on ``o`` when ``rd_en`` is high.
    rd_data : Out(simd * bits)
        The slice, one cycle after ``rd_en`` (a synchronous read; held while ``rd_en`` is
        low): code ``sf·simd + s`` at bits ``[s·bits, (s+1)·bits)``.

    Memory: ``2·n/simd`` words of ``simd·bits`` (``ram_style = "block"``), and a
    ``(simd-1)·bits``-bit shift register assembling a word. Timing
    (:func:`qnnfab.rtl.timing.input_buffer`): ``o.valid`` rises the cycle after the last code's
    transfer (latency ``n`` from the first code of an eager source); one vector every ``n``
    cycles; a released bank takes codes again the next cycle, and a second complete vector
    is offered on ``o`` the cycle after the first is released.
    """

    @quiet_on_error
    def __init__(self, bits, n, simd):
        self.bits, self.n, self.simd = (operator.index(bits), operator.index(n),
                                        operator.index(simd))
        for name, value in (("bits", self.bits), ("n", self.n), ("simd", self.simd)):
            if value < 1:
                raise ValueError(f"InputBuffer: {name} must be >= 1, not {value}")
        if self.n % self.simd or self.simd == self.n:
            raise ValueError(f"InputBuffer: simd must divide n and be smaller ({self.simd} of "
                             f"{self.n}): a layer that reads its whole input at once has no "
                             f"slices to buffer")
        self.words = self.n // self.simd
        super().__init__({
            "i": In(stream.Signature(unsigned(self.bits))),
            "restart": In(1),
            "o": Out(stream.Signature(unsigned(1))),
            "rd_addr": In(range(self.words)),
            "rd_en": In(1),
            "rd_data": Out(self.simd * self.bits),
        })

    @property
    def memory_bits(self):
        return input_buffer_bits(self.n, self.bits)

    @property
    def timing(self):
        return timing.input_buffer(self.n)

    def elaborate(self, platform):
        m = Module()
        bits, simd, words = self.bits, self.simd, self.words
        mem = Memory(shape=simd * bits, depth=2 * words, init=[],
                     attrs={"ram_style": "block"})
        m.submodules.mem = mem
        wr = mem.write_port()
        rd = mem.read_port()

        wbank, rbank = Signal(), Signal()
        full = Signal(2)
        lane = Signal(range(max(2, simd)))
        word = Signal(range(max(2, words)))
        shift = Signal(max(1, (simd - 1) * bits))

        # -- write: codes shift into a word; the word is written with its last code ----------
        m.d.comb += self.i.ready.eq(~full.bit_select(wbank, 1))
        take = Signal()
        m.d.comb += take.eq(self.i.valid & self.i.ready)
        if simd > 1:
            m.d.comb += wr.data.eq(Cat(shift, self.i.payload))
        else:
            m.d.comb += wr.data.eq(self.i.payload)
        m.d.comb += [wr.addr.eq(Mux(wbank, words + word, word)),
                     wr.en.eq(take & (lane == simd - 1))]
        set_full = Signal(2)
        with m.If(self.restart):
            m.d.sync += [lane.eq(0), word.eq(0)]
        with m.Elif(take):
            if simd > 1:
                if simd > 2:
                    m.d.sync += shift.eq(Cat(shift[bits:], self.i.payload))
                else:
                    m.d.sync += shift.eq(self.i.payload)
            with m.If(lane == simd - 1):
                m.d.sync += lane.eq(0)
                with m.If(word == words - 1):
                    m.d.sync += [word.eq(0), wbank.eq(~wbank)]
                    m.d.comb += set_full.eq(Mux(wbank, 0b10, 0b01))
                with m.Else():
                    m.d.sync += word.eq(word + 1)
            with m.Else():
                m.d.sync += lane.eq(lane + 1)

        # -- read: the reader addresses slices of the read bank; a transfer on ``o`` frees it
        clear = Signal(2)
        m.d.comb += [self.o.valid.eq(full.bit_select(rbank, 1)), self.o.payload.eq(rbank),
                     rd.addr.eq(Mux(rbank, words + self.rd_addr, self.rd_addr)),
                     rd.en.eq(self.rd_en), self.rd_data.eq(rd.data)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += rbank.eq(~rbank)
            m.d.comb += clear.eq(Mux(rbank, 0b10, 0b01))
        # A bank is set by the writer only while it is not full, cleared by the reader only
        # while it is: never both in one cycle.
        m.d.sync += full.eq((full | set_full) & ~clear)
        return m
