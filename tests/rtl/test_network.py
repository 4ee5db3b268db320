"""Network: its signature (the contract other parts code against), folding, properties."""

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from qnnfab import random_net
from qnnfab.model import golden
from qnnfab.rtl.folding import FoldingError, LayerFolding, auto_folding
from qnnfab.rtl.network import Network
from qnnfab.sim.amaranth_sim import run_amaranth


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


# --- a mixed network: ternary and binary layers, 1/2/3/5-bit activations -----------------------

MIXED = dict(features=[16, 32, 32, 8, 10], input_bits=5, hidden_bits=[2, 1, 3],
             weight_kind=["ternary", "binary", "ternary", "binary"])


def _dot_latency(layer, simd):
    """Registers of a pipelined dot unit: after each adder-tree level but the last, and at the
    output; 1-bit inputs are summed in pairs first (``REGISTER_EVERY`` = 1)."""
    leaves = (simd + 1) // 2 if layer.in_bits == 1 else simd
    return max(1, (leaves - 1).bit_length())


@pytest.mark.parametrize("folding", [None, [(4, 4), (2, 8), (2, 4), (5, 2)],
                                     [(8, 16), (4, 32), (8, 32), (1, 1)]],
                         ids=["auto", "mid", "extremes"])
def test_mixed_network_bit_exact_and_timing(folding):
    seed = 3 + (0 if folding is None else sum(p * s for p, s in folding))
    rng = np.random.default_rng(seed)
    net = random_net.random_network(rng, **MIXED)
    assert [(ly.weight_kind, ly.in_bits, ly.out_bits) for ly in net.layers[:-1]] == [
        ("ternary", 5, 2), ("binary", 2, 1), ("ternary", 1, 3)]
    assert (net.layers[-1].weight_kind, net.layers[-1].in_bits) == ("binary", 3)
    codes = random_net.random_inputs(rng, net, 16)
    codes[0] = 31                                 # the extremes of the input range
    codes[1] = 0
    run = run_amaranth(net, codes, folding)
    trace = golden.forward(net, codes)
    for v, k in zip(*np.nonzero(run.scores != trace.scores)):
        raise AssertionError(f"seed {seed}: vector {v} score {k}: expected "
                             f"{trace.scores[v, k]}, got {run.scores[v, k]}")
    for v in np.flatnonzero(run.classes != trace.classes):
        raise AssertionError(f"seed {seed}: vector {v} class: expected {trace.classes[v]}, "
                             f"got {run.classes[v]}")

    dut = Network(net, folding)
    cycles = [(ly.in_features // f.simd) * (ly.out_features // f.pe)
              for ly, f in zip(net.layers, dut.folding)]
    assert dut.layer_cycles == cycles
    assert dut.layer_latencies == [c + 2 + _dot_latency(ly, f.simd)
                                   for c, ly, f in zip(cycles, net.layers, dut.folding)]
    # Back to back inputs: the first result after `latency`, then one per interval.
    assert run.out_cycles[0] - run.in_cycles[0] == dut.latency
    assert set(np.diff(run.out_cycles).tolist()) == {dut.cycles_per_inference}
    assert dut.cycles_per_inference >= max(cycles)
