"""``--style folded|unrolled|auto|S,S,...`` on ``verilog``, ``sim``, ``build`` and ``flow``
(issue 23): parsed and refused in one line, resolved the same way by every command (``auto``
with the board's budget), simulated bit-exact, recorded in the build's report and summary."""

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest

from qnnfab import cli, ir, random_net
from qnnfab.spec import golden


@pytest.fixture
def small_qnn(tmp_path):
    net = random_net.random_network(np.random.default_rng(3), features=[16, 8, 10],
                                    input_bits=3)
    path = tmp_path / "small.qnn"
    ir.save(net, path)
    return net, path


@pytest.fixture
def cnn_qnn(tmp_path):
    net = random_net.random_cnn(np.random.default_rng(0), height=4, width=4, channels=[1, 2],
                                dense=(), n_outputs=3)
    path = tmp_path / "cnn.qnn"
    ir.save(net, path)
    return net, path


def one_error_line(capsys, rc):
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("qnnfab: error: "), err
    return err[0]


def test_parse_style(small_qnn):
    net, _ = small_qnn
    assert cli.parse_style(None) == "folded"
    for word in ("folded", "unrolled", "auto"):
        assert cli.parse_style(word, net) == word
    assert cli.parse_style("folded,unrolled", net) == ["folded", "unrolled"]
    assert cli.parse_style(" unrolled , folded ") == ["unrolled", "folded"]


@pytest.mark.parametrize("argv, words", [
    (["sim", "{net}", "--style", "spatial"],
     "--style: expected folded, unrolled, auto or one of folded/unrolled per layer "
     "(comma-separated), got 'spatial'"),
    (["sim", "{net}", "--style", "unrolled,"], "--style: expected folded, unrolled, auto"),
    (["sim", "{net}", "--style", "auto,folded"], "got 'auto,folded'"),
    (["sim", "{net}", "--style", "unrolled,unrolled,folded"],
     "--style unrolled,unrolled,folded: expected 2 entries (one per layer), got 3"),
    (["sim", "{net}", "--style", "auto"],
     "--style auto needs --board (the board's size is the budget)"),
    (["verilog", "{net}", "--out", "{out}", "--style", "auto"], "--style auto needs --board"),
    (["verilog", "{net}", "--out", "{out}", "--style", "fold"], "got 'fold'"),
    (["build", "{net}", "--board", "icebreaker", "--out", "{out}", "--style", "x,y"],
     "got 'x,y'"),
    (["build", "{net}", "--board", "icebreaker", "--out", "{out}", "--style", "unrolled",
      "--learn"], "--style and --learn: a learning board's layers are folded"),
    (["flow", "--board", "icebreaker", "--out", "{out}", "--style", "wide"], "got 'wide'"),
    (["sim", "{cnn}", "--style", "unrolled,folded"], "--style unrolled,folded: layers[0]"),
])
def test_bad_style_is_one_line(argv, words, small_qnn, cnn_qnn, tmp_path, capsys):
    out = tmp_path / "new" / "out"
    argv = [a.format(net=small_qnn[1], cnn=cnn_qnn[1], out=out) for a in argv]
    line = one_error_line(capsys, cli.main(argv))
    assert words in line
    assert not (tmp_path / "new").exists(), "a refused command left its output folder"


def test_a_conv_layer_stays_folded_with_style_unrolled(cnn_qnn, capsys):
    net, path = cnn_qnn
    assert cli.main(["sim", str(path), "--style", "unrolled", "--vectors", "3", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "style folded,unrolled (--style unrolled)" in out and "3/3 vectors bit-exact" in out


@pytest.mark.parametrize("style, styles", [("unrolled", "unrolled,unrolled"),
                                           ("folded,unrolled", "folded,unrolled"),
                                           ("unrolled,folded", "unrolled,folded")])
def test_sim_unrolled_is_bit_exact_in_amaranth(small_qnn, capsys, style, styles):
    _, path = small_qnn
    assert cli.main(["sim", str(path), "--style", style, "--vectors", "30", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"style {styles} (--style {style})" in out
    assert "30/30 vectors bit-exact" in out


def test_sim_unrolled_is_bit_exact_in_verilator(small_qnn, capsys, shared_build_dir,
                                                monkeypatch):
    # the bulk harness (sim/bulk_network.py), mixed folded and unrolled layers
    monkeypatch.setenv("QNNFAB_SIM_CACHE", str(shared_build_dir("simcache")))
    _, path = small_qnn
    assert cli.main(["sim", str(path), "--style", "folded,unrolled", "--simulator",
                     "verilator", "--vectors", "100", "--quiet"]) == 0
    assert "100/100 vectors bit-exact" in capsys.readouterr().out


def test_verilog_unrolled_has_no_weight_memory(small_qnn, tmp_path):
    _, path = small_qnn
    assert cli.main(["verilog", str(path), "--out", str(tmp_path / "f")]) == 0
    assert cli.main(["verilog", str(path), "--out", str(tmp_path / "u"), "--style",
                     "unrolled"]) == 0
    folded = (tmp_path / "f" / "qnnfab_network.v").read_text()
    unrolled = (tmp_path / "u" / "qnnfab_network.v").read_text()
    assert folded != unrolled
    assert "module \\qnnfab_network.layer0.dot " in folded        # the folded lanes
    assert "module \\qnnfab_network.unrolled0_1 " in unrolled    # one chain, both layers
    assert ".dot " not in unrolled


def _fake_report(board, folding, style=None):
    report = {"board": board, "device": "dev", "resources": {}, "fmax_mhz": 100.0,
              "clock_mhz": 50.0, "timing_met": True, "cycles_per_inference": 1,
              "inferences_per_s": 50e6, "inferences_per_s_at_fmax": 100e6,
              "folding": [], "folding_source": "given"}
    if style is not None:
        report.update(style=style, style_source="auto (unrolled where the estimate fits the "
                                                "board)")
    return report


def test_every_command_resolves_the_same_styles(replace_public, small_qnn, tmp_path, capsys):
    from qnnfab import flow
    from qnnfab.boards import top as top_mod
    from qnnfab.boards.registry import board_styles
    from qnnfab.model import train as train_mod
    from qnnfab.model import vectors
    from qnnfab.rtl import verilog as verilog_mod
    net, path = small_qnn
    board = "ulx3s-25f"
    expected = board_styles(net, board, "auto")
    assert expected == ["unrolled", "unrolled"]        # a small network: all of it unrolls
    seen = []

    def fake_sim(network, *, simulator="amaranth", codes=None, style="folded", **kwargs):
        seen.append(("sim", simulator, style))
        trace = golden.forward(network, codes)
        return SimpleNamespace(mismatches=[], checked=len(codes), bit_exact=len(codes),
                               summary=lambda: "ok", simulator=simulator,
                               result=SimpleNamespace(classes=trace.classes,
                                                      scores=trace.scores))

    def fake_build(network, board_, out_dir, *, folding=None, style="folded", extra=None,
                   **kwargs):
        seen.append(("build", style))
        return {**_fake_report(board_, folding, board_styles(network, board_, style, folding)),
                **(extra or {})}

    def fake_to_verilog(network, folding=None, *, style="folded", **kwargs):
        seen.append(("verilog", style))
        return "module m; endmodule\n"

    def fake_top_verilog(network, folding=None, *, style="folded", **kwargs):
        seen.append(("top", style))
        return "module t; endmodule\n"
    replace_public(flow, "simulate_and_compare", fake_sim)
    replace_public(flow, "build_board", fake_build)
    replace_public(verilog_mod, "to_verilog", fake_to_verilog)
    replace_public(top_mod, "board_top_verilog", fake_top_verilog)
    replace_public(train_mod, "train", lambda preset, **kw: SimpleNamespace(
        network=net, float_accuracy=0.9, integer_accuracy=0.9, agreement=1.0))
    replace_public(vectors, "test_vectors", lambda network, n=None, **kw: SimpleNamespace(
        codes=np.zeros((4, 16), int), labels=None, source="random"))

    assert cli.main(["sim", str(path), "--board", board, "--style", "auto", "--quiet"]) == 0
    assert cli.main(["verilog", str(path), "--board", board, "--out", str(tmp_path / "v"),
                     "--style", "auto"]) == 0
    assert seen == [("sim", "amaranth", expected), ("verilog", expected), ("top", expected)]
    seen.clear()
    assert cli.main(["build", str(path), "--board", board, "--out", str(tmp_path / "b"),
                     "--style", "auto"]) == 0
    assert seen == [("build", "auto")]        # resolved by the build itself, same function
    out = capsys.readouterr().out
    assert "style unrolled,unrolled (auto (unrolled where the estimate fits the board))" in out
    seen.clear()
    assert cli.main(["flow", "--board", board, "--out", str(tmp_path / "f"), "--style",
                     "unrolled,folded", "--quiet"]) == 0
    assert seen == [("sim", "amaranth", ["unrolled", "folded"]),
                    ("sim", "verilator", ["unrolled", "folded"]),
                    ("build", ["unrolled", "folded"])]
    # the default stays folded everywhere
    seen.clear()
    assert cli.main(["sim", str(path), "--board", board, "--quiet"]) == 0
    assert seen == [("sim", "amaranth", ["folded", "folded"])]


def test_auto_unrolls_only_what_fits_the_board():
    from qnnfab.boards.registry import board_styles
    net = random_net.random_network(np.random.default_rng(0), features=[64, 256, 256, 10],
                                    input_bits=5)
    # digits-bnn's shape: nothing unrolls on the iCEBreaker, nor within the 85F's budget for
    # unrolled layers (its first layer alone is estimated at 72 % of the device)
    assert board_styles(net, "icebreaker", "auto") == ["folded"] * 3
    assert board_styles(net, "ulx3s-85f", "auto") == ["folded"] * 3
    # digits-tnn's shape: the first (slowest) layer unrolls on the 85F, not on the 25F
    net = random_net.random_network(np.random.default_rng(0), features=[64, 128, 128, 10],
                                    input_bits=5, hidden_bits=2, weight_kind="ternary")
    assert board_styles(net, "ulx3s-85f", "auto") == ["unrolled", "folded", "folded"]
    assert board_styles(net, "ulx3s-25f", "auto") == ["folded"] * 3


def _fake_tools():
    """What Yosys and nextpnr would write (ECP5 cell names), without running them."""
    def run_steps(commands, build_dir, env, family, *, progress=None, notes=None):
        with open(os.path.join(build_dir, "top.report.json"), "w") as f:
            json.dump({"utilization": {"TRELLIS_COMB": {"used": 900, "available": 24288},
                                       "DP16KD": {"used": 0, "available": 56}},
                       "fmax": {"$glbnet$clk": {"achieved": 90.0, "constraint": 25.0}}}, f)
        with open(os.path.join(build_dir, "top.rpt"), "w") as f:
            f.write("2.50. Printing statistics.\n\n=== top ===\n  120   TRELLIS_FF\n"
                    "  300   LUT4\n")
        with open(os.path.join(build_dir, "top.bit"), "wb") as f:
            f.write(b"\0" * 16)
        return {"synthesis": 0.0, "place and route": 0.0, "bitstream": 0.0}
    return run_steps


def test_build_records_the_styles(monkeypatch, small_qnn, tmp_path, capsys):
    from qnnfab.boards import build as build_mod
    net, path = small_qnn
    monkeypatch.setattr(build_mod, "run_steps", _fake_tools())
    assert cli.main(["build", str(path), "--board", "ulx3s-25f", "--out", str(tmp_path / "u"),
                     "--style", "folded,unrolled"]) == 0
    report = json.loads((tmp_path / "u" / "report.json").read_text())
    assert report["style"] == ["folded", "unrolled"]
    assert report["style_source"] == "given (one per layer)"
    assert report["inputs"]["options"]["style"] == ["folded", "unrolled"]
    out = capsys.readouterr().out
    assert "style folded,unrolled (given (one per layer))" in out
    # all unrolled: one inference per clock, no block RAM for weights in the estimate
    assert cli.main(["build", str(path), "--board", "ulx3s-25f", "--out", str(tmp_path / "a"),
                     "--style", "unrolled"]) == 0
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["style"] == ["unrolled", "unrolled"]
    assert report["cycles_per_inference"] == 1
    assert report["estimate"]["weight_bits"] == 0
    assert [tuple(f.values()) for f in report["folding"]] == [(8, 16), (10, 8)]
    # the folded default: style recorded, the inputs' hash as before (no style option)
    assert cli.main(["build", str(path), "--board", "ulx3s-25f", "--out", str(tmp_path / "f")]
                    ) == 0
    report = json.loads((tmp_path / "f" / "report.json").read_text())
    assert report["style"] == ["folded", "folded"] and report["style_source"] == \
        "folded (default)"
    assert "style" not in report["inputs"]["options"]
