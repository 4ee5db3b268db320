"""TernaryDot (activations of any width × 0/±1 weights) against numpy."""

import numpy as np
import pytest

from qnnfab import numerics, random_net
from qnnfab.spec import golden
from qnnfab.rtl.ternary_dot import TernaryDot
from qnnfab.rtl.xnor_popcount import register_levels

LEVELS = np.asarray(numerics.WEIGHT_LEVELS["ternary"])


def pack(values, bits):
    return sum(int(v) << (k * bits) for k, v in enumerate(values))


@pytest.mark.parametrize("pe, simd, in_bits", [(1, 1, 1), (3, 7, 1), (2, 32, 1), (1, 1, 2),
                                               (2, 5, 2), (4, 16, 4), (1, 64, 4), (3, 4, 8)])
@pytest.mark.parametrize("pipelined", [False, True])
def test_ternary_dot_matches_numpy(pe, simd, in_bits, pipelined, dot_unit):
    seed = 11 * pe + 100 * simd + in_bits
    rng = np.random.default_rng(seed)
    dut = TernaryDot(pe=pe, simd=simd, in_bits=in_bits, pipelined=pipelined)
    leaves = (simd + 1) // 2 if in_bits == 1 else simd
    assert dut.latency == (1 + len(register_levels(leaves)) if pipelined else 0)
    n = 30
    amax = (1 << in_bits) - 1
    xs = rng.integers(0, amax + 1, size=(n, simd))
    xs[0] = amax                                  # the extremes of the range
    xs[1] = 0
    ws = rng.integers(0, 3, size=(n, pe, simd))   # codes 0, 1, 2 ↦ 0, +1, -1
    ws[0] = 1
    ws[1] = 2
    ws[2] = 0
    # The unit sums a where w = +1, amax - a where w = -1, 0 where w = 0 ...
    a = xs[:, None, :]
    expected = np.select([ws == 1, ws == 2], [a, amax - a], 0).sum(axis=2)
    # ... which scale_for/offsets map back to the dot product with the activations' values.
    x_val = golden.activation_values(xs, in_bits)[:, None, :]
    dot = (x_val * LEVELS[ws]).sum(axis=2)
    offset = -(ws != 0).sum(axis=2) if in_bits == 1 else -amax * (ws == 2).sum(axis=2)
    assert (TernaryDot.scale_for(in_bits) * expected + offset == dot).all()
    assert dut.scale == TernaryDot.scale_for(in_bits) == (2 if in_bits == 1 else 1)

    got = dot_unit(dut,
                   [pack(xs[k], in_bits) for k in range(n)],
                   [pack(ws[k].reshape(-1), 2) for k in range(n)])
    for k in range(n):
        for p in range(pe):
            assert got[k][p] == expected[k, p], \
                f"seed {seed} word {k} PE {p}: expected {expected[k, p]}, got {got[k][p]}"


@pytest.mark.parametrize("in_bits", [1, 2, 5])
def test_offsets_give_the_dot_product(in_bits):
    rng = np.random.default_rng(40 + in_bits)
    layer = random_net.random_dense(rng, in_features=13, out_features=6, in_bits=in_bits,
                                    weight_kind="ternary")
    amax = (1 << in_bits) - 1
    x = rng.integers(0, amax + 1, size=(4, 13))
    w = layer.weights[None]
    s = np.select([w == 1, w == 2], [x[:, None, :], amax - x[:, None, :]], 0).sum(axis=2)
    acc = TernaryDot.scale_for(in_bits) * s + TernaryDot.offsets(layer)[None, :]
    assert (acc == golden.dense_acc(layer, x)).all()


def test_sum_shape_holds_the_largest_sum():
    for fan_in, in_bits in [(1, 1), (7, 1), (16, 1), (5, 2), (64, 4), (3, 8)]:
        shape = TernaryDot.sum_shape(fan_in, in_bits)
        top = fan_in * ((1 << in_bits) - 1)
        assert not shape.signed and top < 1 << shape.width <= 2 * top + 1, (fan_in, in_bits)


def test_bad_parameters():
    with pytest.raises(ValueError, match=r"pe and simd must be >= 1, not pe=1 simd=0"):
        TernaryDot(pe=1, simd=0, in_bits=2)
    with pytest.raises(ValueError, match=r"in_bits must be >= 1, not 0"):
        TernaryDot(pe=1, simd=4, in_bits=0)
    with pytest.raises(TypeError):
        TernaryDot(pe=1, simd=4, in_bits=2.5)
