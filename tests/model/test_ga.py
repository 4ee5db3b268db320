"""Genetic search over codebook boundaries: decoding (centroids, empty bins), the population the
fitness sees (size, repair), determinism, elitism, improvement on a small linear-model problem,
the fitness plot and the argument errors."""

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from qnnfab.model.codebooks import (Codebook, assign, dequantize, kmeans_codebook,
                                    quantization_mse)
from qnnfab.model.ga import GAResult, codebook_from_boundaries, fitness_curve_svg, ga_search

SVG = "{http://www.w3.org/2000/svg}"


class LinearProblem:
    """Two numpy linear layers ``y = x @ W`` with very unequal input scales; fitness is minus the
    output MSE with quantized weights, which k-means on the weights alone does not optimize."""

    def __init__(self, seed=1):
        rng = np.random.default_rng(seed)
        self.weights = [rng.normal(0, 1, (24, 6)), rng.normal(0, 0.5, (16, 4))]
        self.x = [rng.normal(0, 1, (200, 24)) * np.logspace(-1, 1, 24),
                  rng.normal(0, 1, (200, 16)) * np.logspace(1, -1, 16)]
        self.y = [x @ w for x, w in zip(self.x, self.weights)]
        self.calls = []

    def score(self, individual):
        return -sum(np.mean((y - x @ dequantize(assign(w, cb), cb)) ** 2)
                    for x, y, w, cb in zip(self.x, self.y, self.weights, individual))

    def __call__(self, individuals):
        self.calls.append(individuals)
        return np.array([self.score(ind) for ind in individuals])


# -- decoding ------------------------------------------------------------------------------------

def test_codebook_from_boundaries_centroids_and_empty_bins():
    w = np.array([0.0, 1.0, 2.0, 3.0, 10.0, 11.0])
    cb = codebook_from_boundaries(w, [2.0, 5.0, 6.0])
    assert cb.boundaries.tolist() == [2.0, 5.0, 6.0]
    assert cb.levels.tolist() == [0.5, 2.5, 5.5, 10.5]  # bin [5, 6) is empty: its midpoint
    assert np.array_equal(dequantize(assign(w, cb), cb), [0.5, 0.5, 2.5, 2.5, 10.5, 10.5])
    # Boundaries outside the weights' range: empty outer bins sit on the nearest edge.
    cb = codebook_from_boundaries(w, [-5.0, -1.0, 20.0])
    assert cb.levels.tolist() == [0.0, 0.0, w.mean(), 11.0]
    # k-means boundaries decode to (about) the k-means levels: they are centroids already.
    v = np.random.default_rng(3).normal(0, 1, 3000)
    km = kmeans_codebook(v, 3, iters=1000)
    assert np.allclose(codebook_from_boundaries(v, km.boundaries).levels, km.levels, atol=1e-6)


def test_codebook_from_boundaries_errors():
    with pytest.raises(ValueError, match="expected 2\\*\\*k - 1 boundaries .* got 2"):
        codebook_from_boundaries([0.0, 1.0], [0.1, 0.2])
    with pytest.raises(ValueError, match="finite ascending boundaries"):
        codebook_from_boundaries([0.0, 1.0], [0.5, 0.2, 0.7])


# -- the search ----------------------------------------------------------------------------------

def test_population_seen_by_fitness():
    """Fitness is called once per generation with the whole population of per-layer codebooks;
    heavy mutation is repaired (sorted, inside [min w, max w]); generation 0 holds k-means."""
    prob = LinearProblem()
    ga_search(prob.weights, [2, 3], prob, population=10, generations=4, mutation=1.0,
              sigma=3.0, seed=5)
    assert len(prob.calls) == 4 and all(len(c) == 10 for c in prob.calls)
    for individuals in prob.calls:
        for ind in individuals:
            assert [cb.bits for cb in ind] == [2, 3]
            for cb, w in zip(ind, prob.weights):
                assert isinstance(cb, Codebook)
                assert (np.diff(cb.boundaries) >= 0).all()
                assert w.min() <= cb.boundaries.min() and cb.boundaries.max() <= w.max()
    first = prob.calls[0][0]
    for cb, w, bits in zip(first, prob.weights, [2, 3]):
        assert np.array_equal(cb.boundaries, kmeans_codebook(w, bits).boundaries)


def test_deterministic_for_a_seed():
    runs = [ga_search(LinearProblem().weights, 2, LinearProblem(), seed=s, generations=8)
            for s in (7, 7, 8)]
    a, b, c = runs
    assert a.history == b.history and a.fitness == b.fitness and a.generation == b.generation
    assert all(x == y for x, y in zip(a.best, b.best))
    assert a.history != c.history


def test_improves_and_keeps_the_best():
    """The best fitness never drops (elitism), ends clearly above the initial population's, and
    the result is the fittest individual ever scored."""
    prob = LinearProblem()
    seen = []
    res = ga_search(prob.weights, 2, prob, seed=0, generations=30,
                    progress=lambda g, best, mean: seen.append((g, best, mean)))
    assert isinstance(res, GAResult) and len(res.history) == 30
    best = [h["best"] for h in res.history]
    assert all(b1 >= b0 for b0, b1 in zip(best, best[1:]))
    assert best[-1] > best[0] + 0.05 * abs(best[0])
    assert all(h["min"] <= h["mean"] <= h["best"] for h in res.history)
    assert res.fitness == max(best) == pytest.approx(prob.score(res.best), rel=1e-12)
    assert res.history[res.generation]["best"] == res.fitness
    assert seen == [(h["generation"], h["best"], h["mean"]) for h in res.history]
    # The GA result's own output error beats the k-means codebooks at the same width.
    kmeans = [kmeans_codebook(w, 2) for w in prob.weights]
    assert res.fitness > prob.score(kmeans)
    # ...while k-means still has the least squared error on the weights themselves.
    assert sum(quantization_mse(w, cb) for w, cb in zip(prob.weights, kmeans)) <= \
        sum(quantization_mse(w, cb) for w, cb in zip(prob.weights, res.best))


def test_init_seeds_first_and_no_elite():
    """init individuals open generation 0 (as Codebooks or boundary vectors)."""
    prob = LinearProblem()
    mine = [np.quantile(w, [0.2, 0.5, 0.8]) for w in prob.weights]
    ga_search(prob.weights, 2, prob, init=[mine], population=6, generations=2, elite=0)
    assert all(np.array_equal(cb.boundaries, b) for cb, b in zip(prob.calls[0][0], mine))


# -- plot ----------------------------------------------------------------------------------------

def test_fitness_curve_svg():
    history = [{"generation": g, "best": 0.5 + 0.01 * g, "mean": 0.4 + 0.01 * g, "min": 0.1}
               for g in range(12)]
    root = ET.fromstring(fitness_curve_svg(history, title="digits <k=3> & GA"))
    lines = {p.get("class"): p.get("points").split() for p in root.iter(f"{SVG}polyline")}
    assert set(lines) == {"best", "mean", "min"} and all(len(v) == 12 for v in lines.values())
    ys = [float(p.split(",")[1]) for p in lines["best"]]
    assert all(y1 < y0 for y0, y1 in zip(ys, ys[1:]))  # rising fitness: SVG y goes up
    assert "digits <k=3> & GA" in [t.text for t in root.iter(f"{SVG}text")]
    ET.fromstring(fitness_curve_svg(history[:1]))  # one generation, flat values: still drawn
    with pytest.raises(ValueError, match="empty history"):
        fitness_curve_svg([])


# -- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"population": 1}, "population: expected >= 2, got 1"),
    ({"elite": 24}, "elite: expected 0..23, got 24"),
    ({"tournament": 25}, "tournament: expected 1..24, got 25"),
    ({"generations": 0}, "generations: expected >= 1, got 0"),
    ({"crossover": 1.5}, "crossover: expected a probability in \\[0, 1\\], got 1.5"),
    ({"sigma": -1}, "sigma: expected a finite number >= 0, got -1"),
    ({"bits": 0}, "bits: expected 1 <= bits <= 8, got 0"),
    ({"bits": [2]}, "bits: expected one per layer \\(2\\), got 1"),
    ({"weights": []}, "weights: expected a non-empty list"),
    ({"weights": [np.ones(3), []]}, "weights\\[1\\]: expected at least one weight"),
    ({"init": [[np.zeros(3)]]}, "init\\[0\\]: expected 2 layers, got 1"),
    ({"init": [[np.zeros(3), np.zeros(2)]]}, "init\\[0\\]\\[1\\]: expected 3 finite boundaries"),
])
def test_bad_arguments(kwargs, match):
    prob = LinearProblem()
    args = {"weights": prob.weights, "bits": 2, "fitness": prob, **kwargs}
    with pytest.raises(ValueError, match=match):
        ga_search(**args)
    assert not prob.calls  # refused before any evaluation


@pytest.mark.parametrize("fitness, match", [
    (lambda pop: np.zeros(len(pop) - 1), "expected 24 values .* got shape \\(23,\\)"),
    (lambda pop: np.full(len(pop), np.nan), "expected finite values, got \\[nan"),
])
def test_bad_fitness(fitness, match):
    with pytest.raises(ValueError, match="ga_search: fitness: " + match):
        ga_search(LinearProblem().weights, 2, fitness)
    with pytest.raises(TypeError, match="fitness: expected a callable"):
        ga_search(LinearProblem().weights, 2, 3.0)
