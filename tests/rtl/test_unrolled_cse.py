"""The constant-weight adder graphs and their common-subexpression pass (qnnfab.rtl.cse)."""

import numpy as np
import pytest

from qnnfab import random_net
from qnnfab.rtl import cse


def test_csd_digits_are_canonical():
    for v in range(-300, 301):
        digits = cse.csd(v)
        assert sum(d << s for s, d in digits) == v
        shifts = [s for s, _ in digits]
        assert all(b - a >= 2 for a, b in zip(shifts, shifts[1:])), (v, digits)
    assert cse.csd(0) == []
    assert cse.csd(3) == [(0, -1), (2, 1)]
    assert cse.csd(-6) == [(1, 1), (3, -1)]


@pytest.mark.parametrize("levels, in_bits", [((-1, 1), 1), ((0, 1, -1), 2), ((0, 1, -1), 5),
                                              ((-7, 3, 0, 12, -127, 5, 64, -2), 3)],
                         ids=["binary", "ternary2b", "ternary5b", "codebook"])
@pytest.mark.parametrize("share", [True, False], ids=["cse", "plain"])
def test_graph_computes_the_matrix(levels, in_bits, share):
    seed = len(levels) * 10 + in_bits + share
    rng = np.random.default_rng(seed)
    w = np.asarray(levels)[rng.integers(0, len(levels), size=(24, 19))]
    w[3] = 0                                   # a row of zero weights
    w[5] = 0
    w[5, 7] = levels[-1] or 1                  # a row of one term
    g = cse.build_adder_graph(w, in_bits, cse=share)
    x = rng.integers(0, 1 << in_bits, size=(40, 19))
    x[0] = (1 << in_bits) - 1
    x[1] = 0
    got, want = g.evaluate(x), x @ w.T
    for v, r in zip(*np.nonzero(got != want)):
        raise AssertionError(f"seed {seed}: vector {v} row {r}: expected {want[v, r]}, got "
                             f"{got[v, r]}")
    assert g.levels == cse.tree_depth(w)
    assert max(g.depth) <= g.levels
    assert g.rows[3] == (None, 1)
    # Value ranges hold every value the nodes take.
    vals = [x[:, i] << s for i, s in g.leaves]
    for a, b, rel in g.adders:
        vals.append(vals[a] + rel * vals[b])
    for n, v in enumerate(vals):
        assert g.lo[n] <= v.min() and v.max() <= g.hi[n], n


def test_shared_pairs_and_signs():
    """A pair in several rows is one adder, whatever the rows' signs for it: x0 + x1 and
    -x0 - x1 share, and so do x0 - x1 and x1 - x0."""
    w = np.array([[1, 1, 1, 0],
                  [-1, -1, 0, 1],
                  [1, -1, 1, 0],
                  [-1, 1, 0, 1]])
    g = cse.build_adder_graph(w, 2)
    assert g.shared == 2                       # x0 + x1 and x0 - x1
    assert len(g.adders) == 2 + 4              # and one private adder per row
    assert g.plain_adders == 8
    st = g.stats
    assert (st.adders, st.adders_plain) == (6, 8)
    assert st.saved == pytest.approx(0.25)
    x = np.arange(4)[None, :] + 1
    assert (g.evaluate(x) == x @ w.T).all()


def test_cse_saves_on_random_binary_rows():
    """Random ±1 rows share most low-level pairs: far fewer adders than one tree per row."""
    rng = np.random.default_rng(0)
    w = rng.choice([-1, 1], size=(64, 64))
    st = cse.build_adder_graph(w, 1).stats
    assert st.adders_plain == 64 * 63
    assert st.saved > 0.6 and st.cost_saved > 0.5, st
    st_plain = cse.build_adder_graph(w, 1, cse=False).stats
    assert st_plain.adders > st.adders


def test_adder_cost_and_cache():
    assert [cse.adder_cost(w) for w in range(1, 4)] == [1, 2, 3]
    per_bit = 1 + cse.CHAIN_OVERHEAD / cse.CHAIN_MAX_BITS
    assert [cse.adder_cost(w) for w in (4, 9)] == [5 * per_bit, 10 * per_bit]
    layer = random_net.random_dense(np.random.default_rng(1), in_features=8, out_features=4,
                                    in_bits=2, weight_kind="ternary")
    assert cse.cached_graph(layer) is cse.cached_graph(layer)
    assert cse.cached_graph(layer) is not cse.cached_graph(layer, cse=False)


def test_layer_matrix_refuses_conv():
    conv = random_net.random_conv(np.random.default_rng(2), in_channels=1, out_channels=2,
                                  height=4, width=4, in_bits=2)
    with pytest.raises(cse.UnrollError, match=r"^layers\[3\]: only dense layers are unrolled, "
                                              r"not ConvLayer \(conv and pool layers stay "
                                              r"folded\)$"):
        cse.layer_matrix(conv, "layers[3]")
