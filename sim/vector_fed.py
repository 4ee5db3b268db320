"""A network with its input vector in block RAM, behind the whole-vector interface the Verilog
harnesses drive.

:class:`~qnnfab.rtl.network.Network` with ``input_buffer=True`` takes its input one code per
transfer (:class:`~qnnfab.rtl.input_buffer.InputBuffer`), as the board top feeds it from the
UART. The bulk Verilator harness (:mod:`qnnfab.sim.bulk_network`) offers whole vectors; a
:class:`~qnnfab.rtl.pixels.VectorToPixels` of one-code pixels in front serializes each vector
into that code stream, so the buffered hardware runs under the same harness, stalls and
comparison as every other network.
"""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import connect, flipped

__all__ = ["VectorFedNetwork"]


class VectorFedNetwork(wiring.Component):
    """``Network(network, folding, input_buffer=True, ...)`` fed whole vectors.

    Parameters
    ----------
    network, folding, style, weights_in : as :class:`~qnnfab.rtl.network.Network`'s

    Members
    -------
    i, o : the same as ``Network(network, folding)``'s (whole input vectors in, class and
        scores out)

    A vector is taken (``i.ready``) when its last code has gone to the network's buffer,
    ``input_features`` cycles after it is offered to an idle unit.
    """

    def __init__(self, network, folding=None, *, style="folded", weights_in="ebr"):
        from qnnfab.rtl.network import Network
        from qnnfab.rtl.pixels import VectorToPixels
        self.network = Network(network, folding, style=style, weights_in=weights_in,
                               input_buffer=True)
        self.serializer = VectorToPixels(1, network.input_features, 1, network.input_bits)
        super().__init__({"i": self.serializer.signature.members["i"],
                          "o": self.network.signature.members["o"]})

    def elaborate(self, platform):
        m = Module()
        m.submodules.serializer = ser = self.serializer
        m.submodules.network = net = self.network
        connect(m, flipped(self.i), ser.i)
        m.d.comb += [net.i.payload.eq(ser.o.payload.as_value()), net.i.valid.eq(ser.o.valid),
                     ser.o.ready.eq(net.i.ready), net.restart.eq(0)]
        connect(m, net.o, flipped(self.o))
        return m
