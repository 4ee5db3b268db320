"""Image vector <-> pixel stream: the serializer in front of the first spatial layer and the
flatten in front of the first dense layer.

An image of ``height × width × channels`` codes is a vector in ``(y, x, c)`` order (flat index
``(y·W + x)·C + c``); a pixel is the ``C`` codes of one position, pixels go in raster order.
"""

import operator

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from . import timing
from ._checks import quiet_on_error

__all__ = ["VectorToPixels", "PixelsToVector", "check_image_shape", "check_ram_style"]


def check_image_shape(owner, height, width, channels, bits):
    """The four image parameters as ints; ``ValueError`` naming ``owner`` and the bad value."""
    values = {"height": height, "width": width, "channels": channels, "bits": bits}
    out = []
    for name, value in values.items():
        value = operator.index(value)
        if value < 1:
            raise ValueError(f"{owner}: {name} must be >= 1, not {value}")
        out.append(value)
    return tuple(out)


def check_ram_style(owner, ram_style):
    """``ram_style`` for a buffer memory: ``None`` (Yosys chooses; on the iCE40 it keeps small
    buffers in flip-flops), ``"block"`` (block RAM) or ``"logic"`` (flip-flops)."""
    if ram_style not in (None, "block", "logic"):
        raise ValueError(f"{owner}: ram_style must be None, 'block' or 'logic', "
                         f"not {ram_style!r}")
    return {} if ram_style is None else {"ram_style": ram_style}


def _pixel_layout(channels, bits):
    return data.ArrayLayout(unsigned(bits), channels)


class _ImageStream(wiring.Component):
    """What :class:`VectorToPixels` and :class:`PixelsToVector` share: the image shape
    (``height``, ``width``, ``channels``, ``bits``, set before ``super().__init__``), its
    sizes, and one pixel per cycle."""

    @property
    def pixels(self):
        """Pixels per image, ``H·W``."""
        return self.height * self.width

    @property
    def features(self):
        """Codes per image, ``H·W·C``."""
        return self.pixels * self.channels

    @property
    def latency(self):
        """See the class (:mod:`qnnfab.rtl.timing`)."""
        return self._timing(self.height, self.width).latency

    @property
    def interval(self):
        """Cycles per image with an eager source and sink: one pixel per cycle."""
        return self._timing(self.height, self.width).interval


class VectorToPixels(_ImageStream):
    """One image vector in, its pixels out, one per cycle in raster order.

    Parameters
    ----------
    height, width, channels, bits : int
        The image shape (``H × W × C``) and the bits of each code.

    Members
    -------
    i : In(stream.Signature(ArrayLayout(unsigned(bits), H·W·C)))
        One whole image per transfer, ``(y, x, c)`` order.
    o : Out(stream.Signature(ArrayLayout(unsigned(bits), C)))
        One pixel per transfer, raster order.

    The image is not copied: a counter selects each pixel from the held ``i.payload`` (the
    stream rules hold it while ``i.valid & ~i.ready``) into the output register ``o.payload``
    (``C·bits`` flip-flops, which keep the ``H·W``-way multiplexer off the consumer's paths).
    ``i.ready`` rises in the cycle the last pixel is loaded into the output register.

    Latency: :attr:`latency` = 1 cycle from ``i.valid`` (unit idle) to ``o.valid``.
    Throughput: :attr:`interval` = ``H·W`` cycles per image with an eager source and
    sink (images back to back, one pixel every cycle).
    """

    _timing = staticmethod(timing.vector_to_pixels)

    @quiet_on_error
    def __init__(self, height, width, channels, bits):
        self.height, self.width, self.channels, self.bits = check_image_shape(
            "VectorToPixels", height, width, channels, bits)
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(unsigned(self.bits), self.features))),
            "o": Out(stream.Signature(_pixel_layout(self.channels, self.bits))),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.pixels
        pix_bits = self.channels * self.bits
        cnt = Signal(range(max(2, n)))
        last = Signal(init=int(n == 1))          # ``cnt == n - 1``, in a flip-flop
        load = Signal()
        m.d.comb += [load.eq(self.i.valid & (~self.o.valid | self.o.ready)),
                     self.i.ready.eq(load & last)]
        with m.If(load):
            m.d.sync += [self.o.payload.as_value().eq(
                             self.i.payload.as_value().word_select(cnt, pix_bits)),
                         self.o.valid.eq(1)]
            if n > 1:
                m.d.sync += [cnt.eq(Mux(last, 0, cnt + 1)),
                             last.eq(~last & (cnt == n - 2))]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m


class PixelsToVector(_ImageStream):
    """Pixels in (raster order), the whole image vector out: the flatten before dense layers.

    Parameters
    ----------
    height, width, channels, bits : int
        The image shape (``H × W × C``) and the bits of each code.

    Members
    -------
    i : In(stream.Signature(ArrayLayout(unsigned(bits), C)))
        One pixel per transfer, raster order.
    o : Out(stream.Signature(ArrayLayout(unsigned(bits), H·W·C)))
        One whole image per transfer, ``(y, x, c)`` order.

    The output register ``o.payload`` is itself the shift register the pixels enter (at the
    top, so the first pixel ends at the bottom): ``H·W·C·bits`` flip-flops, no second copy.
    While a finished image waits in it, no pixel is accepted: ``i.ready = ~o.valid | o.ready``
    (the first pixel of the next image shifts in the cycle the image is taken).

    Latency: :attr:`latency` = 1 cycle from the last pixel's transfer to ``o.valid``.
    Throughput: :attr:`interval` = ``H·W`` cycles per image with an eager source and
    sink (no gap between images). A consumer that takes the vector ``D`` cycles after it is
    offered (an MVU reading it slice by slice) stalls the pixel stream for those ``D`` cycles.
    """

    _timing = staticmethod(timing.pixels_to_vector)

    @quiet_on_error
    def __init__(self, height, width, channels, bits):
        self.height, self.width, self.channels, self.bits = check_image_shape(
            "PixelsToVector", height, width, channels, bits)
        super().__init__({
            "i": In(stream.Signature(_pixel_layout(self.channels, self.bits))),
            "o": Out(stream.Signature(data.ArrayLayout(unsigned(self.bits), self.features))),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.pixels
        pix_bits = self.channels * self.bits
        cnt = Signal(range(max(2, n)))
        last = Signal(init=int(n == 1))          # ``cnt == n - 1``, in a flip-flop
        vec = self.o.payload.as_value()
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.i.valid & self.i.ready):
            if n > 1:
                m.d.sync += [vec.eq(Cat(vec[pix_bits:], self.i.payload.as_value())),
                             cnt.eq(Mux(last, 0, cnt + 1)),
                             last.eq(~last & (cnt == n - 2))]
            else:
                m.d.sync += vec.eq(self.i.payload.as_value())
            m.d.sync += self.o.valid.eq(last)
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m
