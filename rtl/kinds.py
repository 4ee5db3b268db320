"""Weight kind → dot-product unit: the one place that maps a layer to its hardware.

:data:`DOT_UNITS` has one entry per kind of the core registry
(:data:`qnnfab.kinds.WEIGHT_KINDS`): a function of the layer returning a
:class:`~qnnfab.rtl.dot_unit.DotUnit` subclass (the protocol of :mod:`qnnfab.rtl.dot_unit`).
The MVU builds that class (:func:`dot_unit_class`); the network's timing and the folding and
fit estimates ask the same class for latency and lane cost (:func:`lane_cells`) before any
unit is built. ``tests/test_kinds.py`` fails for a registry kind without an entry here.
"""

from qnnfab import kinds

from .binary_weight_dot import BinaryWeightDot
from .codebook_dot import CodebookDot
from .ternary_dot import TernaryDot
from .xnor_popcount import XnorPopcount

__all__ = ["DOT_UNITS", "dot_unit_class", "lane_cells"]


def _binary(layer):
    """:class:`XnorPopcount` for 1-bit ±1 inputs, :class:`BinaryWeightDot` for unsigned ones."""
    return XnorPopcount if layer.in_bits == 1 else BinaryWeightDot


def _ternary(layer):
    """:class:`TernaryDot`, for any input bits."""
    return TernaryDot


def _codebook(layer):
    """:class:`CodebookDot` bound to ``layer.weight_levels`` (``CodebookDot.for_levels``; its
    shift-add path when every level is 0 or ``±2**e``)."""
    return CodebookDot.for_levels(layer.weight_levels)


#: Weight kind name → ``unit_for(layer)``, the dot-unit class for a layer of that kind.
DOT_UNITS = {
    "binary": _binary,
    "ternary": _ternary,
    "codebook": _codebook,
}


def dot_unit_class(layer):
    """The dot-product unit class (a :class:`~qnnfab.rtl.dot_unit.DotUnit` subclass) for
    ``layer`` (a dense or conv layer of the IR), chosen by its weight kind (:data:`DOT_UNITS`),
    input bits and levels. ValueError naming the known kinds for a kind without a unit."""
    unit_for = DOT_UNITS.get(layer.weight_kind)
    if unit_for is None or layer.weight_kind not in kinds.WEIGHT_KINDS:
        raise ValueError(f"no dot-product unit for weight kind {layer.weight_kind!r} "
                         f"(known: {', '.join(k for k in kinds.WEIGHT_KINDS if k in DOT_UNITS)})")
    return unit_for(layer)


def lane_cells(layer):
    """Estimated logic cells of one lane of ``layer``'s dot unit (its
    :meth:`~qnnfab.rtl.dot_unit.DotUnit.lane_cells`): ``in_bits`` for binary and ternary
    weights in a dense layer, ``4.5·in_bits`` in a conv layer, and
    :func:`~qnnfab.rtl.codebook_dot.codebook_lane_cells` for codebook weights."""
    return dot_unit_class(layer).lane_cells(layer)
