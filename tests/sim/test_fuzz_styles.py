"""The fuzz's style axis (issue 23): networks mixing folded and unrolled (weights in logic)
layers are drawn, and golden = Amaranth = Verilator on them."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from qnnfab import ir, random_net
from qnnfab.kinds import WEIGHT_KINDS
from qnnfab.rtl.cse import layer_matrix, row_terms
from qnnfab.sim import fuzz

_FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                       HealthCheck.data_too_large])


def test_the_style_axis_is_drawn():
    seen = set()
    counts = {"folded": 0, "some unrolled": 0}

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(fuzz.examples())
    def collect(example):
        styles = example.styles
        assert len(styles) == len(example.network.layers)
        counts["some unrolled" if "unrolled" in styles else "folded"] += 1
        assert (example.style is None) == ("unrolled" not in styles)
        for layer, style in zip(example.network.layers, styles):
            if style == "unrolled":          # only small dense layers, never conv or pool
                assert isinstance(layer, ir.DenseLayer)
                assert row_terms(layer_matrix(layer)).sum() <= fuzz.MAX_UNROLLED_TERMS
        seen.update(fuzz.features_of(example))
    collect()
    required = {"style:unrolled", "style:mixed", "unrolled:last",
                "unrolled:in_bits=1", "unrolled:in_bits=k",
                *(f"unrolled:{kind}" for kind in WEIGHT_KINDS)}
    assert required <= seen, f"never drawn: {sorted(required - seen)}"
    # both sides of the axis come up often (about half the networks unroll something)
    assert counts["folded"] > 60 and counts["some unrolled"] > 60, counts


def test_an_unrolled_example_says_so():
    rng = np.random.default_rng(0)
    net = random_net.random_network(rng, features=[4, 3, 2], input_bits=2)
    example = fuzz.Example(network=net, folding=None, codes=random_net.random_inputs(rng, net, 2),
                           style=["folded", "unrolled"])
    assert "style ['folded', 'unrolled']" in repr(example)
    assert "style" not in repr(fuzz.Example(network=net, folding=None, codes=example.codes))
    assert {"style:mixed", "unrolled:last", "unrolled:binary"} <= fuzz.features_of(example)


@settings(_FAST, max_examples=40)
@given(fuzz.examples().filter(lambda e: e.style is not None))
def test_mixed_golden_equals_amaranth(example):
    fuzz.assert_equivalent(example, ("amaranth",))


def test_mixed_golden_equals_verilator_with_stalls(tmp_path):
    # one bulk build of three networks, random back-pressure and input gaps: all unrolled,
    # unrolled between folded layers, and a CNN whose dense layers are unrolled
    rng = np.random.default_rng(23)
    dense = random_net.random_network(rng, features=[10, 8, 6, 4], input_bits=3,
                                      hidden_bits=2, weight_kind="ternary")
    cnn = random_net.random_cnn(rng, height=4, width=4, channels=[1, 2], dense=(5,),
                                n_outputs=3)
    examples = [
        fuzz.Example(network=dense, folding=None, codes=random_net.random_inputs(rng, dense, 12),
                     style=["unrolled"] * 3),
        fuzz.Example(network=dense, folding=[(2, 5), (1, 8), (4, 3)],
                     codes=random_net.random_inputs(rng, dense, 12),
                     style=["folded", "unrolled", "folded"]),
        fuzz.Example(network=cnn, folding=None, codes=random_net.random_inputs(rng, cnn, 6),
                     style=["folded"] + ["unrolled"] * (len(cnn.layers) - 1)),
    ]
    assert [type(ly).__name__ for ly in cnn.layers] == ["ConvLayer", "DenseLayer",
                                                       "DenseLayer"]
    tally = fuzz.Tally()
    found = fuzz.check_batch(examples, build_dir=tmp_path, tally=tally, seed=5, stalls=True)
    assert found == [] and not tally.failures
    assert tally.networks["verilator"] == 3 and tally.vectors["verilator"] == 30
    assert {"style:unrolled", "style:mixed"} <= set(tally.features)


@pytest.mark.parametrize("layer_terms, unrollable", [(fuzz.MAX_UNROLLED_TERMS, True),
                                                     (fuzz.MAX_UNROLLED_TERMS + 1, False)])
def test_only_small_layers_unroll(layer_terms, unrollable):
    # a binary layer sums every input: in_features terms per neuron
    rng = np.random.default_rng(1)
    n_in = layer_terms
    layer = random_net.random_dense(rng, in_features=n_in, out_features=1, in_bits=1,
                                    output=True)
    assert row_terms(layer_matrix(layer)).sum() == layer_terms
    assert fuzz.unrollable(layer) is unrollable
