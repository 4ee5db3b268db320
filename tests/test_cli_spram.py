"""``--weights-in`` on the command line: parsing, the errors, the Verilog it writes, a
simulation with SPRAM layers bit-exact."""

import numpy as np
import pytest

from qnnfab import cli, ir, random_net


@pytest.fixture
def small_qnn(tmp_path):
    net = random_net.random_network(np.random.default_rng(3), features=[16, 8, 4],
                                    input_bits=2)
    path = tmp_path / "small.qnn"
    ir.save(net, path)
    return path


def test_parse_weights_in(small_qnn):
    net = ir.load(small_qnn)
    assert cli.parse_weights_in(None) == "ebr"
    assert cli.parse_weights_in("auto") == "auto"
    assert cli.parse_weights_in("spram,ebr", net) == ["spram", "ebr"]
    with pytest.raises(cli.UserError, match=r"--weights-in: expected ebr, spram, auto or one "
                                            r"of ebr/spram per layer \(comma-separated\), got "
                                            r"'bram'"):
        cli.parse_weights_in("bram")
    with pytest.raises(cli.UserError, match=r"--weights-in spram,ebr,ebr: expected 2 entries"):
        cli.parse_weights_in("spram,ebr,ebr", net)


@pytest.mark.parametrize("argv, message", [
    (["--weights-in", "spram", "--board", "ulx3s-12f"],
     "ulx3s-12f (LFE5U-12F) has no SPRAM: weights in SPRAM need an iCE40 UP5K board"),
    (["--weights-in", "auto"], "--weights-in auto needs --board"),
    (["--weights-in", "spram", "--gate-level", "ice40"], "--gate-level and --weights-in"),
])
def test_sim_errors_are_one_line(small_qnn, capsys, argv, message):
    assert cli.main(["sim", str(small_qnn), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qnnfab: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1


def test_build_refuses_spram_on_a_board_without(small_qnn, tmp_path, capsys):
    assert cli.main(["build", str(small_qnn), "--board", "ice40-hx8k-b-evn", "--out",
                     str(tmp_path / "b"), "--weights-in", "spram"]) == 2
    assert "ice40-hx8k-b-evn (iCE40HX8K) has no SPRAM" in capsys.readouterr().err


def test_sim_and_verilog_with_spram(small_qnn, tmp_path, capsys):
    assert cli.main(["sim", str(small_qnn), "--board", "icebreaker", "--weights-in", "spram",
                     "--vectors", "6", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "weights in SPRAM: layers 0, 1" in out and "6/6 vectors bit-exact" in out
    assert cli.main(["verilog", str(small_qnn), "--out", str(tmp_path / "v"),
                     "--weights-in", "spram,ebr"]) == 0
    text = (tmp_path / "v" / "qnnfab_network.v").read_text()
    assert "load__addr" in text and "load__en" in text
    assert cli.main(["verilog", str(small_qnn), "--out", str(tmp_path / "w")]) == 0
    assert "load__" not in (tmp_path / "w" / "qnnfab_network.v").read_text()
