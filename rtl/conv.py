"""A conv layer in hardware: a sliding-window generator feeding a folded matrix-vector unit."""

from amaranth.hdl import Module, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from qnnfab import ir

from . import timing
from ._checks import quiet_on_error
from .folding import LayerFolding
from .mvu import MatrixVectorUnit
from .sliding_window import SlidingWindow

__all__ = ["ConvUnit"]


class ConvUnit(wiring.Component):
    """One conv layer: :class:`~qnnfab.rtl.sliding_window.SlidingWindow` (line buffers, code-0
    padding) turns the pixel stream into ``k×k`` windows, and a
    :class:`~qnnfab.rtl.mvu.MatrixVectorUnit` over the layer's
    :meth:`~qnnfab.ir.ConvLayer.dense_view` (``pe`` output channels × ``simd`` window inputs per
    cycle; a kernel codebook's indices decoded beside it) turns each window into one output
    pixel.

    Parameters
    ----------
    layer : ir.ConvLayer
    folding : LayerFolding or (pe, simd)
    pipelined : bool

    Members
    -------
    i : In(stream.Signature(ArrayLayout(unsigned(in_bits), in_channels)))
        Input pixels in raster order, ``height × width`` per image.
    o : Out(stream.Signature(ArrayLayout(unsigned(out_bits), out_channels)))
        Output pixels in raster order, ``out_height × out_width`` per image.

    Timing (:func:`qnnfab.rtl.timing.conv_unit`): one window per MVU interval
    (``(in/simd)·(out/pe)`` cycles, +1 when ``simd == in``) while windows are ready; the window
    generator adds one cycle per padded position that emits no window (the first ``k-1`` of
    each padded row and the first ``k-1`` padded rows): :attr:`interval` cycles per image at
    most with an eager source and sink. :attr:`latency`: the window generator's first window,
    then the MVU's latency.
    """

    @quiet_on_error
    def __init__(self, layer, folding, *, pipelined=True):
        if not isinstance(layer, ir.ConvLayer):
            raise TypeError(f"layer must be a qnnfab.ir.ConvLayer, not {layer!r}")
        self.layer = layer
        self.folding = folding if isinstance(folding, LayerFolding) else LayerFolding(*folding)
        self.mvu = MatrixVectorUnit(layer, self.folding, pipelined=pipelined)
        self.window = SlidingWindow(layer.height, layer.width, layer.in_channels, layer.in_bits,
                                    kernel_size=layer.kernel_size, padding=layer.padding)
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(unsigned(layer.in_bits),
                                                      layer.in_channels))),
            "o": Out(stream.Signature(data.ArrayLayout(unsigned(layer.out_bits),
                                                       layer.out_channels))),
        })

    @property
    def _timing(self):
        layer, f = self.layer, self.folding
        return timing.conv_unit(layer.height, layer.width, layer.kernel_size, layer.padding,
                                layer.in_features, layer.out_features, f.pe, f.simd,
                                self.mvu.dot_latency)

    @property
    def interval(self):
        """Cycles per image with an eager source and sink, at most: each window costs the
        MVU's interval, each padded position without a window one cycle."""
        return self._timing.interval

    @property
    def latency(self):
        """Cycles from the first cycle an image's first pixel is offered (unit idle) to the
        first ``o.valid``: the window generator's latency plus the MVU's."""
        return self._timing.latency

    def elaborate(self, platform):
        m = Module()
        m.submodules.window = self.window
        m.submodules.mvu = self.mvu
        connect(m, flipped(self.i), self.window.i)
        connect(m, self.window.o, self.mvu.i)
        connect(m, self.mvu.o, flipped(self.o))
        return m
