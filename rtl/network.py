"""A whole network in hardware: one :class:`~qnnfab.rtl.mvu.MatrixVectorUnit` per dense layer,
chained by streams, then an :class:`~qnnfab.rtl.argmax.Argmax`; a CNN's conv and pool layers
before them work on pixel streams (:class:`~qnnfab.rtl.conv.ConvUnit`,
:class:`~qnnfab.rtl.maxpool.MaxPool`), between a pixel serializer and a flatten."""

from amaranth.hdl import Module, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from qnnfab import ir

from ._checks import quiet_on_error
from .argmax import Argmax, argmax_layout
from .conv import ConvUnit
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

    Timing: :attr:`cycles_per_inference` is the steady-state interval between inputs (about
    the slowest layer's cycles per vector); :attr:`latency` the cycles from the first cycle an
    input is offered (network idle) to ``o.valid``, without back-pressure. ``i.ready`` rises
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
        # Sub-components are built in elaborate(); the timing comes from the same formulas.
        self._cycles = [layer_cycles(layer, f) for layer, f in zip(network.layers, self._folding)]
        self.is_cnn = network.input_shape is not None
        if not self.is_cnn:
            self._latencies = [
                c + 2 + dot_unit_class(layer).pipeline_latency(f.simd, self.pipelined,
                                                               layer.in_bits)
                for c, layer, f in zip(self._cycles, network.layers, self._folding)]
        else:
            self._latencies = None  # not modelled for CNNs
        last = network.layers[-1]
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(unsigned(network.input_bits),
                                                      network.input_features))),
            "o": Out(stream.Signature(argmax_layout(last.out_features, last.acc_width))),
        })
        # A Network is often built only to read its folding and timing (reports, fit checks):
        # do not warn (UnusedElaboratable) when it is never elaborated.
        self._MustUse__silence = True

    @property
    def folding(self):
        """The folding used, one :class:`~qnnfab.rtl.folding.LayerFolding` per layer."""
        return list(self._folding)

    @property
    def cycles_per_inference(self):
        """Steady-state cycles between inferences with an eager source and sink: the slowest
        layer's cycles per vector, plus one for a layer that reads its whole input at once
        (``simd == in_features``), plus one for a layer fed by another layer (its source's
        output register refills the cycle after a transfer); at least the argmax's interval.

        For a CNN (:attr:`is_cnn`) an estimate, and a lower bound: the slowest stage's cycles
        per image on its own (:attr:`stage_intervals`). Stages hand pixels over through
        one-deep registers, so a bursty producer (a conv unit's window generator pauses at
        each row's padding) can stall the next one: simulate for the exact figure
        (:func:`qnnfab.sim.amaranth_sim.measure_timing`, which reports use)."""
        if self.is_cnn:
            return max(self.stage_intervals)
        late = [int(layer.in_features == f.simd)
                for layer, f in zip(self.network.layers, self._folding)]
        return max([self._cycles[0] + late[0]]
                   + [c + d + 1 for c, d in zip(self._cycles[1:], late[1:])]
                   + [Argmax.latency_for(self.network.n_outputs) + 2])  # argmax, fed by a unit

    @property
    def latency(self):
        """Cycles from the first cycle an input is offered (network idle) to ``o.valid``;
        None for a CNN (not modelled: simulate it)."""
        if self.is_cnn:
            return None
        return sum(self._latencies) + Argmax.latency_for(self.network.n_outputs)

    @property
    def stage_intervals(self):
        """Cycles per image of each stage on its own with an eager source and sink: the pixel
        serializer and the flatten (``H·W``), each conv unit (``ConvUnit.interval_bound``),
        max-pool (``H·W``) and dense unit (its cycles per vector + 1)."""
        out = []
        net = self.network
        if self.is_cnn:
            h, w, _ = net.input_shape
            out.append(h * w)
        prev_spatial = self.is_cnn
        for layer, f, c in zip(net.layers, self._folding, self._cycles):
            if isinstance(layer, ir.ConvLayer):
                padded = (layer.height + 2 * layer.padding) * (layer.width + 2 * layer.padding)
                per_window = c // layer.positions + int(layer.in_features == f.simd)
                out.append(layer.positions * per_window + padded - layer.positions)
            elif isinstance(layer, ir.PoolLayer):
                out.append(c)
            else:
                if prev_spatial:
                    out.append(layer.in_features // self._channels_before(layer) + 1)
                out.append(c + int(layer.in_features == f.simd) + 1)
            prev_spatial = isinstance(layer, ir.SPATIAL_KINDS)
        out.append(Argmax.latency_for(net.n_outputs) + 2)
        return out

    def _channels_before(self, layer):
        i = self.network.layers.index(layer)
        return self.network.layers[i - 1].out_shape[2]

    @property
    def layer_cycles(self):
        """Compute cycles per vector of each layer, ``(in/simd)·(out/pe)``."""
        return list(self._cycles)

    @property
    def layer_latencies(self):
        """Latency of each layer's unit (see ``MatrixVectorUnit.latency``); None for a CNN."""
        return None if self._latencies is None else list(self._latencies)

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
                assert unit.cycles_per_vector == self._cycles[k]
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
