"""The input vector in block RAM (:class:`qnnfab.rtl.input_buffer.InputBuffer`): a network
fed one code per transfer is bit-exact with the golden model under stalls, its timing is the
model's, and what cannot be buffered is refused with the reason."""

import numpy as np
import pytest
from amaranth.hdl import unsigned
from amaranth.lib import stream
from amaranth.lib.wiring import In

from qnnfab import ir, random_net
from qnnfab.rtl.estimate import estimate
from qnnfab.rtl.input_buffer import InputBuffer, why_no_input_buffer
from qnnfab.rtl.network import Network
from qnnfab.sim.amaranth_sim import run_amaranth
from qnnfab.spec import golden


def _net(seed=1, features=(24, 16, 10), input_bits=3, **kwargs):
    return random_net.random_network(np.random.default_rng(seed), features=list(features),
                                     input_bits=input_bits, **kwargs)


def _check_exact(net, codes, run):
    trace = golden.forward(net, codes)
    last = len(net.layers) - 1
    for k in range(len(codes)):
        for j, (e, g) in enumerate(zip(trace.scores[k], run.scores[k])):
            assert e == g, f"input {k}: layer {last} index {j}: expected {e}, got {g}"
    assert (run.classes == trace.classes).all()


@pytest.mark.parametrize("folding", [[(2, 4), (2, 8)], [(4, 3), (1, 16)], [(1, 1), (5, 2)],
                                     [(16, 12), (2, 16)]],
                         ids=["mid", "simd3", "one-lane", "input-bound"])
def test_bit_exact_and_timing(folding):
    net = _net()
    codes = random_net.random_inputs(np.random.default_rng(2), net, 6)
    codes[0], codes[1] = 0, (1 << net.input_bits) - 1
    hw = Network(net, folding, input_buffer=True)
    assert hw.signature.members["i"] == In(stream.Signature(unsigned(net.input_bits)))
    # Stalls on both sides: gaps before vectors, a sink that is not always ready.
    _check_exact(net, codes, run_amaranth(net, codes, folding, input_buffer=True,
                                          ready=lambda c: c % 3 != 0, gaps=lambda k: k % 3))
    # Eager source and sink: the model's latency and interval, exactly.
    run = run_amaranth(net, codes, folding, input_buffer=True)
    _check_exact(net, codes, run)
    assert run.out_cycles[0] - run.in_cycles[0] == hw.latency
    assert set(np.diff(run.out_cycles).tolist()) == {hw.interval}
    steps = (24 // folding[0][1]) * (16 // folding[0][0])
    assert hw.interval >= max(24, steps)
    # The first layer waits for the vector's 24 codes, one per cycle.
    plain = Network(net, folding)
    assert hw.layer_latencies[0] == plain.layer_latencies[0] + 24


def test_deep_mixed_network_bit_exact():
    net = _net(5, features=[32, 24, 16, 10], input_bits=8, hidden_bits=[2, 1],
               weight_kind=["ternary", "binary", "ternary"])
    codes = random_net.random_inputs(np.random.default_rng(6), net, 5)
    folding = [(4, 8), (2, 8), (5, 4)]
    _check_exact(net, codes, run_amaranth(net, codes, folding, input_buffer=True,
                                          ready=lambda c: c % 4 != 1, gaps=lambda k: 2 * k))


def test_refusals_name_the_reason():
    net = _net()
    with pytest.raises(ValueError, match=r"input buffer: layers\[0\] at folding 2:24 reads all "
                                         r"24 inputs at once; a buffered input needs a SIMD "
                                         r"below 24"):
        Network(net, [(2, 24), (2, 8)], input_buffer=True)
    with pytest.raises(ValueError, match=r"layers\[0\] is unrolled"):
        Network(net, [(2, 4), (2, 8)], style=["unrolled", "folded"], input_buffer=True)
    cnn = random_net.random_cnn(np.random.default_rng(0), height=4, width=4, channels=[1, 2])
    with pytest.raises(ValueError, match=r"input buffer: only a network whose first layer is "
                                         r"dense \(an MLP\)"):
        Network(cnn, input_buffer=True)
    assert why_no_input_buffer(net, [(2, 4), (2, 8)]) is None
    with pytest.raises(ValueError, match=r"InputBuffer: simd must divide n and be smaller"):
        InputBuffer(3, 24, 5)
    with pytest.raises(ValueError, match=r"InputBuffer: bits must be >= 1, not 0"):
        InputBuffer(0, 24, 4)


def test_estimate_counts_the_buffer_not_the_register():
    # 784 8-bit codes: 6,272 flip-flops and a 49-way slice multiplexer, or 12,544 bits of
    # block RAM in two banks.
    net = random_net.random_network(np.random.default_rng(0), features=[784, 64, 10],
                                    input_bits=8)
    folding = [(4, 16), (2, 64)]
    ff = estimate(net, folding)
    ebr = estimate(net, folding, input_buffer=True)
    assert ff["buffer_bits"] == 0 and ebr["buffer_bits"] == 2 * 784 * 8
    assert ff["lc"] - ebr["lc"] >= 784 * 8          # the register and the multiplexer go
    # Not bufferable at this folding: counted as the register.
    whole = [(1, 784), (2, 64)]
    assert estimate(net, whole, input_buffer=True) == estimate(net, whole)
    assert isinstance(net, ir.Network)
