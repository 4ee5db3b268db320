"""Network: its signature (the contract other parts code against), folding, properties."""

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from qnnfab import random_net
from qnnfab.rtl.folding import FoldingError, LayerFolding, auto_folding
from qnnfab.rtl.network import Network


def _net(features=(64, 256, 256, 10), input_bits=5):
    return random_net.random_network(np.random.default_rng(0), features=list(features),
                                     input_bits=input_bits)


def test_signature_is_the_contract():
    net = _net()
    dut = Network(net)
    assert dut.signature.members["i"] == In(stream.Signature(
        data.ArrayLayout(unsigned(5), 64)))
    assert dut.signature.members["o"] == Out(stream.Signature(data.StructLayout({
        "cls": unsigned(4), "scores": data.ArrayLayout(signed(net.layers[-1].acc_width), 10)})))
    assert net.layers[-1].acc_width == 10


def test_default_folding_and_timing():
    net = _net()
    dut = Network(net)
    assert dut.folding == auto_folding(net)
    assert dut.folding == [LayerFolding(1, 64), LayerFolding(1, 256), LayerFolding(1, 16)]
    # 256 cycles, one for the transfer, one for the source's output register to refill.
    assert dut.cycles_per_inference == 258
    # Per layer: cycles + 2 register stages + the dot unit's registers; then the argmax.
    # Dot units: trees of 64 (6 levels) and 128 pair counts (7 levels) registered every 2
    # levels and at the output; 8 pair counts (3 levels) at level 2 and the output.
    assert dut.layer_latencies == [256 + 2 + 6, 256 + 2 + 7, 160 + 2 + 3]
    assert dut.latency == sum(dut.layer_latencies) + 2 * 10 + 1    # + the argmax


def test_explicit_folding_and_refusal():
    net = _net()
    dut = Network(net, [(2, 32), (4, 64), (10, 16)])
    assert dut.cycles_per_inference == max(2 * 128 + 0, 4 * 64 + 1, 16 + 1)
    assert Network(net, [(4, 64), (1, 256), (10, 16)]).cycles_per_inference == 256 + 2
    assert Network(net, [(1, 1), (4, 64), (10, 16)]).cycles_per_inference == 64 * 256
    with pytest.raises(FoldingError, match=r"^layers\[1\]: SIMD=3 does not divide "
                                           r"in_features=256 \(choose one of 1, 2, 4, 8, 16, "
                                           r"32, 64, 128, 256\)$"):
        Network(net, [(1, 64), (1, 3), (5, 2)])


def test_bad_network_argument():
    with pytest.raises(TypeError, match="network must be a qnnfab.ir.Network, not 'x'"):
        Network("x")
