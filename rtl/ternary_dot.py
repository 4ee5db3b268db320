"""Activations × ternary weights: ``PE`` dot products over ``SIMD`` lanes, one adder tree each.

A ternary weight ``w ∈ {0, +1, -1}`` is stored as a 2-bit code (0 ↦ 0, 1 ↦ +1, 2 ↦ -1), so
``nz = code[0] | code[1]`` (``w ≠ 0``) and ``neg = code[1]`` (``w = -1``). Each lane adds the
leaf ``a' = (a XOR neg·amax) AND nz``: ``a`` where ``w = +1``, ``amax - a`` where ``w = -1``,
0 where ``w = 0``; one LUT per activation bit (``a_i``, ``neg``, ``nz``), no subtractor. With
``S = Σ a'`` over a neuron's inputs:

* ``in_bits >= 2`` (unsigned ``a``, ``amax = 2**k - 1``): ``-a = (amax - a) - amax``, so
  ``Σ a·w = S - amax·n_neg`` (:attr:`~TernaryDot.scale` 1);
* ``in_bits == 1`` (a bit ``b`` standing for ``x = 2b - 1``, ``amax = 1``): for ``w = ±1``,
  ``x·w = 2·a' - 1``, so ``Σ x·w = 2·S - n_nz`` (scale 2).

``n_neg`` / ``n_nz`` (the neuron's number of -1 / non-zero weights) are constants, folded into
the thresholds or added to the scores (:meth:`TernaryDot.offsets`).
"""


import numpy as np

from amaranth.hdl import Cat, Module, Signal, unsigned
from amaranth.lib import data
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from qnnfab.kinds import weight_kind

from ._checks import quiet_on_error
from .dot_unit import DotUnit, adder_lane_cells, dot_unit_shape
from .xnor_popcount import adder_tree, popcount, register_levels

__all__ = ["TernaryDot", "TERNARY_CODE_BITS"]

#: Bits of one ternary weight code.
TERNARY_CODE_BITS = 2
#: The code of each weight value (the decode in :meth:`TernaryDot.elaborate` assumes these).
_CODES = {0: 0, 1: 1, -1: 2}
if tuple(sorted(_CODES, key=_CODES.get)) != weight_kind("ternary").levels:
    raise ImportError(f"qnnfab.rtl.ternary_dot decodes ternary codes {_CODES}, but the "
                      f"registry's ternary levels (qnnfab.kinds) are "
                      f"{weight_kind('ternary').levels}")


class TernaryDot(DotUnit):
    """``PE`` dot products of ``SIMD`` activations (any ``in_bits``) with ternary weights.

    Parameters
    ----------
    pe, simd : int
    in_bits : int
        Bits of each activation: 1 (a bit standing for ±1) or 2..8 (unsigned).
    pipelined : bool
        Register the outputs and every :data:`~qnnfab.rtl.xnor_popcount.REGISTER_EVERY`
        levels of the adder tree, or not (latency 0).

    Members
    -------
    x : In(ArrayLayout(unsigned(in_bits), simd))
        Activations.
    w : In(pe * simd * 2)
        Ternary weight codes (0 ↦ 0, 1 ↦ +1, 2 ↦ -1), PE ``p`` lane ``s`` at bits
        ``(p*simd + s)*2``.
    en : In(1)
        Clock enable of the pipeline registers.
    o : Out(ArrayLayout(unsigned(...), pe))
        ``S = Σ_s a'_s`` per PE (see above), :attr:`latency` cycles after ``x``/``w``.

    Latency: :attr:`latency`. Throughput: one word per cycle.
    """

    @quiet_on_error
    def __init__(self, *, pe, simd, in_bits, pipelined=True):
        self.pe, self.simd, self.in_bits = dot_unit_shape(pe, simd, in_bits)
        if self.in_bits < 1:
            raise ValueError(f"in_bits must be >= 1, not {self.in_bits}")
        self.pipelined = bool(pipelined)
        super().__init__({
            "x": In(data.ArrayLayout(self.in_bits, self.simd)),
            "w": In(self.pe * self.simd * TERNARY_CODE_BITS),
            "en": In(1, init=1),
            "o": Out(data.ArrayLayout(self.partial_shape, self.pe)),
        })

    @staticmethod
    def _leaves(simd, in_bits):
        # One-bit leaves are summed in pairs first (as in a popcount).
        return (simd + 1) // 2 if in_bits == 1 else simd

    @classmethod
    def pipeline_latency(cls, simd, pipelined, in_bits):
        """Latency of a unit of ``simd`` lanes of ``in_bits``-bit activations, without
        building one."""
        if not pipelined:
            return 0
        return 1 + len(register_levels(cls._leaves(simd, in_bits)))

    @staticmethod
    def scale_for(in_bits):
        """``scale`` of ``acc = scale·S + offset`` for ``in_bits``-bit activations: 2 for ±1
        inputs, else 1."""
        return 2 if in_bits == 1 else 1

    @staticmethod
    def sum_shape(fan_in, in_bits):
        """Shape of the sum ``S`` of ``a'`` over ``fan_in`` inputs."""
        return unsigned(ceil_log2(fan_in * ((1 << in_bits) - 1) + 1))

    @staticmethod
    def offsets(layer):
        """Per-neuron offset of ``acc = scale·S + offset``: ``-n_nz`` for 1-bit inputs,
        ``-amax·n_neg`` otherwise."""
        w = np.asarray(layer.weights)
        if layer.in_bits == 1:
            return -(w != _CODES[0]).sum(axis=1).astype(np.int64)
        amax = (1 << layer.in_bits) - 1
        return -amax * (w == _CODES[-1]).sum(axis=1).astype(np.int64)

    @staticmethod
    def lane_cells(layer):
        """Logic cells per lane: :func:`~qnnfab.rtl.dot_unit.adder_lane_cells`."""
        return adder_lane_cells(layer)

    def elaborate(self, platform):
        m = Module()
        k = self.in_bits
        xs = [self.x[s] for s in range(self.simd)]
        for p in range(self.pe):
            leaves = []
            for s in range(self.simd):
                code = self.w.word_select(p * self.simd + s, TERNARY_CODE_BITS)
                nz = code[0] | code[1]
                neg = code[1]
                leaves.append((xs[s] ^ neg.replicate(k)) & nz.replicate(k))
            levels = register_levels(self._leaves(self.simd, k)) if self.pipelined else ()
            if k == 1:
                # Through a signal: slicing a Cat of expressions costs the simulator dearly.
                bits = Signal(self.simd, name=f"leaves{p}")
                m.d.comb += bits.eq(Cat(*leaves))
                value, _ = popcount(m, bits, register=levels, en=self.en, name=f"sum{p}")
            else:
                value, _ = adder_tree(m, leaves, register=levels, en=self.en, name=f"sum{p}")
            if self.pipelined:
                with m.If(self.en):
                    m.d.sync += self.o[p].eq(value)
            else:
                m.d.comb += self.o[p].eq(value)
        return m
