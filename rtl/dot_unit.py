"""What every dot-product unit shares (the protocol is in :mod:`qnnfab.rtl.mvu`'s docstring)."""

import operator

from amaranth.lib import wiring

__all__ = ["DotUnit", "dot_unit_shape"]


def dot_unit_shape(pe, simd, in_bits):
    """``(pe, simd, in_bits)`` of a dot-product unit as ints; ValueError unless ``pe`` and
    ``simd`` are >= 1 (each unit checks its own ``in_bits`` rule)."""
    pe, simd, in_bits = operator.index(pe), operator.index(simd), operator.index(in_bits)
    if pe < 1 or simd < 1:
        raise ValueError(f"pe and simd must be >= 1, not pe={pe} simd={simd}")
    return pe, simd, in_bits


class DotUnit(wiring.Component):
    """Base of the dot-product units: the instance views of the protocol's class methods
    (``pipeline_latency``, ``sum_shape``, ``scale_for``), for a unit with ``simd``,
    ``in_bits`` and ``pipelined`` set."""

    @property
    def latency(self):
        """Cycles from ``x``/``w`` to ``o``."""
        return self.pipeline_latency(self.simd, self.pipelined, self.in_bits)

    @property
    def partial_shape(self):
        """Shape of each PE's sum ``S`` over the unit's ``simd`` lanes."""
        return self.sum_shape(self.simd, self.in_bits)

    @property
    def scale(self):
        """``acc = scale·S + offset``."""
        return self.scale_for(self.in_bits)
