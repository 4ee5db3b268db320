"""The board registry."""

import dataclasses

import pytest
from amaranth.build import Clock

from qnnfab.boards.registry import BOARDS, Board, get_board


def test_known_boards():
    assert {"icebreaker", "ulx3s-85f"} <= set(BOARDS)
    ice = get_board("icebreaker")
    assert (ice.family, ice.device, ice.package) == ("ice40", "iCE40UP5K", "SG48")
    assert (ice.lut, ice.bram_blocks, ice.bram_bits, ice.dsp) == (5280, 30, 122880, 8)
    ulx = get_board("ulx3s-85f")
    assert (ulx.family, ulx.device, ulx.package) == ("ecp5", "LFE5U-85F", "BG381")
    assert (ulx.lut, ulx.bram_blocks, ulx.dsp) == (83640, 208, 156)
    assert get_board(ice) is ice


@pytest.mark.parametrize("name", list(BOARDS))
def test_board_matches_its_platform(name):
    board = BOARDS[name]
    assert board.name == name
    assert board.family in ("ice40", "ecp5")
    platform = board.platform()
    assert platform.device == board.device
    assert platform.package == board.package
    # The registry's clock is the platform's default clock; the UART resource exists.
    clk = platform.lookup(platform.default_clk)
    assert any(isinstance(c, Clock) and c.frequency == board.clock_mhz * 1e6
               for c in [clk.clock])
    platform.lookup("uart", 0)
    platform.lookup("led", 0)
    platform.lookup("led", 1)
    assert board.bram_bits > 0 and board.uart_baud == 115200
    assert board.bitstream_suffix == {"ice40": ".bin", "ecp5": ".bit"}[board.family]


def test_board_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        BOARDS["icebreaker"].lut = 1
    assert isinstance(BOARDS["icebreaker"], Board)


def test_unknown_board_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown board 'icestick'; known boards: "
                                         r"icebreaker, ulx3s-85f"):
        get_board("icestick")
    with pytest.raises(ValueError, match=r"unknown board None"):
        get_board(None)
