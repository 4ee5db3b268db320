"""Kernel clustering: the 2D kernels of the conv layers replaced by a few representatives.

The method of "A Study of Kernel Clustering for Reducing Memory Footprint of CNN": every
``k × k`` kernel of every ``(out, in)`` channel pair of a trained network is one point in
``R^(k·k)``; k-means groups them into ``K`` clusters and each kernel is replaced by its
cluster's representative, so the network stores one small index per kernel plus a table of
``K`` representative kernels (:class:`qnnfab.ir.KernelCodebook`). numpy only.

* :func:`kmeans` — Lloyd's algorithm with greedy k-means++ initialisation, the same iteration as
  scikit-learn's ``KMeans(algorithm="lloyd")`` (assignment and update in one pass, empty
  clusters moved onto the points farthest from their centres, stop on unchanged labels or a
  total squared centre shift ``<= tol·mean(var(x))``, then a final assignment), with optional
  per-point weights (a distinct kernel weighted by how often it occurs clusters exactly like
  all its copies).
* :func:`signed_kmeans` — each point is ``s·c`` for a centre ``c`` and a sign ``s = ±1`` chosen
  per point: the assignment picks the best ``(centre, sign)``, the update is the mean of
  ``s_i·x_i``. Kernels that are negations of each other share one table entry (plus one sign
  bit per kernel).
* :func:`cluster_network` — k-means over the integer weight *values* of the conv kernels,
  network-wide (one table for every conv layer) or per layer; representatives rounded to the
  layer's levels, duplicates merged, every kernel re-assigned to its nearest rounded
  representative; statistics (kernels, distinct kernels, K, memory, error) returned and stored
  in ``meta["clustering"]``.
* :func:`sweep` and :func:`sweep_plot_svg` — accuracy against kernel reduction over several
  ``K``, and its plot (hand-written SVG).
"""

import math
import operator
from typing import NamedTuple
from xml.sax.saxutils import escape

import numpy as np

from qnnfab import ir, numerics

__all__ = ["KMeansResult", "SignedKMeansResult", "kmeans", "signed_kmeans", "round_to_levels",
           "cluster_network", "sweep", "sweep_plot_svg"]


class KMeansResult(NamedTuple):
    """``centers`` (k, d) float, ``labels`` (n,) int, ``inertia`` (weighted sum of squared
    distances of the points to their centres)."""
    centers: np.ndarray
    labels: np.ndarray
    inertia: float


class SignedKMeansResult(NamedTuple):
    """As :class:`KMeansResult`, plus ``signs`` (n,) of ±1: point ``i`` is represented by
    ``signs[i]·centers[labels[i]]``."""
    centers: np.ndarray
    labels: np.ndarray
    signs: np.ndarray
    inertia: float


# -- k-means ---------------------------------------------------------------------------------------

def _check_points(x, k, weights, where):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{where}: expected points as a 2-D array (n, d) with n, d >= 1, got "
                         f"shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{where}: points must be finite")
    try:
        k = operator.index(k)
    except TypeError:
        raise TypeError(f"{where}: k must be an integer, not {k!r}") from None
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"{where}: k must be 1..{x.shape[0]} (the number of points), got {k}")
    if weights is None:
        weights = np.ones(x.shape[0])
    else:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (x.shape[0],):
            raise ValueError(f"{where}: expected one weight per point, shape ({x.shape[0]},), "
                             f"got {weights.shape}")
        if not np.all(np.isfinite(weights)) or np.any(weights <= 0):
            raise ValueError(f"{where}: point weights must be finite and > 0")
    return x, k, weights


def _check_runs(n_init, max_iter, tol, where):
    n_init, max_iter = operator.index(n_init), operator.index(max_iter)
    if n_init < 1:
        raise ValueError(f"{where}: n_init must be >= 1, got {n_init}")
    if max_iter < 1:
        raise ValueError(f"{where}: max_iter must be >= 1, got {max_iter}")
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"{where}: tol must be a finite number >= 0, got {tol!r}")
    return n_init, max_iter


def _check_init(init, k, d, where):
    init = np.array(init, dtype=np.float64)
    if init.shape != (k, d):
        raise ValueError(f"{where}: init must hold k = {k} centres of dimension {d}, shape "
                         f"({k}, {d}), got {init.shape}")
    if not np.all(np.isfinite(init)):
        raise ValueError(f"{where}: init must be finite")
    return init


def _sq_dist(x, c):
    """Squared Euclidean distances, shape (len(x), len(c))."""
    d = (x * x).sum(1)[:, None] - 2.0 * (x @ c.T) + (c * c).sum(1)[None, :]
    return np.maximum(d, 0.0)


def _signed_sq_dist(x, c):
    """``min_s ||x - s·c||²`` and the best sign (+1 on ties), each shape (len(x), len(c))."""
    dot = x @ c.T
    base = (x * x).sum(1)[:, None] + (c * c).sum(1)[None, :]
    return np.maximum(base - 2.0 * np.abs(dot), 0.0), np.where(dot < 0, -1, 1)


def _plusplus(x, w, k, rng, dist):
    """Greedy k-means++ (as scikit-learn): each new centre is the best of ``2 + ln k``
    candidates drawn with probability ∝ weight·D², D the distance to the nearest centre."""
    n = x.shape[0]
    trials = 2 + int(np.log(k))
    centers = np.empty((k, x.shape[1]))
    first = rng.choice(n, p=w / w.sum())
    centers[0] = x[first]
    closest = dist(x[first:first + 1], x)[0]
    potential = (w * closest).sum()
    for c in range(1, k):
        cum = np.cumsum(w * closest)
        cand = np.minimum(np.searchsorted(cum, rng.random(trials) * potential), n - 1)
        cand_d = np.minimum(closest, dist(x[cand], x))
        pots = (cand_d * w).sum(1)
        best = int(np.argmin(pots))
        closest, potential = cand_d[best], pots[best]
        centers[c] = x[cand[best]]
    return centers


def _relocate_empty(points, w, labels, point_dist, sums, counts):
    """Move each empty cluster onto one of the points farthest from their centres (the point
    leaves its old cluster's sums), as scikit-learn does."""
    empty = np.flatnonzero(counts == 0)
    if not len(empty):
        return
    far = np.argsort(-point_dist, kind="stable")[:len(empty)]
    for j, i in zip(empty, far):
        old = labels[i]
        sums[old] -= w[i] * points[i]
        counts[old] -= w[i]
        sums[j] = w[i] * points[i]
        counts[j] = w[i]


def _lloyd(x, w, centers, max_iter, tol, signed):
    """One Lloyd run from ``centers``; returns centres, labels, signs, inertia."""
    n, k = x.shape[0], centers.shape[0]
    labels_old = np.full(n, -1)
    signs_old = np.zeros(n, dtype=np.int64)
    strict = False
    for _ in range(max_iter):
        if signed:
            dist, sgn = _signed_sq_dist(x, centers)
            labels = dist.argmin(1)
            signs = sgn[np.arange(n), labels]
        else:
            dist = _sq_dist(x, centers)
            labels = dist.argmin(1)
            signs = np.ones(n, dtype=np.int64)
        points = x * signs[:, None]
        sums = np.zeros_like(centers)
        np.add.at(sums, labels, w[:, None] * points)
        counts = np.bincount(labels, weights=w, minlength=k)
        _relocate_empty(points, w, labels, dist[np.arange(n), labels], sums, counts)
        new = sums / counts[:, None]
        shift = float(((new - centers) ** 2).sum())
        centers = new
        if np.array_equal(labels, labels_old) and np.array_equal(signs, signs_old):
            strict = True
            break
        if shift <= tol:
            break
        labels_old, signs_old = labels, signs
    if signed:
        dist, sgn = _signed_sq_dist(x, centers)
    else:
        dist, sgn = _sq_dist(x, centers), None
    if not strict:
        labels = dist.argmin(1)
        signs = sgn[np.arange(n), labels] if signed else np.ones(n, dtype=np.int64)
    inertia = float((w * dist[np.arange(n), labels]).sum())
    return centers, labels, signs, inertia


def _run(x, k, seed, init, n_init, max_iter, tol, weights, signed, where):
    x, k, w = _check_points(x, k, weights, where)
    n_init, max_iter = _check_runs(n_init, max_iter, tol, where)
    mean = (w[:, None] * x).sum(0) / w.sum()
    var = (w[:, None] * (x - mean) ** 2).sum(0) / w.sum()
    tol_abs = float(var.mean()) * tol
    if init is not None:
        starts = [_check_init(init, k, x.shape[1], where)]
    else:
        rng = np.random.default_rng(seed)
        dist = (lambda a, b: _signed_sq_dist(a, b)[0]) if signed else _sq_dist
        starts = (_plusplus(x, w, k, rng, dist) for _ in range(n_init))
    best = None
    for centers in starts:
        run = _lloyd(x, w, centers, max_iter, tol_abs, signed)
        if best is None or run[3] < best[3]:
            best = run
    return best


def kmeans(x, k, *, seed=0, init=None, n_init=4, max_iter=300, tol=1e-4, weights=None):
    """Lloyd's k-means of the rows of ``x`` into ``k`` clusters.

    Parameters
    ----------
    x : array (n, d) of points
    k : int, 1..n
    seed : int, seed of the k-means++ initialisation (deterministic for a seed)
    init : array (k, d) of initial centres, or None for k-means++ (then ``n_init`` runs from
        different starts, the lowest inertia kept)
    max_iter : int, Lloyd iterations per run at most
    tol : float, stop when the total squared centre shift is ``<= tol·mean(var(x))``
    weights : array (n,) of positive point weights, or None (all 1): a point of weight ``m``
        counts as ``m`` copies

    Returns :class:`KMeansResult` ``(centers, labels, inertia)``.
    """
    centers, labels, _, inertia = _run(x, k, seed, init, n_init, max_iter, tol, weights,
                                       False, "kmeans")
    return KMeansResult(centers, labels, inertia)


def signed_kmeans(x, k, *, seed=0, init=None, n_init=4, max_iter=300, tol=1e-4, weights=None):
    """k-means where each point is represented by ``±`` a centre (see the module docstring).

    Same parameters as :func:`kmeans`; the k-means++ distance is ``min_s ||x - s·c||²``. The
    inertia never increases from one iteration to the next (both steps minimise it).
    Returns :class:`SignedKMeansResult` ``(centers, labels, signs, inertia)``.
    """
    centers, labels, signs, inertia = _run(x, k, seed, init, n_init, max_iter, tol, weights,
                                           True, "signed_kmeans")
    return SignedKMeansResult(centers, labels, signs, inertia)


# -- networks --------------------------------------------------------------------------------------

def round_to_levels(values, levels):
    """Each value moved to the nearest of ``levels``; ties go to the level of smaller
    magnitude, then to the positive one (so 0 between -1 and +1 becomes +1)."""
    order = sorted(set(int(v) for v in levels), key=lambda v: (abs(v), -v))
    cand = np.array(order, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    pick = np.abs(values[..., None] - cand).argmin(-1)  # first minimum: the preferred level
    return cand.astype(np.int64)[pick]


def _canonical_sign(vectors):
    """+1 or -1 per row so that the row's first non-zero entry becomes positive (+1 for 0)."""
    nz = vectors != 0
    first = np.where(nz.any(1), nz.argmax(1), 0)
    lead = vectors[np.arange(len(vectors)), first]
    return np.where(lead < 0, -1, 1)


def _cluster_values(values, kernels, sign, seed, n_init):
    """The float representatives (at most ``kernels``, d) of integer kernel value vectors
    (n, d): k-means over the distinct vectors (up to sign when ``sign``) weighted by their
    counts, or the distinct vectors themselves when there are no more than ``kernels``."""
    points = values * _canonical_sign(values)[:, None] if sign else values
    distinct, counts = np.unique(points, axis=0, return_counts=True)
    if kernels >= len(distinct):
        return distinct.astype(np.float64)
    run = signed_kmeans if sign else kmeans
    return run(distinct, kernels, seed=seed, n_init=n_init,
               weights=counts.astype(np.float64)).centers


def _finish_table(table_values, values, sign):
    """Duplicates of the rounded table merged (up to sign when ``sign``), every kernel assigned
    to its nearest entry (best sign; lowest index on ties), unused entries dropped."""
    if sign:
        table_values = table_values * _canonical_sign(table_values)[:, None]
    table_values = np.unique(table_values, axis=0)
    x = values.astype(np.float64)
    t = table_values.astype(np.float64)
    if sign:
        dist, sgn = _signed_sq_dist(x, t)
    else:
        dist, sgn = _sq_dist(x, t), np.ones((len(x), len(t)), dtype=np.int64)
    index = dist.argmin(1)
    signs = sgn[np.arange(len(x)), index]
    used, index = np.unique(index, return_inverse=True)
    return table_values[used], index.reshape(-1), signs


def _conv_layers(net):
    return [i for i, layer in enumerate(net.layers) if isinstance(layer, ir.ConvLayer)]


def _check_shared(net, convs):
    first = net.layers[convs[0]]
    for i in convs[1:]:
        layer = net.layers[i]
        if layer.kernel_size != first.kernel_size:
            raise ir.IRError(f"cluster_network: one kernel table for the whole network needs "
                             f"equal kernel sizes, but layers[{convs[0]}] has "
                             f"{first.kernel_size}x{first.kernel_size} kernels and layers[{i}] "
                             f"{layer.kernel_size}x{layer.kernel_size}; use per_layer=True")
        if layer.weight_levels != first.weight_levels:
            raise ir.IRError(f"cluster_network: one kernel table for the whole network needs "
                             f"equal weight levels, but layers[{convs[0]}] has "
                             f"{list(first.weight_levels)} ({first.weight_kind}) and layers[{i}] "
                             f"{list(layer.weight_levels)} ({layer.weight_kind}); use "
                             f"per_layer=True")


def _allowed_levels(layer, where, sign):
    levels = layer.weight_levels
    if not sign:
        return levels
    sym = [v for v in levels if -v in levels]
    if not sym:
        raise ir.IRError(f"cluster_network: sign=True needs levels whose negation is in the "
                         f"table, and {where} has none ({list(levels)})")
    return sym


def _to_codes(table_values, levels, k):
    code_of = {}
    for code, v in enumerate(levels):
        code_of.setdefault(int(v), code)
    lookup = np.vectorize(lambda v: code_of[int(v)], otypes=[np.int64])
    return lookup(table_values).reshape(-1, k, k) if table_values.size else \
        np.zeros((0, k, k), np.int64)


def cluster_network(net, kernels, *, per_layer=True, sign=True, seed=0, n_init=4):
    """Replace the conv kernels of ``net`` by at most ``kernels`` representatives.

    Parameters
    ----------
    net : :class:`qnnfab.ir.Network` with at least one conv layer (integer weights)
    kernels : int >= 1, K: the table size (an upper bound; rounding may merge entries). With
        ``per_layer``, each layer gets ``min(K, its kernels)``.
    per_layer : bool, one table per conv layer (default) instead of one for the network (which
        needs equal kernel sizes and equal weight levels in every conv layer)
    sign : bool, a ±1 sign per kernel (:func:`signed_kmeans`, default); a kernel and its
        negation share an entry. Representatives then use only levels whose negation exists.
        The defaults are the setting that keeps most accuracy on digits-cnn, as clustered and
        fine-tuned (``make bench-cluster``).
    seed, n_init : the k-means++ initialisation (see :func:`kmeans`)

    k-means runs on the weight *values* (``weight_levels[codes]``) of the flattened ``k·k``
    kernels, each distinct kernel weighted by its count. When K is at least the number of
    distinct kernels the table is those kernels and nothing changes. Each representative is
    rounded to the nearest level (:func:`round_to_levels`), duplicate representatives are
    merged, every kernel takes its nearest rounded representative (and best sign), and unused
    entries are dropped. Thresholds and non-conv layers are unchanged.

    Returns ``(network, stats)``: a new validated network whose conv layers carry a
    :class:`qnnfab.ir.KernelCodebook` and the decoded weights, and a JSON-serializable dict
    (also stored in ``meta["clustering"]``) with ``layers`` (one entry per conv layer) and
    ``total``. Each has ``kernels``, ``distinct`` (distinct kernels before), ``K`` (table
    entries; per layer of a shared table: entries the layer uses), ``reduction``
    (``1 - K/kernels``; the total counts a shared table once), ``bits_before`` (every kernel at
    the code width), ``bits_after`` (indices, sign bits and the table; a shared table in the
    total only), ``ratio`` (before / after; None for a layer of a shared one-entry table: it
    stores nothing per kernel), ``mse`` (mean squared error per weight value) and
    ``kernel_error`` (mean over kernels of the squared distance to the representative).
    """
    if not isinstance(net, ir.Network):
        raise TypeError(f"cluster_network: expected an ir.Network, not {type(net).__name__}")
    try:
        kernels = operator.index(kernels)
    except TypeError:
        raise TypeError(f"cluster_network: kernels must be an integer, not {kernels!r}") \
            from None
    if kernels < 1:
        raise ValueError(f"cluster_network: kernels must be >= 1, got {kernels}")
    net.require_integer("kernel clustering")
    convs = _conv_layers(net)
    if not convs:
        raise ir.IRError("cluster_network: the network has no conv layers (kernel clustering "
                         "works on the 2D kernels of conv layers)")
    if not per_layer:
        _check_shared(net, convs)
    values = {}
    for i in convs:
        layer = net.layers[i]
        k = layer.kernel_size
        lv = np.asarray(layer.weight_levels, dtype=np.int64)
        values[i] = lv[np.asarray(layer.weights, dtype=np.int64)].reshape(-1, k * k)

    groups = [[i] for i in convs] if per_layer else [convs]
    tables, assign = {}, {}
    for group in groups:
        first = net.layers[group[0]]
        allowed = _allowed_levels(first, f"layers[{group[0]}]", sign)
        vals = np.concatenate([values[i] for i in group])
        k_group = min(kernels, len(vals))
        table = _cluster_values(vals, k_group, sign, seed, n_init)
        rounded = round_to_levels(table, allowed)
        table_values, index, signs = _finish_table(rounded, vals, sign)
        start = 0
        for i in group:
            n = len(values[i])
            assign[i] = (index[start:start + n], signs[start:start + n])
            start += n
        tables[tuple(group)] = table_values

    layers = list(net.layers)
    per, total_bits_before, total_bits_after = [], 0, 0
    total_sq, total_weights, total_kernels = 0.0, 0, 0
    for group, table_values in tables.items():
        first = net.layers[group[0]]
        k = first.kernel_size
        code_bits = numerics.weight_code_bits(first.weight_levels)
        table_codes = _to_codes(table_values, first.weight_levels, k)
        table_bits = len(table_values) * k * k * code_bits
        for i in group:
            layer = net.layers[i]
            index, signs = assign[i]
            cout, cin = layer.out_channels, layer.in_channels
            kc = ir.KernelCodebook(index=index.reshape(cout, cin).astype(np.int64),
                                   kernels=table_codes.copy(),
                                   sign=signs.reshape(cout, cin).astype(np.int64) if sign
                                   else None)
            new = ir.ConvLayer(
                in_channels=cin, out_channels=cout, height=layer.height, width=layer.width,
                kernel_size=k, padding=layer.padding, in_bits=layer.in_bits,
                weight_kind=layer.weight_kind, weights=kc.decode(layer.weight_levels),
                thresholds=layer.thresholds, threshold_sign=layer.threshold_sign,
                name=layer.name, codebook=layer.codebook, kernel_codebook=kc)
            layers[i] = new
            approx = table_values[index] * signs[:, None]
            sq = float(((values[i] - approx) ** 2).sum())
            n = len(values[i])
            bits_before = n * k * k * code_bits
            bits_after = n * (kc.index_bits + int(sign)) + (table_bits if per_layer else 0)
            k_used = len(table_values) if per_layer else len(np.unique(index))
            distinct = len(np.unique(values[i], axis=0))
            per.append({"layer": i, "name": layer.name, "kernel_size": k, "kernels": n,
                        "distinct": distinct, "K": k_used,
                        "reduction": 1 - k_used / n, "bits_before": bits_before,
                        "bits_after": bits_after,
                        "ratio": bits_before / bits_after if bits_after else None,
                        "mse": sq / (n * k * k), "kernel_error": sq / n})
            total_bits_before += bits_before
            total_bits_after += bits_after
            total_sq += sq
            total_weights += n * k * k
            total_kernels += n
        if not per_layer:
            total_bits_after += table_bits
    k_total = sum(len(t) for t in tables.values())
    all_values = [values[i] for i in convs]
    if per_layer:
        distinct_total = sum(p["distinct"] for p in per)
    else:
        distinct_total = len(np.unique(np.concatenate(all_values), axis=0))
    total = {"kernels": total_kernels, "distinct": distinct_total, "K": k_total,
             "reduction": 1 - k_total / total_kernels, "bits_before": total_bits_before,
             "bits_after": total_bits_after, "ratio": total_bits_before / total_bits_after,
             "mse": total_sq / total_weights, "kernel_error": total_sq / total_kernels}
    stats = {"kernels_requested": kernels, "per_layer": bool(per_layer), "sign": bool(sign),
             "seed": int(seed), "layers": per, "total": total}
    out = net.replace(layers=layers, meta={**net.meta, "clustering": stats})
    return out.validate(), stats


# -- sweeps and plots ------------------------------------------------------------------------------

def sweep(net, ks, accuracy, **options):
    """Cluster ``net`` with each ``K`` of ``ks`` and measure it: a list of rows, the first the
    unclustered baseline (``K`` None, reduction 0), then one per ``K`` with ``K_used``,
    ``reduction``, ``ratio``, ``mse`` and ``accuracy``. ``accuracy(network) -> float`` is the
    caller's measure (e.g. golden-model accuracy on a test split); ``options`` go to
    :func:`cluster_network`."""
    rows = [{"K": None, "K_used": None, "reduction": 0.0, "ratio": 1.0, "mse": 0.0,
             "accuracy": float(accuracy(net))}]
    for k in ks:
        clustered, stats = cluster_network(net, k, **options)
        t = stats["total"]
        rows.append({"K": int(k), "K_used": t["K"], "reduction": t["reduction"],
                     "ratio": t["ratio"], "mse": t["mse"],
                     "accuracy": float(accuracy(clustered))})
    return rows


SERIES_COLOURS = ("#3b6fb6", "#d0452f", "#2e9b4f", "#8a4fb0", "#c08a1e", "#1a9ba8",
                  "#b8407a", "#5a5a5a")


def sweep_plot_svg(rows, *, baseline=None, title="Kernel clustering: accuracy vs kernel "
                                                  "reduction"):
    """An SVG (text) of accuracy against kernel reduction: one labelled point per ``K``, one
    line and colour per ``series`` (an optional row key, e.g. the clustering mode), and the
    unclustered accuracy as a dashed horizontal line. ``rows`` as from :func:`sweep`: dicts
    with ``K``, ``reduction`` and ``accuracy``; a row with ``K`` None is the baseline unless
    ``baseline`` (an accuracy) is given. The reduction axis spans the points (with a margin).
    No plotting library needed."""
    series = {}
    for row in rows:
        try:
            k, red, acc = row["K"], float(row["reduction"]), float(row["accuracy"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"sweep_plot_svg: expected rows with K, reduction and accuracy, "
                             f"got {row!r} ({e})") from None
        if not (math.isfinite(red) and math.isfinite(acc)):
            raise ValueError(f"sweep_plot_svg: expected finite reduction and accuracy, got "
                             f"{row!r}")
        if k is None:
            baseline = acc if baseline is None else baseline
        else:
            series.setdefault(str(row.get("series", "")), []).append(
                (red, acc, row.get("K_used", k)))
    points = [p for pts in series.values() for p in pts]
    if not points:
        raise ValueError("sweep_plot_svg: no clustered rows (rows with a K) to plot")
    accs = [p[1] for p in points] + ([float(baseline)] if baseline is not None else [])
    lo, hi = min(accs), max(accs)
    pad = 0.05 * (hi - lo) if hi > lo else 0.5
    lo, hi = lo - pad, hi + pad
    reds = [p[0] for p in points]
    span = max(reds) - min(reds)
    x0 = max(0.0, min(reds) - max(0.02, 0.1 * span))
    x1 = min(1.0, max(reds) + max(0.02, 0.1 * span))
    left, top, width, height = 90, 40, 560, 240

    def x_of(r):
        return left + (r - x0) * width / (x1 - x0)

    def y_of(v):
        return top + height * (hi - v) / (hi - lo)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 60}" '
           f'height="{top + height + 60 + 16 * len(series)}" font-family="sans-serif" '
           f'font-size="12">',
           f'<text x="{left}" y="20" font-size="14">{escape(str(title))}</text>',
           f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" '
           f'stroke="#888"/>',
           f'<text x="5" y="{top + 4}">{hi:.4g}</text>',
           f'<text x="5" y="{top + height + 4}">{lo:.4g}</text>']
    if baseline is not None:
        y = y_of(float(baseline))
        out.append(f'<line class="baseline" x1="{left}" y1="{y:.1f}" x2="{left + width}" '
                   f'y2="{y:.1f}" stroke="#888" stroke-dasharray="6 4" stroke-width="1.5"/>')
    y_axis = top + height
    for n, (name, pts) in enumerate(series.items()):
        colour = SERIES_COLOURS[n % len(SERIES_COLOURS)]
        pts = sorted(pts)
        line = " ".join(f"{x_of(r):.1f},{y_of(a):.1f}" for r, a, _ in pts)
        out.append(f'<polyline points="{line}" fill="none" stroke="{colour}" '
                   f'stroke-width="1.5"/>')
        for r, a, k in pts:
            out.append(f'<circle class="point" cx="{x_of(r):.1f}" cy="{y_of(a):.1f}" r="4" '
                       f'fill="{colour}"><title>{escape(name)} K={escape(str(k))}: reduction '
                       f'{r:.3f}, accuracy {a:.4g}</title></circle>')
            out.append(f'<text x="{x_of(r) + 5:.1f}" y="{y_of(a) - 6:.1f}" font-size="10">'
                       f'{escape(str(k))}</text>')
        if name:
            out.append(f'<text x="{left}" y="{y_axis + 52 + 16 * n}" fill="{colour}">'
                       f'{escape(name)}</text>')
    out.append(f'<text x="{left}" y="{y_axis + 16}">reduction {x0:.3g}</text>')
    out.append(f'<text x="{left + width - 90}" y="{y_axis + 16}">reduction {x1:.3g}</text>')
    out.append(f'<text x="{left}" y="{y_axis + 34}">points labelled with K; kernel reduction '
               f'= 1 - representatives / kernels; dashed: unclustered</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
