"""Per-board build defaults: the folding budget and design clock in the registry,
``board_folding`` (the one place a board's folding is derived), ``build()`` using them, and the
loud "timing not met" path."""

import json
import os

import numpy as np
import pytest

from qnnfab import random_net
from qnnfab.boards import build as build_mod
from qnnfab.boards import top as top_mod
from qnnfab.boards.build import build, check_fit, timing_warning
from qnnfab.boards.registry import (BOARDS, LC_HEADROOM, Board, board_folding, bram_blocks_for,
                                     get_board)
from qnnfab.boards.top import pll_config
from qnnfab.rtl.folding import auto_folding, check_folding, network_cycles

def _net(features, input_bits=1, seed=0):
    return random_net.random_network(np.random.default_rng(seed), features=features,
                                     input_bits=input_bits)


@pytest.fixture(scope="module")
def default_net():
    """A random network of the default shape (digits-bnn: 64x5b -> 256 -> 256 -> 10)."""
    return _net([64, 256, 256, 10], input_bits=5)


@pytest.mark.parametrize("name", list(BOARDS))
def test_board_defaults_are_sane(name):
    board = BOARDS[name]
    assert isinstance(board.max_lanes, int) and board.max_lanes >= 256
    assert board.design_clock_mhz > 0 and board.clock_mhz > 0
    # The PLL can make the design clock from the oscillator (or it is the oscillator).
    if board.design_clock_mhz != board.clock_mhz:
        _, actual = pll_config(board.family, board.clock_mhz * 1e6,
                               board.design_clock_mhz * 1e6)
        assert actual == pytest.approx(board.design_clock_mhz * 1e6, rel=1e-9), \
            f"{name}: PLL makes {actual / 1e6} MHz for {board.design_clock_mhz} MHz"


def test_oscillator_stays_separate_from_the_design_clock():
    assert get_board("icebreaker").clock_mhz == 12.0
    assert get_board("ulx3s-85f").clock_mhz == 25.0
    assert get_board("icebreaker").design_clock_mhz > 12.0
    assert get_board("ulx3s-85f").design_clock_mhz > 25.0
    # A board without a design clock runs at its oscillator.
    plain = Board(name="x", description="x", platform=object, family="ice40", device="d",
                  package="p", lut=1, ff=1, bram_blocks=1, bram_bits=1, dsp=0, clock_mhz=12.0)
    assert plain.design_clock_mhz == 12.0 and plain.max_lanes == 256


@pytest.mark.parametrize("kwargs,message", [
    ({"max_lanes": 0}, r"Board 'x': max_lanes must be a positive integer, not 0"),
    ({"max_lanes": True}, r"max_lanes must be a positive integer, not True"),
    ({"design_clock_mhz": -1.0}, r"Board 'x': design_clock_mhz must be a positive frequency "
                                 r"in MHz, not -1.0"),
])
def test_bad_board_defaults(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Board(name="x", description="x", platform=object, family="ice40", device="d",
              package="p", lut=1, ff=1, bram_blocks=1, bram_bits=1, dsp=0, clock_mhz=12.0,
              **kwargs)


@pytest.mark.parametrize("name", ["icebreaker", "ulx3s-85f", "ulx3s-25f"])
def test_board_folding_of_the_default_network(default_net, name):
    board = get_board(name)
    folding = board_folding(default_net, name)
    assert folding == auto_folding(default_net, max_lanes=board.max_lanes), \
        f"{name}: the default network must get the board's full budget"
    assert folding == board_folding(default_net, board), "a Board and its name agree"
    check_folding(default_net, folding)
    check_fit(default_net, board, folding)
    assert network_cycles(default_net, folding) * board.max_lanes >= max(
        layer.macs for layer in default_net.layers)


def test_board_folding_widths(default_net):
    ice = board_folding(default_net, "icebreaker")
    ulx = board_folding(default_net, "ulx3s-85f")
    assert network_cycles(default_net, ulx) <= 30
    assert network_cycles(default_net, ulx) * 8 <= network_cycles(default_net, ice)
    assert max(f.lanes for f in ulx) == get_board("ulx3s-85f").max_lanes


def test_board_folding_override_and_errors(default_net):
    assert board_folding(default_net, "ulx3s-85f", max_lanes=256) == auto_folding(default_net)
    with pytest.raises(ValueError, match=r"max_lanes must be >= 1, not 0"):
        board_folding(default_net, "icebreaker", max_lanes=0)
    with pytest.raises(TypeError, match=r"max_lanes must be an integer, not True"):
        board_folding(default_net, "icebreaker", max_lanes=True)
    with pytest.raises(ValueError, match=r"unknown board 'nope'"):
        board_folding(default_net, "nope")


def test_board_folding_shrinks_to_fit_the_block_rams(default_net):
    """A budget wider than the block RAM ports allow is halved until the weights read per cycle
    fit (measured: 512 lanes asked the UP5K for 45 of its 30 EBR)."""
    wide = auto_folding(default_net, max_lanes=512)
    assert bram_blocks_for(default_net, wide, "icebreaker") > 30
    folding = board_folding(default_net, "icebreaker", max_lanes=1024)
    assert folding == auto_folding(default_net, max_lanes=256)
    assert bram_blocks_for(default_net, folding, "icebreaker") <= 30
    # 4096 lanes fit the 85F's 208 DP16KD but not the 25F's 56.
    assert bram_blocks_for(default_net, auto_folding(default_net, max_lanes=4096),
                           "ulx3s-85f") <= 208
    assert board_folding(default_net, "ulx3s-25f", max_lanes=4096) == \
        auto_folding(default_net, max_lanes=1024)


def test_board_folding_shrinks_to_fit_the_logic(default_net):
    """A device with few cells: the budget is halved until the logic estimate fits the
    headroom (:data:`LC_HEADROOM`) of its cells."""
    small = Board(name="small", description="x", platform=object, family="ecp5", device="d",
                  package="p", lut=4000, ff=4000, bram_blocks=200, bram_bits=200 * 18432, dsp=0,
                  clock_mhz=25.0, max_lanes=4096)
    folding = board_folding(default_net, small)
    assert build_mod.estimate(default_net, folding, family="ecp5")["lc"] <= LC_HEADROOM * 4000
    lanes = 4096
    while auto_folding(default_net, max_lanes=lanes) != folding:
        assert build_mod.estimate(default_net, auto_folding(default_net, max_lanes=lanes),
                                  family="ecp5")["lc"] > LC_HEADROOM * 4000
        lanes //= 2
        assert lanes >= 1, "board_folding must be auto_folding at some halved budget"
    assert lanes < 4096


class _Stop(Exception):
    pass


def test_build_uses_board_defaults(monkeypatch, default_net, tmp_path):
    """``build()`` without folding/clock: the board's folding and design clock reach the
    board top."""
    seen = {}

    class FakeTop:
        def __init__(self, network, folding=None, *, clk_freq, baud, core=None, selftest=None,
                     style="folded"):
            seen.update(folding=folding, clk_freq=clk_freq, baud=baud, style=style)
            raise _Stop
    monkeypatch.setattr(top_mod, "BoardTop", FakeTop)
    for name in ("icebreaker", "ulx3s-85f"):
        board = get_board(name)
        with pytest.raises(_Stop):
            build(default_net, name, tmp_path / name)
        assert seen["folding"] == board_folding(default_net, name)
        assert seen["style"] == ["folded"] * len(default_net.layers)    # the default
        assert seen["clk_freq"] == pytest.approx(board.design_clock_mhz * 1e6, rel=1e-3)
        with pytest.raises(_Stop):
            build(default_net, name, tmp_path / name, clock_mhz=board.clock_mhz,
                  folding=[(1, 64), (1, 256), (1, 16)])
        assert seen["clk_freq"] == board.clock_mhz * 1e6
        assert seen["folding"] == [(1, 64), (1, 256), (1, 16)]
    with pytest.raises(TypeError, match=r"clock_mhz must be a frequency in MHz \(a number\), "
                                        r"not '50'"):
        build(default_net, "icebreaker", tmp_path / "x", clock_mhz="50")


def _fake_tools(fmax):
    """A stand-in for the tool steps: writes what nextpnr/Yosys/icepack would."""
    def run_steps(commands, build_dir, env, family, *, progress=None, notes=None):
        pnr = next(argv for argv in commands if argv[0].startswith("nextpnr"))
        assert "--timing-allow-fail" in pnr, "a missed clock must be reported, not fatal"
        with open(os.path.join(build_dir, "top.report.json"), "w") as f:
            json.dump({"utilization": {"ICESTORM_LC": {"used": 400, "available": 5280},
                                       "ICESTORM_RAM": {"used": 4, "available": 30},
                                       "ICESTORM_DSP": {"used": 0, "available": 8}},
                       "fmax": {} if fmax is None else
                       {"cd_sync.clk": {"achieved": fmax, "constraint": 30.0}}}, f)
        with open(os.path.join(build_dir, "top.rpt"), "w") as f:
            f.write("2.50. Printing statistics.\n\n=== top ===\n  120   SB_DFF\n"
                    "  300   SB_LUT4\n")
        with open(os.path.join(build_dir, "top.bin"), "wb") as f:
            f.write(b"\0" * 16)
        return {"synthesis": 0.0, "place and route": 0.0, "bitstream": 0.0}
    return run_steps


@pytest.mark.parametrize("fmax,met", [(20.0, False), (None, False), (99.0, True)])
def test_build_reports_timing(monkeypatch, tmp_path, fmax, met):
    net = _net([8, 4, 2])
    monkeypatch.setattr(build_mod, "run_steps", _fake_tools(fmax))
    report = build(net, "icebreaker", tmp_path, clock_mhz=30.0)
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["clock_mhz"] == 30.0 and on_disk["fmax_mhz"] == fmax
    assert on_disk["timing_met"] is met
    assert on_disk["pll"]["requested_mhz"] == 30.0
    assert on_disk["folding"] == [{"pe": f.pe, "simd": f.simd}
                                  for f in board_folding(net, "icebreaker")]
    lanes = get_board("icebreaker").max_lanes
    assert on_disk["folding_source"] == f"board icebreaker default (max_lanes={lanes})"
    if met:
        assert report["timing_warning"] is None
    elif fmax is None:
        assert "timing NOT met on icebreaker: nextpnr reported no fmax" in \
            report["timing_warning"]
    else:
        assert report["timing_warning"].startswith(
            "timing NOT met on icebreaker: fmax 20.00 MHz < clock 30.00 MHz")


def test_timing_warning_text():
    assert timing_warning({"fmax_mhz": 50.0, "clock_mhz": 50.0}) is None
    text = timing_warning({"board": "ulx3s-85f", "fmax_mhz": 81.234, "clock_mhz": 100.0})
    assert text == ("timing NOT met on ulx3s-85f: fmax 81.23 MHz < clock 100.00 MHz; the "
                    "design may fail at this clock and inferences_per_s is not achievable "
                    "(use --clock-mhz 73.1 or a smaller folding)")


def test_report_names_the_folding_source(monkeypatch, tmp_path):
    net = _net([8, 4, 2])
    monkeypatch.setattr(build_mod, "run_steps", _fake_tools(99.0))
    given = build(net, "icebreaker", tmp_path / "a", folding=[(1, 1), (1, 1)])
    assert given["folding_source"] == "given"
    assert given["folding"] == [{"pe": 1, "simd": 1}, {"pe": 1, "simd": 1}]
    same = build(net, "icebreaker", tmp_path / "b",
                 folding=[(f.pe, f.simd) for f in board_folding(net, "icebreaker")])
    assert same["folding_source"].startswith("board icebreaker default")


@pytest.mark.parametrize("name", ["icebreaker", "ulx3s-85f"])
def test_board_nextpnr_options_reach_nextpnr(tmp_path, name):
    plan = build_mod.plan_build(_net([8, 4, 2]), name, tmp_path)
    seen = {"pnr": next(argv for argv in plan.commands if argv[0].startswith("nextpnr"))}
    pnr = seen["pnr"]
    assert "--timing-allow-fail" in pnr
    extra = get_board(name).nextpnr_opts.split()
    assert extra == [] or " ".join(extra) in " ".join(pnr), f"{extra} not in {pnr}"
    assert get_board("ulx3s-85f").nextpnr_opts == "--router router2"


def test_report_sets_the_build_beside_the_memory_bound(monkeypatch, tmp_path):
    # digits-bnn's shape: 84,480 weight bits over 30 EBR x 16-bit ports = 176 cycles at best
    net = random_net.random_network(np.random.default_rng(0), features=[64, 256, 256, 10],
                                    input_bits=5)
    monkeypatch.setattr(build_mod, "run_steps", _fake_tools(99.0))
    report = build(net, "icebreaker", tmp_path)
    b = report["bounds"]
    assert net.weight_bits == 84_480 and b["memory_bound_cycles"] == 176
    # with the UP5K's four 16-bit SPRAM ports beside them: 84,480 / 544 bits = 156 cycles
    assert b["memory_bound_cycles_spram"] == 156
    assert b["cycles_over_bound"] == report["cycles_per_inference"] / 176
    lut = report["resources"]["lut"]["used"]
    assert b["macs_per_lc_per_cycle"] == pytest.approx(
        net.macs / lut / report["cycles_per_inference"])


def test_a_learning_board_leaves_room_for_the_learner(tmp_path):
    # the frozen layers get a quarter of the folding budget, the learner one lane, and an
    # iCE40 board the learner's clock: digits-tnn's learning board then fits the iCEBreaker
    net = random_net.random_network(np.random.default_rng(0), features=[64, 128, 128, 10],
                                    input_bits=5, hidden_bits=2, weight_kind="ternary")
    plan = build_mod.plan_build(net, "icebreaker", tmp_path, learn=True)
    assert plan.folding_source == "board icebreaker default (max_lanes=64, a learning board)"
    assert [(f.pe, f.simd) for f in plan.folding] == \
        [(f.pe, f.simd) for f in board_folding(net, "icebreaker", max_lanes=64)]
    assert plan.clock_mhz == build_mod.LEARNING_CLOCK_MHZ["ice40"]
    assert plan.learning["lanes"] == 1 and plan.top.core.learner.lanes == 1
