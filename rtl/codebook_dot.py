"""Activations × codebook weights: ``PE`` dot products over ``SIMD`` lanes, each weight a k-bit
index into the layer's table of ``2**k`` signed integer levels ``L``.

The weight memory holds the indices (:func:`~qnnfab.rtl.mvu.weight_words`, ``k`` bits per
lane); the level table is a constant beside the datapath: each lane decodes its index into a
magnitude ``m = |L| / u`` and a sign ``neg = [L < 0]`` (``u = 2**t``, the largest power of two
dividing every level, so the magnitudes are as narrow as they can be; it goes into the scale).
Like :class:`~qnnfab.rtl.ternary_dot.TernaryDot`, the sign is applied to the activation, not to
the product, so every value summed is unsigned: ``a' = a XOR neg·amax`` is ``a`` for a positive
level and ``amax - a`` for a negative one, and each lane adds ``a'·m``. With ``S = Σ a'·m`` over
a neuron's inputs:

* ``in_bits >= 2`` (unsigned ``a``, ``amax = 2**in_bits - 1``): ``a·L = u·a'·m - amax·|L|·neg``,
  so ``Σ a·L = u·S - amax·Σ_{L<0} |L|`` (:attr:`~CodebookDot.scale` ``u``);
* ``in_bits == 1`` (a bit ``b`` standing for ``x = 2b - 1``): ``x·L = 2u·b'·m - |L|``, so
  ``Σ x·L = 2u·S - Σ |L|`` (scale ``2u``).

The sums over a neuron's weights are constants (:meth:`CodebookDot.offsets`), folded into the
thresholds or added to the scores. The product ``a'·m`` is built one of three ways
(:attr:`CodebookDot.path`), never with a ``*``: Yosys maps every ``$mul`` to an ECP5 DSP
block, one per lane, far more than the device has at wide foldings (and a ``$mul`` would be
one long combinational path):

* ``"select"`` (``in_bits == 1``): ``b' ? m : 0``, one LUT per magnitude bit (a function of
  ``b`` and the index);
* ``"shift"`` (every level 0 or ``±2**e``, so ``m = 2**e'`` or 0; ``in_bits >= 2``): the shift
  ``a' << e'`` selected by the index (a multiplexer over the table's few exponents), zero for a
  zero level: one leaf of ``in_bits + max e'`` bits per lane, no partial products;
* ``"multiply"`` (any other table): the partial products of a shift-add multiplier,
  ``(a'_j ? m : 0) << j`` for each activation bit ``j``, one LUT per magnitude bit each, are
  leaves of the PE's adder tree (plane by plane), so the multiplier's adders are tree levels
  and get the tree's pipeline registers: ``in_bits`` leaves per lane.

Cost (iCE40 logic cells per lane, decode + product + share of the tree, measured with Yosys
0.70 ``synth_ice40`` and nextpnr's packer on one pipelined unit of 16 lanes, 8-bit levels,
k = 3): select ~16; multiply ~35 for 2-bit and ~91 for 5-bit activations (about
``2·mag_bits + k`` per activation bit); shift with 6 exponents ~25 and ~45.
:func:`codebook_lane_cells` is that model (:meth:`CodebookDot.lane_cells`); the folding and
fit estimates use it.
"""

import functools
import operator
from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import data
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ._checks import quiet_on_error
from .dot_unit import DotUnit, dot_unit_shape
from .xnor_popcount import adder_tree, register_levels, tree_depth

__all__ = ["CodebookDot", "CodebookTable", "codebook_table", "codebook_lane_cells"]


@dataclass(frozen=True)
class CodebookTable:
    """What the hardware makes of a table of levels (see the module docstring).

    Attributes
    ----------
    levels : tuple of int, the level of each index
    index_bits : int, ``k`` (``len(levels) == 2**k``)
    unit : int, ``u = 2**t``, the largest power of two dividing every level (1 if all are 0)
    mags : tuple of int, ``|level| / unit``
    negs : tuple of bool, ``level < 0``
    mag_bits : int, bits of the largest magnitude (at least 1)
    shift_add : bool, every magnitude is 0 or a power of two
    """
    levels: tuple
    index_bits: int
    unit: int
    mags: tuple
    negs: tuple
    mag_bits: int
    shift_add: bool

    @property
    def exponents(self):
        """``e`` with ``mag = 2**e`` per index, None for a zero level (``shift_add`` only)."""
        return tuple(m.bit_length() - 1 if m else None for m in self.mags)

    @property
    def max_mag(self):
        return max(self.mags)

    def path(self, in_bits):
        """How a lane forms ``a'·m``: ``"select"``, ``"shift"`` or ``"multiply"``."""
        if in_bits == 1:
            return "select"
        return "shift" if self.shift_add else "multiply"

    def leaves_per_lane(self, in_bits):
        """Values each lane adds to the PE's tree: ``in_bits`` partial products, else one."""
        return in_bits if self.path(in_bits) == "multiply" else 1

    def lane_width(self, in_bits):
        """Bits of the shifted activation of the ``"shift"`` path."""
        top = max([e for e in self.exponents if e is not None], default=0)
        return in_bits + top


def _levels_tuple(levels):
    if isinstance(levels, (str, bytes)) or not hasattr(levels, "__iter__"):
        raise TypeError(f"levels must be a sequence of integers, not {levels!r}")
    try:
        values = tuple(operator.index(v) for v in levels)
    except TypeError:
        raise TypeError(f"levels must be integers, not {list(levels)!r}") from None
    n = len(values)
    if n < 2 or n & (n - 1):
        raise ValueError(f"levels: expected 2**k levels (k >= 1), got {n}")
    return values


@functools.lru_cache(maxsize=None)
def _table(levels):
    nonzero = [abs(v) for v in levels if v]
    t = min(((v & -v).bit_length() - 1 for v in nonzero), default=0)
    unit = 1 << t
    mags = tuple(abs(v) >> t for v in levels)
    return CodebookTable(
        levels=levels, index_bits=(len(levels) - 1).bit_length(), unit=unit, mags=mags,
        negs=tuple(v < 0 for v in levels), mag_bits=max(1, max(mags).bit_length()),
        shift_add=all(m & (m - 1) == 0 for m in mags))


def codebook_table(levels):
    """The :class:`CodebookTable` of ``levels`` (a sequence of ``2**k`` integers); ValueError or
    TypeError naming the problem otherwise."""
    return _table(_levels_tuple(levels))


def codebook_lane_cells(levels, in_bits):
    """Estimated iCE40 logic cells per lane of a :class:`CodebookDot`: the decode, the product
    and the lane's share of the pipelined adder tree (registers pack with their LUTs).

    Fitted to Yosys 0.70 ``synth_ice40`` + ``nextpnr-ice40 --pack-only`` counts of one
    pipelined unit (PE 1 and 2, SIMD 16; cells per lane scale with PE × SIMD):

    * ``"select"`` / ``"multiply"``: ``in_bits·(2·mag_bits + k)`` (per activation bit, a LUT
      and about an adder cell per magnitude bit, plus the tree's growth), ``mag_bits + 1`` more
      when ``k > 3`` (the index no longer fits a LUT4 beside the activation bit, so the level
      is decoded once per lane). Measured (estimate), 8-bit levels: k = 2 / 3 / 4 with 1-bit
      inputs 14 (16) / 16 (17) / 23 (26), 2-bit 29 (32) / 35 (34) / 41 (44), 5-bit
      78 (80) / 91 (85) / 94 (98); 5-bit levels, k = 3: 10 (11), 21 (22), 51 (55).
    * ``"shift"``: ``width + 1.5·in_bits·n_exp`` (``width = in_bits + max e``, ``n_exp``
      distinct exponents: the multiplexer grows with its data inputs, ``in_bits·n_exp``), or
      ``2·width + 3`` when ``n_exp <= 2`` (each output bit one LUT). Measured (estimate) for
      ``n_exp`` = 2 / 4 / 6 / 8 and 2-bit inputs 10 (9) / 19 (17) / 25 (26) / 40 (33), 5-bit
      15 (15) / 39 (38) / 45 (56) / 82 (72), 8-bit 21 (21) / 57 (59) / 63 (86) / 112 (111).
    """
    table = codebook_table(levels)
    in_bits = operator.index(in_bits)
    k = table.index_bits
    if table.path(in_bits) == "shift":
        n_exp = len({e for e in table.exponents if e is not None})
        width = table.lane_width(in_bits)
        if n_exp <= 2:
            return 2 * width + 3
        return width + (3 * in_bits * n_exp + 1) // 2
    mb = table.mag_bits
    return in_bits * (2 * mb + k) + (mb + 1 if k > 3 else 0)


class CodebookDot(DotUnit):
    """``PE`` dot products of ``SIMD`` activations with codebook weights (k-bit indices into
    a table of ``2**k`` signed integer levels).

    The level table is part of the unit: build one with ``CodebookDot(levels=..., ...)``, or
    take the subclass bound to a table, :meth:`for_levels` (what
    :func:`~qnnfab.rtl.kinds.dot_unit_class` returns for a codebook layer), whose class methods
    (the dot-unit protocol of :mod:`qnnfab.rtl.dot_unit`) know the levels.

    Parameters
    ----------
    pe, simd : int
    in_bits : int
        Bits of each activation: 1 (a bit standing for ±1) or 2..8 (unsigned).
    levels : sequence of 2**k int, optional on a bound class
        The level of each index.
    pipelined : bool
        Register the decoded leaves (when there is more than one), every
        :data:`~qnnfab.rtl.xnor_popcount.REGISTER_EVERY` levels of the adder tree and the
        outputs; or none of them (latency 0).

    Members
    -------
    x : In(ArrayLayout(unsigned(in_bits), simd))
        Activations.
    w : In(pe * simd * k)
        Indices, PE ``p`` lane ``s`` at bits ``(p*simd + s)*k``.
    en : In(1)
        Clock enable of the pipeline registers.
    o : Out(ArrayLayout(unsigned(...), pe))
        ``S = Σ_s a'_s·m_s`` per PE (see the module docstring), :attr:`latency` cycles after
        ``x``/``w``.

    Latency: :attr:`latency`, ``1 + len(register_levels(leaves)) + [leaves > 1]`` pipelined,
    ``leaves = simd·leaves_per_lane``. Throughput: one word per cycle.
    """

    #: The levels of a class made by :meth:`for_levels` (None on ``CodebookDot`` itself).
    levels = None

    @classmethod
    def for_levels(cls, levels):
        """The subclass of ``CodebookDot`` bound to ``levels`` (one per table, cached)."""
        return _bound_class(_levels_tuple(levels))

    @classmethod
    def _table_of(cls, levels=None):
        if levels is not None:
            return codebook_table(levels)
        if cls.levels is None:
            raise TypeError("CodebookDot needs the levels: pass levels=..., or use "
                            "CodebookDot.for_levels(levels) for the protocol's class methods")
        return _table(cls.levels)

    @quiet_on_error
    def __init__(self, *, pe, simd, in_bits, levels=None, pipelined=True):
        self.pe, self.simd, self.in_bits = dot_unit_shape(pe, simd, in_bits)
        if self.in_bits < 1:
            raise ValueError(f"in_bits must be >= 1, not {self.in_bits}")
        if levels is not None and type(self).levels is not None \
                and _levels_tuple(levels) != type(self).levels:
            raise ValueError(f"levels {list(levels)} differ from the levels this class is "
                             f"bound to, {list(type(self).levels)}")
        self.table = self._table_of(levels)
        self.levels = self.table.levels
        self.pipelined = bool(pipelined)
        super().__init__({
            "x": In(data.ArrayLayout(self.in_bits, self.simd)),
            "w": In(self.pe * self.simd * self.table.index_bits),
            "en": In(1, init=1),
            "o": Out(data.ArrayLayout(self._sum_shape(self.table, self.simd, self.in_bits),
                                      self.pe)),
        })

    # -- the dot-unit protocol (class methods need a bound class) ---------------------------------
    @classmethod
    def pipeline_latency(cls, simd, pipelined, in_bits):
        """Latency of a unit of ``simd`` lanes of ``in_bits``-bit activations, without
        building one."""
        return cls._latency(cls._table_of(), simd, pipelined, in_bits)

    @classmethod
    def sum_shape(cls, fan_in, in_bits):
        """Shape of the sum ``S`` over ``fan_in`` inputs: ``fan_in·amax·max(m)`` fits."""
        return cls._sum_shape(cls._table_of(), fan_in, in_bits)

    @classmethod
    def scale_for(cls, in_bits):
        """``scale`` of ``acc = scale·S + offset``: ``u``, times 2 for ±1 inputs."""
        return cls._table_of().unit * (2 if in_bits == 1 else 1)

    @classmethod
    def offsets(cls, layer):
        """Per-neuron offset of ``acc = scale·S + offset``: ``-Σ |L|`` over the neuron's
        weights for 1-bit inputs, ``-amax·Σ_{L<0} |L|`` otherwise."""
        table = cls._table_of(layer.weight_levels if cls.levels is None else None)
        if tuple(layer.weight_levels) != table.levels:
            raise ValueError(f"{cls.__name__} bound to levels {list(table.levels)} cannot "
                             f"offset a layer with levels {list(layer.weight_levels)}")
        levels = np.asarray(table.levels, dtype=np.int64)[np.asarray(layer.weights, np.int64)]
        if layer.in_bits == 1:
            return -np.abs(levels).sum(axis=1)
        amax = (1 << layer.in_bits) - 1
        return -amax * np.where(levels < 0, -levels, 0).sum(axis=1)

    @classmethod
    def lane_cells(cls, layer):
        """Logic cells per lane: :func:`codebook_lane_cells` of the layer's levels and input
        bits (a conv layer's lanes cost the same)."""
        table = cls._table_of(layer.weight_levels if cls.levels is None else None)
        return codebook_lane_cells(table.levels, layer.in_bits)

    @classmethod
    def path_for(cls, in_bits):
        """The path (:attr:`path`) a unit of this class takes for ``in_bits``-bit inputs."""
        return cls._table_of().path(in_bits)

    # -- instance views -------------------------------------------------------------------------
    @property
    def latency(self):
        """Cycles from ``x``/``w`` to ``o``."""
        return self._latency(self.table, self.simd, self.pipelined, self.in_bits)

    @property
    def scale(self):
        """``acc = scale·S + offset``."""
        return self.table.unit * (2 if self.in_bits == 1 else 1)

    @property
    def path(self):
        """``"select"``, ``"shift"`` (no partial products) or ``"multiply"``."""
        return self.table.path(self.in_bits)

    @property
    def shift_add(self):
        """The table is all zeros and powers of two: no multiplication anywhere."""
        return self.path != "multiply"

    @property
    def leaves(self):
        """Values summed by each PE's adder tree."""
        return self.simd * self.table.leaves_per_lane(self.in_bits)

    @property
    def partial_shape(self):
        return self._sum_shape(self.table, self.simd, self.in_bits)

    # -- helpers --------------------------------------------------------------------------------
    @staticmethod
    def _register_set(leaves):
        """Tree levels registered in a pipelined unit: the leaves (unless there is only one)
        and :func:`register_levels`."""
        return ((0,) if tree_depth(leaves) > 0 else ()) + register_levels(leaves)

    @classmethod
    def _latency(cls, table, simd, pipelined, in_bits):
        if not pipelined:
            return 0
        return 1 + len(cls._register_set(simd * table.leaves_per_lane(in_bits)))

    @staticmethod
    def _sum_shape(table, fan_in, in_bits):
        return unsigned(max(1, ceil_log2(fan_in * ((1 << in_bits) - 1) * table.max_mag + 1)))

    def elaborate(self, platform):
        m = Module()
        table, kb = self.table, self.in_bits
        k, mb = table.index_bits, table.mag_bits
        path = self.path
        width = table.lane_width(kb)
        for p in range(self.pe):
            planes = [[] for _ in range(table.leaves_per_lane(kb))]
            for s in range(self.simd):
                idx = self.w.word_select(p * self.simd + s, k)
                x = self.x[s]
                if path == "shift":
                    lane = Signal(width, name=f"shift{p}_{s}")
                    with m.Switch(idx):
                        for i, e in enumerate(table.exponents):
                            if e is not None:
                                with m.Case(i):
                                    m.d.comb += lane.eq((~x if table.negs[i] else x) << e)
                    planes[0].append(lane)
                else:
                    # The level table: a multiplexer of constants (Yosys folds it into the
                    # LUTs of the partial products below).
                    mag = Signal(mb, name=f"mag{p}_{s}")
                    neg = Signal(name=f"neg{p}_{s}")
                    with m.Switch(idx):
                        for i, (v, n) in enumerate(zip(table.mags, table.negs)):
                            if v:
                                with m.Case(i):
                                    m.d.comb += [mag.eq(v), neg.eq(n)]
                    for j in range(kb):
                        planes[j].append((mag & (x[j] ^ neg).replicate(mb)) << j)
            leaves = [v for plane in planes for v in plane]
            assert len(leaves) == self.leaves
            levels = self._register_set(len(leaves)) if self.pipelined else ()
            value, _ = adder_tree(m, leaves, register=levels, en=self.en, name=f"sum{p}")
            if self.pipelined:
                with m.If(self.en):
                    m.d.sync += self.o[p].eq(value)
            else:
                m.d.comb += self.o[p].eq(value)
        return m


@functools.lru_cache(maxsize=None)
def _bound_class(levels):
    _table(levels)
    return type("CodebookDot", (CodebookDot,), {
        "levels": levels,
        "__qualname__": "CodebookDot",
        "__module__": __name__,
        "__doc__": f"{CodebookDot.__doc__}\n    Bound to levels {list(levels)}.\n",
    })

