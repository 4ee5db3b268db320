"""The fuzz's input-buffer axis (issue 17): MLPs whose input vector goes code by code into
block RAM (:mod:`qnnfab.rtl.input_buffer`) are drawn beside the others, and golden = Amaranth
on them."""

import numpy as np
from hypothesis import HealthCheck, given, settings

from qnnfab import random_net
from qnnfab.rtl.folding import auto_folding
from qnnfab.sim import fuzz

_FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                       HealthCheck.data_too_large])


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
