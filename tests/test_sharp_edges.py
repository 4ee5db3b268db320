"""The sharp edges a new user hit (issue "Verification at scale", part 3): each is now a one-line
error (exit 2) that names the option or file, and a failed command leaves no folder behind."""

import fcntl
import os

import numpy as np
import pytest

from qnnfab import cli, ir, random_net


@pytest.fixture
def net_qnn(tmp_path):
    net = random_net.random_network(np.random.default_rng(3), features=[64, 16, 10],
                                    input_bits=5)
    path = tmp_path / "net.qnn"
    ir.save(net, path)
    return path


def one_error_line(capsys, rc):
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("qnnfab: error: "), err
    return err[0]


def test_a_device_is_not_read_as_a_network(capsys):
    line = one_error_line(capsys, cli.main(["sim", "/dev/zero", "--vectors", "2"]))
    assert "/dev/zero: not a regular file" in line


def test_a_huge_file_is_refused_before_it_is_read(tmp_path, capsys, monkeypatch):
    big = tmp_path / "big.qnn"
    with open(big, "wb") as f:
        f.truncate(ir.MAX_FILE_BYTES + 1)   # sparse: no disk used
    line = one_error_line(capsys, cli.main(["sim", str(big), "--vectors", "2"]))
    assert "larger than any network IR" in line


@pytest.mark.parametrize("argv, words", [
    (["verilog", "{net}", "--out", "{out}", "--folding", "0:0,1:1"],
     "--folding 0:0,1:1: layers[0]: PE must be >= 1, not 0"),
    (["verilog", "{net}", "--out", "{out}", "--folding", "1:7,1:16"],
     "SIMD=7 does not divide in_features=64"),
    (["verilog", "{net}", "--out", "{out}", "--name", "1bad name"],
     "--name: must be a Verilog identifier"),
    (["build", "{net}", "--board", "icebreaker", "--out", "{out}", "--folding", "1:64"],
     "expected 2 entries (one per layer), got 1"),
    (["build", "{big}", "--board", "icebreaker", "--out", "{out}"],
     "network does not fit icebreaker"),
    (["sim", "{net}", "--folding", "2:3,1:1", "--vectors", "1"], "--folding 2:3,1:1: "),
])
def test_errors_found_late_leave_no_output_folder(argv, words, net_qnn, tmp_path, capsys):
    big = random_net.random_network(np.random.default_rng(0), features=[784, 1024, 10])
    ir.save(big, tmp_path / "big.qnn")
    out = tmp_path / "new" / "out"
    argv = [a.format(net=net_qnn, out=out, big=tmp_path / "big.qnn") for a in argv]
    line = one_error_line(capsys, cli.main(argv))
    assert words in line
    assert not (tmp_path / "new").exists(), "a failed command left its output folder"
    assert "LayerFolding" not in line


def test_train_into_a_folder_fails_before_training(tmp_path, capsys):
    line = one_error_line(capsys, cli.main(["train", "--out", str(tmp_path), "--epochs", "1"]))
    assert f"{tmp_path}: is a folder; give a file name" in line


def test_a_second_build_into_the_same_folder_is_refused(net_qnn, tmp_path, capsys):
    out = tmp_path / "b"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)   # what a running `qnnfab build --out b` holds
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        line = one_error_line(capsys, cli.main(["build", str(net_qnn), "--board",
                                                "icebreaker", "--out", str(out)]))
        assert "another qnnfab command is writing this folder" in line
        assert os.listdir(out) == []
    finally:
        os.close(fd)
