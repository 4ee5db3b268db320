"""Constant-weight adder graphs: a layer's dot products as shared trees of two-input adders,
built by a greedy common-subexpression (CSE) pass. numpy only; the unrolled layers
(:mod:`qnnfab.rtl.unrolled_dense`) turn a graph into pipelined logic
(:mod:`qnnfab.rtl.adder_tree`) and the fit estimate (:mod:`qnnfab.rtl.estimate`) counts its
adders.

The problem. Row ``r`` of a dense layer computes ``Σ_j w[r, j]·x[j]`` (``x[j]`` the input
*code*: 0/1 for a binary activation, ``0 .. 2**bits - 1`` otherwise; the ±1 map of binary
activations is an affine correction applied by the caller). Each weight is written in
canonical signed digits (CSD), ``w = Σ_s d_s·2**s`` with ``d_s ∈ {-1, +1}``: a binary or ternary
weight is one digit (or none: a ternary zero drops the input), a codebook level a few. A row
is then a signed sum of *terms*, each a leaf ``x[j] << s`` or, later, a node of the graph.

The graph. Nodes are leaves or adders ``a + rel·b`` (``rel = ±1``, ``a`` the lower node
number, always added); a row reaches its node with a sign of its own, so ``x1 + x2`` and
``-x1 - x2`` share one adder, as do ``x1 - x2`` and ``x2 - x1``. In hardware a subtraction
costs what an addition costs (the carry chain's ``B`` input is inverted for free).

Level by level. The terms of every row are paired level by level, as in a balanced tree: at
level ``k`` each row pairs its terms into nodes of depth ``k + 1`` (an odd one out passes to the
next level unchanged). So a row of ``n`` terms is summed in exactly ``ceil(log2 n)`` adder
levels and the pipeline depth of a layer, :func:`tree_depth`, is known from the weights alone,
before any graph is built. The pairing at each level is greedy CSE (Hartley's pairwise
method, restricted to a level): count, over all rows, how often each pair of that level's
terms occurs with each relative sign (two matrix products of the rows' sign matrix), take the
most frequent pair, make it one node for every row that has both terms with that relative
sign, take both terms out of those rows, update the counts, and repeat while a pair occurs in
two rows or more. The rest of each row is paired privately (identical private pairs are still
made once). A pair found in ``c`` rows saves ``c - 1`` adders.

This is the "weights in logic" trick of da4ml (Sun et al., 2025), without its cost model:
every adder is counted alike by the greedy pass, while the LUT cost of an adder grows with
its width (see :func:`adder_cost`, what :class:`CseStats` and the fit estimate count).
"""

import operator
from dataclasses import dataclass, field

import numpy as np

from qnnfab import ir, numerics

__all__ = ["csd", "row_terms", "tree_depth", "AdderGraph", "build_adder_graph", "adder_cost",
           "CHAIN_MIN_WIDTH", "CHAIN_MAX_BITS", "CHAIN_OVERHEAD",
           "layer_matrix", "graph_for_layer", "cached_graph", "UnrollError", "CseStats"]


class UnrollError(ValueError):
    """A layer cannot be unrolled (the message names the layer and why)."""


def csd(value):
    """The canonical signed digits of an integer: ``[(shift, ±1), ...]`` with no two adjacent
    nonzero digits, lowest shift first; ``sum(d << s) == value``. ``csd(0) == []``,
    ``csd(3) == [(0, -1), (2, 1)]``, ``csd(-6) == [(1, 1), (3, -1)]``."""
    value = operator.index(value)
    out = []
    s = 0
    while value:
        if value & 1:
            d = 2 - (value & 3)         # +1 when value ≡ 1 (mod 4), -1 when ≡ 3
            out.append((s, d))
            value -= d
        value >>= 1
        s += 1
    return out


def layer_matrix(layer, where="layer"):
    """The signed integer weight matrix ``(out, in)`` of a dense layer (its levels applied);
    :class:`UnrollError` naming ``where`` for a layer that is not dense."""
    if not isinstance(layer, ir.DenseLayer):
        raise UnrollError(f"{where}: only dense layers are unrolled, not "
                          f"{type(layer).__name__} (conv and pool layers stay folded)")
    levels = np.asarray(layer.weight_levels, dtype=np.int64)
    return levels[np.asarray(layer.weights, dtype=np.int64)]


def row_terms(matrix):
    """Nonzero CSD digits per row of an integer matrix (the terms each row sums)."""
    matrix = np.asarray(matrix, dtype=np.int64)
    digits = {int(v): len(csd(int(v))) for v in np.unique(matrix)}
    lut = np.vectorize(digits.get, otypes=[np.int64])
    return lut(matrix).sum(axis=1) if matrix.size else np.zeros(len(matrix), np.int64)


def tree_depth(matrix):
    """Adder levels of the graph of ``matrix`` (what :func:`build_adder_graph` makes):
    ``ceil(log2 n)`` for the row with the most terms ``n`` (0 for at most one term)."""
    n = int(row_terms(matrix).max(initial=0))
    return max(0, (n - 1).bit_length())


#: Adders with results this wide or wider share carry chains in the hardware
#: (:mod:`qnnfab.rtl.adder_tree`); narrower ones map to LUTs (a 2+2-bit sum takes 3 LUT4s on
#: the ECP5, a 3+3-bit one 10 as LUTs and 5 as a chain segment).
CHAIN_MIN_WIDTH = 4

#: Longest shared carry chain, in bits (separators included): long enough to spread nextpnr's
#: per-chain cells over a few adders, short enough for timing (static timing analysis runs a
#: path on through the whole chain: with 64-bit chains digits-tnn placed at 41.8 MHz on the
#: ECP5-85F) and to place freely.
CHAIN_MAX_BITS = 32

#: nextpnr-ecp5's cells per carry chain beyond its bits (feed-in and feed-out; measured: 16
#: separate 5+5-bit adders, 96 carry LUT4s, pack to 162 cells; one 96-bit adder to 104).
CHAIN_OVERHEAD = 6


def adder_cost(width):
    """Modelled ECP5 LUT4s of one adder whose result is ``width`` bits wide (the cost model of
    :attr:`AdderGraph.cost`): ``width`` LUT4s below :data:`CHAIN_MIN_WIDTH` (Yosys maps them
    to plain LUTs: 1+1 bits 2 LUT4s, 2+2 bits 3); a segment of a shared carry chain above,
    one LUT4 per bit and one for its separator, plus its share of the chain's
    :data:`CHAIN_OVERHEAD` (``CCU2C`` cells hold two LUT4s each)."""
    width = operator.index(width)
    if width < CHAIN_MIN_WIDTH:
        return width
    return (width + 1) * (1 + CHAIN_OVERHEAD / CHAIN_MAX_BITS)


@dataclass
class CseStats:
    """What the CSE pass saved on one graph: ``adders`` with it, ``adders_plain`` without
    (one private tree per row: ``Σ (terms - 1)``), and the same in estimated LUT4s
    (:func:`adder_cost` of each adder's width)."""
    adders: int
    adders_plain: int
    cost: int
    cost_plain: int

    @property
    def saved(self):
        """Share of the plain adders the pass removed."""
        return 1 - self.adders / self.adders_plain if self.adders_plain else 0.0

    @property
    def cost_saved(self):
        return 1 - self.cost / self.cost_plain if self.cost_plain else 0.0


@dataclass
class AdderGraph:
    """Shared adder trees of a constant matrix.

    Attributes
    ----------
    n_inputs, in_bits : int
        Inputs are codes ``0 .. 2**in_bits - 1``.
    leaves : list of (input, shift)
        Nodes ``0 .. len(leaves) - 1``: the value ``x[input] << shift``.
    adders : list of (a, b, rel)
        Node ``len(leaves) + k`` is ``node a + rel·node b`` (``a < b`` for shared pairs).
    depth : list of int
        Adder levels under each node (0 for a leaf).
    lo, hi : list of int
        The range of each node's value.
    rows : list of (node or None, sign)
        Row ``r``'s sum is ``sign·value(node)`` (0 for None: a row of zero weights).
    levels : int
        :func:`tree_depth` of the matrix: every root is at most this deep.
    shared : int
        Adders the greedy pass made for pairs found in two rows or more.
    plain_adders, plain_cost : int
        The same matrix summed with one private tree per row (no sharing): its adders and
        estimated LUT4s, what :class:`CseStats` compares with.
    """
    n_inputs: int
    in_bits: int
    leaves: list
    adders: list = field(default_factory=list)
    depth: list = field(default_factory=list)
    lo: list = field(default_factory=list)
    hi: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    levels: int = 0
    shared: int = 0
    plain_adders: int = 0
    plain_cost: int = 0

    def width(self, node):
        """Bits of ``node``'s value (signed when it can be negative)."""
        lo, hi = self.lo[node], self.hi[node]
        if lo >= 0:
            return max(1, hi.bit_length())
        return numerics.signed_width(lo, hi)

    def is_leaf(self, node):
        return node < len(self.leaves)

    @property
    def cost(self):
        """Estimated LUT4s of the adders (:func:`adder_cost` of each result width)."""
        n = len(self.leaves)
        return round(sum(adder_cost(self.width(n + k)) for k in range(len(self.adders))))

    @property
    def stats(self):
        return CseStats(adders=len(self.adders), adders_plain=self.plain_adders,
                        cost=self.cost, cost_plain=self.plain_cost)

    def row_range(self, r):
        """``(lo, hi)`` of row ``r``'s sum ``sign·value(node)``."""
        node, sign = self.rows[r]
        if node is None:
            return 0, 0
        lo, hi = self.lo[node], self.hi[node]
        return (lo, hi) if sign > 0 else (-hi, -lo)

    def evaluate(self, x):
        """The row sums for input codes ``x`` (shape ``(batch, n_inputs)``), by walking the
        graph: a check of the graph against ``matrix @ x`` (tests)."""
        x = np.asarray(x, dtype=np.int64)
        vals = [x[:, i] << s for i, s in self.leaves]
        for a, b, rel in self.adders:
            vals.append(vals[a] + rel * vals[b])
        out = np.zeros((x.shape[0], len(self.rows)), dtype=np.int64)
        for r, (node, sign) in enumerate(self.rows):
            if node is not None:
                out[:, r] = sign * vals[node]
        return out


class _Builder:
    """Node bookkeeping shared by the CSE pass and the plain trees."""

    def __init__(self, graph, share):
        self.g = graph
        self.share = share
        self.index = {}            # (a, b, rel) -> node

    def node(self, a, b, rel):
        g = self.g
        if a > b:                  # b + rel·a == rel·(a + rel·b)
            a, b = b, a
            sign = rel
        else:
            sign = 1
        key = (a, b, rel)
        if self.share and key in self.index:
            return self.index[key], sign
        n = len(g.leaves) + len(g.adders)
        g.adders.append(key)
        g.depth.append(max(g.depth[a], g.depth[b]) + 1)
        if rel > 0:
            g.lo.append(g.lo[a] + g.lo[b])
            g.hi.append(g.hi[a] + g.hi[b])
        else:
            g.lo.append(g.lo[a] - g.hi[b])
            g.hi.append(g.hi[a] - g.lo[b])
        if self.share:
            self.index[key] = n
        return n, sign


def _leaf_rows(matrix, in_bits):
    """``(leaves, rows)``: the leaf list and each row's terms ``{leaf: sign}``."""
    leaves, leaf_id, rows = [], {}, []
    top = (1 << in_bits) - 1
    for row in matrix:
        terms = {}
        for j in np.flatnonzero(row):
            for s, d in csd(int(row[j])):
                key = (int(j), s)
                if key not in leaf_id:
                    leaf_id[key] = len(leaves)
                    leaves.append(key)
                terms[leaf_id[key]] = d
        rows.append(terms)
    return leaves, rows, top


def _pair_private(builder, terms):
    """Pair a row's terms in node order (the odd one out passes); the next level's terms."""
    items = sorted(terms.items())
    out = {}
    for k in range(0, len(items) - 1, 2):
        (a, sa), (b, sb) = items[k], items[k + 1]
        n, sign = builder.node(a, b, sa * sb)
        out[n] = out.get(n, 0) + sa * sign
    if len(items) % 2:
        a, sa = items[-1]
        out[a] = out.get(a, 0) + sa
    return _clean(out)


def _clean(terms):
    """Drop cancelled terms (a node reached twice with opposite signs); a node reached twice
    with the same sign cannot occur in a level's pairing (each term is used once)."""
    out = {}
    for n, s in terms.items():
        if s == 0:
            continue
        if abs(s) != 1:
            raise AssertionError(f"node {n} reached with weight {s}")
        out[n] = s
    return out


def _cse_level(builder, rows, min_count):
    """One level of greedy pairing over ``rows`` (each ``{node: sign}``); returns the next
    level's rows. See the module docstring."""
    R = len(rows)
    counts = {}
    for terms in rows:
        for n in terms:
            counts[n] = counts.get(n, 0) + 1
    # Terms of one row cannot be in a shared pair: leave them out of the count matrices.
    cols = sorted(n for n, c in counts.items() if c >= min_count and c >= 2)
    nxt = [dict() for _ in range(R)]
    avail = [dict(t) for t in rows]
    if len(cols) >= 2:
        col_of = {n: k for k, n in enumerate(cols)}
        T = len(cols)
        M = np.zeros((R, T), dtype=np.float32)
        for r, terms in enumerate(rows):
            for n, s in terms.items():
                k = col_of.get(n)
                if k is not None:
                    M[r, k] = s
        P = np.abs(M)
        pp, mm = P.T @ P, M.T @ M                   # exact: small integers in float32
        same = np.rint((pp + mm) / 2).astype(np.int32)
        opp = np.rint((pp - mm) / 2).astype(np.int32)
        np.fill_diagonal(same, -1)
        np.fill_diagonal(opp, -1)
        ub = np.maximum(same.max(axis=1), opp.max(axis=1))
        while True:
            j = int(np.argmax(ub))
            if ub[j] < max(2, min_count):
                break
            ks, ko = int(np.argmax(same[j])), int(np.argmax(opp[j]))
            best = max(same[j, ks], opp[j, ko])
            if best < ub[j]:                        # a stale upper bound: tighten, retry
                ub[j] = best
                continue
            k, rel = (ks, 1) if same[j, ks] >= opp[j, ko] else (ko, -1)
            hit = np.flatnonzero((M[:, j] != 0) & (M[:, j] * M[:, k] == rel))
            A = M[hit]
            for c in (j, k):
                sc = A[:, c:c + 1] * A
                dec_s = (sc > 0).sum(axis=0).astype(np.int32)
                dec_o = (sc < 0).sum(axis=0).astype(np.int32)
                same[c, :] -= dec_s
                same[:, c] -= dec_s
                opp[c, :] -= dec_o
                opp[:, c] -= dec_o
            M[hit, j] = 0
            M[hit, k] = 0
            P[hit, j] = 0
            P[hit, k] = 0
            for c1, c2 in ((j, k), (k, j)):        # the pair itself was decremented twice
                pj, mj = P[:, c1] @ P[:, c2], M[:, c1] @ M[:, c2]
                same[c1, c2] = int(round((pj + mj) / 2))
                opp[c1, c2] = int(round((pj - mj) / 2))
            for c in (j, k):
                same[c, c] = opp[c, c] = -1
            a, b = cols[j], cols[k]
            node, sign = builder.node(a, b, rel)
            builder.g.shared += 1
            for r in hit.tolist():
                sa = avail[r].pop(a)
                avail[r].pop(b)
                nxt[r][node] = sa * sign
    for r in range(R):
        rest = _pair_private(builder, avail[r])
        for n, s in rest.items():
            if n in nxt[r]:
                raise AssertionError(f"row {r}: node {n} twice at one level")
            nxt[r][n] = s
    return nxt


def _plain_cost(leaves, rows, in_bits):
    """Adders and estimated LUT4s of one private balanced tree per row (no sharing)."""
    g = AdderGraph(n_inputs=0, in_bits=in_bits, leaves=list(leaves))
    top = (1 << in_bits) - 1
    g.depth = [0] * len(leaves)
    g.lo = [0] * len(leaves)
    g.hi = [top << s for _, s in leaves]
    b = _Builder(g, share=False)
    for terms in rows:
        while len(terms) > 1:
            terms = _pair_private(b, terms)
    return len(g.adders), g.cost


def build_adder_graph(matrix, in_bits, *, cse=True, min_count=2):
    """The :class:`AdderGraph` of an integer matrix ``(rows, inputs)`` over input codes of
    ``in_bits`` bits.

    Parameters
    ----------
    matrix : array of int
    in_bits : int
    cse : bool
        Share pairs between rows (the greedy pass); False: one private tree per row.
    min_count : int
        Rows a pair must occur in to be shared (at least 2).
    """
    matrix = np.asarray(matrix, dtype=np.int64)
    if matrix.ndim != 2:
        raise ValueError(f"matrix: expected 2 dimensions, got shape {matrix.shape}")
    in_bits = operator.index(in_bits)
    leaves, rows, top = _leaf_rows(matrix, in_bits)
    g = AdderGraph(n_inputs=matrix.shape[1], in_bits=in_bits, leaves=leaves)
    g.depth = [0] * len(leaves)
    g.lo = [0] * len(leaves)
    g.hi = [top << s for _, s in leaves]
    g.levels = tree_depth(matrix)
    g.plain_adders, g.plain_cost = _plain_cost(leaves, rows, in_bits)
    builder = _Builder(g, share=True)
    level = rows
    for _ in range(g.levels):
        if cse:
            level = _cse_level(builder, level, max(2, operator.index(min_count)))
        else:
            level = [_pair_private(builder, t) for t in level]
    for r, terms in enumerate(level):
        if len(terms) > 1:
            raise AssertionError(f"row {r}: {len(terms)} terms left after {g.levels} levels")
        g.rows.append(next(iter(terms.items())) if terms else (None, 1))
    assert all(d <= g.levels for d in g.depth)
    return g


def graph_for_layer(layer, *, cse=True, where="layer"):
    """:func:`build_adder_graph` of a dense layer's weights (see :func:`layer_matrix`)."""
    return build_adder_graph(layer_matrix(layer, where), layer.in_bits, cse=cse)


_CACHE = {}
_CACHE_SIZE = 64


def cached_graph(layer, *, cse=True, where="layer"):
    """:func:`graph_for_layer`, remembered by the layer's weights, levels and input bits (the
    unrolled layers and the fit estimate ask for the same graphs; the digits networks' take
    a second or two each to build)."""
    w = layer_matrix(layer, where)
    key = (w.shape, w.tobytes(), int(layer.in_bits), bool(cse))
    graph = _CACHE.get(key)
    if graph is None:
        graph = build_adder_graph(w, layer.in_bits, cse=cse)
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = graph
    return graph

