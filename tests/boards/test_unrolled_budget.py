"""The logic budget of unrolled layers (issue 23): on the ECP5 a design with unrolled layers
may take ``UNROLLED_LC_SHARE`` of the cells (thousands of short carry chains do not place
above that), a folded one ``LC_HEADROOM``; the fit check refuses with the reason, and
``--style auto`` unrolls only within that budget."""

import numpy as np
import pytest

from qnnfab import random_net
from qnnfab.boards.build import FitError, check_fit, estimate
from qnnfab.boards.registry import LC_HEADROOM, UNROLLED_LC_SHARE, board_styles, get_board, \
    lc_budget


def _net(hidden):
    return random_net.random_network(np.random.default_rng(0), features=[64, hidden, 10],
                                     input_bits=5, hidden_bits=2, weight_kind="ternary")


def test_budget_per_family_and_style():
    ecp5, ice40 = get_board("ulx3s-25f"), get_board("icebreaker")
    assert lc_budget(ecp5, ["folded", "folded"]) == int(LC_HEADROOM * ecp5.lut)
    assert lc_budget(ecp5, ["folded", "unrolled"]) == int(UNROLLED_LC_SHARE["ecp5"] * ecp5.lut)
    assert lc_budget(ecp5) == lc_budget(ecp5, ["unrolled"])
    assert lc_budget(ice40, ["unrolled"]) == int(LC_HEADROOM * ice40.lut)


def test_unrolled_design_above_the_share_is_refused_with_the_reason():
    net = _net(64)
    board = get_board("ulx3s-25f")
    styles = ["unrolled", "unrolled"]
    lc = estimate(net, None, family="ecp5", styles=styles)["lc"]
    assert UNROLLED_LC_SHARE["ecp5"] * board.lut < lc < LC_HEADROOM * board.lut
    with pytest.raises(FitError, match="UNROLLED_LC_SHARE") as err:
        check_fit(net, board, None, styles=styles)
    assert f"{lc:,}" in str(err.value) and "--style auto" in str(err.value)
    check_fit(net, board, None, styles=["folded", "folded"])      # folded it fits


def test_auto_stays_within_the_unrolled_budget():
    board = get_board("ulx3s-85f")
    net = _net(64)
    styles = board_styles(net, board, "auto")
    assert "unrolled" in styles
    from qnnfab.boards.registry import board_folding
    est = estimate(net, board_folding(net, board), family="ecp5", styles=styles)
    assert est["lc"] <= lc_budget(board, styles)
