"""The board registry."""

import dataclasses

import pytest
from amaranth.build import Clock

from qnnfab.boards.families import FAMILIES, get_family
from qnnfab.boards.registry import BOARDS, Board, get_board
from qnnfab.boards.top import board_leds


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
    assert board.family in FAMILIES
    platform = board.platform()
    assert platform.device == board.device
    assert platform.package == board.package
    # The registry's clock is the platform's default clock; the UART resource exists.
    clk = platform.lookup(platform.default_clk)
    assert any(isinstance(c, Clock) and c.frequency == board.clock_mhz * 1e6
               for c in [clk.clock])
    platform.lookup("uart", 0)
    assert board.bram_bits > 0 and board.uart_baud == 115200
    assert board.bitstream_suffix == {"ice40": ".bin", "ecp5": ".bit",
                                      "gowin": ".fs"}[board.family]
    assert board.bram_bits % board.bram_blocks == 0 and board.lut > 0 and board.ff > 0
    assert board.program_command.format(bitstream="X") and board.uart_port
    # A design clock the family's PLL makes exactly (or the oscillator itself).
    if board.design_clock_mhz != board.clock_mhz:
        _, actual = get_family(board.family).pll_solve(board.clock_mhz * 1e6,
                                                       board.design_clock_mhz * 1e6)
        assert actual == board.design_clock_mhz * 1e6


#: The LEDs the board top drives (leds[0]: answers, leds[1]: errors) on each board.
LEDS = {"icebreaker": ["led_0", "led_1"], "ulx3s-85f": ["led_0", "led_1"],
        "ulx3s-25f": ["led_0", "led_1"], "ulx3s-12f": ["led_0", "led_1"],
        "icesugar": ["led_0", "led_1"], "ice40-hx8k-b-evn": ["led_0", "led_1"],
        "ecp5-evn": ["led_0", "led_1"], "tang-nano-9k": ["led_0", "led_1"],
        # The 5A-75B's UART transmits on its only LED's pin.
        "colorlight-5a75b": [],
        # An RGB LED: green shows answers, red errors, blue is switched off.
        "orangecrab-25f": ["rgb_led_0__g", "rgb_led_0__r", "rgb_led_0__b"]}


@pytest.mark.parametrize("name", list(BOARDS))
def test_board_top_leds(name):
    platform = BOARDS[name].platform()
    platform.request("uart", 0, dir="-")
    leds = board_leds(platform, 2)
    assert [led.io.name.removesuffix("__io") for led in leds] == LEDS[name]


def test_new_boards():
    """The boards of issue 19, with their data-sheet resources."""
    expect = {
        "icesugar": ("ice40", "iCE40UP5K", "SG48", 5280, 30, 8, 12.0),
        "ice40-hx8k-b-evn": ("ice40", "iCE40HX8K", "CT256", 7680, 32, 0, 12.0),
        "ecp5-evn": ("ecp5", "LFE5UM5G-85F", "BG381", 83640, 208, 156, 12.0),
        "colorlight-5a75b": ("ecp5", "LFE5U-25F", "BG256", 24288, 56, 28, 25.0),
        "orangecrab-25f": ("ecp5", "LFE5U-25F", "MG285", 24288, 56, 28, 48.0),
        "tang-nano-9k": ("gowin", "GW1NR-9C", "QN88P", 8640, 26, 20, 27.0),
    }
    for name, values in expect.items():
        b = get_board(name)
        assert (b.family, b.device, b.package, b.lut, b.bram_blocks, b.dsp,
                b.clock_mhz) == values, name
    assert get_board("tang-nano-9k").bram_bits == 26 * 18432
    assert get_board("tang-nano-9k").platform().part == "GW1NR-LV9QN88PC6/I5"
    # The OrangeCrab's UART is qnnfab's, on the Feather header's pins 0 (RX) and 1 (TX).
    platform = get_board("orangecrab-25f").platform()
    uart = platform.lookup("uart", 0)
    pins = {sub.name: sub.ios[0].map_names(platform._conn_pins, uart) for sub in uart.ios}
    assert pins == {"rx": ["N17"], "tx": ["M18"]}
    assert "fomu-pvt" not in BOARDS and "upduino-v3" not in BOARDS


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


def test_ice40_pll_input():
    """A PLL takes the oscillator's pad where it is the PLL's own (the UP5K boards' pin 35);
    the HX8K breakout's 12 MHz (J3) goes through its input buffer to an SB_PLL40_CORE."""
    ice40 = get_family("ice40")
    for name in ("icebreaker", "icesugar"):
        assert ice40.pll_from_pad(BOARDS[name].platform())
    assert not ice40.pll_from_pad(BOARDS["ice40-hx8k-b-evn"].platform())
