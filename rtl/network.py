"""A whole network in hardware: one :class:`~qnnfab.rtl.mvu.MatrixVectorUnit` per dense layer,
chained by streams, then an :class:`~qnnfab.rtl.argmax.Argmax`; a CNN's conv and pool layers
before them work on pixel streams (:class:`~qnnfab.rtl.conv.ConvUnit`,
:class:`~qnnfab.rtl.maxpool.MaxPool`), between a pixel serializer and a flatten."""

from amaranth.hdl import Module, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from qnnfab import ir

from ._checks import mark_used, quiet_on_error
from .argmax import Argmax, argmax_layout
from .conv import ConvUnit
from . import timing
from .folding import auto_folding, check_folding, layer_cycles
from .maxpool import MaxPool
from .mvu import MatrixVectorUnit, dot_unit_class
from .pixels import PixelsToVector, VectorToPixels

__all__ = ["Network"]


class Network(wiring.Component):
    """The hardware of a quantized network.

    Parameters
    ----------
    network : ir.Network
    folding : list of LayerFolding or (pe, simd), optional
        One per layer; ``None`` uses :func:`~qnnfab.rtl.folding.auto_folding`. A PE that does
        not divide ``out_features`` or a SIMD that does not divide ``in_features`` raises
        :class:`~qnnfab.rtl.folding.FoldingError`.
    pipelined : bool
        Pipeline registers inside the dot-product units (default; off only for experiments).

    Members
    -------
    i : In(stream.Signature(ArrayLayout(unsigned(input_bits), input_features)))
        One input vector per transfer; element ``j`` at bits ``[j*bits, (j+1)*bits)``.
    o : Out(stream.Signature(StructLayout({"cls": unsigned(max(1, ceil_log2(n_out))),
        "scores": ArrayLayout(signed(last.acc_width), n_out)})))
        The class (first index of the largest score) and the scores.

    Timing (:mod:`qnnfab.rtl.timing`): :attr:`interval` is the steady-state interval between
    inputs (about the slowest layer's steps per vector; a report's ``cycles_per_inference``);
    :attr:`latency` the cycles from the first cycle an input is offered (network idle) to
    ``o.valid``, without back-pressure. ``i.ready`` rises
    when the first layer has read the last slice of the input, not when it starts: hold
    ``i.payload`` until then, as the stream rules require.
    """

    @quiet_on_error
    def __init__(self, network, folding=None, *, pipelined=True):
        if not isinstance(network, ir.Network):
            raise TypeError(f"network must be a qnnfab.ir.Network, not {network!r}")
        network.validate()
        network.require_integer("hardware")
        self.network = network
        if folding is None:
            folding = auto_folding(network)
        self._folding = check_folding(network, folding)
        self.pipelined = bool(pipelined)
        # Sub-components are built in elaborate(); the timing comes from the same model.
        self._cycles = [layer_cycles(layer, f) for layer, f in zip(network.layers, self._folding)]
        self.is_cnn = network.input_shape is not None
        self._timings = self._stage_timings()
        last = network.layers[-1]
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(unsigned(network.input_bits),
                                                      network.input_features))),
            "o": Out(stream.Signature(argmax_layout(last.out_features, last.acc_width))),
        })
        # A Network is often built only to read its folding and timing (reports, fit checks):
        # do not warn (UnusedElaboratable) when it is never elaborated.
        mark_used(self)

    @property
    def folding(self):
        """The folding used, one :class:`~qnnfab.rtl.folding.LayerFolding` per layer."""
        return list(self._folding)

    def _stage_timings(self):
        """``(name, Timing, reads_vector)`` per stage of :meth:`stages`, from the IR alone (no
        component is built): see :func:`qnnfab.rtl.timing.chained`."""
        net = self.network
        out = []
        if self.is_cnn:
            h, w, _ = net.input_shape
            out.append(("pixels", timing.vector_to_pixels(h, w), False))
        prev = None
        for k, (layer, f) in enumerate(zip(net.layers, self._folding)):
            if isinstance(layer, ir.PoolLayer):
                out.append((f"layer{k}", timing.max_pool(layer.height, layer.width), False))
                prev = layer
                continue
            dot = dot_unit_class(layer).pipeline_latency(f.simd, self.pipelined, layer.in_bits)
            if isinstance(layer, ir.ConvLayer):
                t = timing.conv_unit(layer.height, layer.width, layer.kernel_size,
                                     layer.padding, layer.in_features, layer.out_features,
                                     f.pe, f.simd, dot)
                out.append((f"layer{k}", t, False))
            else:
                if isinstance(prev, ir.SPATIAL_KINDS):
                    h, w, _ = prev.out_shape
                    out.append(("flatten", timing.pixels_to_vector(h, w), True))
                t = timing.mvu(layer.in_features, layer.out_features, f.pe, f.simd, dot)
                out.append((f"layer{k}", t, True))
            prev = layer
        out.append(("argmax", timing.argmax(net.n_outputs), True))
        return out

    @property
    def interval(self):
        """Steady-state cycles between inferences with an eager source and sink (a report's
        ``cycles_per_inference``): the largest of :attr:`stage_intervals` (see
        :func:`qnnfab.rtl.timing.chained`: a layer's steps per vector, plus one for a layer
        that reads its whole input at once, ``simd == in_features``, plus one for a layer fed
        by another layer; at least the argmax's interval).

        For a CNN (:attr:`is_cnn`) an estimate, and a lower bound: stages hand pixels over
        through one-deep registers, so a bursty producer (a conv unit's window generator pauses
        at each row's padding) can stall the next one: simulate for the exact figure
        (:func:`qnnfab.sim.amaranth_sim.measure_timing`, which reports use)."""
        return max(self.stage_intervals)

    @property
    def latency(self):
        """Cycles from the first cycle an input is offered (network idle) to ``o.valid``: the
        sum of the stages' latencies; None for a CNN (not modelled: simulate it)."""
        if self.is_cnn:
            return None
        return sum(t.latency for _, t, _ in self._timings)

    @property
    def stage_intervals(self):
        """Cycles per input of each stage of :meth:`stages` in the chain, with an eager source
        and sink (:func:`qnnfab.rtl.timing.chained`): the pixel serializer and the flatten
        (``H·W``), each conv unit (its ``interval``), max-pool (``H·W``), dense unit and the
        argmax (their ``interval``, plus one when fed by another stage)."""
        return timing.chained([(t, reads) for _, t, reads in self._timings])

    @property
    def layer_cycles(self):
        """Issue steps per input of each layer (:func:`~qnnfab.rtl.folding.layer_cycles`):
        ``(in/simd)·(out/pe)``, times the windows for a conv layer, ``H·W`` for max-pool."""
        return list(self._cycles)

    @property
    def layer_latencies(self):
        """Latency of each layer's unit (see ``MatrixVectorUnit.latency``); None for a CNN."""
        if self.is_cnn:
            return None
        return [t.latency for name, t, _ in self._timings if name.startswith("layer")]

    def stages(self, *, argmax=True):
        """The chain of stream components, input to output (built anew on each call): a
        pixel serializer before the first spatial layer, a :class:`ConvUnit` per conv layer,
        a :class:`MaxPool` per pool layer, a flatten before the first dense layer after them,
        a :class:`MatrixVectorUnit` per dense layer, then the :class:`Argmax` (unless
        ``argmax`` is false)."""
        net = self.network
        stages = []
        if self.is_cnn:
            h, w, c = net.input_shape
            stages.append(("pixels", VectorToPixels(h, w, c, net.input_bits)))
        prev = None
        for k, (layer, f) in enumerate(zip(net.layers, self._folding)):
            if isinstance(layer, ir.ConvLayer):
                unit = ConvUnit(layer, f, pipelined=self.pipelined)
            elif isinstance(layer, ir.PoolLayer):
                unit = MaxPool(layer.height, layer.width, layer.channels, layer.bits,
                               size=layer.size)
            else:
                if isinstance(prev, ir.SPATIAL_KINDS):
                    h, w, c = prev.out_shape
                    stages.append(("flatten", PixelsToVector(h, w, c, prev.out_bits)))
                unit = MatrixVectorUnit(layer, f, pipelined=self.pipelined)
            stages.append((f"layer{k}", unit))
            prev = layer
        if argmax:
            last = net.layers[-1]
            stages.append(("argmax", Argmax(n=last.out_features, width=last.acc_width)))
        return stages

    def elaborate(self, platform):
        m = Module()
        stages = self.stages()
        for name, unit in stages:
            m.submodules[name] = unit
        units = [unit for _, unit in stages]
        connect(m, flipped(self.i), units[0].i)
        for a, b in zip(units, units[1:]):
            connect(m, a.o, b.i)
        connect(m, units[-1].o, flipped(self.o))
        return m
