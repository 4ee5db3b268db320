"""SPRAM in the board registry and the fit check: which boards have it, ``--weights-in auto``
leaves every network that fits block RAM as it was, puts the largest layers in SPRAM when
block RAM does not suffice, and the errors of a board without SPRAM."""

import numpy as np
import pytest

from qnnfab import random_net
from qnnfab.boards.build import FitError, check_fit
from qnnfab.boards.registry import (BOARDS, NoSPRAM, board_folding, board_weights,
                                    bram_blocks_for, get_board)
from qnnfab.rtl.estimate import spram_blocks_for
from qnnfab.rtl.network import Network


def _net(features, input_bits=1, kind="binary", seed=0):
    return random_net.random_network(np.random.default_rng(seed), features=list(features),
                                     input_bits=input_bits, weight_kind=kind)


def test_spram_per_board():
    assert {name: b.spram_blocks for name, b in BOARDS.items() if b.spram_blocks} == {
        "icebreaker": 4, "icesugar": 4}
    assert all(b.device == "iCE40UP5K" for b in BOARDS.values() if b.spram_blocks)


@pytest.mark.parametrize("board", list(BOARDS))
@pytest.mark.parametrize("features, bits, kind", [((64, 256, 256, 10), 5, "binary"),
                                                  ((64, 128, 128, 10), 5, "ternary")])
def test_auto_keeps_what_fits_block_ram(board, features, bits, kind):
    net = _net(features, bits, kind)
    folding, stores, note = board_weights(net, board, "auto")
    assert folding == board_folding(net, board)
    assert stores == ["ebr"] * len(net.layers) and note is None


def test_auto_moves_the_largest_layer_to_spram():
    # 784-256-256-10 binary: 268,800 weight bits, twice the UP5K's 122,880 of EBR.
    net = _net((784, 256, 256, 10))
    with pytest.raises(FitError, match=r"268,800 weight bits > 122,880 bits of block RAM"):
        check_fit(net, "icebreaker", board_folding(net, "icebreaker"))
    folding, stores, note = board_weights(net, "icebreaker", "auto")
    assert stores == ["spram", "ebr", "ebr"]
    assert "layer 0 (4 of 4 SPRAMs; --weights-in auto)" in note
    assert spram_blocks_for(net, folding, stores) == 4      # 64-bit words: all four SPRAMs
    assert folding[0].pe * folding[0].simd == 64
    assert bram_blocks_for(net, folding, "icebreaker", weights_in=stores) <= 30
    est = check_fit(net, "icebreaker", folding, weights_in=stores)
    assert est["spram_blocks"] == 4 and est["spram_weight_bits"] == 784 * 256
    assert est["weight_bits"] == 256 * 256 + 256 * 10
    assert Network(net, folding, weights_in=stores).interval == 784 * 256 // 64


def test_spram_everywhere_and_given_lists():
    net = _net((64, 256, 256, 10), 5)
    folding, stores, _ = board_weights(net, "icesugar", "spram")
    assert stores == ["spram"] * 3
    assert spram_blocks_for(net, folding, stores) <= 4
    folding, stores, _ = board_weights(net, "icebreaker", ["ebr", "spram", "ebr"])
    assert stores == ["ebr", "spram", "ebr"]
    # The EBR layers keep the board's folding budget; the SPRAM layer reads 64 bits a cycle.
    assert folding[1].pe * folding[1].simd == 64


def test_boards_without_spram():
    net = _net((64, 256, 256, 10), 5)
    for name in ("ulx3s-12f", "ice40-hx8k-b-evn", "tang-nano-9k"):
        with pytest.raises(NoSPRAM, match=rf"^{name} \({get_board(name).device}\) has no "
                                          r"SPRAM: weights in SPRAM need an iCE40 UP5K board "
                                          r"\(icebreaker, icesugar\); use --weights-in ebr$"):
            board_weights(net, name, "spram")
        assert board_weights(net, name, "auto")[1] == ["ebr"] * 3
    with pytest.raises(FitError, match=r"its SPRAM layers need 1 SPRAMs, the device has 0"):
        check_fit(net, "ulx3s-12f", [(1, 16), (1, 16), (1, 16)],
                  weights_in=["spram", "ebr", "ebr"])


def test_spram_that_does_not_fit():
    net = _net((64, 256, 256, 10), 5)
    with pytest.raises(NoSPRAM, match=r"the SPRAM layers need 16 SPRAMs at this folding .*"
                                      r"icebreaker has 4"):
        board_weights(net, "icebreaker", ["ebr", "spram", "ebr"],
                      [(1, 64), (1, 256), (1, 16)])
    with pytest.raises(FitError, match=r"its SPRAM layers need 16 SPRAMs, the device has 4"):
        check_fit(net, "icebreaker", [(1, 64), (1, 256), (1, 16)],
                  weights_in=["ebr", "spram", "ebr"])
    big = _net((1024, 1024, 10))     # 1 Mbit + a bit: more than the four SPRAMs hold
    with pytest.raises(NoSPRAM, match=r"need at least 5 SPRAMs; icebreaker has 4"):
        board_weights(big, "icebreaker", "spram")


def test_build_plan_instantiates_the_sprams(tmp_path):
    """The RTLIL a build hands Yosys: one SB_SPRAM256KA per 16 bits of each SPRAM layer's
    word, no SPRAM without --weights-in, and the plan's fit estimate counts them."""
    from qnnfab.boards.build import plan_build
    net = _net((16, 24, 12, 4), 2, "ternary", seed=4)
    folding = [(2, 8), (3, 8), (2, 4)]      # 32-, 48- and 16-bit words of 2-bit codes
    plan = plan_build(net, "icebreaker", tmp_path / "s", folding=folding,
                      weights_in=["spram", "ebr", "ebr"])
    text = (tmp_path / "s" / "gateware" / "top.il").read_text()
    assert text.count("cell \\SB_SPRAM256KA ") == 2
    assert plan.weights_in == ["spram", "ebr", "ebr"] and plan.estimate["spram_blocks"] == 2
    assert plan.top.load_words == 2 * 24
    plan = plan_build(net, "icebreaker", tmp_path / "e", folding=folding)
    assert "SB_SPRAM256KA" not in (tmp_path / "e" / "gateware" / "top.il").read_text()
    assert plan.weights_in is None and plan.top.load_words == 0
