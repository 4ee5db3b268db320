"""The default job end to end: `qnnfab flow` trains, simulates (Amaranth on the whole digits test
split, Verilator on 64 vectors), builds the iCEBreaker bitstream and writes report.json."""

import hashlib
import json

import pytest

from qnnfab import cli, ir

REPORT_KEYS = {"board", "device", "resources", "fmax_mhz", "clock_mhz", "cycles_per_inference",
               "inferences_per_s", "accuracy", "vectors", "bitstream", "tools", "inputs", "seed"}


@pytest.mark.slow
def test_flow_icebreaker_end_to_end(tmp_path, capsys):
    out = tmp_path / "flow"
    # A short training run keeps the test quick; everything after it is the real flow.
    assert cli.main(["flow", "--board", "icebreaker", "--out", str(out), "--epochs", "8",
                     "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert REPORT_KEYS <= set(report)
    network = ir.load(out / "network.qnn")
    test_split = report["accuracy"]["test_vectors"]
    assert test_split == 360
    # Every vector of the test split in Amaranth's simulator, 64 in Verilator, all bit-exact.
    assert report["vectors"]["checked"] == test_split + 64
    assert report["vectors"]["bit_exact"] == report["vectors"]["checked"]
    # The hardware's classes are the golden model's, so the accuracies agree exactly.
    assert report["accuracy"]["hardware"] == report["accuracy"]["integer"]
    assert report["accuracy"]["integer"] > 0.8
    for key in ("lut", "ff", "bram", "dsp"):
        assert 0 <= report["resources"][key]["used"] <= report["resources"][key]["total"]
    assert report["resources"]["lut"]["used"] > 500
    assert (out / report["bitstream"]).stat().st_size > 100_000
    assert report["cycles_per_inference"] > 0 and report["fmax_mhz"] > 0
    assert report["inputs"]["ir_sha256"] == hashlib.sha256(ir.to_bytes(network)).hexdigest()
    printed = capsys.readouterr().out
    assert "424/424 bit-exact" in printed
    assert str(out / "report.json") in printed


def test_run_on_a_missing_serial_port(tmp_path, capsys):
    import numpy as np

    from qnnfab import random_net
    net = random_net.random_network(np.random.default_rng(0), features=[8, 4, 3])
    path = tmp_path / "n.qnn"
    ir.save(net, path)
    assert cli.main(["run", "--port", str(tmp_path / "ttyNOPE"), str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qnnfab: error: ") and "ttyNOPE" in err
    assert len(err.strip().splitlines()) == 1
