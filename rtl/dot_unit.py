"""The dot-product unit protocol: what every unit of a weight kind provides.

A dot unit computes, for ``pe`` neurons at once, a cheap partial sum ``S`` over ``simd`` lanes
(a popcount, ``Σ a XOR ~w``, ``Σ (a XOR neg) AND nz``, ``Σ (a XOR neg)·|level|``) whose affine
map back to the dot product, ``acc = scale·S + offset`` per neuron, is folded into the
thresholds (or added to the scores) by :class:`~qnnfab.rtl.mvu.MatrixVectorUnit`. The units
(:class:`~qnnfab.rtl.xnor_popcount.XnorPopcount`,
:class:`~qnnfab.rtl.binary_weight_dot.BinaryWeightDot`,
:class:`~qnnfab.rtl.ternary_dot.TernaryDot`, :class:`~qnnfab.rtl.codebook_dot.CodebookDot`)
are chosen per layer by :func:`qnnfab.rtl.kinds.dot_unit_class`. A unit whose hardware depends
on more of the layer than its input bits (a codebook's levels) is returned there as a class
bound to that (``CodebookDot.for_levels(levels)``), so the protocol is the same for every kind:

* ``cls(pe=, simd=, in_bits=, pipelined=)``, members ``x`` (``simd`` activations), ``w``
  (``pe·simd`` weight codes as packed by :func:`~qnnfab.rtl.mvu.weight_words`), ``en`` (clock
  enable), ``o`` (``pe`` partial sums ``S``); on an instance, :attr:`DotUnit.latency`,
  :attr:`DotUnit.partial_shape` and :attr:`DotUnit.scale`;
* class methods, usable before any unit is built (by :class:`~qnnfab.rtl.network.Network`,
  the folding search and the fit estimate): :meth:`DotUnit.pipeline_latency`,
  :meth:`DotUnit.sum_shape`, :meth:`DotUnit.scale_for`, :meth:`DotUnit.offsets` and
  :meth:`DotUnit.lane_cells`.
"""

import operator

from amaranth.lib import wiring

from qnnfab import ir

__all__ = ["DotUnit", "dot_unit_shape", "adder_lane_cells", "CONV_LANE_FACTOR"]

#: Logic cells per input bit of one lane of a conv layer's adder-tree unit (binary and ternary
#: weights), against 1 for a dense layer's: fitted, with the window hardware of
#: ``qnnfab.boards.build._spatial_cells``, to two ``nextpnr-ice40`` builds of digits-cnn.
CONV_LANE_FACTOR = 4.5


def dot_unit_shape(pe, simd, in_bits):
    """``(pe, simd, in_bits)`` of a dot-product unit as ints; ValueError unless ``pe`` and
    ``simd`` are >= 1 (each unit checks its own ``in_bits`` rule)."""
    pe, simd, in_bits = operator.index(pe), operator.index(simd), operator.index(in_bits)
    if pe < 1 or simd < 1:
        raise ValueError(f"pe and simd must be >= 1, not pe={pe} simd={simd}")
    return pe, simd, in_bits


def adder_lane_cells(layer):
    """Lane cost of a unit that adds (transformed) activation bits in a tree, the binary and
    ternary units: ``in_bits`` cells per lane for a dense layer (a lower bound: the trees
    cost about three), ``CONV_LANE_FACTOR·in_bits`` for an :class:`~qnnfab.ir.ConvLayer`."""
    if isinstance(layer, ir.ConvLayer):
        return CONV_LANE_FACTOR * layer.in_bits
    return layer.in_bits


class DotUnit(wiring.Component):
    """Base of the dot-product units (the protocol is in the module docstring).

    Subclasses set ``pe``, ``simd``, ``in_bits`` and ``pipelined`` on their instances and
    implement the class methods below; the properties are the instance views of them.
    """

    # -- the protocol: class methods, each unit implements them --------------------------------
    @classmethod
    def _missing(cls, method):
        return NotImplementedError(f"{cls.__name__} does not implement the dot-unit protocol's "
                                   f"{method}()")

    @classmethod
    def pipeline_latency(cls, simd, pipelined, in_bits):
        """Cycles (of ``en``) from ``x``/``w`` to ``o`` of a unit of ``simd`` lanes of
        ``in_bits``-bit activations, without building one (0 when not ``pipelined``)."""
        raise cls._missing("pipeline_latency")

    @classmethod
    def sum_shape(cls, fan_in, in_bits):
        """Shape of the sum ``S`` of the unit's partials over ``fan_in`` inputs (what the
        MVU accumulates)."""
        raise cls._missing("sum_shape")

    @classmethod
    def scale_for(cls, in_bits):
        """``scale`` of ``acc = scale·S + offset`` for ``in_bits``-bit activations."""
        raise cls._missing("scale_for")

    @classmethod
    def offsets(cls, layer):
        """Per-neuron ``offset`` of ``acc = scale·S + offset`` (int64 array, ``out_features``)
        for ``layer`` (a dense layer or a conv layer's dense view)."""
        raise cls._missing("offsets")

    @classmethod
    def lane_cells(cls, layer):
        """Estimated logic cells of one lane (one weight × one input per cycle) of this unit
        for ``layer``, as it appears in the network (an :class:`~qnnfab.ir.ConvLayer` costs
        more than its dense view): what the folding search and the fit estimate multiply by
        ``pe·simd``."""
        raise cls._missing("lane_cells")

    # -- instance views -------------------------------------------------------------------------
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
