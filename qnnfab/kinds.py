"""The registry of weight kinds: what a kind of stored weight *is*, in one place (numpy only).

A weight kind is one :class:`WeightKind` entry of :data:`WEIGHT_KINDS`: its name (the IR's
``weight_kind`` field), its levels (the value each stored code stands for, index = code) or
None for a *table* kind whose levels are the layer's own (``DenseLayer.codebook``), and the
rule for the bits of one stored code. Everything that enumerates or checks kinds reads this
registry: :mod:`qnnfab.numerics` (``WEIGHT_LEVELS``, the width rules), :mod:`qnnfab.ir`
(validation), :mod:`qnnfab.random_net`, the fuzz strategies (:mod:`qnnfab.sim.fuzz`).

The other layers keep one entry per kind in their own registries, each checked against this
one by ``tests/test_kinds.py``: the dot-product unit and its lane cost
(:data:`qnnfab.rtl.kinds.DOT_UNITS`) and the training quantizer
(:data:`qnnfab.model.quantizers.WEIGHT_QUANTIZERS`).

Kernel codebooks (``ir.KernelCodebook``) are a feature of conv layers, not a weight kind: the
kernels they hold are codes of the layer's own kind.
"""

import operator
from dataclasses import dataclass

__all__ = ["WeightKind", "WEIGHT_KINDS", "weight_kind", "code_bits"]


def code_bits(n_levels):
    """Bits of one stored code that indexes ``n_levels`` levels (at least 1): binary (2 levels)
    1, ternary (3) 2, a codebook of ``2**k`` levels ``k``."""
    n_levels = operator.index(n_levels)
    if n_levels < 1:
        raise ValueError(f"a weight kind needs at least one level, not {n_levels}")
    return max(1, (n_levels - 1).bit_length())


@dataclass(frozen=True)
class WeightKind:
    """One kind of stored weight.

    Attributes
    ----------
    name : str
        The IR's ``weight_kind`` string.
    levels : tuple of int, or None
        The value of each code (index = code) of a *fixed* kind; None for a *table* kind, whose
        layers carry their own levels (``codebook``).
    doc : str
        One line: what a code means (for messages, the CLI and the README).
    """
    name: str
    levels: "tuple | None"
    doc: str

    @property
    def table(self):
        """True for a kind whose levels are a per-layer table (the IR's ``codebook`` array)."""
        return self.levels is None

    def levels_of(self, table=None):
        """The levels of a layer of this kind, a tuple of ints: the fixed levels (``table``
        must be None) or the layer's ``table`` (required for a table kind)."""
        if self.levels is not None:
            if table is not None:
                raise ValueError(f"{self.name} weights have fixed levels {self.levels}; "
                                 f"no table expected")
            return self.levels
        if table is None:
            raise ValueError(f"{self.name} weights need the layer's table of levels")
        return tuple(int(v) for v in table)

    def code_bits(self, table=None):
        """Bits of one stored code (see :func:`code_bits`)."""
        return code_bits(len(self.levels_of(table)))

    def code_range(self, table=None):
        """``(lo, hi)``, the inclusive range of stored codes."""
        return (0, len(self.levels_of(table)) - 1)


#: Every weight kind, by name, in a fixed order (the order fuzzing and error messages use).
WEIGHT_KINDS = {kind.name: kind for kind in (
    WeightKind("binary", (-1, 1), "1-bit code: 0 ↦ -1, 1 ↦ +1"),
    WeightKind("ternary", (0, 1, -1), "2-bit code: 0 ↦ 0, 1 ↦ +1, 2 ↦ -1 (3 unused)"),
    WeightKind("codebook", None,
               "k-bit index into the layer's table of 2**k signed integer levels"),
)}


def weight_kind(name):
    """The :class:`WeightKind` called ``name``; ValueError listing the known kinds otherwise."""
    try:
        return WEIGHT_KINDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown weight kind {name!r} (known: "
                         f"{', '.join(WEIGHT_KINDS)})") from None
