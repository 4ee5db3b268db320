"""A whole network in hardware: one :class:`~qnnfab.rtl.mvu.MatrixVectorUnit` per layer, chained
by streams, then an :class:`~qnnfab.rtl.argmax.Argmax`."""

from amaranth.hdl import Module, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from qnnfab import ir

from ._checks import quiet_on_error
from .argmax import Argmax, argmax_layout
from .folding import auto_folding, check_folding, layer_cycles
from .mvu import MatrixVectorUnit, dot_unit_class

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
        self._latencies = [
            c + 2 + dot_unit_class(layer).pipeline_latency(f.simd, self.pipelined, layer.in_bits)
            for c, layer, f in zip(self._cycles, network.layers, self._folding)]
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
        output register refills the cycle after a transfer); at least the argmax's interval."""
        late = [int(layer.in_features == f.simd)
                for layer, f in zip(self.network.layers, self._folding)]
        return max([self._cycles[0] + late[0]]
                   + [c + d + 1 for c, d in zip(self._cycles[1:], late[1:])]
                   + [Argmax.latency_for(self.network.n_outputs) + 2])  # argmax, fed by a unit

    @property
    def latency(self):
        """Cycles from the first cycle an input is offered (network idle) to ``o.valid``."""
        return sum(self._latencies) + Argmax.latency_for(self.network.n_outputs)

    @property
    def layer_cycles(self):
        """Compute cycles per vector of each layer, ``(in/simd)·(out/pe)``."""
        return list(self._cycles)

    @property
    def layer_latencies(self):
        """Latency of each layer's unit (see ``MatrixVectorUnit.latency``)."""
        return list(self._latencies)

    def elaborate(self, platform):
        m = Module()
        mvus = []
        for k, (layer, f) in enumerate(zip(self.network.layers, self._folding)):
            mvu = MatrixVectorUnit(layer, f, pipelined=self.pipelined)
            assert mvu.cycles_per_vector == self._cycles[k]
            m.submodules[f"layer{k}"] = mvu
            mvus.append(mvu)
        last = self.network.layers[-1]
        m.submodules.argmax = argmax = Argmax(n=last.out_features, width=last.acc_width)
        connect(m, flipped(self.i), mvus[0].i)
        for a, b in zip(mvus, mvus[1:]):
            connect(m, a.o, b.i)
        connect(m, mvus[-1].o, argmax.i)
        connect(m, argmax.o, flipped(self.o))
        return m
