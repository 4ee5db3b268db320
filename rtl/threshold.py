"""Multi-threshold activation for ``PE`` neurons at a time.

The output code of neuron ``n`` is ``Σ_t [sign_n·acc_n >= T_{n,t}]`` where the accumulator is
an affine function of what the dot-product units sum, ``acc_n = scale·S_n + offset_n`` (see the
dot units' :meth:`offsets`). All of that is folded into per-neuron thresholds on ``S`` at
elaboration:

* sign +1: ``[scale·S + c >= T]  =  [S >= ceil((T - c) / scale)]``
* sign -1: ``[-(scale·S + c) >= T]  =  1 - [S >= floor((-T - c) / scale) + 1]``

so the hardware only compares ``S >= T'`` and, for a negative sign, returns
``n_thresholds - count``.
"""

import operator

import numpy as np
from amaranth.hdl import Const, Module, Shape, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from qnnfab import numerics

from . import timing
from ._checks import quiet_on_error

__all__ = ["MultiThreshold", "threshold_entries"]


def _shape_range(shape):
    shape = Shape.cast(shape)
    if shape.signed:
        return -(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1
    return 0, (1 << shape.width) - 1


def threshold_entries(thresholds, signs, *, scale=1, offsets=None, lo=None, hi=None):
    """``(T', neg)`` per neuron: thresholds on the raw sum ``S`` (``S >= T'``) and the flags of
    negative signs. ``T'`` is clamped to ``lo .. hi + 1`` (the reachable sums) when given."""
    t = np.asarray(thresholds, dtype=np.int64)
    signs = np.asarray(signs, dtype=np.int64)
    c = np.zeros(len(t), dtype=np.int64) if offsets is None else \
        np.asarray(offsets, dtype=np.int64)
    c = c[:, None]
    scale = int(scale)
    neg = signs < 0
    pos_t = -((c - t) // scale)                  # ceil((T - c) / scale)
    neg_t = (-t - c) // scale + 1                # floor((-T - c) / scale) + 1
    tp = np.where(neg[:, None], neg_t, pos_t)
    if lo is not None:
        tp = np.clip(tp, lo, hi + 1)
    return tp, neg


class MultiThreshold(wiring.Component):
    """Thresholds ``PE`` sums per cycle against per-neuron thresholds.

    The thresholds of the ``out_features / pe`` neuron groups live in a small ROM (constants
    when there is one group).

    Parameters
    ----------
    thresholds : array (out_features, T), ascending per row
    signs : array (out_features,) of ±1
    pe : int
        Neurons per cycle (divides ``out_features``).
    in_shape : shape of the sums ``S`` presented on ``acc``.
    scale : int >= 1, offsets : array (out_features,) of int, optional
        ``acc = scale·S + offset`` (default: ``S`` itself).

    Members
    -------
    addr : In(range(groups))
        Neuron group (neurons ``addr*pe .. addr*pe+pe-1``); read when ``en`` is high.
    en : In(1)
        Read enable of the threshold ROM.
    acc : In(ArrayLayout(in_shape, pe))
        Sums of the group, presented the cycle after ``addr``.
    o : Out(ArrayLayout(unsigned(out_bits), pe))
        Output codes, combinational from ``acc`` and the group read the cycle before.

    Latency: 1 cycle from ``addr`` (ROM read), 0 from ``acc``. Throughput: one group per cycle.
    """

    @quiet_on_error
    def __init__(self, *, thresholds, signs, pe, in_shape, scale=1, offsets=None):
        thresholds = np.asarray(thresholds, dtype=np.int64)
        signs = np.asarray(signs, dtype=np.int64)
        if thresholds.ndim != 2 or thresholds.shape[1] < 1:
            raise ValueError(f"thresholds: expected shape (out_features, T>=1), got "
                             f"{thresholds.shape}")
        out_features, self.n_thresholds = thresholds.shape
        if signs.shape != (out_features,):
            raise ValueError(f"signs: expected shape ({out_features},), got {signs.shape}")
        if offsets is not None and np.shape(offsets) != (out_features,):
            raise ValueError(f"offsets: expected shape ({out_features},), got "
                             f"{np.shape(offsets)}")
        self.scale = operator.index(scale)
        if self.scale < 1:
            raise ValueError(f"scale must be >= 1, not {self.scale}")
        self.pe = operator.index(pe)
        if self.pe < 1 or out_features % self.pe:
            raise ValueError(f"pe={self.pe} does not divide out_features={out_features}")
        self.groups = out_features // self.pe
        self.in_shape = Shape.cast(in_shape)
        lo, hi = _shape_range(self.in_shape)
        self._tp, self._neg = threshold_entries(thresholds, signs, scale=self.scale,
                                                offsets=offsets, lo=lo, hi=hi)
        self.t_width = numerics.signed_width(lo, hi + 1)
        self.out_bits = max(1, self.n_thresholds.bit_length())
        self.entry_layout = data.StructLayout({
            "t": data.ArrayLayout(signed(self.t_width), self.n_thresholds),
            "neg": unsigned(1),
        })
        self.word_layout = data.ArrayLayout(self.entry_layout, self.pe)
        super().__init__({
            "addr": In(range(max(2, self.groups))),
            "en": In(1, init=1),
            "acc": In(data.ArrayLayout(self.in_shape, self.pe)),
            "o": Out(data.ArrayLayout(unsigned(self.out_bits), self.pe)),
        })

    @property
    def latency(self):
        """Cycles from ``addr`` to ``o`` (the ROM read); ``o`` is combinational from ``acc``."""
        return timing.multi_threshold().latency

    @property
    def interval(self):
        """Cycles between groups: one group per cycle."""
        return timing.multi_threshold().interval

    def _word(self, g):
        value = 0
        pos = 0
        for p in range(self.pe):
            n = g * self.pe + p
            for t in range(self.n_thresholds):
                value |= (int(self._tp[n, t]) & ((1 << self.t_width) - 1)) << pos
                pos += self.t_width
            value |= int(self._neg[n]) << pos
            pos += 1
        return value

    def elaborate(self, platform):
        m = Module()
        width = self.word_layout.size
        if self.groups == 1:
            word = Const(self._word(0), width)
        else:
            mem = Memory(shape=width, depth=self.groups,
                         init=[self._word(g) for g in range(self.groups)])
            m.submodules.mem = mem
            rd = mem.read_port()
            m.d.comb += [rd.addr.eq(self.addr), rd.en.eq(self.en)]
            word = rd.data
        entries = data.View(self.word_layout, word)
        for p in range(self.pe):
            acc = self.acc[p]
            bits = [acc >= entries[p].t[t] for t in range(self.n_thresholds)]
            if self.n_thresholds == 1:
                m.d.comb += self.o[p].eq(bits[0] ^ entries[p].neg)
            else:
                count = sum(bits[1:], bits[0])
                with m.If(entries[p].neg):
                    m.d.comb += self.o[p].eq(self.n_thresholds - count)
                with m.Else():
                    m.d.comb += self.o[p].eq(count)
        return m
