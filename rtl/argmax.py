"""Argmax over a vector of signed scores (the first index wins ties)."""

import operator

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from . import timing
from ._checks import quiet_on_error

__all__ = ["Argmax", "argmax_layout", "comparator_tree"]


def argmax_layout(n, width):
    """The output payload: ``{"cls": unsigned(max(1, ceil_log2(n))), "scores": ...}``."""
    return data.StructLayout({
        "cls": unsigned(max(1, ceil_log2(n))),
        "scores": data.ArrayLayout(signed(width), n),
    })


class Argmax(wiring.Component):
    """The index of the largest of ``n`` signed scores, passed on with the scores.

    Parameters
    ----------
    n : int
        Number of scores.
    width : int
        Width of each signed score.

    Members
    -------
    i : In(stream.Signature(ArrayLayout(signed(width), n)))
    o : Out(stream.Signature(argmax_layout(n, width)))
        ``cls`` is the first index of the maximum.

    Sequential, one score every two cycles: the selected score is registered (an ``n``-way
    multiplexer), compared with the running maximum into a register, and the maximum updated
    the cycle after, so no path is longer than one comparator or one multiplexer, whatever
    ``n``. (One score per cycle put comparator, enable logic and the maximum's clock enable on
    one path, the design's critical path at ~51 MHz on the iCE40 UP5K; the network's slowest
    layer takes far more than ``2n`` cycles anyway.) The scores are passed through from the
    held input payload (the unit before holds them in its output register; a second copy would
    cost ``n·width`` flip-flops), so the input is acknowledged only with the output:
    ``i.ready = o.valid & o.ready``.

    ``tree``: a comparator tree instead, a register after each of its ``L = max(1,
    ceil(log2 n))`` levels, computing free-running on the held scores; ``o.valid`` after ``L``
    cycles (a chain of valid bits, cleared by the transfer). ``n - 1`` comparators instead of
    one: for networks whose layers are faster than ``2n + 2`` cycles (see
    :func:`qnnfab.rtl.timing.argmax_needs_tree`), where the sequential one set the pace.

    Latency: :attr:`latency` = ``2n + 1`` cycles from ``i.valid`` to ``o.valid`` (tree: ``L``).
    Throughput: one vector per :attr:`interval` = ``2n + 2`` cycles (tree: ``L + 1``).
    """

    @quiet_on_error
    def __init__(self, *, n, width, tree=False):
        self.n = operator.index(n)
        self.width = operator.index(width)
        self.tree = bool(tree)
        if self.n < 1 or self.width < 1:
            raise ValueError(f"n and width must be >= 1, not n={self.n} width={self.width}")
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(signed(self.width), self.n))),
            "o": Out(stream.Signature(argmax_layout(self.n, self.width))),
        })

    @property
    def latency(self):
        """Cycles from ``i.valid`` (unit idle) to ``o.valid`` (:func:`qnnfab.rtl.timing.argmax`)."""
        return timing.argmax(self.n, tree=self.tree).latency

    @property
    def interval(self):
        """Cycles between vectors with an eager source and sink."""
        return timing.argmax(self.n, tree=self.tree).interval

    def elaborate(self, platform):
        if self.tree:
            return self._elaborate_tree()
        m = Module()
        n = self.n
        idx_shape = unsigned(max(1, ceil_log2(n)))
        k = Signal(range(n + 1))            # next score to select
        phase = Signal()                     # a score was selected last cycle
        # Scores are compared as unsigned numbers with the sign bit flipped (order preserving),
        # a plain carry chain without the sign-handling logic of a signed comparison.
        sel = Signal(self.width)             # stage 1: the score selected ...
        sel_idx = Signal(idx_shape)          # ... and its index
        sel_first, sel_last, sel_valid = Signal(), Signal(), Signal()
        gt = Signal()                        # stage 2: take ``sel`` as the new maximum
        upd_last = Signal()
        best = Signal(self.width)
        best_idx = Signal(idx_shape)
        done = Signal()
        scores = self.i.payload
        m.d.comb += [self.o.valid.eq(self.i.valid & done),
                     self.i.ready.eq(self.o.valid & self.o.ready),
                     self.o.payload.cls.eq(best_idx), self.o.payload.scores.eq(scores)]
        # ``o.ready`` (from the consumer) only clears ``done``: selection is blocked by ``done``
        # and restarts from ``k = 0``, reset when the last update is done.
        select = Signal()
        m.d.comb += select.eq(self.i.valid & ~done & (k < n) & ~phase)
        m.d.sync += phase.eq(select)
        with m.If(select):
            with m.Switch(k):
                for j in range(n):
                    with m.Case(j):
                        m.d.sync += sel.eq(scores[j].as_unsigned() ^ (1 << (self.width - 1)))
            m.d.sync += [sel_idx.eq(k), sel_first.eq(k == 0), sel_last.eq(k == n - 1),
                         k.eq(k + 1)]
        m.d.sync += [sel_valid.eq(select),
                     # Strictly greater: ties keep the earlier (lower) index. ``best`` is
                     # up to date: it was last written the cycle ``sel`` was.
                     gt.eq(sel_valid & (sel_first | (sel > best))),
                     upd_last.eq(sel_valid & sel_last)]
        # ``sel`` and ``sel_idx`` still hold the compared score: the next one is selected
        # now, at the same clock edge as this update.
        with m.If(gt):
            m.d.sync += [best.eq(sel), best_idx.eq(sel_idx)]
        with m.If(upd_last):
            m.d.sync += [done.eq(1), k.eq(0)]
        with m.If(self.i.ready):
            m.d.sync += done.eq(0)
        return m

    def _elaborate_tree(self):
        m = Module()
        scores = self.i.payload
        cls, _, levels = comparator_tree(m, [scores[j] for j in range(self.n)], name="l",
                                         min_levels=1)
        assert levels == self.latency
        # valid[k]: the held scores have been in the tree for k + 1 cycles.
        valid = [Signal(name=f"valid{k}") for k in range(levels)]
        xfer = Signal()
        m.d.comb += [self.o.valid.eq(self.i.valid & valid[-1]),
                     self.i.ready.eq(xfer), xfer.eq(self.o.valid & self.o.ready),
                     self.o.payload.cls.eq(cls), self.o.payload.scores.eq(scores)]
        with m.If(xfer):
            m.d.sync += [v.eq(0) for v in valid]
        with m.Else():
            m.d.sync += [valid[0].eq(self.i.valid)]
            m.d.sync += [valid[k].eq(valid[k - 1]) for k in range(1, levels)]
        return m


def comparator_tree(m, scores, *, name="am", delay_scores=False, min_levels=0):
    """The argmax of signed ``scores`` (values, valid in the same cycle) as a comparator tree
    in module ``m``, a register after each of its ``ceil(log2 n)`` levels (at least
    ``min_levels``; no reset, no enable: the caller delays its valid bit alike). Returns
    ``(cls, scores, levels)``: the index of the first largest score, ``levels`` cycles later,
    and the scores, delayed alike when ``delay_scores`` (else as given)."""
    n = len(scores)
    idx_shape = unsigned(max(1, (n - 1).bit_length()))
    cands = [(Const(j, idx_shape), s) for j, s in enumerate(scores)]
    level = 0
    while len(cands) > 1 or level < min_levels:
        nxt = []
        for j in range(0, len(cands), 2):
            pair = cands[j:j + 2]
            tag = f"{j // 2}" if len(pair) == 2 else "_odd"
            idx = Signal(idx_shape, name=f"{name}{level}_idx{tag}", reset_less=True)
            best = Signal(pair[0][1].shape(), name=f"{name}{level}_best{tag}",
                          reset_less=True)
            if len(pair) == 2:
                (ia, sa), (ib, sb) = pair
                gt = sb > sa                   # strictly: a tie keeps the lower index
                m.d.sync += [idx.eq(Mux(gt, ib, ia)), best.eq(Mux(gt, sb, sa))]
            else:
                m.d.sync += [idx.eq(pair[0][0]), best.eq(pair[0][1])]
            nxt.append((idx, best))
        if delay_scores:
            delayed = []
            for j, s in enumerate(scores):
                r = Signal(s.shape(), name=f"{name}{level}_score{j}", reset_less=True)
                m.d.sync += r.eq(s)
                delayed.append(r)
            scores = delayed
        cands = nxt
        level += 1
    return cands[0][0], scores, level
