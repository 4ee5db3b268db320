"""Genetic search over per-layer codebook bin boundaries (post-training weight quantization).

After "Optimization of Numerical Expression in CNN using Genetic Algorithm": the ``2**k`` bins
of each layer's codebook have variable sizes, and a genetic algorithm chooses them for the
network's accuracy rather than for the weights' squared error.

* **Chromosome.** For one layer of ``k`` bits: its ``2**k - 1`` bin boundaries, ascending,
  inside ``[min w, max w]``; for a network, one such vector per layer. The levels are not
  genes: :func:`codebook_from_boundaries` puts each level at the centroid of the weights in its
  bin (an empty bin: the midpoint of its interval), so each chromosome decodes to the best
  levels for its bins.
* **Initial population.** The caller's ``init`` individuals, then the boundaries of the
  k-means, fixed-point, minifloat and power-of-two codebooks (:mod:`qnnfab.model.codebooks`),
  then copies of these seeds (in turn) with every boundary jittered by ``N(0, (σ·std_l)²)``,
  ``std_l`` the standard deviation of layer ``l``'s weights.
* **One generation.** The caller's ``fitness`` scores the whole population in one call
  (maximized; e.g. the accuracy of the integer model on a validation split). The ``elite`` best
  go on unchanged. The other places are filled by pairs of children: each parent is the fittest
  of ``tournament`` individuals drawn at random (with replacement); with probability
  ``crossover`` a pair is crossed, layer by layer, by a coin flip between *uniform* crossover
  (each boundary from either parent) and *arithmetic* crossover (``a·x + (1-a)·y``, ``a`` uniform
  in [0, 1]); then each boundary mutates with probability ``mutation`` by ``N(0, (σ·std_l)²)``.
  **Repair** sorts each layer's boundaries and clips them into ``[min w, max w]``.
* **Result.** The fittest individual ever scored (the earliest on ties) and the best, mean and
  minimum fitness of every generation; :func:`fitness_curve_svg` draws them.

All randomness comes from ``numpy.random.default_rng(seed)``: a seed gives the same search
whenever ``fitness`` is deterministic. The search never evaluates a network itself: the
caller's ``fitness`` does, in this process or on an executor (:func:`qnnfab.model.ptq.quantize`
with ``workers``/``scheduler`` scores slices of the population on a process pool or a Dask
cluster, :mod:`qnnfab.sweep_executor`); the search is the same either way.
"""

import math
import operator
from dataclasses import dataclass
from xml.sax.saxutils import escape

import numpy as np

from .codebooks import METHODS, Codebook, SortedWeights, check_bits

__all__ = ["GAResult", "SEED_METHODS", "codebook_from_boundaries", "ga_search",
           "fitness_curve_svg"]

#: Baselines whose boundaries seed the initial population, in this order.
SEED_METHODS = ("kmeans", "fixed", "minifloat", "pow2")


@dataclass(frozen=True)
class GAResult:
    """What :func:`ga_search` found.

    Attributes
    ----------
    best : list of Codebook
        The fittest individual ever scored, one codebook per layer.
    fitness : float
        Its fitness.
    generation : int
        The generation that first scored it (0: the initial population).
    history : list of dict
        Per generation: ``{"generation": g, "best": x, "mean": x, "min": x}`` (plain floats, so
        it can go into JSON).
    """
    best: list
    fitness: float
    generation: int
    history: list


def codebook_from_boundaries(w, boundaries):
    """The codebook of bins ``boundaries`` (ascending, ``2**k - 1`` of them) over weights ``w``:
    each level at the centroid of its bin's weights; an empty bin's level is the midpoint of its
    interval clipped into ``[min w, max w]``."""
    b = np.asarray(boundaries, dtype=np.float64).ravel()
    n = b.size + 1
    if n < 2 or n & (n - 1):
        raise ValueError(f"codebook_from_boundaries: expected 2**k - 1 boundaries (1, 3, 7, ...), "
                         f"got {b.size}")
    if not np.isfinite(b).all() or (np.diff(b) < 0).any():
        raise ValueError(f"codebook_from_boundaries: expected finite ascending boundaries, got "
                         f"{b.tolist()}")
    sw = SortedWeights(w, where="codebook_from_boundaries: w")
    return Codebook(sw.centroids(b), b)


def _check_int(value, name, lo, hi=None):
    if isinstance(value, bool):
        raise TypeError(f"ga_search: {name}: expected an int, not {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"ga_search: {name}: expected an int, not {value!r}") from None
    if v < lo or (hi is not None and v > hi):
        want = f">= {lo}" if hi is None else f"{lo}..{hi}"
        raise ValueError(f"ga_search: {name}: expected {want}, got {v}")
    return v


def _check_prob(value, name):
    p = float(value)
    if not 0 <= p <= 1:
        raise ValueError(f"ga_search: {name}: expected a probability in [0, 1], got {value!r}")
    return p


def _seed_boundaries(individual, sizes, where):
    """An ``init`` individual (Codebooks or boundary vectors, one per layer) as boundaries."""
    if len(individual) != len(sizes):
        raise ValueError(f"{where}: expected {len(sizes)} layers, got {len(individual)}")
    out = []
    for li, (layer, size) in enumerate(zip(individual, sizes)):
        b = layer.boundaries if isinstance(layer, Codebook) else layer
        b = np.asarray(b, dtype=np.float64).ravel()
        if b.size != size or not np.isfinite(b).all():
            raise ValueError(f"{where}[{li}]: expected {size} finite boundaries, got "
                             f"{b.tolist()}")
        out.append(b)
    return out


def ga_search(weights, bits, fitness, *, seed=0, population=24, generations=30, tournament=3,
              crossover=0.9, mutation=0.2, sigma=0.1, elite=2, init=None, progress=None):
    """Search per-layer codebook boundaries that maximize ``fitness`` (module docstring).

    Parameters
    ----------
    weights : list of array_like
        Each layer's float weights (any shape).
    bits : int or list of int
        Index bits per layer (1..8), one for all layers or one per layer.
    fitness : callable
        ``fitness(individuals) -> array of P floats`` (larger is better), where each individual
        is a list of per-layer :class:`~qnnfab.model.codebooks.Codebook`; called once per
        generation with the whole population (``P = population``), elites included.
    seed : int
        Seed of ``numpy.random.default_rng``, the only randomness.
    population, generations : int
        Individuals per generation (>= 2); generations scored, the initial one included (>= 1).
    tournament : int
        Individuals drawn per parent selection (1..population).
    crossover, mutation : float
        Probability that a pair of parents is crossed; that one boundary mutates.
    sigma : float
        Mutation (and initial jitter) standard deviation, as a fraction of each layer's weight
        standard deviation.
    elite : int
        Fittest individuals copied unchanged into the next generation (0..population-1).
    init : list of individuals, optional
        Seeds placed first in the initial population (at most ``population``), each a list of
        per-layer Codebooks or boundary vectors.
    progress : callable, optional
        ``progress(generation, best, mean)`` after each generation is scored.

    Returns
    -------
    GAResult
    """
    if isinstance(weights, np.ndarray) or not hasattr(weights, "__len__") or not len(weights):
        raise ValueError("ga_search: weights: expected a non-empty list of per-layer weight "
                         "arrays")
    layers = [SortedWeights(w, where=f"ga_search: weights[{i}]") for i, w in enumerate(weights)]
    if isinstance(bits, (list, tuple)):
        if len(bits) != len(layers):
            raise ValueError(f"ga_search: bits: expected one per layer ({len(layers)}), got "
                             f"{len(bits)}")
        bits = [check_bits(b, where=f"ga_search: bits[{i}]") for i, b in enumerate(bits)]
    else:
        bits = [check_bits(bits, where="ga_search: bits")] * len(layers)
    if not callable(fitness):
        raise TypeError(f"ga_search: fitness: expected a callable, not {fitness!r}")
    if progress is not None and not callable(progress):
        raise TypeError(f"ga_search: progress: expected a callable or None, not {progress!r}")
    population = _check_int(population, "population", 2)
    generations = _check_int(generations, "generations", 1)
    tournament = _check_int(tournament, "tournament", 1, population)
    elite = _check_int(elite, "elite", 0, population - 1)
    crossover = _check_prob(crossover, "crossover")
    mutation = _check_prob(mutation, "mutation")
    sigma = float(sigma)
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"ga_search: sigma: expected a finite number >= 0, got {sigma!r}")
    sizes = [(1 << b) - 1 for b in bits]
    init = list(init or [])
    if len(init) > population:
        raise ValueError(f"ga_search: init: expected at most population={population} "
                         f"individuals, got {len(init)}")

    rng = np.random.default_rng(seed)
    scales = [sigma * (sw.std if sw.std > 0 else 1.0) for sw in layers]

    def repair(pop):
        for li, sw in enumerate(layers):
            pop[li] = np.clip(np.sort(pop[li], axis=1), sw.lo, sw.hi)
        return pop

    # Initial population: seeds, then jittered copies of them in turn.
    seeds = [_seed_boundaries(ind, sizes, f"ga_search: init[{i}]") for i, ind in enumerate(init)]
    for name in SEED_METHODS:
        seeds.append([METHODS[name](sw.values, b).boundaries for sw, b in zip(layers, bits)])
    pop = []
    for li, size in enumerate(sizes):
        rows = np.array([seeds[i % len(seeds)][li] for i in range(population)])
        jitter = rng.normal(0.0, scales[li], size=(population, size))
        jitter[:min(population, len(seeds))] = 0.0
        pop.append(rows + jitter)
    pop = repair(pop)

    def decode(pop):
        levels = [sw.centroids(p) for sw, p in zip(layers, pop)]
        return [[Codebook(levels[li][i], pop[li][i]) for li in range(len(layers))]
                for i in range(population)]

    def breed(pop, fit):
        order = np.argsort(-fit, kind="stable")
        n_children = population - elite
        n_pairs = (n_children + 1) // 2
        drawn = rng.integers(0, population, size=(2 * n_pairs, tournament))
        parents = drawn[np.arange(2 * n_pairs), np.argmax(fit[drawn], axis=1)]
        pa, pb = parents[0::2], parents[1::2]
        cross = (rng.random(n_pairs) < crossover)[:, None]
        new = []
        for li, size in enumerate(sizes):
            a, b = pop[li][pa], pop[li][pb]
            uniform = (rng.random(n_pairs) < 0.5)[:, None]
            take_a = rng.random((n_pairs, size)) < 0.5
            mix = rng.random((n_pairs, 1))
            c1 = np.where(uniform, np.where(take_a, a, b), mix * a + (1 - mix) * b)
            c2 = np.where(uniform, np.where(take_a, b, a), (1 - mix) * a + mix * b)
            c1, c2 = np.where(cross, c1, a), np.where(cross, c2, b)
            children = np.stack([c1, c2], axis=1).reshape(2 * n_pairs, size)[:n_children]
            hit = rng.random(children.shape) < mutation
            children = children + hit * rng.normal(0.0, scales[li], size=children.shape)
            new.append(np.concatenate([pop[li][order[:elite]], children]))
        return repair(new)

    history = []
    best, best_fit, best_gen = None, -math.inf, 0
    fit = None
    for gen in range(generations):
        if gen:
            pop = breed(pop, fit)
        individuals = decode(pop)
        fit = np.asarray(fitness(individuals), dtype=np.float64)
        if fit.shape != (population,):
            raise ValueError(f"ga_search: fitness: expected {population} values (one per "
                             f"individual), got shape {fit.shape}")
        if not np.isfinite(fit).all():
            bad = np.flatnonzero(~np.isfinite(fit))
            raise ValueError(f"ga_search: fitness: expected finite values, got "
                             f"{fit[bad].tolist()} for individuals {bad.tolist()} of generation "
                             f"{gen}")
        i = int(np.argmax(fit))
        if best is None or fit[i] > best_fit:
            best, best_fit, best_gen = individuals[i], float(fit[i]), gen
        history.append({"generation": gen, "best": float(fit.max()),
                        "mean": float(fit.mean()), "min": float(fit.min())})
        if progress is not None:
            progress(gen, float(fit.max()), float(fit.mean()))
    return GAResult(best=best, fitness=best_fit, generation=best_gen, history=history)


def fitness_curve_svg(history, *, title="Genetic search: fitness per generation"):
    """An SVG (text) of the best, mean and minimum fitness per generation (``history`` as in
    :class:`GAResult`). No plotting library needed."""
    if not history:
        raise ValueError("fitness_curve_svg: empty history")
    try:
        gens = [int(h["generation"]) for h in history]
        series = {key: [float(h[key]) for h in history] for key in ("best", "mean", "min")}
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"fitness_curve_svg: expected history entries with generation, best, "
                         f"mean and min, got {history[0]!r} ({e})") from None
    values = [v for s in series.values() for v in s]
    if not all(math.isfinite(v) for v in values):
        raise ValueError("fitness_curve_svg: expected finite fitness values")
    lo, hi = min(values), max(values)
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    g0, g1 = min(gens), max(gens)
    left, top, width, height = 90, 40, 560, 240

    def x_of(g):
        return left + (g - g0) * width / max(1, g1 - g0)

    def y_of(v):
        return top + height * (hi - v) / (hi - lo)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 30}" '
           f'height="{top + height + 60}" font-family="sans-serif" font-size="12">',
           f'<text x="{left}" y="20" font-size="14">{escape(str(title))}</text>',
           f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" '
           f'stroke="#888"/>',
           f'<text x="5" y="{top + 4}">{hi:.4g}</text>',
           f'<text x="5" y="{top + height + 4}">{lo:.4g}</text>']
    for key, colour in (("min", "#b0b0b0"), ("mean", "#3b6fb6"), ("best", "#d0452f")):
        pts = " ".join(f"{x_of(g):.1f},{y_of(v):.1f}" for g, v in zip(gens, series[key]))
        out.append(f'<polyline class="{key}" points="{pts}" fill="none" stroke="{colour}" '
                   f'stroke-width="2"/>')
    y_axis = top + height
    out.append(f'<text x="{left}" y="{y_axis + 16}">generation {g0}</text>')
    out.append(f'<text x="{left + width - 90}" y="{y_axis + 16}">generation {g1}</text>')
    out.append(f'<text x="{left}" y="{y_axis + 36}">red: best, blue: mean, grey: min '
               f'fitness</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
