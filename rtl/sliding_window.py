"""Sliding window (im2col on a pixel stream) in front of a convolution's MVU."""

import operator

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import timing
from ._checks import quiet_on_error
from .pixels import check_image_shape, check_ram_style

__all__ = ["SlidingWindow"]


class SlidingWindow(wiring.Component):
    """The ``k × k`` windows of a zero-padded pixel stream, one per output position.

    Parameters
    ----------
    height, width, channels, bits : int
        The input image shape (``H × W × C``) and the bits of each code.
    kernel_size : int
        ``k``, odd, 1 to 7.
    padding : int
        ``p``, 0 to ``k // 2``; positions outside the image hold code 0.
    ram_style : None, "block" or "logic"
        Yosys ``ram_style`` of the line buffer (``None``: Yosys chooses, which on the iCE40
        keeps small buffers in flip-flops).

    Members
    -------
    i : In(stream.Signature(ArrayLayout(unsigned(bits), C)))
        Input pixels, raster order over ``H × W``.
    o : Out(stream.Signature(ArrayLayout(unsigned(bits), C·k·k)))
        One window per output position, raster order over ``Ho × Wo`` (``Ho = H + 2p - k + 1``,
        ``Wo`` likewise). Element ``c·k·k + ky·k + kx`` is the input code at
        ``(y + ky - p, x + kx - p, c)``, or 0 outside the image: the ``(c, ky, kx)`` order of
        a conv layer's ``dense_view()`` weights.

    The unit scans the padded image (``Hp × Wp = (H + 2p) × (W + 2p)``) one position per
    cycle: a padding position shifts in code 0 without consuming input, an inside position
    consumes one pixel. Each position's column (``k`` pixels: ``k - 1`` from the line buffer,
    the new one below them) shifts into the window from the right. The line buffer is one
    ``Memory`` of ``Wp`` words, each the ``k - 1`` previous rows' pixels of its column (oldest
    first), read synchronously: the next position's word is read in the cycle the scan
    advances (the read port holds it while the scan stalls) and written back, with the oldest
    row dropped and the new pixel added, when that position is scanned (Yosys adds about one
    word of flip-flops and multiplexer around an iCE40 block RAM for the read-during-write
    rule). The window registers
    are ``o.payload`` itself (no second copy of ``C·k·k·bits`` flip-flops), so the scan
    advances when ``~o.valid | o.ready``: a window is taken and the next column shifts in at
    the same clock edge. Frames follow each other back to back.

    Latency: :attr:`latency` = ``(k - 1)·Wp + k`` cycles from a frame's first scan cycle to
    its first ``o.valid`` (eager source).
    Throughput: :attr:`interval` = ``Hp·Wp`` cycles per frame with an eager source and sink;
    with a consumer that takes each window ``N`` cycles after it is offered (an MVU),
    :meth:`interval_for` ``(N)`` = ``Hp·Wp + Ho·Wo·(N - 1)``: windows within a row come every
    ``N`` cycles, each position without a window costs one cycle
    (:func:`qnnfab.rtl.timing.sliding_window`).
    """

    @quiet_on_error
    def __init__(self, height, width, channels, bits, kernel_size=3, padding=1, *,
                 ram_style=None):
        self.height, self.width, self.channels, self.bits = check_image_shape(
            "SlidingWindow", height, width, channels, bits)
        self.kernel_size = k = operator.index(kernel_size)
        self.padding = p = operator.index(padding)
        if not (1 <= k <= 7 and k % 2 == 1):
            raise ValueError(f"SlidingWindow: kernel_size must be odd, 1 to 7, not {k}")
        if not 0 <= p <= k // 2:
            raise ValueError(f"SlidingWindow: padding must be 0 to kernel_size // 2 = {k // 2}, "
                             f"not {p}")
        if self.out_height < 1 or self.out_width < 1:
            raise ValueError(f"SlidingWindow: a {k}x{k} kernel with padding {p} does not fit "
                             f"a {self.height}x{self.width} image")
        self.ram_style = ram_style
        self._ram_attrs = check_ram_style("SlidingWindow", ram_style)
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(unsigned(self.bits), self.channels))),
            "o": Out(stream.Signature(data.ArrayLayout(unsigned(self.bits),
                                                       self.window_features))),
        })

    @property
    def padded_height(self):
        return self.height + 2 * self.padding

    @property
    def padded_width(self):
        return self.width + 2 * self.padding

    @property
    def out_height(self):
        return self.padded_height - self.kernel_size + 1

    @property
    def out_width(self):
        return self.padded_width - self.kernel_size + 1

    @property
    def window_features(self):
        """Codes per window, ``C·k·k``."""
        return self.channels * self.kernel_size ** 2

    @property
    def line_buffer_bits(self):
        """Bits in the line-buffer memory, ``Wp·(k - 1)·C·bits``."""
        return self.padded_width * (self.kernel_size - 1) * self.channels * self.bits

    @property
    def latency(self):
        """Cycles from a frame's first scan cycle to its first ``o.valid`` (eager source)."""
        return self._timing(1).latency

    @property
    def interval(self):
        """Cycles per frame with an eager source and sink."""
        return self._timing(1).interval

    def interval_for(self, consumer_interval):
        """Cycles per frame, eager source, a consumer taking each window ``consumer_interval``
        cycles after it is offered (1: an eager sink)."""
        return self._timing(consumer_interval).interval

    def _timing(self, consumer_interval):
        return timing.sliding_window(self.height, self.width, self.kernel_size, self.padding,
                                     consumer_interval)

    def elaborate(self, platform):
        m = Module()
        k, p = self.kernel_size, self.padding
        h, w, bits = self.height, self.width, self.bits
        hp, wp = self.padded_height, self.padded_width
        pix_bits = self.channels * bits

        # The scan position and its flags, the flags kept in flip-flops (they gate ``adv``).
        px = Signal(range(max(2, wp)))
        py = Signal(range(max(2, hp)))
        px_next, py_next = Signal.like(px), Signal.like(py)
        m.d.comb += [px_next.eq(Mux(px == wp - 1, 0, px + 1)),
                     py_next.eq(Mux(px == wp - 1, Mux(py == hp - 1, 0, py + 1), py))]

        def is_pad(x, y):
            if p == 0:
                return Const(0)
            return (x < p) | (x >= w + p) | (y < p) | (y >= h + p)

        def is_emit(x, y):
            if k == 1:
                return Const(1)
            return (x >= k - 1) & (y >= k - 1)

        pad = Signal(init=int(p > 0))            # position (0, 0) is padding iff p > 0
        emit = Signal(init=int(k == 1))          # a window ends at this position

        adv = Signal()
        m.d.comb += [adv.eq((~self.o.valid | self.o.ready) & (pad | self.i.valid)),
                     self.i.ready.eq((~self.o.valid | self.o.ready) & ~pad)]
        with m.If(adv):
            m.d.sync += [px.eq(px_next), py.eq(py_next),
                         pad.eq(is_pad(px_next, py_next)), emit.eq(is_emit(px_next, py_next))]

        new_pix = Signal(pix_bits)
        m.d.comb += new_pix.eq(Mux(pad, 0, self.i.payload.as_value()))

        # The column entering the window: rows ``py - k + 1 .. py``.
        column = []
        if k > 1:
            m.submodules.lines = lines = Memory(shape=(k - 1) * pix_bits, depth=wp, init=[],
                                                 attrs=self._ram_attrs)
            wr = lines.write_port()
            # The read (next column) and write (this column) addresses always differ
            # (``Wp >= k >= 3``), so transparency never changes what is read; it is cheaper
            # on the iCE40, where Yosys emulates either collision rule around the block RAM
            # (a transparent port: a bypass register and mux of one word; a non-transparent
            # one: a delayed write as well, about twice the flip-flops).
            rd = lines.read_port(transparent_for=(wr,))
            m.d.comb += [rd.addr.eq(px_next), rd.en.eq(adv),
                         wr.addr.eq(px), wr.data.eq(Cat(rd.data[pix_bits:], new_pix)),
                         wr.en.eq(adv)]
            column = [rd.data[r * pix_bits:(r + 1) * pix_bits] for r in range(k - 1)]
        column.append(new_pix)

        win = self.o.payload.as_value()

        def element(c, ky, kx):
            j = (c * k + ky) * k + kx
            return win[j * bits:(j + 1) * bits]

        with m.If(adv):
            for c in range(self.channels):
                for ky in range(k):
                    for kx in range(k - 1):
                        m.d.sync += element(c, ky, kx).eq(element(c, ky, kx + 1))
                    m.d.sync += element(c, ky, k - 1).eq(column[ky][c * bits:(c + 1) * bits])
            m.d.sync += self.o.valid.eq(emit)
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m
