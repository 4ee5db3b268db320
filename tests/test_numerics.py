import itertools

import pytest

from qnnfab import numerics


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
    with pytest.raises(ValueError, match="unknown weight kind 'quaternary'"):
        numerics.acc_width(4, 1, "quaternary")
