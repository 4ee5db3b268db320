"""XnorPopcount against numpy over random words, several PE/SIMD, pipelined or not."""

import numpy as np
import pytest

from qnnfab import random_net
from qnnfab.spec import golden
from qnnfab.rtl.xnor_popcount import XnorPopcount


def _pack(bits):
    return sum(int(b) << k for k, b in enumerate(bits))


@pytest.mark.parametrize("pe, simd", [(1, 1), (1, 7), (3, 8), (2, 32), (1, 64)])
@pytest.mark.parametrize("pipelined", [False, True])
def test_xnor_popcount_matches_numpy(pe, simd, pipelined, dot_unit):
    seed = 1000 * pe + simd
    rng = np.random.default_rng(seed)
    dut = XnorPopcount(pe=pe, simd=simd, pipelined=pipelined)
    # Registers after every level of the tree of ceil(simd/2) pair counts but the last, and
    # at the output: one per level (at least one).
    depth = ((simd + 1) // 2 - 1).bit_length()
    assert dut.latency == (0 if not pipelined else max(1, depth))
    n = 40
    xs = rng.integers(0, 2, size=(n, simd))
    ws = rng.integers(0, 2, size=(n, pe, simd))
    xs[0] = ws[0, 0]          # all-equal and all-different words too
    xs[1] = 1 - ws[1, 0]
    expected = (xs[:, None, :] == ws).sum(axis=2)

    got = dot_unit(dut,
                   [_pack(xs[k]) for k in range(n)],
                   [_pack(ws[k].reshape(-1)) for k in range(n)])
    for k in range(n):
        for p in range(pe):
            assert got[k][p] == expected[k, p], \
                f"seed {seed} word {k} PE {p}: expected {expected[k, p]}, got {got[k][p]}"


def test_scale_and_offsets_give_the_signed_dot_product():
    # Σ x·w = 2·popcount - n, for ±1 values.
    rng = np.random.default_rng(3)
    layer = random_net.random_dense(rng, in_features=37, out_features=5, in_bits=1)
    x = rng.integers(0, 2, 37)
    pc = (x[None, :] == layer.weights).sum(axis=1)
    acc = XnorPopcount.scale_for(1) * pc + XnorPopcount.offsets(layer)
    assert acc.tolist() == golden.dense_acc(layer, x[None, :])[0].tolist()


def test_bad_parameters():
    with pytest.raises(ValueError, match="pe and simd must be >= 1, not pe=0 simd=4"):
        XnorPopcount(pe=0, simd=4)
    with pytest.raises(TypeError):
        XnorPopcount(pe=1.5, simd=4)
    with pytest.raises(ValueError, match=r"not in_bits=2 \(use BinaryWeightDot"):
        XnorPopcount(pe=1, simd=4, in_bits=2)
