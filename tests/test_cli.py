"""The command line: help texts, one-line errors, exit codes, outputs written atomically."""

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from qnnfab import cli, ir, random_net
from qnnfab.spec import golden

COMMANDS = ["train", "quantize", "cluster", "learn", "verilog", "sim", "build", "flow", "run",
            "infer", "sweep", "program", "boards"]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "qnnfab.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


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


# --- per-board folding and clock: sim, verilog, build and flow agree ------------------------

@pytest.fixture
def default_shape_qnn(tmp_path):
    """A random network of the default shape (64x5b -> 256 -> 256 -> 10)."""
    net = random_net.random_network(np.random.default_rng(0), features=[64, 256, 256, 10],
                                    input_bits=5)
    path = tmp_path / "default.qnn"
    ir.save(net, path)
    return net, path


def _fake_report(board, fmax, clock, folding):
    return {"board": board, "device": "dev", "resources": {}, "fmax_mhz": fmax,
            "clock_mhz": clock, "timing_met": fmax is not None and fmax >= clock,
            "cycles_per_inference": 16, "inferences_per_s": clock * 1e6 / 16,
            "inferences_per_s_at_fmax": fmax * 1e6 / 16 if fmax else None,
            "folding": [dict(zip(("pe", "simd"), (f.pe, f.simd) if hasattr(f, "pe") else f))
                        for f in folding],
            "folding_source": "given"}


@pytest.mark.parametrize("board", ["icebreaker", "ulx3s-85f"])
def test_sim_verilog_build_use_the_same_board_folding(replace_public, default_shape_qnn, tmp_path,
                                                      board, capsys):
    from qnnfab import flow
    from qnnfab.boards import top as top_mod
    from qnnfab.boards.registry import board_folding
    from qnnfab.rtl import verilog as verilog_mod
    net, path = default_shape_qnn
    expected = board_folding(net, board)
    seen = {}

    class FakeComparison:
        mismatches = []

        def summary(self):
            return "1/1 vectors bit-exact"

    def fake_sim(network, *, folding=None, codes=None, **kwargs):
        seen["sim"] = folding
        comparison = FakeComparison()
        trace = golden.forward(network, codes)
        comparison.result = SimpleNamespace(classes=trace.classes, scores=trace.scores)
        return comparison

    def fake_build(network, board_, out_dir, *, folding=None, clock_mhz=None, **kwargs):
        seen["build"] = folding
        seen["clock"] = clock_mhz
        return _fake_report(board_, 100.0, 50.0, folding)

    def fake_to_verilog(network, folding=None, **kwargs):
        seen["verilog"] = folding
        return "module m; endmodule\n"

    def fake_top_verilog(network, folding=None, **kwargs):
        seen["top"] = folding
        return "module t; endmodule\n"
    replace_public(flow, "simulate_and_compare", fake_sim)
    replace_public(flow, "build_board", fake_build)
    replace_public(verilog_mod, "to_verilog", fake_to_verilog)
    replace_public(top_mod, "board_top_verilog", fake_top_verilog)

    assert cli.main(["sim", str(path), "--board", board, "--quiet"]) == 0
    assert cli.main(["build", str(path), "--board", board, "--out", str(tmp_path / "b"),
                     "--clock-mhz", "50"]) == 0
    assert cli.main(["verilog", str(path), "--board", board, "--out", str(tmp_path / "v")]) == 0
    for where in ("sim", "build", "verilog", "top"):
        assert seen[where] == expected, f"{where} got {seen[where]}, expected {expected}"
    assert seen["clock"] == 50.0
    # Without --board, sim keeps the plain automatic folding; --folding overrides the board.
    assert cli.main(["sim", str(path), "--quiet"]) == 0
    assert seen["sim"] is None
    assert cli.main(["sim", str(path), "--board", board, "--folding", "1:64,1:256,1:16"]) == 0
    assert seen["sim"] == [(1, 64), (1, 256), (1, 16)]
    assert cli.main(["build", str(path), "--board", board, "--out", str(tmp_path / "b"),
                     "--folding", "1:64,1:256,1:16"]) == 0
    assert seen["build"] == [(1, 64), (1, 256), (1, 16)] and seen["clock"] is None
    assert "timing NOT met" not in capsys.readouterr().err


def test_sim_board_unknown_is_one_line(small_qnn, capsys):
    assert cli.main(["sim", str(small_qnn), "--board", "nope"]) == 2
    assert capsys.readouterr().err.startswith("qnnfab: error: unknown board 'nope'; known "
                                              "boards: ")


def test_flow_uses_the_board_folding_everywhere(replace_public, default_shape_qnn, tmp_path):
    from types import SimpleNamespace

    from qnnfab import flow
    from qnnfab.model import vectors
    from qnnfab.boards.registry import board_folding
    from qnnfab.model import train as train_mod
    net, _ = default_shape_qnn
    seen = []

    def fake_train(preset, **kwargs):
        return SimpleNamespace(network=net, float_accuracy=0.9, integer_accuracy=0.9,
                               agreement=1.0)

    def fake_sim(network, *, simulator, codes, folding=None, **kwargs):
        seen.append((simulator, folding))
        return SimpleNamespace(mismatches=[], checked=len(codes), bit_exact=len(codes),
                               summary=lambda: "ok", simulator=simulator,
                               result=SimpleNamespace(classes=np.zeros(len(codes), int)))

    def fake_build(network, board, out_dir, *, folding=None, clock_mhz=None, extra=None,
                   **kwargs):
        seen.append(("build", folding, clock_mhz))
        return {**_fake_report(board, 90.0, 80.0, folding), **extra}
    replace_public(train_mod, "train", fake_train)
    replace_public(vectors, "test_vectors", lambda network, n=None, **kw: SimpleNamespace(
        codes=np.zeros((4, 64), int), labels=None, source="random"))
    replace_public(flow, "simulate_and_compare", fake_sim)
    replace_public(flow, "build_board", fake_build)
    assert cli.main(["flow", "--board", "ulx3s-85f", "--out", str(tmp_path / "f"),
                     "--clock-mhz", "80", "--quiet"]) == 0
    expected = board_folding(net, "ulx3s-85f")
    assert seen == [("amaranth", expected), ("verilator", expected),
                    ("build", expected, 80.0)]


@pytest.mark.parametrize("fmax", [81.234, None])
def test_build_warns_when_timing_is_not_met(replace_public, small_qnn, tmp_path, capsys, fmax):
    from qnnfab import flow
    from qnnfab.rtl.folding import auto_folding

    def fake_build(network, board, out_dir, *, folding=None, clock_mhz=None, **kwargs):
        return _fake_report(board, fmax, clock_mhz, auto_folding(network))
    replace_public(flow, "build_board", fake_build)
    assert cli.main(["build", str(small_qnn), "--board", "ulx3s-85f", "--out",
                     str(tmp_path / "b"), "--clock-mhz", "100"]) == 0
    out, err = capsys.readouterr()
    warning = [line for line in err.splitlines() if "warning" in line]
    if fmax is None:
        assert warning == ["qnnfab: warning: timing NOT met on ulx3s-85f: nextpnr reported no "
                           "fmax for the 100.0 MHz clock; the design may not run at 100.0 MHz"]
    else:
        assert warning == ["qnnfab: warning: timing NOT met on ulx3s-85f: fmax 81.23 MHz < "
                           "clock 100.00 MHz; the design may fail at this clock and "
                           "inferences_per_s is not achievable (use --clock-mhz 73.1 or a "
                           "smaller folding)"]
        assert "(timing NOT met)" in out


def test_train_on_mnist_idx_files_then_simulate(tmp_path, capsys):
    """``train --data mnist:DIR`` on tiny IDX files the test writes, then ``sim`` reloads the test
    split from the IR's meta and checks the hardware on it."""
    import gzip
    import struct

    rng = np.random.default_rng(3)
    folder = tmp_path / "mnist"
    folder.mkdir()

    def idx(a):
        return bytes([0, 0, 8, a.ndim]) + b"".join(struct.pack(">I", s) for s in a.shape) \
            + a.astype(np.uint8).tobytes()

    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (200, 4, 4)),
              "train-labels-idx1-ubyte": np.repeat(np.arange(10), 20),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (12, 4, 4)),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, 12)}
    for name, a in arrays.items():
        raw = idx(np.asarray(a))
        if name.startswith("train"):
            (folder / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    out = tmp_path / "m.qnn"
    assert cli.main(["train", "--preset", "digits-sq", "--data", f"mnist:{folder}",
                     "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    net = ir.load(out)
    assert net.input_features == 16 and net.input_bits == 8 and net.n_outputs == 10
    assert net.meta["data"]["name"] == f"mnist:{folder}"
    assert [layer.weight_kind for layer in net.layers] == net.meta["sq"]["depth"]
    svg = out.with_suffix(".sq.svg").read_text()
    assert svg.startswith("<svg") and svg.count("dense") == 3
    capsys.readouterr()
    assert cli.main(["sim", str(out), "--quiet"]) == 0
    assert "12/12 vectors bit-exact" in capsys.readouterr().out


def test_train_unknown_data_set_is_one_line(tmp_path, capsys):
    assert cli.main(["train", "--data", "cifar", "--out", str(tmp_path / "x.qnn")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("qnnfab: error: unknown data set 'cifar'") and "\n" not in err


# --- float networks and `qnnfab quantize` ---------------------------------------------------

@pytest.fixture(scope="module")
def float_qnn(tmp_path_factory):
    """``train --preset digits-mlp --epochs 2``: a float network file, and what train printed."""
    import contextlib
    import io

    path = tmp_path_factory.mktemp("float") / "float.qnn"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["train", "--preset", "digits-mlp", "--epochs", "2", "--out", str(path),
                         "--quiet"]) == 0
    return path, out.getvalue()


def test_train_float_preset_says_quantize_next(float_qnn):
    path, out = float_qnn
    net = ir.load(path)
    assert net.is_float and net.summary().endswith("(float)")
    first = out.splitlines()[0]
    assert first.startswith("float accuracy ") and "integer" not in first
    assert f"`qnnfab quantize {path} --method ga --bits 3 --out FILE.qnn`" in first


def test_quantize_method_choices_are_ptq_methods():
    from qnnfab.model import ptq
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command" or a.choices and
               "quantize" in a.choices)
    method = next(a for a in sub.choices["quantize"]._actions if a.dest == "method")
    assert tuple(method.choices) == ptq.METHODS


@pytest.mark.parametrize("method,extra", [("kmeans", []),
                                          ("ga", ["--population", "6", "--generations", "2"])])
def test_quantize_end_to_end(float_qnn, tmp_path, capsys, method, extra):
    path, _ = float_qnn
    out = tmp_path / "q.qnn"
    assert cli.main(["quantize", str(path), "--method", method, "--bits", "2", "--out", str(out),
                     "--quiet", *extra]) == 0
    stdout = capsys.readouterr().out
    net = ir.load(out)
    assert not net.is_float
    assert [layer.weight_kind for layer in net.layers] == ["codebook"] * len(net.layers)
    assert all(len(layer.codebook) == 4 for layer in net.layers)
    assert net.meta["quantized"]["method"] == method and net.meta["quantized"]["bits"] == 2
    assert f"{method} 2-bit codebooks: validation accuracy" in stdout
    assert "agreement 100.00%" in stdout
    assert f"wrote {out} ({net.summary()}; {net.weight_bits:,} weight bits)" in stdout
    svg = tmp_path / "q.ga.svg"
    if method == "ga":
        assert svg.read_text().startswith("<svg")
        assert f"wrote {svg} (GA fitness per generation)" in stdout
        assert len(net.meta["quantized"]["history"]) == 2
    else:
        assert not svg.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == \
        sorted(["q.qnn"] + (["q.ga.svg"] if method == "ga" else []))


@pytest.mark.parametrize("argv", [
    ["sim", "{f}", "--quiet"],
    ["verilog", "{f}", "--out", "{d}/v"],
    ["build", "{f}", "--board", "icebreaker", "--out", "{d}/b"],
    ["run", "{f}", "--port", "/dev/null"],
])
def test_float_network_is_refused_in_one_line(float_qnn, tmp_path, capsys, argv):
    path, _ = float_qnn
    argv = [a.format(f=path, d=tmp_path) for a in argv]
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert err == (f"qnnfab: error: {path}: {argv[0]} needs quantized weights, and this "
                   f"network's weights are float (from a float preset): quantize it first, e.g. "
                   f"`qnnfab quantize FLOAT.qnn --method ga --bits 3 --out FILE.qnn`\n")
    assert out == "" and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv,message", [
    (["--bits", "9"], "qnnfab: error: --bits: expected 1..8, got 9\n"),
    (["--level-bits", "1"], "qnnfab: error: --level-bits: expected 2..16, got 1\n"),
])
def test_quantize_bad_arguments_are_one_line(float_qnn, tmp_path, capsys, argv, message):
    path, _ = float_qnn
    out = tmp_path / "q.qnn"
    assert cli.main(["quantize", str(path), "--out", str(out), "--quiet", *argv]) == 2
    assert capsys.readouterr().err == message
    assert not out.exists()


def test_quantize_refuses_an_integer_network(small_qnn, tmp_path, capsys):
    out = tmp_path / "q.qnn"
    assert cli.main(["quantize", str(small_qnn), "--method", "kmeans", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qnnfab: error: quantize needs a float network") and \
        err.count("\n") == 1 and "already quantized" in err
    assert not out.exists()


def test_quantize_missing_output_folder(float_qnn, tmp_path, capsys):
    path, _ = float_qnn
    out = tmp_path / "nope" / "q.qnn"
    assert cli.main(["quantize", str(path), "--out", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err == f"qnnfab: error: {out}: folder {out.parent} does not " \
                                      f"exist\n"
