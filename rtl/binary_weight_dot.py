"""Multi-bit unsigned activations × binary weights: ``PE`` dot products over ``SIMD`` lanes.

With ``w ∈ {-1, +1}`` coded as a bit ``b`` (``w = 2b - 1``) and an unsigned ``k``-bit activation
``a`` (``amax = 2**k - 1``), let ``a' = a`` where ``b = 1`` and ``a' = amax - a = a XOR amax``
where ``b = 0``. Then ``Σ a·w = Σ a' - amax·zeros``, ``zeros`` being the number of 0 weight
bits of the neuron: a constant, folded into the thresholds (or added to the scores). Each PE is
one adder tree of ``a XOR ~b``; no subtraction, no second tree.
"""


import numpy as np

from amaranth.hdl import Module, unsigned
from amaranth.lib import data
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ._checks import quiet_on_error
from .dot_unit import DotUnit, adder_lane_cells, dot_unit_shape
from .xnor_popcount import adder_tree, register_levels

__all__ = ["BinaryWeightDot"]


class BinaryWeightDot(DotUnit):
    """``PE`` dot products of ``SIMD`` unsigned ``in_bits``-bit activations with binary weights.

    Parameters
    ----------
    pe, simd : int
    in_bits : int
        Bits of each unsigned activation (>= 2; one bit is ±1, see :class:`XnorPopcount`).
    pipelined : bool
        Register the outputs and every ``REGISTER_EVERY`` levels of the adder tree, or not
        (latency 0).

    Members
    -------
    x : In(ArrayLayout(unsigned(in_bits), simd))
        Activations.
    w : In(pe * simd)
        Weight bits (1 ↦ +1, 0 ↦ -1), PE ``p`` lane ``s`` at bit ``p * simd + s``.
    en : In(1)
        Clock enable of the pipeline register.
    o : Out(ArrayLayout(unsigned(...), pe))
        ``Σ_s a'_s`` per PE (see above), :attr:`latency` cycles after ``x``/``w``.

    Latency: :attr:`latency`. Throughput: one word per cycle.
    """

    @quiet_on_error
    def __init__(self, *, pe, simd, in_bits, pipelined=True):
        self.pe, self.simd, self.in_bits = dot_unit_shape(pe, simd, in_bits)
        if self.in_bits < 2:
            raise ValueError(f"BinaryWeightDot takes unsigned activations of >= 2 bits, not "
                             f"in_bits={self.in_bits} (use XnorPopcount for 1-bit ±1 inputs)")
        self.pipelined = bool(pipelined)
        super().__init__({
            "x": In(data.ArrayLayout(self.in_bits, self.simd)),
            "w": In(self.pe * self.simd),
            "en": In(1, init=1),
            "o": Out(data.ArrayLayout(self.partial_shape, self.pe)),
        })

    @staticmethod
    def pipeline_latency(simd, pipelined=True, in_bits=2):
        """Latency of a unit of ``simd`` lanes, without building one."""
        if not pipelined:
            return 0
        return 1 + len(register_levels(simd))

    @staticmethod
    def scale_for(in_bits):
        """``scale`` of ``acc = scale·S + offset``: 1."""
        return 1

    @staticmethod
    def sum_shape(fan_in, in_bits):
        """Shape of the sum ``S`` of ``a'`` over ``fan_in`` inputs."""
        return unsigned(ceil_log2(fan_in * ((1 << in_bits) - 1) + 1))

    @staticmethod
    def offsets(layer):
        """Per-neuron offset of ``acc = S + offset``: ``-amax·(number of 0 weight bits)``."""
        amax = (1 << layer.in_bits) - 1
        zeros = (np.asarray(layer.weights) == 0).sum(axis=1).astype(np.int64)
        return -amax * zeros

    @staticmethod
    def lane_cells(layer):
        """Logic cells per lane: :func:`~qnnfab.rtl.dot_unit.adder_lane_cells`."""
        return adder_lane_cells(layer)

    def elaborate(self, platform):
        m = Module()
        xs = [self.x[s] for s in range(self.simd)]
        for p in range(self.pe):
            flipped = []
            for s in range(self.simd):
                bit = self.w[p * self.simd + s]
                flipped.append(xs[s] ^ (~bit).replicate(self.in_bits))
            levels = register_levels(self.simd) if self.pipelined else ()
            value, _ = adder_tree(m, flipped, register=levels, en=self.en, name=f"sum{p}")
            if self.pipelined:
                with m.If(self.en):
                    m.d.sync += self.o[p].eq(value)
            else:
                m.d.comb += self.o[p].eq(value)
        return m
