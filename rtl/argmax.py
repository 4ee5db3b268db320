"""Argmax over a vector of signed scores (the first index wins ties)."""

import operator

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ._checks import quiet_on_error

__all__ = ["Argmax", "argmax_layout"]


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

    Sequential: one score per cycle is selected (a registered ``n``-way multiplexer) and
    compared with the running maximum, so no path is longer than one comparator, whatever
    ``n``. The scores are passed through from the held input payload (the unit before holds
    them in its output register; a second copy would cost ``n·width`` flip-flops), so the input
    is acknowledged only with the output: ``i.ready = o.valid & o.ready``.

    Latency: :attr:`latency` = ``n + 1`` cycles from ``i.valid`` to ``o.valid``.
    Throughput: one vector per ``n + 2`` cycles.
    """

    @quiet_on_error
    def __init__(self, *, n, width):
        self.n = operator.index(n)
        self.width = operator.index(width)
        if self.n < 1 or self.width < 1:
            raise ValueError(f"n and width must be >= 1, not n={self.n} width={self.width}")
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(signed(self.width), self.n))),
            "o": Out(stream.Signature(argmax_layout(self.n, self.width))),
        })

    @property
    def latency(self):
        """Cycles from ``i.valid`` (unit idle) to ``o.valid``."""
        return self.n + 1

    @property
    def interval(self):
        """Cycles between vectors with an eager source and sink."""
        return self.n + 2

    def elaborate(self, platform):
        m = Module()
        n = self.n
        idx_shape = unsigned(max(1, ceil_log2(n)))
        k = Signal(range(n + 1))            # next score to select
        # Scores are compared as unsigned numbers with the sign bit flipped (order preserving),
        # a plain carry chain without the sign-handling logic of a signed comparison.
        sel = Signal(self.width)             # the score selected last cycle (offset) ...
        sel_idx = Signal(idx_shape)          # ... and its index
        sel_valid = Signal()
        best = Signal(self.width)
        best_idx = Signal(idx_shape)
        done = Signal()
        scores = self.i.payload
        m.d.comb += [self.o.valid.eq(self.i.valid & done),
                     self.i.ready.eq(self.o.valid & self.o.ready),
                     self.o.payload.cls.eq(best_idx), self.o.payload.scores.eq(scores)]
        sel_first = Signal()
        sel_last = Signal()
        with m.If(self.i.ready):
            m.d.sync += [done.eq(0), k.eq(0)]
        with m.Elif(self.i.valid & (k < n)):
            with m.Switch(k):
                for j in range(n):
                    with m.Case(j):
                        m.d.sync += sel.eq(scores[j].as_unsigned() ^ (1 << (self.width - 1)))
            m.d.sync += [sel_idx.eq(k), sel_first.eq(k == 0), sel_last.eq(k == n - 1),
                         k.eq(k + 1)]
        m.d.sync += sel_valid.eq(~self.i.ready & self.i.valid & (k < n))
        # Strictly greater: ties keep the earlier (lower) index. Kept to one comparator and
        # one LUT in front of the register enable: this loop is the unit's critical path.
        with m.If(sel_valid & (sel_first | (sel > best))):
            m.d.sync += [best.eq(sel), best_idx.eq(sel_idx)]
        with m.If(sel_valid & sel_last):
            m.d.sync += done.eq(1)
        return m
