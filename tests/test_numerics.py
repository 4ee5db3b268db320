import itertools

import numpy as np
import pytest

from qnnfab import kinds, numerics


@pytest.mark.parametrize("lo,hi,width", [(-1, 1, 2), (0, 0, 1), (-1, 0, 1), (-2, 1, 2),
                                         (-128, 127, 8), (-128, 128, 9), (-1024, 1024, 12),
                                         (-1024, 1025, 12)])
def test_signed_width(lo, hi, width):
    assert numerics.signed_width(lo, hi) == width


def test_signed_width_rejects_empty_range():
    with pytest.raises(ValueError, match="empty range 3..2"):
        numerics.signed_width(3, 2)


@pytest.mark.parametrize("fan_in,bits", list(itertools.product([1, 3, 64, 256], [1, 2, 5, 8])))
def test_acc_width_holds_every_reachable_accumulator(fan_in, bits):
    lo, hi = numerics.activation_range(bits)
    bound = fan_in * max(abs(lo), abs(hi))
    assert numerics.acc_bound(fan_in, bits, "binary") == bound
    width = numerics.acc_width(fan_in, bits, "binary")
    assert -(1 << (width - 1)) <= -bound and bound <= (1 << (width - 1)) - 1
    # and it is the smallest such width
    assert not (-(1 << (width - 2)) <= -bound and bound <= (1 << (width - 2)) - 1)
    tlo, thi = numerics.threshold_bounds(fan_in, bits, "binary")
    twidth = numerics.threshold_width(fan_in, bits, "binary")
    assert -(1 << (twidth - 1)) <= tlo and thi <= (1 << (twidth - 1)) - 1


def test_unknown_weight_kind():
    with pytest.raises(ValueError, match=r"unknown weight kind 'quaternary' \(known: binary, "
                                         r"ternary, codebook\)"):
        numerics.acc_width(4, 1, "quaternary")


def test_fixed_levels_come_from_the_registry():
    assert numerics.WEIGHT_LEVELS == {name: kind.levels for name, kind in
                                      kinds.WEIGHT_KINDS.items() if not kind.table}


# -- a weight given as a sequence of levels (a codebook) ------------------------------------------

def brute_force_bound(fan_in, in_bits, levels):
    """max |Σ a_i·w_i| over every activation value and weight level, by enumeration."""
    lo, hi = numerics.activation_range(in_bits)
    values = [-1, 1] if in_bits == 1 else range(lo, hi + 1)
    products = [a * w for a in values for w in levels]
    # the extremes of a sum of fan_in independent products are fan_in times the extreme product
    best = 0
    for combo in itertools.product(products, repeat=fan_in):
        best = max(best, abs(sum(combo)))
    return best


@pytest.mark.parametrize("levels", [(-5, 0, 1, 3), (2, 7), (-1, 1), (0, 1, -1), (-8, -3, -1, 0,
                                                                                  0, 2, 4, 6)])
@pytest.mark.parametrize("fan_in,in_bits", [(1, 1), (2, 2), (3, 1)])
def test_codebook_acc_bound_is_reachable_and_tight(levels, fan_in, in_bits):
    bound = numerics.acc_bound(fan_in, in_bits, levels)
    assert bound == brute_force_bound(fan_in, in_bits, levels)
    assert numerics.acc_width(fan_in, in_bits, levels) == numerics.signed_width(-bound, bound)
    assert numerics.threshold_bounds(fan_in, in_bits, levels) == (-bound, bound + 1)
    assert numerics.threshold_width(fan_in, in_bits, levels) == \
        numerics.signed_width(-bound, bound + 1)
    assert numerics.weight_magnitude(levels) == max(abs(v) for v in levels)


@pytest.mark.parametrize("kind", list(numerics.WEIGHT_LEVELS))
@pytest.mark.parametrize("fan_in,bits", [(1, 1), (64, 5), (256, 8)])
def test_kind_name_and_its_levels_agree(kind, fan_in, bits):
    levels = numerics.WEIGHT_LEVELS[kind]
    assert numerics.weight_levels(kind) == levels == numerics.weight_levels(list(levels))
    for fn in (numerics.acc_bound, numerics.acc_width, numerics.threshold_bounds,
               numerics.threshold_width):
        assert fn(fan_in, bits, kind) == fn(fan_in, bits, levels) == \
            fn(fan_in, bits, np.asarray(levels, dtype=np.int16))


@pytest.mark.parametrize("n_levels,code_bits", [(2, 1), (4, 2), (8, 3), (16, 4), (256, 8)])
def test_codebook_code_bits(n_levels, code_bits):
    assert numerics.weight_code_bits(list(range(n_levels))) == code_bits
    assert numerics.weight_code_bits(np.zeros(n_levels, dtype=np.int64)) == code_bits


def test_fixed_kind_code_bits():
    assert numerics.weight_code_bits("binary") == 1
    assert numerics.weight_code_bits("ternary") == 2


def test_weight_levels_as_ints():
    got = numerics.weight_levels(np.array([-3, 0, 5, 127], dtype=np.int8))
    assert got == (-3, 0, 5, 127) and all(type(v) is int for v in got)
    # wide levels: the bound is computed in Python ints, never wrapped in a numpy dtype
    assert numerics.acc_bound(1024, 8, np.array([-32767, 32767], dtype=np.int16)) == \
        1024 * 32767 * 255


def test_codebook_name_without_levels_is_refused():
    with pytest.raises(ValueError, match=r"codebook weights have per-layer levels: pass the "
                                         r"layer's levels"):
        numerics.acc_width(4, 1, "codebook")
    with pytest.raises(ValueError, match="a codebook needs at least one level"):
        numerics.acc_bound(4, 1, [])
