"""Network: its signature (the contract other parts code against), folding, properties."""

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from qnnfab import ir, random_net
from qnnfab.spec import golden
from qnnfab.rtl.folding import FoldingError, LayerFolding, auto_folding
from qnnfab.rtl.mvu import dot_unit_class
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
    assert dut.interval == 258
    # Per layer: cycles + 2 register stages + the dot unit's registers; then the argmax.
    # Dot units: trees of 64 (6 levels) and 128 pair counts (7 levels) registered every 2
    # levels and at the output; 8 pair counts (3 levels) at level 2 and the output.
    assert dut.layer_latencies == [256 + 2 + 6, 256 + 2 + 7, 160 + 2 + 3]
    assert dut.latency == sum(dut.layer_latencies) + 2 * 10 + 1    # + the argmax


def test_explicit_folding_and_refusal():
    net = _net()
    dut = Network(net, [(2, 32), (4, 64), (10, 16)])
    assert dut.interval == max(2 * 128 + 0, 4 * 64 + 1, 16 + 1)
    assert Network(net, [(4, 64), (1, 256), (10, 16)]).interval == 256 + 2
    assert Network(net, [(1, 1), (4, 64), (10, 16)]).interval == 64 * 256
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
    assert set(np.diff(run.out_cycles).tolist()) == {dut.interval}
    assert dut.interval >= max(cycles)


# --- codebook layers (general and shift-add) among ternary and binary ones ----------------------

def _codebook_mixed_net(rng):
    """16 (5-bit) -> codebook multiply (k = 3) -> 2-bit -> codebook shift-add -> 1-bit ->
    binary -> 3-bit -> ternary -> 2-bit -> codebook output (k = 2, 8-bit levels)."""
    spec = [  # in, out, in_bits, out_bits (None: output), kind, codebook
        (16, 8, 5, 2, "codebook", (-127, 127, 33, -5, 90, 0, 7, -12)),
        (8, 8, 2, 1, "codebook", (0, 4, -4, 8, -16, 2, -2, 64)),
        (8, 8, 1, 3, "binary", None),
        (8, 8, 3, 2, "ternary", None),
        (8, 4, 2, None, "codebook", (-127, 127, 1, -1)),
    ]
    layers = [random_net.random_dense(rng, in_features=n_in, out_features=n_out, in_bits=bits,
                                      out_bits=out or 1, output=out is None, weight_kind=kind,
                                      codebook=None if cb is None else np.asarray(cb))
              for n_in, n_out, bits, out, kind, cb in spec]
    return ir.Network(input_features=16, input_bits=5, layers=layers).validate()


def _codebook_dot_latency(layer, simd):
    """A pipelined codebook unit registers its leaves (more than one), every adder-tree level
    but the last, and its output; the general path sums ``in_bits`` partial products per lane,
    the shift-add and 1-bit paths one value."""
    levels = layer.weight_levels
    shift = all(v == 0 or (abs(v) & (abs(v) - 1)) == 0 for v in levels)
    leaves = simd * (layer.in_bits if layer.in_bits > 1 and not shift else 1)
    depth = (leaves - 1).bit_length()
    return 1 + (leaves > 1) + max(0, depth - 1)


@pytest.mark.parametrize("folding", [None, [(2, 4), (4, 2), (8, 8), (1, 1), (4, 8)]],
                         ids=["auto", "mixed"])
def test_codebook_network_bit_exact_and_timing(folding):
    seed = 17 + (0 if folding is None else 1)
    rng = np.random.default_rng(seed)
    net = _codebook_mixed_net(rng)
    assert [dot_unit_class(ly).path_for(ly.in_bits) for ly in (net.layers[0], net.layers[1])] \
        == ["multiply", "shift"]
    assert dot_unit_class(net.layers[4]).path_for(2) == "multiply"
    codes = random_net.random_inputs(rng, net, 12)
    codes[0] = 31                                 # the extremes of the input range
    codes[1] = 0
    run = run_amaranth(net, codes, folding)
    trace = golden.forward(net, codes)
    for v, k in zip(*np.nonzero(run.scores != trace.scores)):
        raise AssertionError(f"seed {seed}: vector {v} score {k}: expected "
                             f"{trace.scores[v, k]}, got {run.scores[v, k]}")
    assert (run.classes == trace.classes).all(), (seed, run.classes, trace.classes)

    dut = Network(net, folding)
    cycles = [(ly.in_features // f.simd) * (ly.out_features // f.pe)
              for ly, f in zip(net.layers, dut.folding)]
    dots = [_codebook_dot_latency(ly, f.simd) if ly.weight_kind == "codebook"
            else _dot_latency(ly, f.simd) for ly, f in zip(net.layers, dut.folding)]
    assert dut.layer_latencies == [c + 2 + d for c, d in zip(cycles, dots)]
    assert run.out_cycles[0] - run.in_cycles[0] == dut.latency
    assert set(np.diff(run.out_cycles).tolist()) == {dut.interval}
