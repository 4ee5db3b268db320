"""Randomized equivalence (qnnfab.sim.fuzz): golden = Amaranth = Verilator on random networks.

A bounded number of examples here (Verilator in batches, as ``make fuzz`` runs it); ``make
fuzz`` runs many more."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from qnnfab import random_net
from qnnfab.kinds import WEIGHT_KINDS
from qnnfab.sim import fuzz
from qnnfab.sim.runner import SimResult
from qnnfab.spec import golden

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")

_FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                       HealthCheck.data_too_large])


@settings(_FAST, max_examples=80)
@given(fuzz.examples(spatial=False))
def test_dense_golden_equals_amaranth(example):
    fuzz.assert_equivalent(example, ("amaranth",))


@settings(_FAST, max_examples=25)
@given(fuzz.examples(spatial=True))
def test_cnn_golden_equals_amaranth(example):
    fuzz.assert_equivalent(example, ("amaranth",))


def test_golden_equals_amaranth_equals_verilator(tmp_path):
    # Verilator runs batches of networks, one build per batch (what `make fuzz` does at scale):
    # 6 networks drawn by Hypothesis (dense and CNN) in one build. (The batches with stalls:
    # tests/sim/test_verilator_bulk.py.)
    tally = fuzz.run(6, ("amaranth", "verilator"), seed=16, build_dir=tmp_path, batch=6)
    assert tally.networks["verilator"] == tally.networks["amaranth"] == 6
    assert tally.vectors["verilator"] >= 6
    assert not tally.mismatches and not tally.failures
    assert {"conv", "dense"} <= {tag.split(":")[0] for tag in tally.features}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("bulk-")]  # batches removed


def test_batch_mismatch_and_stall_are_reported(replace_public):
    from qnnfab.sim import bulk_network
    from qnnfab.sim.verilator_bulk import BulkStallError
    rng = np.random.default_rng(7)
    examples = []
    for features in ([5, 4, 3], [3, 2]):
        net = random_net.random_network(rng, features=features, input_bits=2)
        examples.append(fuzz.Example(network=net, folding=None,
                                     codes=random_net.random_inputs(rng, net, 3)))
    traces = [golden.forward(e.network, e.codes) for e in examples]

    def off_by_one(items, **kwargs):  # the second network's score (1, 0) one too high
        runs = [SimResult(classes=t.classes.copy(), scores=t.scores.copy(), simulator="fake",
                          cycles=1, seconds=0.0) for t in traces]
        runs[1].scores[1, 0] += 1
        return runs
    replace_public(bulk_network, "run_networks", off_by_one)
    tally = fuzz.Tally()
    found = fuzz.check_batch(examples, tally=tally)
    assert [(k, m.vector, m.layer, m.index) for k, m in found] == [(1, 1, 0, 0)]
    assert found[0][1].expected + 1 == found[0][1].got
    assert tally.networks["verilator"] == 2 and len(tally.mismatches) == 1
    assert tally.mismatches[0].startswith("verilator: vector 1: layer 0 output 0: expected")
    assert tally.failures[0].startswith("verilator: 1 mismatching outputs: Example(3x2b")

    def stuck(items, **kwargs):
        raise BulkStallError("verilator (bulk) simulation failed: stalled: lane 1: no output "
                             "for 99 cycles after 0 of 3 outputs (1 inputs accepted) at cycle 9")
    replace_public(bulk_network, "run_networks", stuck)
    tally = fuzz.Tally()
    found = fuzz.check_batch(examples, tally=tally)
    assert [k for k, _ in found] == [1]
    assert tally.networks["verilator"] == 0  # a failed batch checked nothing
    assert "stalled: lane 1" in tally.mismatches[0]
    assert tally.failures[0].startswith("verilator: verilator (bulk) simulation failed: stalled")
    assert tally.failures[0].endswith(repr(examples[1]))


def test_check_reports_layer_index_expected_got(monkeypatch):
    rng = np.random.default_rng(3)
    net = random_net.random_network(rng, features=[5, 4, 3], input_bits=2)
    codes = random_net.random_inputs(rng, net, 4)
    example = fuzz.Example(network=net, folding=None, codes=codes)
    from qnnfab.spec import golden
    from qnnfab.sim import runner
    trace = golden.forward(net, codes)

    def wrong(network, codes, **kwargs):  # a simulator that gets one score wrong
        scores = trace.scores.copy()
        scores[2, 1] += 1
        return SimResult(classes=trace.classes.copy(), scores=scores, simulator="fake",
                         cycles=0, seconds=0.0)
    monkeypatch.setattr(runner, "simulate", wrong)
    found = fuzz.check(example, ("fake",))
    assert [(sim, m.vector, m.layer, m.index) for sim, m in found] == [("fake", 2, 1, 1)]
    assert found[0][1].expected == trace.scores[2, 1]
    assert found[0][1].got == trace.scores[2, 1] + 1
    with pytest.raises(AssertionError, match="layer 1 output 1: expected"):
        fuzz.assert_equivalent(example, ("fake",))


def test_strategy_covers_every_kind_and_folding():
    seen = set()

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(fuzz.examples())
    def collect(example):
        example.network.validate()
        seen.update(fuzz.features_of(example))
    collect()
    required = {
        *(f"{where}:{kind}" for where in ("dense", "conv") for kind in WEIGHT_KINDS),
        "kernel_codebook", "kernel_codebook+sign", "maxpool2",
        "dense:in_bits=1", "dense:in_bits=k", "conv:in_bits=1", "conv:in_bits=k",
        "dense:out_bits=1", "dense:out_bits=3", "threshold_sign:-1",
        "fold:pe=1", "fold:pe=partial", "fold:pe=all", "fold:simd=1", "fold:simd=partial",
        "fold:simd=all", "conv:k1p0", "conv:k3p0", "conv:k3p1", "conv:k5p2",
        "input_bits:1", "input_bits:8",
        *(f"inputs:{p}" for p in fuzz.PATTERNS)}
    assert required <= seen, f"never drawn: {sorted(required - seen)}"


def test_extreme_patterns_are_what_they_say():
    rng = np.random.default_rng(0)
    net = random_net.random_network(rng, features=[5, 3], input_bits=3)

    @settings(max_examples=30, deadline=None, database=None)
    @given(fuzz.input_codes(net, rng))
    def check_rows(drawn):
        codes, patterns = drawn
        assert codes.shape == (len(patterns), 5)
        for row, p in zip(codes, patterns):
            expected = {"zero": [0] * 5, "max": [7] * 5, "alternating": [0, 7, 0, 7, 0],
                        "alternating-inverted": [7, 0, 7, 0, 7]}.get(p)
            if expected is not None:
                assert row.tolist() == expected, p
            assert 0 <= row.min() and row.max() <= 7
    check_rows()


def test_main_prints_the_counts(capsys):
    assert fuzz.main(["--networks", "6", "--simulators", "amaranth", "--workers", "1",
                      "--chunk", "3", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert "6 networks in " in out
    # The CPU time counts this process's own simulation work (workers=1 runs in-process).
    rate = float(out.split(" per CPU-hour")[0].rsplit(" ", 1)[1].replace(",", ""))
    assert 0 < rate < 6 * 3600 / 1e-3  # six networks take more than a CPU-millisecond
    assert "golden = amaranth: 6 networks" in out
    assert out.rstrip().endswith("0 mismatches")


def test_main_refuses_bad_options(capsys):
    with pytest.raises(SystemExit):
        fuzz.main(["--simulators", "modelsim"])
    assert "--simulators: expected some of amaranth, verilator" in capsys.readouterr().err
