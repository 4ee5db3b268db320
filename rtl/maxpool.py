"""Max-pooling over a pixel stream."""

import operator

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import timing
from ._checks import quiet_on_error
from .pixels import check_image_shape, check_ram_style

__all__ = ["MaxPool"]


class MaxPool(wiring.Component):
    """Elementwise unsigned maximum of the codes over each ``size × size`` block (stride
    ``size``) of a pixel stream. For 1-bit codes that is an OR (the max of ±1 values).

    Parameters
    ----------
    height, width, channels, bits : int
        The input image shape (``H × W × C``) and the bits of each code.
    size : int
        Block size and stride; must divide ``height`` and ``width``.
    ram_style : None, "block" or "logic"
        Yosys ``ram_style`` of the row buffer (``None``: Yosys chooses).

    Members
    -------
    i : In(stream.Signature(ArrayLayout(unsigned(bits), C)))
        Input pixels, raster order over ``H × W``.
    o : Out(stream.Signature(ArrayLayout(unsigned(bits), C)))
        Output pixels, raster order over ``(H/size) × (W/size)``.

    A register holds the running maximum of the current block within the current row; at a
    block's last column it is combined with the block's partial maximum of the rows above,
    kept in a row buffer (a ``Memory`` of ``W/size`` words of ``C·bits``, synchronous read:
    the block's address is stable at least one cycle before its last column arrives). The
    block's last pixel loads the result into the output register ``o.payload``. Only that
    pixel waits for a full output register: ``i.ready = ~(last_of_block & o.valid &
    ~o.ready)``.

    Latency: :attr:`latency` = 1 cycle from a block's last input transfer to ``o.valid``.
    Throughput: :attr:`interval` = ``H·W`` cycles per image (one input pixel per cycle) with an
    eager source and sink (:func:`qnnfab.rtl.timing.max_pool`).
    """

    @quiet_on_error
    def __init__(self, height, width, channels, bits, size=2, *, ram_style=None):
        self.height, self.width, self.channels, self.bits = check_image_shape(
            "MaxPool", height, width, channels, bits)
        self.size = operator.index(size)
        if self.size < 1:
            raise ValueError(f"MaxPool: size must be >= 1, not {self.size}")
        if self.height % self.size or self.width % self.size:
            raise ValueError(f"MaxPool: size {self.size} must divide the height and width, "
                             f"not {self.height}x{self.width}")
        self.ram_style = ram_style
        self._ram_attrs = check_ram_style("MaxPool", ram_style)
        pixel = data.ArrayLayout(unsigned(self.bits), self.channels)
        super().__init__({
            "i": In(stream.Signature(pixel)),
            "o": Out(stream.Signature(pixel)),
        })

    @property
    def out_height(self):
        return self.height // self.size

    @property
    def out_width(self):
        return self.width // self.size

    @property
    def latency(self):
        """Cycles from a block's last input transfer to ``o.valid``."""
        return timing.max_pool(self.height, self.width).latency

    @property
    def interval(self):
        """Cycles per input image with an eager source and sink."""
        return timing.max_pool(self.height, self.width).interval

    def _max(self, a, b):
        """Elementwise unsigned maximum of two pixels (plain values of ``C·bits``)."""
        w = self.bits
        return Cat(*(Mux(a[c * w:(c + 1) * w] > b[c * w:(c + 1) * w],
                         a[c * w:(c + 1) * w], b[c * w:(c + 1) * w])
                     for c in range(self.channels)))

    def elaborate(self, platform):
        m = Module()
        s = self.size
        wb = self.out_width
        pix_bits = self.channels * self.bits
        pix = self.i.payload.as_value()

        # Counters: ``xs``/``ys`` the position inside the block, ``bx`` the block column (the
        # block row is not needed: images follow each other with the same pattern).
        xs = Signal(range(max(2, s)))
        ys = Signal(range(max(2, s)))
        bx = Signal(range(max(2, wb)))
        x_last = Signal(init=int(s == 1))         # ``xs == s - 1``
        y_first = Signal(init=1)                  # ``ys == 0``
        y_last = Signal(init=int(s == 1))         # ``ys == s - 1``

        out_pos = Signal()
        take = Signal()
        m.d.comb += [out_pos.eq(x_last & y_last),
                     self.i.ready.eq(~(out_pos & self.o.valid & ~self.o.ready)),
                     take.eq(self.i.valid & self.i.ready)]

        # Running maximum of the block within the row (column ``xs`` included).
        row_max = Signal(pix_bits)
        if s == 1:
            m.d.comb += row_max.eq(pix)
        else:
            acc = Signal(pix_bits)
            m.d.comb += row_max.eq(Mux(xs == 0, pix, self._max(acc, pix)))
            with m.If(take):
                m.d.sync += acc.eq(row_max)

        # The block's maximum over the rows so far, through the row buffer.
        block_max = Signal(pix_bits)
        if s == 1:
            m.d.comb += block_max.eq(row_max)
        else:
            m.submodules.rows = rows = Memory(shape=pix_bits, depth=wb, init=[],
                                              attrs=self._ram_attrs)
            wr = rows.write_port()
            # A block's word is written at its last column and next used a row later, after
            # further reads: either collision rule would do; a transparent port is the cheaper
            # one for Yosys to build around an iCE40 block RAM.
            rd = rows.read_port(transparent_for=(wr,))
            m.d.comb += [rd.addr.eq(bx),
                         block_max.eq(Mux(y_first, row_max, self._max(row_max, rd.data))),
                         wr.addr.eq(bx), wr.data.eq(block_max),
                         wr.en.eq(take & x_last & ~y_last)]

        with m.If(take & out_pos):
            m.d.sync += [self.o.payload.as_value().eq(block_max), self.o.valid.eq(1)]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        # Advance the counters.
        def wrap(counter, n):
            return counter.eq(Mux(counter == n - 1, 0, counter + 1))

        with m.If(take):
            if s > 1:
                m.d.sync += [wrap(xs, s), x_last.eq(xs == s - 2)]
            with m.If(x_last):
                if wb > 1:
                    m.d.sync += wrap(bx, wb)
                with m.If(bx == wb - 1):
                    if s > 1:
                        m.d.sync += [wrap(ys, s), y_first.eq(ys == s - 1),
                                     y_last.eq(ys == s - 2)]
        return m
