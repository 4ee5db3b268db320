"""Codebook quantizers: a layer's float weights onto ``2**k`` levels (post-training, numpy only).

A *codebook* (:class:`Codebook`) of ``k`` bits is an ascending table of ``L = 2**k`` levels and
``L - 1`` ascending bin boundaries. A weight ``w`` is stored as the index ``i`` of its bin,
``boundaries[i-1] <= w < boundaries[i]`` (``np.searchsorted(boundaries, w, side="right")``,
:func:`assign`), and decoded as ``levels[i]`` (:func:`dequantize`). Levels may repeat (a minifloat
has both ``+0`` and ``-0``). Boundaries need not be the midpoints of the levels (the genetic
search of :mod:`qnnfab.model.ga` puts levels at bin centroids); for the nearest-level methods
below they are.

Baselines, each ``f(w, bits) -> Codebook`` for ``bits`` in 1..8, deterministic, nearest-level,
with their one free parameter (a scale) chosen to minimize the weights' mean squared error
(MSE), so that every baseline is as good as it can be at its width:

* :func:`fixed_codebook` — fixed point (a Qm.f format), the two's-complement grid
  ``step·[-2**(k-1) .. 2**(k-1) - 1]`` with a power-of-two ``step = 2**-f``, ``f`` per layer.
* :func:`uniform_codebook` — the same grid with any real step, ``step = c / 2**(k-1)`` for the
  clip value ``c`` from the grid ``max|w|·j/128``, ``j = 1..256`` (up to twice the largest
  weight: with the asymmetric grid a little clipping of the positive side can pay): the best
  uniform quantizer, a stronger baseline than fixed point. ``k = 1`` is ``{-step, 0}``.
* :func:`minifloat_codebook` — a ``k``-bit minifloat (:data:`MINIFLOAT_FORMATS`: 1 sign bit,
  ``e`` exponent bits, ``m`` mantissa bits), IEEE-like: bias ``2**(e-1) - 1``, exponent field 0
  is subnormal (``2**(1-bias)·M/2**m``), every other field is normal
  (``2**(E-bias)·(1 + M/2**m)``); there are no infinities or NaNs (every code is a number) and both
  zero codes are kept, so 0 appears twice. The values (:func:`minifloat_values`) are multiplied
  by a shared power-of-two scale ``2**s``. ``k = 1`` has no exponent: sign only, ``±2**s``.
* :func:`pow2_codebook` — sign + exponent: magnitudes ``{0} ∪ {2**(e0 - j)}``,
  ``j = 0 .. 2**(k-1) - 2``, both signs, one code pair for zero (0 appears twice). ``k = 1``
  has no exponent field: ``±2**e0``.
* :func:`kmeans_codebook` — 1-D Lloyd iterations (k-means) from two starts, the quantiles
  ``(i + 1/2)/L`` and the uniform levels (:func:`uniform_codebook`), the lower MSE kept; an
  empty cluster is moved onto the weight farthest from its level.

Hardware multiplies small integers: :func:`to_integer_levels` writes a codebook's levels as
``int_levels · 2**-f`` with one fixed-point scale per layer, ``f`` the largest integer (possibly
negative) for which every ``|round(level · 2**f)| <= 2**(level_bits-1) - 1`` (rounding half to
even). Powers of two therefore stay exact powers of two whenever the range of ``level_bits``
allows, and a level too small for the range becomes 0.

:class:`SortedWeights` sorts a layer's weights once and keeps prefix sums, so the count, sum and
squared error of any bin cost ``O(log n)``: the scale scans, Lloyd and the genetic search's
decoding of a whole population are vectorized over candidates, not loops over weights.
"""

import math
import operator
from dataclasses import dataclass

import numpy as np

__all__ = ["MAX_BITS", "Codebook", "check_bits", "as_weights", "SortedWeights", "assign",
           "dequantize", "quantization_mse", "codebook_from_levels", "fixed_codebook",
           "uniform_codebook",
           "MINIFLOAT_FORMATS", "minifloat_values", "minifloat_codebook", "pow2_codebook",
           "kmeans_codebook", "METHODS", "to_integer_levels"]

#: Widest codebook index, in bits.
MAX_BITS = 8


def check_bits(bits, *, where="bits"):
    """``bits`` as an int in ``1 .. MAX_BITS``, or a clear error naming ``where``."""
    if isinstance(bits, bool):
        raise TypeError(f"{where}: expected an integer number of bits, not {bits!r}")
    try:
        b = operator.index(bits)
    except TypeError:
        raise TypeError(f"{where}: expected an integer number of bits, not {bits!r}") from None
    if not 1 <= b <= MAX_BITS:
        raise ValueError(f"{where}: expected 1 <= bits <= {MAX_BITS}, got {b}")
    return b


def as_weights(w, *, where="weights"):
    """``w`` flattened to a non-empty, finite float64 vector, or a clear error naming ``where``."""
    try:
        arr = np.asarray(w, dtype=np.float64).ravel()
    except (TypeError, ValueError) as e:
        raise TypeError(f"{where}: expected an array of numbers, got {type(w).__name__} ({e})") \
            from None
    if arr.size == 0:
        raise ValueError(f"{where}: expected at least one weight, got an empty array")
    bad = ~np.isfinite(arr)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{where}: expected finite weights, got {int(bad.sum())} non-finite "
                         f"(first at flat index {first}: {arr[first]})")
    return arr


@dataclass(frozen=True, eq=False)
class Codebook:
    """A ``k``-bit codebook: ``2**k`` ascending levels and ``2**k - 1`` ascending boundaries.

    Attributes
    ----------
    levels : numpy.ndarray
        float64, length ``2**bits``, non-decreasing (duplicates allowed). Read-only.
    boundaries : numpy.ndarray
        float64, length ``2**bits - 1``, non-decreasing. Weight ``w`` gets index ``i`` with
        ``boundaries[i-1] <= w < boundaries[i]``. Read-only.
    """
    levels: np.ndarray
    boundaries: np.ndarray

    def __post_init__(self):
        levels = np.array(self.levels, dtype=np.float64).ravel()
        boundaries = np.array(self.boundaries, dtype=np.float64).ravel()
        n = levels.size
        if n < 2 or n & (n - 1) or n > 1 << MAX_BITS:
            raise ValueError(f"Codebook.levels: expected 2**bits levels (2, 4, ..., "
                             f"{1 << MAX_BITS}), got {n}")
        if boundaries.size != n - 1:
            raise ValueError(f"Codebook.boundaries: expected {n - 1} boundaries for {n} levels, "
                             f"got {boundaries.size}")
        for name, arr in (("levels", levels), ("boundaries", boundaries)):
            if not np.isfinite(arr).all():
                raise ValueError(f"Codebook.{name}: expected finite values, got {arr.tolist()}")
            down = np.flatnonzero(np.diff(arr) < 0)
            if down.size:
                i = int(down[0])
                raise ValueError(f"Codebook.{name}: expected ascending values, got "
                                 f"{name}[{i}] = {arr[i]} > {name}[{i + 1}] = {arr[i + 1]}")
        levels.setflags(write=False)
        boundaries.setflags(write=False)
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "boundaries", boundaries)

    @property
    def bits(self):
        """Bits of one stored index (``log2`` of the number of levels)."""
        return self.levels.size.bit_length() - 1

    def __eq__(self, other):
        if not isinstance(other, Codebook):
            return NotImplemented
        return (np.array_equal(self.levels, other.levels)
                and np.array_equal(self.boundaries, other.boundaries))

    def __hash__(self):
        return hash((self.levels.tobytes(), self.boundaries.tobytes()))

    def __repr__(self):
        return (f"Codebook(levels={self.levels.tolist()!r}, "
                f"boundaries={self.boundaries.tolist()!r})")


class SortedWeights:
    """One layer's weights sorted once, with prefix sums, for fast per-bin statistics.

    Parameters
    ----------
    w : array_like
        The weights (any shape; flattened). Non-empty and finite.

    Members
    -------
    values : numpy.ndarray
        The sorted weights. ``lo``, ``hi``, ``mean``, ``std``: their min, max, mean, std.
    """

    def __init__(self, w, *, where="weights"):
        self.values = np.sort(as_weights(w, where=where))
        self.n = self.values.size
        self.lo, self.hi = float(self.values[0]), float(self.values[-1])
        self.mean = float(self.values.mean())
        self.std = float(self.values.std())
        centred = self.values - self.mean  # prefix sums of centred values: less cancellation
        self._s1 = np.concatenate([[0.0], np.cumsum(centred)])
        self._s2 = np.concatenate([[0.0], np.cumsum(centred * centred)])

    def bins(self, boundaries):
        """``(start, stop)`` of each bin in :attr:`values` for ascending ``boundaries`` of shape
        ``(..., L-1)``; both have shape ``(..., L)``. Bin ``i`` holds
        ``boundaries[i-1] <= w < boundaries[i]``."""
        b = np.asarray(boundaries, dtype=np.float64)
        pos = np.searchsorted(self.values, b, side="left")
        edge = b.shape[:-1] + (1,)
        start = np.concatenate([np.zeros(edge, dtype=np.int64), pos], axis=-1)
        stop = np.concatenate([pos, np.full(edge, self.n, dtype=np.int64)], axis=-1)
        return start, stop

    def mse(self, levels):
        """Mean squared error of nearest-level quantization onto ascending ``levels`` of shape
        ``(..., L)`` (boundaries at the midpoints); shape ``(...)``."""
        lv = np.asarray(levels, dtype=np.float64)
        start, stop = self.bins((lv[..., 1:] + lv[..., :-1]) / 2)
        n = stop - start
        s1 = self._s1[stop] - self._s1[start]
        s2 = self._s2[stop] - self._s2[start]
        d = lv - self.mean
        err = (s2 - 2 * d * s1 + n * d * d).sum(axis=-1)
        return np.maximum(err, 0.0) / self.n

    def centroids(self, boundaries):
        """Levels at the centroid of the weights in each bin, for ascending ``boundaries`` of
        shape ``(..., L-1)``; shape ``(..., L)``, ascending. An empty bin gets the midpoint of its
        interval clipped into ``[lo, hi]`` (the nearest edge when it lies outside)."""
        b = np.asarray(boundaries, dtype=np.float64)
        start, stop = self.bins(b)
        n = stop - start
        cent = self.mean + (self._s1[stop] - self._s1[start]) / np.maximum(n, 1)
        # Exact arithmetic puts a centroid between its bin's extremes: clip the rounding off,
        # which also keeps the levels ascending.
        cent = np.clip(cent, self.values[np.minimum(start, self.n - 1)],
                       self.values[np.maximum(stop - 1, 0)])
        c = np.clip(b, self.lo, self.hi)
        edge = b.shape[:-1] + (1,)
        lo_edge = np.concatenate([np.full(edge, self.lo), c], axis=-1)
        hi_edge = np.concatenate([c, np.full(edge, self.hi)], axis=-1)
        return np.where(n > 0, cent, (lo_edge + hi_edge) / 2)


def assign(w, codebook):
    """The index (int64, same shape as ``w``) of each weight's bin in ``codebook``."""
    arr = np.asarray(w, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("assign: expected finite weights, got NaN or infinity")
    return np.searchsorted(codebook.boundaries, arr, side="right").astype(np.int64)


def dequantize(indices, codebook):
    """The level (float64, same shape) of each index in ``indices``."""
    idx = np.asarray(indices)
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"dequantize: expected integer indices, got dtype {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= codebook.levels.size):
        raise ValueError(f"dequantize: expected indices 0..{codebook.levels.size - 1}, got "
                         f"{int(idx.min())}..{int(idx.max())}")
    return codebook.levels[idx.astype(np.int64)]


def quantization_mse(w, codebook):
    """Mean squared error between ``w`` and its quantization through ``codebook``."""
    arr = as_weights(w, where="quantization_mse: w")
    return float(np.mean((arr - dequantize(assign(arr, codebook), codebook)) ** 2))


def codebook_from_levels(levels):
    """The nearest-level codebook of ``levels`` (sorted; boundaries at the midpoints)."""
    lv = np.sort(np.asarray(levels, dtype=np.float64).ravel()) + 0.0  # -0.0 becomes 0.0
    return Codebook(lv, (lv[1:] + lv[:-1]) / 2)


def _largest_magnitude(sw):
    a = max(abs(sw.lo), abs(sw.hi))
    return a if a > 0 else 1.0  # all weights zero: any scale is exact


def _best_scaled(sw, unit, scales):
    """``scale · unit`` for the scale of ``scales`` with the least MSE (ties: the first)."""
    scales = np.asarray(scales, dtype=np.float64)
    err = sw.mse(scales[:, None] * unit[None, :])
    return codebook_from_levels(scales[int(np.argmin(err))] * unit)


def uniform_codebook(w, bits):
    """Uniform two's-complement grid ``step·[-2**(k-1) .. 2**(k-1)-1]``, the (real) step from a
    grid of clip values minimizing the MSE (see the module docstring)."""
    k = check_bits(bits, where="uniform_codebook: bits")
    sw = SortedWeights(w, where="uniform_codebook: w")
    half = 1 << (k - 1)
    unit = np.arange(-half, half, dtype=np.float64)
    clips = _largest_magnitude(sw) * np.arange(1, 257) / 128
    return _best_scaled(sw, unit, clips / half)


def fixed_codebook(w, bits):
    """Fixed point: the ``k``-bit two's-complement grid ``2**-f·[-2**(k-1) .. 2**(k-1)-1]`` (a
    Qm.f format: the step is a power of two), ``f`` (an integer per layer) with the least MSE.
    :func:`uniform_codebook` is the same grid with any real step."""
    k = check_bits(bits, where="fixed_codebook: bits")
    sw = SortedWeights(w, where="fixed_codebook: w")
    half = 1 << (k - 1)
    unit = np.arange(-half, half, dtype=np.float64)
    e0 = math.floor(math.log2(_largest_magnitude(sw) / half))
    return _best_scaled(sw, unit, np.ldexp(1.0, np.arange(e0 - 4, e0 + 4)))


#: ``bits -> (exponent bits, mantissa bits)`` of the minifloat formats (plus one sign bit).
MINIFLOAT_FORMATS = {1: (0, 0), 2: (1, 0), 3: (1, 1), 4: (2, 1), 5: (2, 2), 6: (3, 2),
                     7: (3, 3), 8: (4, 3)}


def minifloat_values(bits):
    """The ``2**bits`` values of the unscaled ``bits``-bit minifloat, ascending, both zeros kept
    (e.g. ``bits=3``, e1m1: ``-3 -2 -1 -0 0 1 2 3``)."""
    k = check_bits(bits, where="minifloat_values: bits")
    e, m = MINIFLOAT_FORMATS[k]
    if e == 0:
        return np.array([-1.0, 1.0])
    bias = (1 << (e - 1)) - 1
    mags = []
    for field in range(1 << e):
        for mant in range(1 << m):
            if field == 0:
                mags.append(math.ldexp(mant / (1 << m), 1 - bias))
            else:
                mags.append(math.ldexp(1 + mant / (1 << m), field - bias))
    mags = np.array(mags)
    return np.sort(np.concatenate([-mags, mags]))


def minifloat_codebook(w, bits):
    """A ``bits``-bit minifloat (:data:`MINIFLOAT_FORMATS`) times the power-of-two scale with
    the least MSE."""
    k = check_bits(bits, where="minifloat_codebook: bits")
    sw = SortedWeights(w, where="minifloat_codebook: w")
    unit = minifloat_values(k)
    s0 = math.floor(math.log2(_largest_magnitude(sw) / unit[-1]))
    return _best_scaled(sw, unit, np.ldexp(1.0, np.arange(s0 - 12, s0 + 3)))


def pow2_codebook(w, bits):
    """Sign + exponent: ``{0, 0} ∪ {±2**(e0 - j)}``, ``j = 0 .. 2**(k-1) - 2``, ``e0`` with the
    least MSE (``k = 1``: ``±2**e0``)."""
    k = check_bits(bits, where="pow2_codebook: bits")
    sw = SortedWeights(w, where="pow2_codebook: w")
    if k == 1:
        unit = np.array([-1.0, 1.0])
    else:
        mags = np.ldexp(1.0, -np.arange((1 << (k - 1)) - 1))
        unit = np.sort(np.concatenate([-mags, [0.0, 0.0], mags]))
    e0 = math.floor(math.log2(_largest_magnitude(sw)))
    return _best_scaled(sw, unit, np.ldexp(1.0, np.arange(e0 - 12, e0 + 3)))


def _lloyd(sw, centres, iters):
    """At most ``iters`` Lloyd iterations from ``centres`` (stops when no weight changes bin)."""
    previous = None
    for _ in range(iters):
        bounds = (centres[1:] + centres[:-1]) / 2
        start, stop = sw.bins(bounds)
        if previous is not None and np.array_equal(start, previous):
            break
        previous = start
        new = sw.centroids(bounds)
        empty = np.flatnonzero(stop == start)
        if empty.size:
            kept = np.sort(new[stop > start])
            near = kept[np.searchsorted((kept[1:] + kept[:-1]) / 2, sw.values, side="right")]
            err = (sw.values - near) ** 2
            for i in empty:
                j = int(np.argmax(err))
                new[i] = sw.values[j]
                err[j] = -1.0  # the next empty cluster takes another weight
        centres = np.sort(new)
    return centres


def kmeans_codebook(w, bits, *, iters=50):
    """1-D k-means (Lloyd) with ``2**bits`` clusters, at most ``iters`` iterations (fewer when
    no weight changes cluster); an empty cluster moves onto the weight farthest from its level
    (when every weight already sits on a level the duplicate stays).

    Two starts, the lower MSE wins: the quantiles ``(i + 1/2)/2**bits`` of the weights, and the
    levels of :func:`uniform_codebook`. Quantiles crowd the centre and leave the tails coarse
    (the optimal density of levels goes as ``p(w)**(1/3)``, not ``p(w)``), so at 6..8 bits Lloyd
    converges slowly from them; a Lloyd step never raises the MSE, so with the second start
    k-means is never worse than uniform fixed point.
    """
    k = check_bits(bits, where="kmeans_codebook: bits")
    if isinstance(iters, bool):
        raise TypeError(f"kmeans_codebook: iters: expected an int, not {iters!r}")
    try:
        iters = operator.index(iters)
    except TypeError:
        raise TypeError(f"kmeans_codebook: iters: expected an int, not {iters!r}") from None
    if iters < 1:
        raise ValueError(f"kmeans_codebook: iters: expected >= 1, got {iters}")
    sw = SortedWeights(w, where="kmeans_codebook: w")
    n_levels = 1 << k
    starts = [np.quantile(sw.values, (np.arange(n_levels) + 0.5) / n_levels),
              uniform_codebook(sw.values, k).levels.copy()]
    found = [codebook_from_levels(_lloyd(sw, c, iters)) for c in starts]
    errors = [float(sw.mse(cb.levels)) for cb in found]
    return found[int(np.argmin(errors))]


#: Baseline name -> ``f(w, bits) -> Codebook``.
METHODS = {
    "kmeans": kmeans_codebook,
    "fixed": fixed_codebook,
    "uniform": uniform_codebook,
    "minifloat": minifloat_codebook,
    "pow2": pow2_codebook,
}


def to_integer_levels(levels, level_bits=8):
    """``(int_levels, scale)`` with ``levels ≈ int_levels · scale``, ``scale = 2**-f`` and ``f``
    the largest integer with every ``|round(level · 2**f)| <= 2**(level_bits-1) - 1`` (round half
    to even). All-zero levels give zeros and scale 1.

    Parameters
    ----------
    levels : array_like
        Finite levels (a :class:`Codebook`'s ``levels``).
    level_bits : int
        Width of a signed integer level, 2..32.

    Returns
    -------
    (numpy.ndarray of int64, float)
    """
    try:
        lb = operator.index(level_bits)
    except TypeError:
        raise TypeError(f"to_integer_levels: level_bits: expected an int, not "
                        f"{level_bits!r}") from None
    if not 2 <= lb <= 32:
        raise ValueError(f"to_integer_levels: level_bits: expected 2..32, got {lb}")
    lv = np.asarray(levels, dtype=np.float64).ravel()
    if lv.size == 0 or not np.isfinite(lv).all():
        raise ValueError(f"to_integer_levels: expected a non-empty sequence of finite levels, "
                         f"got {lv.tolist()}")
    top = (1 << (lb - 1)) - 1
    largest = float(np.abs(lv).max())
    if largest == 0:
        return np.zeros(lv.size, dtype=np.int64), 1.0
    # An upper bound on f (largest · 2**f >= 2·top > top + 1/2 one step above), then down.
    f = math.floor(math.log2(top / largest)) + 2
    while np.abs(np.rint(np.ldexp(lv, f))).max() > top:
        f -= 1
    return np.rint(np.ldexp(lv, f)).astype(np.int64), math.ldexp(1.0, -f)
