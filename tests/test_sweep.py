"""``qnnfab sweep``: the spec and its errors, the points, the executors (a local process pool
and a Dask cluster give the same results, and so does the GA of ``qnnfab quantize``), resume,
Ctrl-C, a failing point, a Dask worker killed mid-job, the tables and the Pareto plot; one
build through the sweep (slow).

The executor tests share one process pool and one ``LocalCluster`` (module fixtures): the first
job of each worker process pays for importing torch, the rest is cheap. Training is one epoch
of a 64-32-10 network (``arch = "d32,d10"``) and the simulation 4 vectors, so a point is a few
seconds.
"""

import argparse
import json
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from qnnfab import ir, sweep
from qnnfab.sweep import SpecError, load_spec, parse_spec, point_key, run_sweep
from qnnfab.sweep_executor import (CLUSTER_HINT, LocalPool, MissingDask, SerialExecutor,
                                   make_executor)
from qnnfab.sweep_results import ResultLog, pareto_front, pareto_svg

ROOT = Path(__file__).resolve().parent.parent
SVG = "{http://www.w3.org/2000/svg}"

#: 2 presets x 2 seeds, train + sim: the tiny sweep the executors must agree on.
TINY = """
stages = ["train", "sim"]
[axes]
preset = ["digits-bnn", "digits-tnn"]
seed = [0, 1]
[fixed]
arch = "d32,d10"
epochs = 1
vectors = 4
board = "icebreaker"
"""

#: Results differ between runs only in these fields (wall time, which worker).
VOLATILE = ("seconds", "worker")


def write_spec(tmp_path, text, name="spec.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def stable(results):
    """``{key: result}`` without the fields that differ between runs."""
    return {r["key"]: {k: v for k, v in r.items() if k not in VOLATILE} for r in results}


def table(path):
    """The rows of a results.csv without the wall times."""
    import csv
    with open(path) as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def lines(out):
    return ResultLog(out / "results.jsonl").load()


# -- the spec --------------------------------------------------------------------------------

def test_example_spec_parses():
    spec = load_spec(ROOT / "examples" / "sweep.toml")
    assert spec.stages == ("train", "sim", "build")
    assert len(spec.points) == 8 and spec.varying == ["weights", "act_bits", "seed"]
    assert spec.labels[0] == "weights=binary act_bits=1 seed=0"
    assert spec.points[-1] == {"arch": "d128,d128,d10", "weights": "ternary", "act_bits": 2,
                               "epochs": 30, "seed": 1, "board": "icebreaker", "vectors": 100,
                               "stages": ["train", "sim", "build"]}
    assert len({point_key(p) for p in spec.points}) == 8


def test_points_drop_unused_quantize_options():
    """A float preset crossed with quantize methods gives one point per method; an integer
    preset has nothing to quantize, so its copies are one point."""
    spec = parse_spec({"stages": ["train", "quantize"],
                       "axes": {"preset": ["digits-mlp", "digits-bnn"],
                                "method": ["ga", "kmeans"]},
                       "fixed": {"bits": 2}}, "s.toml")
    assert spec.labels == ["preset=digits-mlp method=ga", "preset=digits-mlp method=kmeans",
                           "preset=digits-bnn"]
    assert spec.points[2] == {"preset": "digits-bnn", "stages": ["train", "quantize"]}


def test_key_follows_inputs():
    a = {"preset": "digits-bnn", "seed": 0, "stages": ["train"]}
    assert point_key(a) == point_key(dict(a))
    assert point_key(a) != point_key({**a, "seed": 1})
    assert point_key(a) != point_key({**a, "stages": ["train", "sim"]})


@pytest.mark.parametrize("text, message", [
    ('stages = ["train"]\ncolour = 1', "unknown key 'colour' (known: name, stages, axes, "
                                       "fixed"),
    ('[axes]\nseed = [0]', "stages: missing; expected a list of stages from train, quantize, "
                           "sim, build"),
    ('stages = ["train", "synth"]', 'stages: expected a non-empty list of stages from train, '
                                    'quantize, sim, build, got ["train", "synth"]'),
    ('stages = ["sim"]', 'stages: expected "train"'),
    ('stages = ["train"]\n[axes]\nseed = 3', "axes.seed: expected a non-empty list of an "
                                             "integer >= 0, got 3 (a single value goes in "
                                             "[fixed])"),
    ('stages = ["train"]\n[axes]\nseed = [0, -1]', "axes.seed[1]: expected an integer >= 0, "
                                                   "got -1"),
    ('stages = ["train"]\n[axes]\nseed = [1, 1]', "axes.seed: 1 appears twice"),
    ('stages = ["train"]\n[axes]\npreset = ["digits-xyz"]',
     "axes.preset[0]: expected one of 'digits-bnn'"),
    ('stages = ["train"]\n[fixed]\nboard = "icebreaker2"',
     "fixed.board: expected one of 'icebreaker', "),
    ('stages = ["train"]\n[fixed]\nlayers = "d10"', "fixed.layers: unknown key (known: "
                                                    "preset, arch,"),
    ('stages = ["train"]\n[fixed]\nfolding = "8x16"', 'fixed.folding: expected PE:SIMD per '
                                                      'layer'),
    ('stages = ["train"]\n[axes]\nseed = [0]\n[fixed]\nseed = 1',
     "seed: in both [axes] and [fixed]"),
    ('stages = ["train", "build"]', 'stages: "build" needs a board'),
    ('stages = ["train"]\n[fixed]\ntarget_ips = 1000.0', "target_ips needs a board"),
    ('stages = ["train"]\n[fixed]\nmethod = "ga"', 'fixed.method: a quantize option, but '
                                                   'stages has no "quantize"'),
    ('stages = ["train", "sim"]\n[fixed]\npreset = "digits-mlp"',
     'stages: the point trains float weights (digits-mlp): add "quantize"'),
    ('stages = ["train"]\n[axes]\narch = ["d32,d10", "q7"]', "point arch=q7: --arch"),
    ('stages = ["train"\n', "not valid TOML"),
])
def test_spec_errors_name_file_key_and_expectation(tmp_path, text, message):
    path = write_spec(tmp_path, text, "bad.toml")
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    assert str(exc.value).startswith(f"{path}: ")
    assert message in str(exc.value)


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="nope.toml: no such file"):
        load_spec(tmp_path / "nope.toml")


# -- executors -------------------------------------------------------------------------------

def test_make_executor_options(monkeypatch):
    assert isinstance(make_executor(workers=0), SerialExecutor)
    pool = make_executor(workers=3)
    assert isinstance(pool, LocalPool) and pool.describe() == "local process pool, 3 workers"
    pool.close()
    with pytest.raises(ValueError, match="--workers and --scheduler: give one of them"):
        make_executor(workers=2, scheduler="tcp://127.0.0.1:1")
    with pytest.raises(ValueError, match="--workers: expected an integer >= 0, got -1"):
        make_executor(workers=-1)
    monkeypatch.setitem(sys.modules, "distributed", None)   # as if Dask were not installed
    with pytest.raises(MissingDask) as exc:
        make_executor(scheduler="tcp://127.0.0.1:1")
    assert str(exc.value) == f"--scheduler needs Dask (dask.distributed): {CLUSTER_HINT}"
    assert CLUSTER_HINT == "pip install qnnfab[cluster]"


@pytest.fixture(scope="module")
def cluster():
    """A Dask cluster on the loopback: 2 worker processes of one thread each."""
    try:
        import distributed
    except ImportError:
        pytest.fail(f"the Dask tests need dask.distributed: {CLUSTER_HINT} (the test extra "
                    "brings it: pip install -e .[test])")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as c:
        yield c


@pytest.fixture(scope="module")
def pool():
    with LocalPool(2) as p:
        yield p


def _float_network():
    from qnnfab.model.presets import customize
    from qnnfab.model.train import train
    return train(customize("digits-mlp", arch="d16,d10"), seed=0, epochs=1,
                 progress=False).network


def test_pool_and_dask_give_identical_results(tmp_path, pool, cluster):
    """The tiny sweep on a 2-process pool and on a 2-worker LocalCluster: the same results,
    files and tables; then the GA of ``quantize`` on this process, the pool and the cluster:
    the same search and network for the same seed. (One test, so the pool and the cluster
    start once even under pytest-xdist.)"""
    from qnnfab.model.ptq import quantize
    from qnnfab.sweep_executor import DaskExecutor
    spec = write_spec(tmp_path, TINY)
    by_pool = run_sweep(spec, tmp_path / "pool", executor=pool, progress=False)
    with DaskExecutor(cluster.scheduler_address) as dask:
        assert dask.workers == 2 and "2 workers" in dask.describe()
        by_dask = run_sweep(spec, tmp_path / "dask", executor=dask, progress=False)
        assert (by_pool.ran, by_pool.failed, by_dask.ran, by_dask.failed) == (4, 0, 4, 0)
        a, b = lines(tmp_path / "pool"), lines(tmp_path / "dask")
        assert len(a) == len(b) == 4 and stable(a) == stable(b)
        assert all(r["vectors"] == {"checked": 4, "bit_exact": 4, "simulator": "amaranth"}
                   for r in a)
        assert {r["point"]["preset"] for r in a} == {"digits-bnn", "digits-tnn"}
        for r in a:   # the network came back as bytes and is the one trained
            net = ir.load(tmp_path / "pool" / r["dir"] / "network.qnn")
            assert (tmp_path / "dask" / r["dir"] / "network.qnn").read_bytes() == \
                ir.to_bytes(net)
            assert net.meta["accuracy"]["integer"] == r["accuracy"]["integer"]
            assert r["network"]["weight_bits"] == net.weight_bits
            assert r["estimate"]["lut"] > 0 and r["folding"]
        assert (tmp_path / "pool" / "pareto-icebreaker.svg").read_text() == \
            (tmp_path / "dask" / "pareto-icebreaker.svg").read_text()
        tables = [table(tmp_path / where / "results.csv") for where in ("pool", "dask")]
        assert tables[0] == tables[1] and len(tables[0]) == 4
        assert tables[0][0]["integer"] and tables[0][0]["bit_exact"] == "4/4"

        # The GA: serial, pool and cluster score the same population the same way.
        net = _float_network()
        kwargs = dict(method="ga", bits=2, seed=3, population=8, generations=3,
                      progress=False)
        runs = [quantize(net, **kwargs), quantize(net, executor=pool, **kwargs),
                quantize(net, executor=dask, **kwargs)]
    for r in runs:
        r.network.meta["quantized"].pop("seconds")
    assert runs[0].history == runs[1].history == runs[2].history
    assert ir.to_bytes(runs[0].network) == ir.to_bytes(runs[1].network) == \
        ir.to_bytes(runs[2].network)


def test_ga_executor_arguments():
    from qnnfab.model.ptq import quantize
    with pytest.raises(ValueError, match="give executor, or workers/scheduler, not both"):
        quantize(None, "ga", 2, progress=False, workers=2, executor=SerialExecutor())


def test_killed_dask_worker_job_runs_again(tmp_path, cluster):
    """A job whose worker process dies mid-job runs again on another worker: every point has
    exactly one result line."""
    from qnnfab.sweep_executor import DaskExecutor
    out = tmp_path / "out"
    marks = str(tmp_path)

    def job(point):   # a local function: Dask ships it by value
        import os
        if point["seed"] == 1 and not os.path.exists(os.path.join(marks, "died")):
            open(os.path.join(marks, "died"), "w").close()
            os._exit(1)   # the worker process dies mid-job
        return {"status": "ok", "accuracy": {"integer": point["seed"] / 10}, "files": {},
                "seconds": {}}
    spec = parse_spec({"stages": ["train"], "axes": {"seed": [0, 1, 2]}}, "s.toml")
    with DaskExecutor(cluster.scheduler_address) as dask:
        summary = run_sweep(spec, out, executor=dask, progress=False, job=job)
    assert (tmp_path / "died").exists()
    assert (summary.ran, summary.failed) == (3, 0)
    got = lines(out)
    assert sorted(r["point"]["seed"] for r in got) == [0, 1, 2]
    assert all(r["status"] == "ok" for r in got)


# -- resume, Ctrl-C, failures ----------------------------------------------------------------

TRAIN_ONLY = """
stages = ["train"]
[axes]
seed = [0, 1, 2, 3]
[fixed]
arch = "d16,d10"
epochs = 1
"""


def test_resume_skips_finished_points(tmp_path):
    """An interrupted sweep (two lines lost, a torn third) runs only the missing points and
    gets the same results; a finished one runs nothing."""
    spec = write_spec(tmp_path, TRAIN_ONLY)
    out = tmp_path / "out"
    first = run_sweep(spec, out, workers=0, progress=False)
    assert (first.ran, first.skipped) == (4, 0)
    full = lines(out)
    path = out / "results.jsonl"
    kept = path.read_text().splitlines(keepends=True)[:2]
    path.write_text("".join(kept) + '{"key": "torn')   # the writer died mid-line
    said = []
    second = run_sweep(spec, out, workers=0, progress=True, log=said.append)
    assert (second.ran, second.skipped, second.failed) == (2, 2, 0)
    assert "2 finished before, skipped; 2 to run on this process (serial)" in said[1]
    assert "cut off a torn last line" in said[0]
    assert stable(lines(out)) == stable(full) and len(lines(out)) == 4
    third = run_sweep(spec, out, workers=0, progress=False)
    assert (third.ran, third.skipped) == (0, 4)


def _fake_job(point):
    if point["seed"] == 2:
        raise KeyboardInterrupt   # Ctrl-C while the third point runs
    return {"status": "ok", "accuracy": {"integer": 0.5 + point["seed"] / 10}, "files": {},
            "seconds": {"total": 0.0}}


def test_ctrl_c_keeps_finished_results(tmp_path):
    spec = write_spec(tmp_path, TRAIN_ONLY)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, out, executor=SerialExecutor(), progress=False, job=_fake_job)
    assert [r["point"]["seed"] for r in lines(out)] == [0, 1]
    table = (out / "results.md").read_text()
    assert "| 0 | ok |" in table and "| 1 | ok |" in table and "| 2 |" not in table


def test_failing_point_records_its_error_and_the_others_finish(tmp_path, capsys):
    spec = write_spec(tmp_path, 'stages = ["train"]\n[axes]\ndata = ["digits", '
                                '"npz:/nonexistent/x.npz"]\n[fixed]\narch = "d16,d10"\n'
                                'epochs = 1\n')
    out = tmp_path / "out"
    parser = argparse.ArgumentParser()
    sweep.add_arguments(parser)
    args = parser.parse_args([str(spec), "--out", str(out), "--workers", "0", "--quiet"])
    assert sweep.run(args) == 1
    printed = capsys.readouterr().out
    assert "2 points: 2 ran, 0 finished before (skipped), 1 failed" in printed
    ok, bad = lines(out)
    assert ok["status"] == "ok" and ok["accuracy"]["integer"] > 0.3
    assert bad["status"] == "error" and bad["error"].startswith("train: ")
    assert "/nonexistent/x.npz" in bad["error"] and "Traceback" in bad["traceback"]
    assert "/nonexistent/x.npz" in (out / "results.md").read_text()
    # A rerun tries the failed point again, and only it.
    again = run_sweep(spec, out, workers=0, progress=False)
    assert (again.ran, again.skipped, again.failed) == (1, 1, 1)


def test_error_names_the_stage(tmp_path):
    """A point whose speed target no folding reaches fails after training, at the folding;
    what training measured stays in its result."""
    spec = parse_spec({"stages": ["train", "sim"],
                       "fixed": {"arch": "d16,d10", "epochs": 1, "board": "icebreaker",
                                 "target_ips": 1e12}}, "s.toml")
    summary = run_sweep(spec, tmp_path / "out", workers=0, progress=False)
    (r,) = summary.results
    assert r["status"] == "error" and summary.failed == 1 and not summary.ok
    assert r["error"].startswith("folding: TargetUnreachable: --target-ips")
    assert r["accuracy"]["integer"] > 0.3 and "sim" not in r["seconds"]
    assert (tmp_path / "out" / r["dir"] / "network.qnn").exists()


def test_dry_run_lists_points(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    sweep.add_arguments(parser)
    args = parser.parse_args([str(ROOT / "examples" / "sweep.toml"), "--out",
                              str(tmp_path / "o"), "--dry-run"])
    assert sweep.run(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "8 points (train, sim, build):" and len(out) == 9
    assert out[1].endswith("weights=binary act_bits=1 seed=0")
    assert not (tmp_path / "o").exists()


# -- tables and plots ------------------------------------------------------------------------

def test_pareto_front():
    pts = [(100, 0.90), (200, 0.95), (150, 0.89), (300, 0.94), (50, 0.80)]
    assert pareto_front(pts, x_lower_better=True) == [4, 0, 1]
    assert pareto_front(pts, x_lower_better=False) == [1, 3]


def test_pareto_svg():
    def result(lut, ips, acc, built):
        r = {"status": "ok", "point": {"board": "icebreaker"}, "label": f"lut={lut}",
             "accuracy": {"integer": acc}}
        r["build" if built else "estimate"] = {"lut": lut, "bram": 3, "inferences_per_s": ips}
        return r
    results = [result(1000, 1e5, 0.9, True), result(2000, 3e5, 0.95, True),
               result(500, 1e6, 0.99, False)]
    root = ET.fromstring(pareto_svg(results, "icebreaker"))
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert any("2 points, built" in (t or "") for t in texts)   # built points only
    assert len(list(root.iter(f"{SVG}circle"))) == 4             # 2 points x 2 panels
    assert pareto_svg(results[2:], "icebreaker") and \
        "estimated, not built" in pareto_svg(results[2:], "icebreaker")
    assert pareto_svg(results, "ulx3s-85f") is None


def test_result_log_appends_whole_lines(tmp_path):
    log = ResultLog(tmp_path / "r.jsonl")
    assert log.load() == []
    log.append({"key": "a", "x": 1})
    log.append({"key": "b", "x": [1, 2]})
    assert log.load() == [{"key": "a", "x": 1}, {"key": "b", "x": [1, 2]}]
    with pytest.raises(ValueError, match="not JSON compliant"):
        log.append({"key": "c", "x": float("nan")})
    (tmp_path / "r.jsonl").write_text('{"key": "a"}\nnot json\n')
    with pytest.raises(ValueError, match="r.jsonl:2: not a result line"):
        log.load()


# -- a build through the sweep ---------------------------------------------------------------

def _fake_tools(commands, build_dir, env, family, *, progress=None, notes=None):
    """What Yosys, nextpnr and icepack would leave (real builds: tests/boards/test_build.py,
    test_flow.py, the build matrix); the sweep's part is carrying the report back."""
    with open(os.path.join(build_dir, "top.report.json"), "w") as f:
        json.dump({"utilization": {"ICESTORM_LC": {"used": 400, "available": 5280},
                                   "ICESTORM_RAM": {"used": 4, "available": 30},
                                   "ICESTORM_DSP": {"used": 0, "available": 8}},
                   "fmax": {"cd_sync.clk": {"achieved": 99.0, "constraint": 36.0}}}, f)
    with open(os.path.join(build_dir, "top.rpt"), "w") as f:
        f.write("2.50. Printing statistics.\n\n=== top ===\n  120   SB_DFF\n  300   SB_LUT4\n")
    with open(os.path.join(build_dir, "top.bin"), "wb") as f:
        f.write(b"\x7e\xaa" * 8)
    return {"synthesis": 0.0, "place and route": 0.0, "bitstream": 0.0}


def test_sweep_builds_a_bitstream(tmp_path, monkeypatch):
    """Train, simulate and build one point for the iCEBreaker in this process (the tools
    replaced by a stand-in that writes their outputs): the build report's numbers in the
    result, the report and the bitstream back as files."""
    import hashlib
    from qnnfab.boards import build as build_mod
    monkeypatch.setattr(build_mod, "run_steps", _fake_tools)
    spec = write_spec(tmp_path, 'stages = ["train", "sim", "build"]\n[fixed]\narch = "d32,d10"'
                                '\nepochs = 1\nvectors = 4\nboard = "icebreaker"\n')
    out = tmp_path / "out"
    summary = run_sweep(spec, out, workers=0, progress=False)
    assert summary.ok, summary.results
    (r,) = lines(out)
    build = r["build"]
    assert 0 < build["lut"] <= build["lut_total"] == 5280 and build["bram"] >= 1
    assert build["fmax_mhz"] > 0 and build["inferences_per_s"] > 0
    assert r["seconds"]["build"] > 0 and r["vectors"]["bit_exact"] == 4
    report = json.loads((out / r["dir"] / "report.json").read_text())
    bitstream = (out / r["dir"] / report["bitstream"]).read_bytes()
    assert hashlib.sha256(bitstream).hexdigest() == report["bitstream_sha256"]
    assert report["resources"]["lut"]["used"] == build["lut"]
    assert sorted(r["files"]) == sorted(["network.qnn", "report.json", report["bitstream"]])
    svg = (out / "pareto-icebreaker.svg").read_text()
    assert "1 point, built" in svg
    assert os.path.exists(out / "results.csv")
