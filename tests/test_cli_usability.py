"""Issue 21, the command-line items: help and defaults, one meaning per option, --version,
no abbreviations, --debug exit codes, progress only on a terminal, flow's early checks, the
folding each command prints, train's output folder, Ctrl-C."""

import argparse
import pathlib
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from qnnfab import cli, ir, random_net

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "qnnfab.cli", *args], capture_output=True,
                          text=True, timeout=600)


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    raise AssertionError("no subcommands")


# --- item 7: help, defaults, choices, one meaning per option -----------------------------------

def test_every_option_has_help_and_shows_its_default():
    parser = cli.build_parser()
    formatter = cli._Formatter("qnnfab")
    missing = []
    for name, sub in _subparsers(parser).items():
        for action in sub._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction) \
                    or action.help == argparse.SUPPRESS:
                continue
            where = f"{name} {action.option_strings[-1]}"
            if not action.help:
                missing.append(f"{where}: no help")
                continue
            default = action.default
            if action.required or default is None or default is False \
                    or default == argparse.SUPPRESS:
                continue
            if "default" not in formatter._get_help_string(action):
                missing.append(f"{where}: default {default!r} not shown")
    assert missing == []


def test_help_lists_presets_and_boards_and_defaults(capsys, monkeypatch):
    from qnnfab.boards.registry import BOARDS
    monkeypatch.setenv("COLUMNS", "1000")  # no line breaks inside names
    from qnnfab.model.presets import PRESETS
    with pytest.raises(SystemExit) as exc:
        cli.main(["flow", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for name in [*PRESETS, *BOARDS]:
        assert name in text
    for default in ("(default: 64)", "(default: build/flow)", "(default: icebreaker)",
                    "(default digits-bnn; with --arch: its options"):
        assert default in text


def test_top_level_help_does_not_import_torch():
    proc = subprocess.run(
        [sys.executable, "-c", "import sys\nfrom qnnfab import cli\n"
         "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
         "print('torch' in sys.modules)"], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "False", proc.stderr


def _fake_report(board, folding):
    return {"board": board, "device": "dev", "resources": {}, "fmax_mhz": 100.0,
            "clock_mhz": 12.0, "timing_met": True, "cycles_per_inference": 16,
            "inferences_per_s": 1.0, "inferences_per_s_at_fmax": 2.0,
            "folding": [{"pe": f.pe, "simd": f.simd} if hasattr(f, "pe")
                        else {"pe": f[0], "simd": f[1]} for f in folding],
            "folding_source": "board default (max_lanes=8)"}


def test_build_pnr_seed_and_deprecated_seed(replace_public, small_qnn, tmp_path, capsys):
    from qnnfab import flow
    seen = []

    def fake_build(network, board, out_dir, *, folding=None, seed=0, **kwargs):
        seen.append(seed)
        return _fake_report(board, folding)
    replace_public(flow, "build_board", fake_build)
    out = str(tmp_path / "b")
    assert cli.main(["build", str(small_qnn), "--board", "icebreaker", "--out", out,
                     "--pnr-seed", "7"]) == 0
    assert "deprecated" not in capsys.readouterr().err
    assert cli.main(["build", str(small_qnn), "--board", "icebreaker", "--out", out,
                     "--seed", "5"]) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "deprecated" in line] == [
        "qnnfab: note: `build --seed` is deprecated: it is the nextpnr placement seed, now "
        "`--pnr-seed`"]
    assert seen == [7, 5]


def test_build_prints_the_bitstream_and_how_to_program_it(replace_public, small_qnn, tmp_path,
                                                          capsys):
    # item 2: the summary names the bitstream and the loader, not only report.json
    from qnnfab import flow
    replace_public(flow, "build_board", lambda network, board, out_dir, *, folding=None, **kw:
                   {**_fake_report(board, folding), "bitstream": f"{board}.bit"})
    out = tmp_path / "b"
    assert cli.main(["build", str(small_qnn), "--board", "ulx3s-12f", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"bitstream: {out}/ulx3s-12f.bit (program: openFPGALoader -b ulx3s {out}/ulx3s-12f.bit" \
        in text


def test_boards_says_how_to_program_each_board_and_where_its_uart_is(capsys):
    from qnnfab.boards.registry import BOARDS
    assert cli.main(["boards"]) == 0
    out = capsys.readouterr().out
    for name, board in BOARDS.items():
        assert board.program_command and board.uart_port, name
        block = out.split(name, 1)[1]
        assert "program: openFPGALoader -b " in block and f"DIR/{name}." in block, name
        assert "UART: " in block and "/dev/tty" in block.split("UART: ", 1)[1], name


def test_version_prints_and_exits_0(capsys):
    from importlib.metadata import version
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"qnnfab {version('qnnfab')}"


@pytest.mark.parametrize("argv", [["sim", "X.qnn", "--vector", "3"],
                                  ["sim", "X.qnn", "--sim", "amaranth"],
                                  ["--deb", "boards"]])
def test_abbreviations_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["sim"], ["sim", "x.qnn", "--vectors", "x"]])
def test_usage_errors_have_one_prefix(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("qnnfab: error: ") and "qnnfab: error: qnnfab" not in err
    assert len(err.strip().splitlines()) == 1


def test_debug_keeps_the_exit_code(tmp_path):
    plain = run_cli("sim", str(tmp_path / "nope.qnn"))
    debug = run_cli("--debug", "sim", str(tmp_path / "nope.qnn"))
    assert plain.returncode == debug.returncode == 2
    assert "Traceback" in debug.stderr and "Traceback" not in plain.stderr
    assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip()


# --- item 6: progress only on a terminal -------------------------------------------------------

def test_every_tqdm_use_goes_through_the_progress_helper():
    users = []
    for folder in ("qnnfab", "model", "sim", "boards", "rtl"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            if path.name != "progress.py" and ("import tqdm" in text or "from tqdm" in text):
                users.append(str(path.relative_to(ROOT)))
    assert users == []


def test_progress_is_a_few_lines_when_stderr_is_not_a_terminal(small_qnn):
    proc = run_cli("sim", str(small_qnn), "--vectors", "40")
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("amaranth:")]
    assert 2 <= len(lines) <= 11
    assert lines[-1] == "amaranth: 40/40 vec (100 %)"


def test_progress_flag_forces_bars_and_no_progress_forces_lines(small_qnn):
    bars = run_cli("--progress", "sim", str(small_qnn), "--vectors", "8")
    assert bars.returncode == 0 and "%|" in bars.stderr
    lines = run_cli("sim", str(small_qnn), "--vectors", "8", "--no-progress")
    assert lines.returncode == 0 and "%|" not in lines.stderr and "(100 %)" in lines.stderr


def test_progress_helper_modes(capsys, monkeypatch):
    from qnnfab import progress
    monkeypatch.setattr(progress, "_forced", False)
    for _ in progress.iterate(range(100), 100, "train", unit="epoch"):
        pass
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "train: 1/100 epoch (0 %)" and err[-1] == "train: 100/100 epoch (100 %)"
    assert len(err) == 11


# --- item 3: flow checks before the long steps -------------------------------------------------

def _flow_fakes(replace_public, net, n_vectors, seen, presets=None):
    from qnnfab import flow
    from qnnfab.model import train as train_mod
    from qnnfab.model import vectors
    presets = [] if presets is None else presets

    def fake_train(preset, **kwargs):
        seen.append(("train", kwargs.get("seed")))
        presets.append(preset)
        return SimpleNamespace(network=net, float_accuracy=0.9, integer_accuracy=0.9,
                               agreement=1.0)

    def fake_sim(network, *, simulator, codes, folding=None, **kwargs):
        seen.append((simulator, len(codes)))
        return SimpleNamespace(mismatches=[], checked=len(codes), bit_exact=len(codes),
                               summary=lambda: "ok", simulator=simulator,
                               result=SimpleNamespace(classes=np.zeros(len(codes), int)))

    def fake_build(network, board, out_dir, *, folding=None, seed=0, extra=None, **kwargs):
        seen.append(("build", seed))
        return {**_fake_report(board, folding), **extra}
    replace_public(train_mod, "train", fake_train)
    replace_public(vectors, "test_vectors", lambda network, n=None, **kw: SimpleNamespace(
        codes=np.zeros((n_vectors, network.input_features), int), labels=None,
        source="test split"))
    replace_public(flow, "simulate_and_compare", fake_sim)
    replace_public(flow, "build_board", fake_build)


def test_flow_checks_fit_before_simulating(replace_public, tmp_path, capsys):
    big = random_net.random_network(np.random.default_rng(0), features=[784, 512, 512, 10])
    seen = []
    _flow_fakes(replace_public, big, 10000, seen)
    assert cli.main(["flow", "--board", "icebreaker", "--out", str(tmp_path / "f"),
                     "--quiet"]) == 2
    assert "does not fit icebreaker" in capsys.readouterr().err
    assert seen == [("train", 0)]  # no simulation ran


def test_flow_says_what_the_full_split_check_costs(replace_public, tmp_path, capsys):
    net = random_net.random_network(np.random.default_rng(0), features=[64, 32, 10],
                                    input_bits=5)
    seen = []
    _flow_fakes(replace_public, net, 10000, seen)
    assert cli.main(["flow", "--board", "icebreaker", "--out", str(tmp_path / "f"), "--quiet",
                     "--seed", "3", "--pnr-seed", "9"]) == 0
    err = capsys.readouterr().err
    assert "simulates 10000 vectors in Amaranth's simulator and 64 in Verilator" in err
    assert "`--vectors N` checks fewer" in err
    assert "(board icebreaker default (max_lanes=256))" in err
    assert seen == [("train", 3), ("amaranth", 10000), ("verilator", 64), ("build", 9)]


def test_flow_checks_the_output_folder_before_training(replace_public, tmp_path, capsys):
    seen = []
    net = random_net.random_network(np.random.default_rng(0), features=[8, 4, 3])
    _flow_fakes(replace_public, net, 4, seen)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli.main(["flow", "--out", str(blocker / "f"), "--quiet"]) == 2
    assert "cannot create output folder" in capsys.readouterr().err
    assert seen == []


def test_flow_takes_an_architecture_like_train(replace_public, tmp_path, capsys):
    net = random_net.random_network(np.random.default_rng(0), features=[64, 32, 10],
                                    input_bits=5)
    seen, presets = [], []
    _flow_fakes(replace_public, net, 4, seen, presets)
    assert cli.main(["flow", "--arch", "d32,d10", "--weights", "ternary", "--act-bits", "2",
                     "--out", str(tmp_path / "f"), "--quiet"]) == 0
    (preset,) = presets
    assert str(preset.arch) == "d32,d10" and preset.weights == "ternary" \
        and preset.act_bits == 2
    assert "training preset custom(arch=d32,d10" in capsys.readouterr().err


def test_flow_quantizes_a_float_network_before_simulating(replace_public, tmp_path, capsys):
    from types import SimpleNamespace
    from qnnfab.model import ptq, train as train_mod
    net = random_net.random_network(np.random.default_rng(0), features=[64, 32, 10],
                                    input_bits=5)
    seen = []
    _flow_fakes(replace_public, net, 4, seen)
    replace_public(train_mod, "train", lambda preset, **kw: SimpleNamespace(
        network="float net", float_accuracy=0.95, integer_accuracy=None, agreement=None))
    quantized = []

    def fake_quantize(network, method, bits, **kwargs):
        quantized.append((network, method, bits))
        return SimpleNamespace(network=net)
    replace_public(ptq, "quantize", fake_quantize)
    assert cli.main(["flow", "--preset", "digits-mlp", "--out", str(tmp_path / "f"),
                     "--quiet"]) == 0
    assert quantized == [("float net", "ga", 3)]
    assert "quantizing to 3-bit codebooks" in capsys.readouterr().err
    assert [s[0] for s in seen] == ["amaranth", "verilator", "build"]


# --- item 4: every command says which folding it used ------------------------------------------

def test_sim_and_verilog_print_the_folding_and_its_source(small_qnn, tmp_path, capsys):
    from qnnfab.boards.registry import board_folding
    from qnnfab.flow import folding_text
    from qnnfab.rtl.folding import auto_folding
    net = ir.load(small_qnn)
    assert cli.main(["sim", str(small_qnn), "--vectors", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert (f"folding {folding_text(auto_folding(net))} (automatic); `--board NAME` simulates "
            f"the folding a board builds") in out
    assert cli.main(["sim", str(small_qnn), "--vectors", "2", "--quiet", "--board",
                     "icebreaker"]) == 0
    out = capsys.readouterr().out
    assert f"folding {folding_text(board_folding(net, 'icebreaker'))} (board icebreaker " \
           f"default (max_lanes=256))" in out
    assert cli.main(["verilog", str(small_qnn), "--out", str(tmp_path / "v"), "--folding",
                     "1:12,1:8"]) == 0
    assert "folding 1:12,1:8 (given (--folding))" in capsys.readouterr().out


# --- item 9 --------------------------------------------------------------------------------------

def test_train_creates_the_output_folder(replace_public, tmp_path, capsys):
    from qnnfab.model import train as train_mod
    net = random_net.random_network(np.random.default_rng(0), features=[8, 4, 3])
    replace_public(train_mod, "train", lambda preset, **kw: SimpleNamespace(
        network=net, float_accuracy=0.9, integer_accuracy=0.9, agreement=1.0))
    out = tmp_path / "new" / "dir" / "x.qnn"
    assert cli.main(["train", "--out", str(out), "--quiet"]) == 0
    assert ir.load(out).summary() == net.summary()


CTRL_C = """
import sys
from qnnfab import cli, progress

class Coroutine:  # stands for the simulator's coroutines, closed after the interrupt
    def __del__(self):
        raise RuntimeError("aclose(): asynchronous generator is already running")

class Bar:
    def set(self, done, total=None):
        if done >= 2:
            exc = KeyboardInterrupt()
            exc.frame = Coroutine()
            raise exc
    def close(self):
        pass

progress.progress_bar = lambda *a, **k: Bar()
sys.exit(cli.main(["sim", sys.argv[1], "--vectors", "8"]))
"""


def test_ctrl_c_in_a_simulation_is_one_line(small_qnn):
    proc = subprocess.run([sys.executable, "-c", CTRL_C, str(small_qnn)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 130
    assert proc.stderr == "qnnfab: interrupted\n"
