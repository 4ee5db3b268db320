"""Host sessions with a built board (``qnnfab run``, ``qnnfab run --learn``): every answer is
checked, accuracy and frames/s are printed beside the chip's own figure, and a board that
answers wrong is caught. The board is a serial-like stand-in answering as a correct board
would (``fake_boards.py``); the hardware itself is checked against the same models in
``test_top.py`` and ``test_top_learning.py``."""

import dataclasses
import hashlib
import json

import numpy as np
import pytest

from qnnfab import cli, ir, random_net
from qnnfab.boards import driver, session
from qnnfab.boards.top import BoardTop
from qnnfab.rtl.learner import LearningNetwork
from qnnfab.spec import learn_rule as lr

from .fake_boards import FakeBoard, FakeLearningBoard


def digits_network(seed=0):
    """A random integer network on the digits inputs (64 codes of 5 bits, 10 classes) that
    records the digits data set, as `qnnfab train` would."""
    net = random_net.random_network(np.random.default_rng(seed), features=[64, 12, 10],
                                    input_bits=5, hidden_bits=2)
    return dataclasses.replace(net, meta={"data": {"name": "digits", "split_seed": 0}})


def write_report(folder, net, *, learning=None, ips=139535.0):
    folder.mkdir(exist_ok=True)
    report = {"board": "icebreaker", "inferences_per_s": ips, "uart": {"baud": 115200},
              "learning": learning,
              "inputs": {"ir_sha256": hashlib.sha256(ir.to_bytes(net)).hexdigest()}}
    (folder / "report.json").write_text(json.dumps(report))
    return folder


@pytest.fixture
def net_file(tmp_path):
    net = digits_network()
    path = tmp_path / "net.qnn"
    ir.save(net, path)
    return net, path


def plug_in(replace_public, board):
    replace_public(driver, "open_port", lambda port, *, baud, timeout: board)


def test_run_prints_accuracy_and_rates(net_file, tmp_path, replace_public, capsys):
    net, path = net_file
    board = FakeBoard(net, noise=b"\x00")
    plug_in(replace_public, board)
    build = write_report(tmp_path / "build", net)
    rc = cli.main(["run", str(path), "--port", "/dev/ttyFAKE", "--build", str(build),
                   "--vectors", "40", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert len(board.requests) == 40
    assert "40/40 vectors bit-exact" in out
    assert "accuracy: board " in out and "golden " in out and "digits test split" in out
    assert "frames/s; the chip alone: 139,535 inferences/s" in out


def test_run_reports_a_wrong_answer(net_file, replace_public, capsys):
    net, path = net_file
    plug_in(replace_public, FakeBoard(net, corrupt_at=3))
    rc = cli.main(["run", str(path), "--port", "/dev/ttyFAKE", "--vectors", "6", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 1
    assert "5/6 vectors bit-exact" in captured.out
    assert "vector 3: expected class" in captured.err and "got class" in captured.err


def test_run_refuses_a_build_of_another_network(net_file, tmp_path, capsys):
    net, path = net_file
    build = write_report(tmp_path / "build", digits_network(seed=1))
    rc = cli.main(["run", str(path), "--port", "/dev/ttyFAKE", "--build", str(build)])
    err = capsys.readouterr().err
    assert rc == 2 and "built from another network" in err, err


def test_learning_frame_format_is_the_boards():
    net = digits_network()
    rule = lr.DEFAULT_RULE
    init = lr.init_state(np.random.default_rng(0), 10, 12, rule)
    core = LearningNetwork(net, rule, init.weights, init.momentum)
    top = BoardTop(net, clk_freq=12e6, baud=115200, core=core)
    assert session.learning_frame_format(net, rule) == top.frame
    from qnnfab.rtl._checks import mark_used
    mark_used(top)
    mark_used(core)


def learning_board(net, seed=7, **kwargs):
    rule = lr.DEFAULT_RULE
    last = net.layers[-1]
    init = lr.init_state(np.random.default_rng(seed), last.out_features, last.in_features,
                         rule)
    learning = {"rule": dataclasses.asdict(rule), "init_seed": seed}
    return FakeLearningBoard(net, rule, init, session.learning_frame_format(net, rule),
                             **kwargs), learning


def test_run_learn_drives_a_learning_board(net_file, tmp_path, replace_public, capsys):
    net, path = net_file
    board, learning = learning_board(net)
    plug_in(replace_public, board)
    build = write_report(tmp_path / "build", net, learning=learning)
    rc = cli.main(["run", str(path), "--port", "/dev/ttyFAKE", "--build", str(build),
                   "--learn", "--samples", "300", "--vectors", "50", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert sum(r[0] == 0x4C for r in board.requests) == 300
    assert sum(r[0] == 0x51 for r in board.requests) == 100
    assert "300/300 learning answers and 100/100 test answers equal the integer rule's" in out
    before, after = (float(x.rstrip("%")) for x in
                     out.split("accuracy: board ")[1].split(" after")[0].split(" before, "))
    assert after > before, out  # 300 samples teach a random last layer something


def test_run_learn_catches_a_wrong_answer(net_file, tmp_path, replace_public, capsys):
    net, path = net_file
    board, learning = learning_board(net, corrupt_at=20)
    plug_in(replace_public, board)
    build = write_report(tmp_path / "build", net, learning=learning)
    rc = cli.main(["run", str(path), "--port", "/dev/ttyFAKE", "--build", str(build),
                   "--learn", "--samples", "20", "--vectors", "5", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 1
    # requests: 5 test vectors, then the 20 samples (request 20 is sample 15), 5 test vectors
    assert "19/20 learning answers and 10/10 test answers" in captured.out
    assert "first mismatch: learning sample 15: board class" in captured.err


@pytest.mark.parametrize("argv, words", [
    (["--learn"], "--learn needs --build DIR"),
    (["--learn", "--build", "{build}"], "built without --learn"),
    (["--build", "{lbuild}"], "built with --learn"),
])
def test_run_learn_errors(net_file, tmp_path, capsys, argv, words):
    net, path = net_file
    build = write_report(tmp_path / "build", net)
    lbuild = write_report(tmp_path / "lbuild", net, learning={"rule": {}, "init_seed": 0})
    argv = [a.format(build=build, lbuild=lbuild) for a in argv]
    rc = cli.main(["run", str(path), "--port", "/dev/ttyFAKE", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and words in err, err


class SelfTestBoard(FakeBoard):
    """Answers the 0x54 self-test request with fixed figures."""

    def __init__(self, net, figures):
        super().__init__(net)
        self.figures = figures

    def write(self, data):
        from qnnfab.boards import protocol
        assert bytes(data) == bytes([protocol.SELFTEST_SYNC])
        self.out += protocol.encode_selftest_response(*self.figures)


@pytest.mark.parametrize("figures, rc", [((50, 46, 12_902), 0), ((50, 45, 12_902), 1),
                                         ((50, 46, 13_000), 1)])
def test_run_selftest_prints_the_chips_own_rate(net_file, tmp_path, replace_public, capsys,
                                                figures, rc):
    net, path = net_file
    plug_in(replace_public, SelfTestBoard(net, figures))
    build = write_report(tmp_path / "build", net)
    report = json.loads((build / "report.json").read_text())
    report.update(clock_mhz=36.0, selftest={"vectors": 50, "source": "digits test split",
                                            "labels": "data set", "golden_correct": 46,
                                            "expected_cycles": 12_902})
    (build / "report.json").write_text(json.dumps(report))
    assert cli.main(["run", str(path), "--port", "/dev/ttyFAKE", "--build", str(build),
                     "--selftest"]) == rc
    out = capsys.readouterr().out
    n, correct, cycles = figures
    assert (f"self-test on chip: 50 vectors (digits test split) in {cycles:,} cycles: "
            f"{50 * 36e6 / cycles:,.0f} inferences/s at 36 MHz (the timing model: 12,902 "
            f"cycles)") in out
    assert f"{correct}/50 classes right (the golden model: 46/50" in out


def test_run_selftest_needs_a_selftest_build(net_file, tmp_path, capsys):
    net, path = net_file
    build = write_report(tmp_path / "build", net)
    assert cli.main(["run", str(path), "--port", "/dev/ttyFAKE", "--build", str(build),
                     "--selftest"]) == 2
    assert "built with `qnnfab build --selftest N`" in capsys.readouterr().err
