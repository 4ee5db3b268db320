"""The integer rules shared by the golden model and the RTL, written in one place.

Nothing here imports torch or Amaranth. Both ``qnnfab.spec.golden`` and ``qnnfab.rtl`` call
these functions, so a width or a range can never disagree between the spec and the hardware.

Encodings (see ``../shared/DESIGN.md``, "Numerics"):

* an activation of ``bits == 1`` is one bit whose code 1 means +1 and code 0 means -1;
* an activation of ``bits > 1`` is an unsigned integer ``0 .. 2**bits - 1``;
* a binary weight is one bit whose code 1 means +1 and code 0 means -1;
* a ternary weight is a 2-bit code: 0 means 0, 1 means +1, 2 means -1 (3 is not used);
* a codebook weight is a k-bit index into the layer's own table of ``2**k`` signed integer
  levels (``DenseLayer.codebook``).

:data:`WEIGHT_LEVELS` holds, for each fixed weight kind, the value of each code (index = code),
derived from the registry of weight kinds (:mod:`qnnfab.kinds`); ``qnnfab.spec.golden`` takes
the weight values from it.
The functions below take a *weight* argument that is either a fixed kind's name or a layer's
sequence of levels (``DenseLayer.weight_levels``), so a codebook layer uses the same rules.
"""

from . import kinds

__all__ = [
    "WEIGHT_LEVELS", "weight_levels", "weight_code_bits", "activation_range", "weight_magnitude",
    "acc_bound", "acc_width", "threshold_bounds", "threshold_width", "signed_width",
    "negated_codes",
]

#: The value each code stands for (index = code), per fixed weight kind (from
#: :data:`qnnfab.kinds.WEIGHT_KINDS`; table kinds such as ``codebook`` have per-layer levels).
WEIGHT_LEVELS = {name: kind.levels for name, kind in kinds.WEIGHT_KINDS.items()
                 if not kind.table}


def weight_levels(weight):
    """The levels of ``weight``: a fixed kind's name (:data:`WEIGHT_LEVELS`) or a sequence of
    integer levels (a codebook), as a tuple of ints."""
    if isinstance(weight, str):
        kind = kinds.weight_kind(weight)
        if kind.table:
            raise ValueError(f"{weight} weights have per-layer levels: pass the layer's levels")
        return kind.levels
    levels = tuple(int(v) for v in weight)
    if not levels:
        raise ValueError("a codebook needs at least one level")
    return levels


def weight_code_bits(weight):
    """Bits of one stored weight code (binary 1, ternary 2, a codebook of 2**k levels k)."""
    return kinds.code_bits(len(weight_levels(weight)))


def signed_width(lo, hi):
    """Bits of a two's-complement integer that holds every value of ``lo .. hi``."""
    lo, hi = int(lo), int(hi)
    if lo > hi:
        raise ValueError(f"empty range {lo}..{hi}")
    width = 1
    while not (-(1 << (width - 1)) <= lo and hi <= (1 << (width - 1)) - 1):
        width += 1
    return width


def activation_range(bits):
    """``(lo, hi)`` of the *value* an activation code of ``bits`` bits stands for."""
    bits = int(bits)
    if bits < 1:
        raise ValueError(f"activation bits must be >= 1, not {bits}")
    if bits == 1:
        return (-1, 1)
    return (0, (1 << bits) - 1)


def weight_magnitude(weight):
    """Largest ``|w|`` a weight of this kind (or codebook) can take."""
    return max(abs(v) for v in weight_levels(weight))


def acc_bound(fan_in, in_bits, weight):
    """Largest ``|acc|`` of a dot product: fan-in times the largest ``|w|·|a|``."""
    lo, hi = activation_range(in_bits)
    return int(fan_in) * weight_magnitude(weight) * max(abs(lo), abs(hi))


def acc_width(fan_in, in_bits, weight):
    """Width of the signed accumulator: holds ``-acc_bound .. +acc_bound``, so never overflows."""
    bound = acc_bound(fan_in, in_bits, weight)
    return signed_width(-bound, bound)


def threshold_bounds(fan_in, in_bits, weight):
    """Range a stored threshold is clamped to at export: ``-bound .. bound + 1``.

    ``-bound`` makes a comparison that is always true, ``bound + 1`` one that is never true,
    so every threshold outside this range can be clamped into it without changing any output.
    """
    bound = acc_bound(fan_in, in_bits, weight)
    return (-bound, bound + 1)


def threshold_width(fan_in, in_bits, weight):
    """Width of the signed comparator that holds the accumulator and every threshold."""
    return signed_width(*threshold_bounds(fan_in, in_bits, weight))


def negated_codes(weight):
    """For each code of ``weight``, the code whose level is its negation, or None where the
    levels have no negation (a codebook that is not symmetric). Binary: ``(1, 0)``; ternary:
    ``(0, 2, 1)``. Used by kernel codebooks with a per-kernel sign."""
    levels = weight_levels(weight)
    return tuple(levels.index(-v) if -v in levels else None for v in levels)
