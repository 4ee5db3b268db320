"""The command line: help texts, one-line errors, exit codes, outputs written atomically."""

import os
import subprocess
import sys

import numpy as np
import pytest

from qnnfab import cli, ir, random_net

COMMANDS = ["train", "verilog", "sim", "build", "flow", "run", "boards"]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "qnnfab.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


@pytest.fixture
def small_qnn(tmp_path):
    rng = np.random.default_rng(3)
    net = random_net.random_network(rng, features=[12, 8, 4], input_bits=5)
    path = tmp_path / "small.qnn"
    ir.save(net, path)
    return path


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: qnnfab " + command in capsys.readouterr().out


def test_missing_ir_file_is_one_line(tmp_path, capsys):
    missing = tmp_path / "nope.qnn"
    assert cli.main(["sim", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err == f"qnnfab: error: {missing}: no such file\n"


def test_truncated_ir_file_is_one_line(small_qnn, capsys):
    data = small_qnn.read_bytes()
    small_qnn.write_bytes(data[: len(data) // 2])
    assert cli.main(["verilog", str(small_qnn), "--out", str(small_qnn.parent / "v")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"qnnfab: error: {small_qnn}: not a qnnfab IR file")
    assert len(err.strip().splitlines()) == 1
    assert not (small_qnn.parent / "v" / "qnnfab_network.v").exists()


def test_debug_shows_the_traceback(tmp_path):
    proc = run_cli("--debug", "sim", str(tmp_path / "nope.qnn"))
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "IRError" in proc.stderr


def test_bad_folding_text(small_qnn, capsys):
    assert cli.main(["sim", str(small_qnn), "--folding", "2x4"]) == 2
    assert "--folding: layer 0: expected PE:SIMD (two integers), got '2x4'" in \
        capsys.readouterr().err


def test_parse_folding():
    assert cli.parse_folding("8:16,2:64") == [(8, 16), (2, 64)]
    assert cli.parse_folding(None) is None


def test_unwritable_output_folder(small_qnn, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli.main(["verilog", str(small_qnn), "--out", str(blocker / "sub")]) == 2
    assert "cannot create output folder" in capsys.readouterr().err


def test_boards_lists_the_registry(capsys):
    assert cli.main(["boards"]) == 0
    out = capsys.readouterr().out
    assert "icebreaker" in out and "ulx3s-85f" in out


def test_verilog_writes_a_module(small_qnn, tmp_path):
    out = tmp_path / "v"
    assert cli.main(["verilog", str(small_qnn), "--out", str(out)]) == 0
    text = (out / "qnnfab_network.v").read_text()
    assert "module qnnfab_network" in text
    assert [p for p in os.listdir(out) if p.startswith(".tmp-")] == []


def test_sim_amaranth_prints_bit_exact(small_qnn):
    proc = run_cli("sim", str(small_qnn), "--simulator", "amaranth", "--vectors", "8",
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "8/8 vectors bit-exact"
