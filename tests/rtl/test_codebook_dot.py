"""CodebookDot (activations × indices into a table of signed levels) against numpy: each path
(select, shift, multiply), index widths, activation widths, level widths, pipelined or not."""

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Fragment

from qnnfab import random_net
from qnnfab.spec import golden
from qnnfab.rtl.codebook_dot import CodebookDot, codebook_lane_cells, codebook_table
from qnnfab.rtl.xnor_popcount import register_levels

GENERAL3 = (-127, 127, 33, -5, 90, 0, 7, -12)            # k = 3, 8-bit levels
POW2_3 = (0, 1, -1, 2, -4, 8, -16, 64)                     # k = 3, zero and ±2**e
POW2_UNIT = (8, -8, 16, -16, 32, -32, 4, -64)              # ±2**e, all multiples of 4
EXTREME2 = (-32767, 32767, 1, -1)                          # k = 2, the IR's widest levels
SMALL4 = tuple(range(-8, 8))                               # k = 4, 4-bit levels
EVEN2 = (6, -10, 2, -14)                                   # k = 2, not ±2**e, multiples of 2
TINY1 = (-3, 5)                                            # k = 1

CASES = [
    # levels, in_bits, pe, simd, path
    (GENERAL3, 1, 3, 7, "select"),
    (GENERAL3, 2, 2, 5, "multiply"),
    (GENERAL3, 5, 2, 4, "multiply"),
    (POW2_3, 1, 2, 8, "select"),
    (POW2_3, 2, 3, 4, "shift"),
    (POW2_3, 5, 2, 6, "shift"),
    (POW2_UNIT, 3, 2, 5, "shift"),
    (EXTREME2, 5, 1, 3, "multiply"),
    (EXTREME2, 1, 2, 3, "select"),
    (SMALL4, 2, 2, 4, "multiply"),
    (EVEN2, 8, 1, 2, "multiply"),
    (TINY1, 2, 1, 1, "multiply"),
]


def pack(values, bits):
    return sum(int(v) << (k * bits) for k, v in enumerate(values))


def _values(xs, in_bits):
    return golden.activation_values(xs, in_bits)


@pytest.mark.parametrize("levels, in_bits, pe, simd, path", CASES)
@pytest.mark.parametrize("pipelined", [False, True])
def test_codebook_dot_matches_numpy(levels, in_bits, pe, simd, path, pipelined, dot_unit):
    seed = 7 * pe + 100 * simd + in_bits + len(levels)
    rng = np.random.default_rng(seed)
    dut = CodebookDot(pe=pe, simd=simd, in_bits=in_bits, levels=levels, pipelined=pipelined)
    table = codebook_table(levels)
    k = table.index_bits
    assert dut.path == path
    assert dut.leaves == simd * (in_bits if path == "multiply" else 1)
    registered = ((1,) if dut.leaves > 1 else ()) + register_levels(dut.leaves)
    assert dut.latency == (1 + len(registered) if pipelined else 0)

    n = 24
    amax = (1 << in_bits) - 1
    lv = np.asarray(levels, dtype=np.int64)
    xs = rng.integers(0, amax + 1, size=(n, simd))
    ws = rng.integers(0, len(levels), size=(n, pe, simd))
    # The extremes: largest inputs with the most negative and the largest levels, zeros.
    xs[0:2] = amax
    xs[2] = 0
    ws[0] = int(np.argmin(lv))
    ws[1] = int(np.argmax(lv))
    ws[2] = int(np.argmin(lv))
    # The unit sums a'·m, a' = a or amax - a (negative level), m = |level| / unit ...
    mags = np.abs(lv)[ws] // table.unit
    a = xs[:, None, :]
    expected = (np.where(lv[ws] < 0, amax - a, a) * mags).sum(axis=2)
    # ... which scale and the per-neuron constant map back to the dot product.
    dot = (_values(xs, in_bits)[:, None, :] * lv[ws]).sum(axis=2)
    const = -np.abs(lv[ws]).sum(axis=2) if in_bits == 1 else \
        -amax * np.where(lv[ws] < 0, -lv[ws], 0).sum(axis=2)
    assert (dut.scale * expected + const == dot).all()
    assert expected.max() < 1 << dut.partial_shape.width

    got = dot_unit(dut, [pack(xs[i], in_bits) for i in range(n)],
                   [pack(ws[i].reshape(-1), k) for i in range(n)])
    for i in range(n):
        for p in range(pe):
            assert got[i][p] == expected[i, p], \
                f"seed {seed} word {i} PE {p}: expected {expected[i, p]}, got {got[i][p]}"


def test_cases_cover_paths_index_and_activation_widths():
    assert {c[4] for c in CASES} == {"select", "shift", "multiply"}
    assert {codebook_table(c[0]).index_bits for c in CASES} >= {1, 2, 3, 4}
    assert {c[1] for c in CASES} >= {1, 2, 5}
    assert {(codebook_table(c[0]).index_bits, c[1]) for c in CASES} >= \
        {(k, b) for k in (2, 3) for b in (1, 5)} | {(4, 2), (3, 2)}


@pytest.mark.parametrize("levels", [GENERAL3, POW2_UNIT, EVEN2])
@pytest.mark.parametrize("in_bits", [1, 2, 5])
def test_offsets_give_the_dot_product(levels, in_bits):
    rng = np.random.default_rng(50 + in_bits + len(levels))
    layer = random_net.random_dense(rng, in_features=13, out_features=6, in_bits=in_bits,
                                    weight_kind="codebook", codebook=np.asarray(levels))
    layer.validate()
    cls = CodebookDot.for_levels(layer.weight_levels)
    table = codebook_table(levels)
    amax = (1 << in_bits) - 1
    x = rng.integers(0, amax + 1, size=(5, 13))
    lv = np.asarray(levels)[layer.weights][None]
    s = (np.where(lv < 0, amax - x[:, None, :], x[:, None, :]) * np.abs(lv) // table.unit)
    acc = cls.scale_for(in_bits) * s.sum(axis=2) + cls.offsets(layer)[None, :]
    assert (acc == golden.dense_acc(layer, x)).all()
    assert cls.scale_for(in_bits) == table.unit * (2 if in_bits == 1 else 1)


def test_unit_and_magnitudes():
    """Levels sharing a power-of-two factor are stored divided by it; the factor is the scale."""
    t = codebook_table(POW2_UNIT)
    assert (t.unit, t.mags[:4], t.mag_bits, t.shift_add) == (4, (2, 2, 4, 4), 5, True)
    assert t.exponents == (1, 1, 2, 2, 3, 3, 0, 4)
    t = codebook_table(EVEN2)
    assert (t.unit, t.mags, t.shift_add) == (2, (3, 5, 1, 7), False)
    t = codebook_table((0, 0))
    assert (t.unit, t.mag_bits, t.shift_add) == (1, 1, True)
    assert CodebookDot.for_levels((0, 0)).sum_shape(10, 3).width == 1


@pytest.mark.parametrize("levels, in_bits", [(POW2_3, 2), (POW2_3, 5), (GENERAL3, 5),
                                             (GENERAL3, 1)])
def test_no_multiplier_and_shift_add_has_one_leaf_per_lane(levels, in_bits):
    """The shift-add path (every level 0 or ±2**e) sums one shifted activation per lane; the
    general path sums in_bits partial products per lane; neither elaborates to a ``$mul``."""
    dut = CodebookDot(pe=2, simd=3, in_bits=in_bits, levels=levels)
    text = rtlil.convert(dut, name="dot")
    assert "$mul" not in text
    shifted = "shift0_0" in text
    if levels == POW2_3 and in_bits > 1:
        assert dut.shift_add and dut.path == "shift" and dut.leaves == 3
        assert shifted and "mag0_0" not in text
    else:
        assert dut.leaves == 3 * (in_bits if in_bits > 1 else 1)
        assert not shifted and "mag0_0" in text
        assert dut.shift_add == (in_bits == 1)


def test_lane_cells_model():
    """The shift-add path is the cheaper one; the cost grows with activation and level bits."""
    general = (-127, 127, 33, -5, 90, -64, 7, 12)
    pow2 = (1, -1, 4, -4, 16, -16, 64, -64)
    for in_bits in (2, 5):
        assert codebook_lane_cells(pow2, in_bits) < codebook_lane_cells(general, in_bits)
    assert codebook_lane_cells(general, 5) > 2 * codebook_lane_cells(general, 2) > \
        2 * codebook_lane_cells(general, 1)
    assert codebook_lane_cells((-7, 7, 1, 2), 2) < codebook_lane_cells((-127, 127, 1, 2), 2)


@pytest.mark.parametrize("in_bits", [1, 2, 5])
def test_protocol_lane_cells_is_the_model(in_bits):
    """``lane_cells`` of the protocol, bound or not, dense or conv: :func:`codebook_lane_cells`."""
    rng = np.random.default_rng(in_bits)
    dense = random_net.random_dense(rng, in_features=6, out_features=2, in_bits=in_bits,
                                    weight_kind="codebook", codebook=np.asarray(GENERAL3))
    conv = random_net.random_conv(rng, in_channels=1, out_channels=2, height=3, width=3,
                                  in_bits=in_bits, weight_kind="codebook",
                                  codebook=np.asarray(GENERAL3))
    expected = codebook_lane_cells(GENERAL3, in_bits)
    for layer in (dense, conv):
        assert CodebookDot.lane_cells(layer) == expected
        assert CodebookDot.for_levels(GENERAL3).lane_cells(layer) == expected


def test_bound_classes():
    cls = CodebookDot.for_levels(GENERAL3)
    assert cls is CodebookDot.for_levels(list(GENERAL3)) is CodebookDot.for_levels(
        np.asarray(GENERAL3))
    assert issubclass(cls, CodebookDot) and cls.__name__ == "CodebookDot"
    assert cls.levels == GENERAL3 and CodebookDot.levels is None
    assert CodebookDot.for_levels(POW2_3) is not cls
    dut = cls(pe=1, simd=2, in_bits=2)
    assert dut.levels == GENERAL3 and dut.latency == cls.pipeline_latency(2, True, 2)
    assert dut.partial_shape == cls.sum_shape(2, 2)
    Fragment.get(dut, None)                        # elaborates
    with pytest.raises(TypeError, match=r"CodebookDot needs the levels: pass levels=\.\.\., or "
                                        r"use CodebookDot\.for_levels\(levels\)"):
        CodebookDot.sum_shape(4, 2)
    with pytest.raises(TypeError, match=r"CodebookDot needs the levels"):
        CodebookDot(pe=1, simd=2, in_bits=2)
    with pytest.raises(ValueError, match=r"levels \[0, 1\] differ from the levels this class "
                                         r"is bound to, \[-127, 127, 33"):
        cls(pe=1, simd=2, in_bits=2, levels=(0, 1))
    layer = random_net.random_dense(np.random.default_rng(0), in_features=4, out_features=2,
                                    in_bits=2, weight_kind="codebook",
                                    codebook=np.asarray(POW2_3))
    with pytest.raises(ValueError, match=r"CodebookDot bound to levels \[-127, 127, 33, -5, "
                                         r"90, 0, 7, -12\] cannot offset a layer with levels "
                                         r"\[0, 1, -1, 2, -4, 8, -16, 64\]"):
        cls.offsets(layer)


def test_sum_shape_holds_the_largest_sum():
    for levels in (GENERAL3, POW2_UNIT, EXTREME2, EVEN2):
        cls = CodebookDot.for_levels(levels)
        top_mag = max(abs(v) for v in levels) // codebook_table(levels).unit
        for fan_in, in_bits in [(1, 1), (7, 1), (16, 2), (64, 5), (3, 8)]:
            shape = cls.sum_shape(fan_in, in_bits)
            top = fan_in * ((1 << in_bits) - 1) * top_mag
            assert not shape.signed and top < 1 << shape.width <= 2 * top + 1, \
                (levels, fan_in, in_bits)


def test_bad_parameters():
    with pytest.raises(ValueError, match=r"levels: expected 2\*\*k levels \(k >= 1\), got 3"):
        CodebookDot(pe=1, simd=1, in_bits=2, levels=(1, 2, 3))
    with pytest.raises(ValueError, match=r"levels: expected 2\*\*k levels \(k >= 1\), got 1"):
        CodebookDot.for_levels([4])
    with pytest.raises(TypeError, match=r"levels must be integers, not \[1, 2\.5\]"):
        CodebookDot(pe=1, simd=1, in_bits=2, levels=(1, 2.5))
    with pytest.raises(TypeError, match=r"levels must be a sequence of integers, not 'ab'"):
        CodebookDot(pe=1, simd=1, in_bits=2, levels="ab")
    with pytest.raises(ValueError, match=r"pe and simd must be >= 1, not pe=1 simd=0"):
        CodebookDot(pe=1, simd=0, in_bits=2, levels=GENERAL3)
    with pytest.raises(ValueError, match=r"in_bits must be >= 1, not 0"):
        CodebookDot(pe=1, simd=4, in_bits=0, levels=GENERAL3)
