"""Codebook quantizers: the Codebook contract, assign/dequantize, the four baselines (level
tables, symmetry, the MSE-chosen scale), k-means against fixed point, integer levels, errors."""

import math

import numpy as np
import pytest

from qnnfab.model.codebooks import (METHODS, Codebook, SortedWeights, assign, codebook_from_levels,
                                    dequantize, fixed_codebook, kmeans_codebook, uniform_codebook,
                                    minifloat_codebook, minifloat_values, pow2_codebook,
                                    quantization_mse, to_integer_levels)

BITS = [2, 3, 4]


def gaussian(n=4000, std=0.1, seed=0):
    return np.random.default_rng(seed).normal(0.0, std, n)


def is_power_of_two(x):
    m, _ = math.frexp(x)
    return x > 0 and m == 0.5


# -- Codebook, assign, dequantize ------------------------------------------------------------------

def test_assign_dequantize_rule():
    """Index = number of boundaries <= w: a weight on a boundary goes to the upper bin."""
    cb = Codebook([-2.0, -1.0, 1.0, 2.0], [-1.5, 0.0, 1.5])
    w = np.array([[-9.0, -1.5, -1.49], [0.0, -1e-12, 1.5], [1.49, 7.0, 0.3]])
    idx = assign(w, cb)
    assert idx.dtype == np.int64 and idx.shape == w.shape
    assert idx.tolist() == [[0, 1, 1], [2, 1, 3], [2, 3, 2]]
    assert dequantize(idx, cb).tolist() == [[-2, -1, -1], [1, -1, 2], [1, 2, 1]]
    assert cb.bits == 2


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_baselines_are_nearest_level(method, bits):
    """Every baseline: 2**k ascending levels, midpoint boundaries, deterministic, and each weight
    decodes to a nearest level (brute force)."""
    w = gaussian(seed=bits)
    cb = METHODS[method](w, bits)
    assert cb.levels.size == 2 ** bits and cb.boundaries.size == 2 ** bits - 1
    assert (np.diff(cb.levels) >= 0).all() and (np.diff(cb.boundaries) >= 0).all()
    assert np.array_equal(cb.boundaries, (cb.levels[1:] + cb.levels[:-1]) / 2)
    assert METHODS[method](w.copy(), bits) == cb
    got = np.abs(w - dequantize(assign(w, cb), cb))
    best = np.abs(w[:, None] - cb.levels[None, :]).min(axis=1)
    assert np.allclose(got, best, rtol=0, atol=1e-15)
    assert quantization_mse(w, cb) == pytest.approx(float(SortedWeights(w).mse(cb.levels)),
                                                    rel=1e-9)


@pytest.mark.parametrize("bits", BITS)
def test_fixed_point_step_is_the_best_power_of_two(bits):
    """Fixed point: the uniform grid with a power-of-two step, the best such step (independent
    scan over exponents); never better than the best real step (uniform)."""
    w = gaussian(seed=20 + bits)
    cb = fixed_codebook(w, bits)
    step = cb.levels[1] - cb.levels[0]
    half = 2 ** (bits - 1)
    assert np.allclose(cb.levels / step, np.arange(-half, half), rtol=0, atol=1e-9)
    assert step == 2.0 ** round(np.log2(step))
    mse = quantization_mse(w, cb)
    scan = [quantization_mse(w, codebook_from_levels(2.0 ** e * np.arange(-half, half)))
            for e in range(-20, 5)]
    assert mse == pytest.approx(min(scan), rel=1e-12)
    assert quantization_mse(w, uniform_codebook(w, bits)) <= mse * (1 + 1e-12)


@pytest.mark.parametrize("bits", BITS)
def test_uniform_grid_and_step(bits):
    """Two's-complement grid step·[-2**(k-1) .. 2**(k-1)-1]; the step is at least as good (within
    the grid's resolution) as any step of an independent scan, and better than no clipping."""
    w = gaussian(seed=10 + bits)
    cb = uniform_codebook(w, bits)
    step = cb.levels[1] - cb.levels[0]
    half = 2 ** (bits - 1)
    assert np.allclose(cb.levels / step, np.arange(-half, half), rtol=0, atol=1e-9)
    mse = quantization_mse(w, cb)
    scan = [quantization_mse(w, codebook_from_levels(s * np.arange(-half, half)))
            for s in np.abs(w).max() * np.linspace(0.02, 1.5, 61) / half]
    assert mse <= 1.02 * min(scan)
    assert mse < quantization_mse(w, codebook_from_levels(np.abs(w).max() / half
                                                          * np.arange(-half, half)))


def test_minifloat_tables():
    """The unscaled minifloats, hand-computed: e1m0, e1m1 and e2m1 (bias 1, subnormal 0.5)."""
    assert minifloat_values(2).tolist() == [-2, 0, 0, 2]
    assert minifloat_values(3).tolist() == [-3, -2, -1, 0, 0, 1, 2, 3]
    assert minifloat_values(4).tolist() == [-6, -4, -3, -2, -1.5, -1, -0.5, 0,
                                            0, 0.5, 1, 1.5, 2, 3, 4, 6]
    v8 = minifloat_values(8)  # e4m3, bias 7, no inf/NaN: largest 2**8 * 1.875
    assert v8.size == 256 and v8[-1] == 480 and v8[129] == 2.0 ** -9


@pytest.mark.parametrize("bits", [3, 4])
def test_minifloat_codebook_scale(bits):
    """Levels = a power-of-two scale times the table; the scale beats its neighbours ×2 and /2."""
    w = gaussian(seed=20 + bits)
    cb = minifloat_codebook(w, bits)
    table = minifloat_values(bits)
    scale = cb.levels[-1] / table[-1]
    assert is_power_of_two(scale)
    assert np.array_equal(cb.levels, scale * table)
    assert np.array_equal(cb.levels, -cb.levels[::-1])
    mse = quantization_mse(w, cb)
    for other in (scale / 2, scale * 2):
        assert mse <= quantization_mse(w, codebook_from_levels(other * table))


@pytest.mark.parametrize("bits", BITS)
def test_pow2_levels(bits):
    """Two zeros, the rest ± consecutive powers of two, symmetric, e0 beats e0 ± 1."""
    w = gaussian(seed=30 + bits)
    cb = pow2_codebook(w, bits)
    lv = cb.levels
    assert (lv == 0).sum() == 2 and np.array_equal(lv, -lv[::-1])
    mags = lv[lv > 0]
    assert mags.size == 2 ** (bits - 1) - 1 and all(is_power_of_two(m) for m in mags)
    assert (np.diff(np.log2(mags)) == 1).all()
    mse = quantization_mse(w, cb)
    for f in (0.5, 2.0):
        assert mse <= quantization_mse(w, codebook_from_levels(lv * f))


@pytest.mark.parametrize("bits", BITS)
def test_kmeans_beats_fixed_and_is_lloyd_stable(bits):
    """On Gaussian weights k-means has less MSE than fixed point (and every baseline); run to
    convergence, each level is the centroid of its bin and more iterations only help."""
    w = gaussian(seed=40 + bits)
    cb = kmeans_codebook(w, bits)
    mse = quantization_mse(w, cb)
    assert mse < quantization_mse(w, fixed_codebook(w, bits))
    for name, f in METHODS.items():
        assert mse <= quantization_mse(w, f(w, bits)) * (1 + 1e-12), name
    done = kmeans_codebook(w, bits, iters=1000)
    assert quantization_mse(w, done) <= mse
    cb, idx = done, assign(w, done)
    for i in np.unique(idx):
        assert cb.levels[i] == pytest.approx(w[idx == i].mean(), rel=1e-3, abs=1e-9)


def test_kmeans_empty_clusters_and_outlier():
    """Fewer distinct weights than clusters: exact, no error. One outlier: the fixed-point start
    spends two levels below every weight; those empty clusters are re-seeded, so all four levels
    end up distinct and used, one on the outlier."""
    w = np.array([-1.0, -1.0, 0.25, 0.25, 0.25, 2.0] * 5)
    cb = kmeans_codebook(w, 3)
    assert quantization_mse(w, cb) == 0.0
    assert {-1.0, 0.25, 2.0} <= set(cb.levels.tolist())
    v = np.concatenate([gaussian(1000, 0.01, seed=5), [5.0]])
    cb = kmeans_codebook(v, 2)
    assert 5.0 in cb.levels.tolist()
    assert np.unique(cb.levels).size == 4 and np.unique(assign(v, cb)).size == 4
    assert quantization_mse(v, cb) < 0.5 * quantization_mse(v, fixed_codebook(v, 2))


def test_all_zero_weights():
    for name, f in METHODS.items():
        cb = f(np.zeros(10), 2)
        assert quantization_mse(np.zeros(10), cb) == 0.0, name


# -- integer levels ------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", BITS)
def test_integer_levels_pow2_exact(bits):
    """pow2 levels become exact integer powers of two (the range allows at 8 bits), the largest
    at 64 (128 would not fit in 127), with levels == ints * scale exactly."""
    cb = pow2_codebook(gaussian(seed=50 + bits), bits)
    ints, scale = to_integer_levels(cb.levels, 8)
    assert ints.dtype == np.int64 and is_power_of_two(scale)
    assert np.array_equal(ints * scale, cb.levels)
    assert ints.max() == 64 and all(is_power_of_two(int(v)) for v in np.abs(ints[ints != 0]))


@pytest.mark.parametrize("level_bits", [3, 5, 8, 12])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_integer_levels_bounds(method, level_bits):
    """|ints| fit in level_bits signed, f is the largest that fits (f + 1 overflows), and the
    rounding error is at most half the scale."""
    cb = METHODS[method](gaussian(seed=60), 4)
    ints, scale = to_integer_levels(cb.levels, level_bits)
    top = 2 ** (level_bits - 1) - 1
    assert np.abs(ints).max() <= top
    assert np.abs(np.rint(cb.levels / scale * 2)).max() > top
    assert np.abs(ints * scale - cb.levels).max() <= scale / 2
    assert is_power_of_two(scale)


def test_integer_levels_negative_f_and_zeros():
    ints, scale = to_integer_levels([-1000.0, 0.0, 500.0, 1000.0], 8)
    assert scale == 8.0 and ints.tolist() == [-125, 0, 62, 125]  # 62.5 rounds half to even
    ints, scale = to_integer_levels([0.0, 0.0], 4)
    assert ints.tolist() == [0, 0] and scale == 1.0
    ints, scale = to_integer_levels([-0.75, 0.5], 2)  # top 1: f = 0 rounds 0.75 to 1
    assert ints.tolist() == [-1, 0] and scale == 1.0


# -- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", sorted(METHODS))
def test_bad_bits_and_weights(method):
    f = METHODS[method]
    with pytest.raises(ValueError, match=rf"{method}_codebook: bits: expected 1 <= bits <= 8, "
                                         rf"got 9"):
        f(gaussian(), 9)
    with pytest.raises(ValueError, match="got 0"):
        f(gaussian(), 0)
    with pytest.raises(TypeError, match="expected an integer number of bits, not 2.5"):
        f(gaussian(), 2.5)
    with pytest.raises(ValueError, match="expected at least one weight"):
        f([], 2)
    with pytest.raises(ValueError, match=r"1 non-finite \(first at flat index 2: nan\)"):
        f([0.1, 0.2, np.nan], 2)


def test_bad_codebooks_and_indices():
    with pytest.raises(ValueError, match="expected 2\\*\\*bits levels .* got 3"):
        Codebook([0.0, 1.0, 2.0], [0.5, 1.5])
    with pytest.raises(ValueError, match="expected 3 boundaries for 4 levels, got 2"):
        Codebook([0.0, 1.0, 2.0, 3.0], [0.5, 1.5])
    with pytest.raises(ValueError, match=r"levels\[1\] = 2.0 > levels\[2\] = 1.0"):
        Codebook([0.0, 2.0, 1.0, 3.0], [0.5, 1.5, 2.5])
    cb = Codebook([0.0, 1.0], [0.5])
    with pytest.raises(ValueError, match="expected indices 0..1, got 0..2"):
        dequantize([0, 2], cb)
    with pytest.raises(TypeError, match="integer indices"):
        dequantize([0.0, 1.0], cb)
    with pytest.raises(ValueError, match="level_bits: expected 2..32, got 1"):
        to_integer_levels([1.0], 1)
    with pytest.raises(ValueError, match="finite levels"):
        to_integer_levels([1.0, np.inf])
    with pytest.raises(ValueError, match="iters: expected >= 1, got 0"):
        kmeans_codebook(gaussian(), 2, iters=0)
    assert cb.levels.flags.writeable is False
