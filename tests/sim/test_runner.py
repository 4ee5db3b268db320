"""qnnfab.sim.runner: compare/report text, payload packing, argument checks, Icarus and Amaranth
paths of ``simulate``."""

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from qnnfab import random_net
from qnnfab.spec import golden
from qnnfab.sim import icarus_env, runner


def _net(seed=5, features=(16, 8, 8, 10), input_bits=1):
    rng = np.random.default_rng(seed)
    net = random_net.random_network(rng, features=list(features), input_bits=input_bits)
    return net, random_net.random_inputs(rng, net, 64)


def _golden_result(net, codes):
    trace = golden.forward(net, codes)
    return runner.SimResult(classes=trace.classes.copy(), scores=trace.scores.copy(),
                            simulator="test", cycles=1, seconds=1.0)


# --- compare / report --------------------------------------------------------------------------

def test_compare_golden_against_itself_is_bit_exact():
    net, codes = _net()
    cmp = runner.compare(net, codes, _golden_result(net, codes))
    assert cmp.ok and cmp.checked == cmp.bit_exact == 64 and cmp.mismatches == []
    assert cmp.summary() == "64/64 vectors bit-exact"
    assert cmp.report() == "64/64 vectors bit-exact"


def test_wrong_result_gives_the_mismatch_report():
    net, codes = _net()
    result = _golden_result(net, codes)
    exp = golden.forward(net, codes)
    result.scores[3, 7] += 2
    result.scores[3, 1] -= 1
    wrong_class = (exp.classes[9] + 1) % 10
    result.classes[9] = wrong_class
    cmp = runner.compare(net, codes, result)
    assert not cmp.ok
    assert (cmp.checked, cmp.bit_exact) == (64, 62)
    assert [(m.vector, m.layer, m.index) for m in cmp.mismatches] == [
        (3, 2, 1), (3, 2, 7), (9, "argmax", 0)]
    assert cmp.report() == "\n".join([
        "62/64 vectors bit-exact",
        f"vector 3: layer 2 output 1: expected {exp.scores[3, 1]}, got {exp.scores[3, 1] - 1}",
        f"vector 3: layer 2 output 7: expected {exp.scores[3, 7]}, got {exp.scores[3, 7] + 2}",
        f"vector 9: argmax: expected {exp.classes[9]}, got {wrong_class}",
    ])
    assert cmp.report(limit=1).splitlines()[1:] == [
        f"vector 3: layer 2 output 1: expected {exp.scores[3, 1]}, got {exp.scores[3, 1] - 1}",
        "... and 2 more mismatching outputs"]


def test_compare_rejects_wrong_shapes():
    net, codes = _net()
    result = _golden_result(net, codes)
    result.scores = result.scores[:, :5]
    with pytest.raises(ValueError, match=r"result.scores: expected shape \(64, 10\), "
                                         r"got \(64, 5\)"):
        runner.compare(net, codes, result)


# --- payload layouts ---------------------------------------------------------------------------

def test_network_layouts_follow_the_port_contract():
    net, _ = _net(features=(64, 32, 10), input_bits=5)
    in_layout, out_layout = runner.network_layouts(net)
    assert in_layout == data.ArrayLayout(unsigned(5), 64)
    assert out_layout == data.StructLayout({
        "cls": unsigned(4), "scores": data.ArrayLayout(signed(net.layers[-1].acc_width), 10)})


def test_pack_and_unpack_bit_positions():
    in_layout = data.ArrayLayout(unsigned(5), 3)
    assert runner.pack_inputs(in_layout, [[1, 2, 31]]) == [1 | 2 << 5 | 31 << 10]
    out_layout = data.StructLayout({"cls": unsigned(2), "scores": data.ArrayLayout(signed(4), 3)})
    word = 2 | (0b1111 << 2) | (7 << 6) | (0b1000 << 10)  # cls 2, scores -1, 7, -8
    classes, scores = runner.unpack_outputs(out_layout, [word])
    assert classes.tolist() == [2] and scores.tolist() == [[-1, 7, -8]]


def test_pack_rejects_wrong_width():
    with pytest.raises(ValueError, match=r"expected shape \(n, 3\), got \(1, 4\)"):
        runner.pack_inputs(data.ArrayLayout(unsigned(2), 3), [[0, 1, 2, 3]])


# --- argument checks ---------------------------------------------------------------------------

def test_simulate_rejects_bad_arguments():
    net, codes = _net()
    with pytest.raises(ValueError, match=r"simulator must be one of 'amaranth', 'verilator', "
                                         r"'icarus', not 'modelsim'"):
        runner.simulate(net, codes, simulator="modelsim")
    with pytest.raises(ValueError, match=r"inputs: expected shape \(batch, 16\), got \(64, 3\)"):
        runner.simulate(net, codes[:, :3], simulator="verilator")
    with pytest.raises(TypeError, match=r"progress must be a callable"):
        runner.simulate(net, codes, simulator="verilator", progress=5)


def test_missing_icarus_says_apt_get(monkeypatch):
    monkeypatch.setattr(icarus_env, "_cache", {})
    monkeypatch.setattr(icarus_env.shutil, "which", lambda name: None)
    with pytest.raises(icarus_env.ToolNotFoundError,
                       match=r"iverilog and vvp not on PATH.*apt-get install iverilog"):
        icarus_env.find_icarus()


# --- the Icarus and Amaranth paths -------------------------------------------------------------

@pytest.mark.icarus
def test_icarus_is_installed():
    # Not a skip: without Icarus this fails and says how to install it.
    install = icarus_env.find_icarus()
    assert "Icarus Verilog" in install.version


@pytest.mark.icarus
def test_random_network_bit_exact_in_icarus(tmp_path):
    net, codes = _net(seed=11, features=(16, 8, 4))
    calls = []
    result = runner.simulate(net, codes, simulator="icarus", build_dir=tmp_path,
                             progress=lambda done, total: calls.append((done, total)))
    cmp = runner.compare(net, codes, result)
    assert cmp.ok, f"seed 11: {cmp.report()}"
    assert result.simulator == "icarus" and str(tmp_path) in str(result.build_dir)
    assert calls[-1] == (64, 64)


def test_random_network_bit_exact_in_amaranth():
    net, codes = _net(seed=12, features=(16, 8, 4))
    codes = codes[:16]
    result = runner.simulate(net, codes, simulator="amaranth")
    assert result.simulator == "amaranth" and result.cycles > 0
    cmp = runner.compare(net, codes, result)
    assert cmp.ok, f"seed 12: {cmp.report()}"
