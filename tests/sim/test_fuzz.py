"""Randomized equivalence (qnnfab.sim.fuzz): golden = Amaranth = Verilator on random networks.

A bounded number of examples here; ``make fuzz`` runs many more."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from qnnfab import random_net
from qnnfab.kinds import WEIGHT_KINDS
from qnnfab.sim import fuzz
from qnnfab.sim.runner import SimResult

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
    # Each example is a fresh Verilator compile (~20 s), so only a few here; `make fuzz` runs
    # more. One dense and one CNN example, drawn by Hypothesis, plus one with extreme inputs.
    tally = fuzz.Tally()
    for spatial in (False, True):
        @settings(max_examples=1, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(fuzz.examples(spatial=spatial))
        def one(example):
            fuzz.assert_equivalent(example, ("amaranth", "verilator"), build_dir=tmp_path,
                                   tally=tally)
        one()
    assert tally.networks["verilator"] == 2
    assert tally.vectors["verilator"] >= 2
    assert not tally.mismatches


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
    assert fuzz.main(["--examples", "6", "--verilator-examples", "0"]) == 0
    out = capsys.readouterr().out
    assert "golden = amaranth: 6 networks" in out
    assert "0 mismatches" in out
