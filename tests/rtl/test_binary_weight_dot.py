"""BinaryWeightDot (unsigned activations × ±1 weights) against numpy."""

import numpy as np
import pytest

from qnnfab import random_net
from qnnfab.spec import golden
from qnnfab.rtl.binary_weight_dot import BinaryWeightDot


def _pack(values, bits):
    return sum(int(v) << (k * bits) for k, v in enumerate(values))


@pytest.mark.parametrize("pe, simd, in_bits", [(1, 1, 2), (2, 5, 5), (4, 16, 5), (1, 64, 5),
                                               (3, 4, 8)])
@pytest.mark.parametrize("pipelined", [False, True])
def test_binary_weight_dot_matches_numpy(pe, simd, in_bits, pipelined, dot_unit):
    seed = 7 * pe + 100 * simd + in_bits
    rng = np.random.default_rng(seed)
    dut = BinaryWeightDot(pe=pe, simd=simd, in_bits=in_bits, pipelined=pipelined)
    n = 30
    xs = rng.integers(0, 1 << in_bits, size=(n, simd))
    xs[0] = (1 << in_bits) - 1                    # the extremes of the range
    ws = rng.integers(0, 2, size=(n, pe, simd))
    ws[0] = 0
    ws[1] = 1
    amax = (1 << in_bits) - 1
    # The unit sums a XOR ~w (a where w = 1, amax - a where w = 0) ...
    expected = np.where(ws == 1, xs[:, None, :], amax - xs[:, None, :]).sum(axis=2)
    # ... which is the dot product plus amax·(number of 0 weights).
    dot = (xs[:, None, :] * (2 * ws - 1)).sum(axis=2)
    assert (expected - amax * (ws == 0).sum(axis=2) == dot).all()

    got = dot_unit(dut,
                   [_pack(xs[k], in_bits) for k in range(n)],
                   [_pack(ws[k].reshape(-1), 1) for k in range(n)])
    for k in range(n):
        for p in range(pe):
            assert got[k][p] == expected[k, p], \
                f"seed {seed} word {k} PE {p}: expected {expected[k, p]}, got {got[k][p]}"


def test_one_bit_inputs_are_refused():
    with pytest.raises(ValueError, match=r"in_bits=1 \(use XnorPopcount"):
        BinaryWeightDot(pe=1, simd=4, in_bits=1)


def test_offsets_give_the_dot_product():
    rng = np.random.default_rng(4)
    layer = random_net.random_dense(rng, in_features=12, out_features=6, in_bits=5)
    x = rng.integers(0, 32, size=(3, 12))
    s = np.where(layer.weights[None] == 1, x[:, None, :], 31 - x[:, None, :]).sum(axis=2)
    acc = BinaryWeightDot.scale_for(5) * s + BinaryWeightDot.offsets(layer)[None, :]
    assert (acc == golden.dense_acc(layer, x)).all()
