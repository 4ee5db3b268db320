"""The fuzz's input-buffer axis (issue 17): MLPs whose input vector goes code by code into
block RAM (:mod:`qnnfab.rtl.input_buffer`) are drawn beside the others, and golden = Amaranth
on them."""

import numpy as np
from hypothesis import HealthCheck, given, settings

from qnnfab import random_net
from qnnfab.rtl.folding import auto_folding
from qnnfab.sim import fuzz

# The filter keeps the networks drawn with an input buffer (about one in ten), which trips
# Hypothesis's filter health check on some runs.
_FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                       HealthCheck.data_too_large,
                                                       HealthCheck.filter_too_much])


def test_the_input_buffer_axis_is_drawn():
    counts = {"buffered": 0, "plain": 0, "with spram": 0, "with unrolled": 0}

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(fuzz.examples())
    def collect(example):
        if not example.input_buffer:
            counts["plain"] += 1
            return
        counts["buffered"] += 1
        assert "input:buffer" in fuzz.features_of(example)
        net = example.network
        folding = example.folding or auto_folding(net)
        first = folding[0]
        simd = first.simd if hasattr(first, "simd") else first[1]
        assert net.input_shape is None and simd < net.input_features
        assert example.styles[0] == "folded"
        counts["with spram"] += "spram" in example.stores
        counts["with unrolled"] += "unrolled" in example.styles
    collect()
    # Derandomized (tests/conftest.py): the same 300 examples on every run.
    assert counts["plain"] > 150 and counts["buffered"] > 15, counts
    assert counts["with spram"] + counts["with unrolled"] > 0, counts


def test_an_input_buffer_example_says_so():
    rng = np.random.default_rng(0)
    net = random_net.random_network(rng, features=[4, 3, 2], input_bits=2)
    codes = random_net.random_inputs(rng, net, 2)
    assert "input_buffer" in repr(fuzz.Example(network=net, folding=[(1, 2), (1, 3)],
                                               codes=codes, input_buffer=True))
    assert "input_buffer" not in repr(fuzz.Example(network=net, folding=None, codes=codes))


@settings(_FAST, max_examples=20)
@given(fuzz.examples().filter(lambda e: e.input_buffer))
def test_input_buffer_golden_equals_amaranth(example):
    fuzz.assert_equivalent(example, ("amaranth",))


def test_input_buffer_golden_equals_verilator_with_stalls(tmp_path):
    # One bulk build: buffered networks (the vector serialized in front) beside a plain one,
    # with SPRAM and an unrolled last layer, under random back-pressure and input gaps.
    rng = np.random.default_rng(31)
    dense = random_net.random_network(rng, features=[12, 8, 6, 4], input_bits=5,
                                      hidden_bits=2, weight_kind="ternary")
    examples = [
        fuzz.Example(network=dense, folding=[(2, 3), (1, 8), (4, 3)],
                     codes=random_net.random_inputs(rng, dense, 10), input_buffer=True),
        fuzz.Example(network=dense, folding=[(8, 1), (2, 4), (1, 6)],
                     codes=random_net.random_inputs(rng, dense, 10),
                     style=["folded", "folded", "unrolled"], weights_in=["spram", "ebr", "ebr"],
                     input_buffer=True),
        fuzz.Example(network=dense, folding=[(2, 3), (1, 8), (4, 3)],
                     codes=random_net.random_inputs(rng, dense, 10)),
    ]
    tally = fuzz.Tally()
    found = fuzz.check_batch(examples, build_dir=tmp_path, tally=tally, seed=3, stalls=True)
    assert found == [] and not tally.failures
    assert tally.networks["verilator"] == 3 and tally.vectors["verilator"] == 30
    assert "input:buffer" in tally.features


def test_simulate_with_the_input_buffer(tmp_path):
    from qnnfab.sim.runner import compare, simulate
    rng = np.random.default_rng(4)
    net = random_net.random_network(rng, features=[16, 8, 3], input_bits=8)
    codes = random_net.random_inputs(rng, net, 5)
    for simulator in ("amaranth", "verilator"):
        result = simulate(net, codes, simulator=simulator, folding=[(2, 4), (3, 8)],
                          build_dir=tmp_path, input_buffer=True)
        assert compare(net, codes, result).bit_exact == 5, simulator
    import pytest
    with pytest.raises(ValueError, match=r"input_buffer: Amaranth's simulator or Verilator's "
                                         r"bulk harness"):
        simulate(net, codes, simulator="verilator", harness="cocotb", input_buffer=True)
