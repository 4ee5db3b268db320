"""The fuzz's weight-store axis (issue 17): folded dense layers with their weights in the UP5K's
SPRAM (its simulation model, loaded) are drawn, alone and mixed with block-RAM, unrolled and
conv layers, and golden = Amaranth = Verilator on them."""

import numpy as np
from hypothesis import HealthCheck, given, settings

from qnnfab import ir, random_net
from qnnfab.sim import fuzz

_FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                       HealthCheck.data_too_large])


def test_the_weight_store_axis_is_drawn():
    counts = {"ebr": 0, "some spram": 0, "spram beside unrolled": 0, "spram in a cnn": 0}

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(fuzz.examples())
    def collect(example):
        stores = example.stores
        assert len(stores) == len(example.network.layers)
        assert (example.weights_in is None) == ("spram" not in stores)
        if "spram" not in stores:
            counts["ebr"] += 1
            return
        counts["some spram"] += 1
        assert "weights:spram" in fuzz.features_of(example)
        for layer, style, store in zip(example.network.layers, example.styles, stores):
            if store == "spram":          # only folded dense layers
                assert isinstance(layer, ir.DenseLayer) and style == "folded"
        counts["spram beside unrolled"] += "unrolled" in example.styles
        counts["spram in a cnn"] += example.network.input_shape is not None
    collect()
    assert counts["ebr"] > 150 and counts["some spram"] > 15, counts
    assert counts["spram beside unrolled"] > 0 and counts["spram in a cnn"] > 0, counts


def test_a_spram_example_says_so():
    rng = np.random.default_rng(0)
    net = random_net.random_network(rng, features=[4, 3, 2], input_bits=2)
    example = fuzz.Example(network=net, folding=None, codes=random_net.random_inputs(rng, net, 2),
                           weights_in=["spram", "ebr"])
    assert "weights_in ['spram', 'ebr']" in repr(example)
    assert "weights_in" not in repr(fuzz.Example(network=net, folding=None, codes=example.codes))


@settings(_FAST, max_examples=15)
@given(fuzz.examples().filter(lambda e: e.weights_in is not None))
def test_spram_golden_equals_amaranth(example):
    fuzz.assert_equivalent(example, ("amaranth",))


def test_spram_golden_equals_verilator_with_stalls(tmp_path):
    # one bulk build: every dense layer in SPRAM; SPRAM between a block-RAM and an unrolled
    # layer; a CNN whose dense layer is in SPRAM
    rng = np.random.default_rng(29)
    dense = random_net.random_network(rng, features=[10, 8, 6, 4], input_bits=3,
                                      hidden_bits=2, weight_kind="ternary")
    cnn = random_net.random_cnn(rng, height=4, width=4, channels=[1, 2], dense=(5,),
                                n_outputs=3)
    examples = [
        fuzz.Example(network=dense, folding=[(2, 5), (1, 8), (4, 3)],
                     codes=random_net.random_inputs(rng, dense, 12), weights_in=["spram"] * 3),
        fuzz.Example(network=dense, folding=[(1, 2), (2, 4), (1, 6)],
                     codes=random_net.random_inputs(rng, dense, 12),
                     style=["folded", "folded", "unrolled"], weights_in=["ebr", "spram", "ebr"]),
        fuzz.Example(network=cnn, folding=None, codes=random_net.random_inputs(rng, cnn, 6),
                     weights_in=["ebr"] + ["spram"] * (len(cnn.layers) - 1)),
    ]
    assert [type(ly).__name__ for ly in cnn.layers] == ["ConvLayer", "DenseLayer",
                                                       "DenseLayer"]
    tally = fuzz.Tally()
    found = fuzz.check_batch(examples, build_dir=tmp_path, tally=tally, seed=7, stalls=True)
    assert found == [] and not tally.failures
    assert tally.networks["verilator"] == 3 and tally.vectors["verilator"] == 30
    assert "weights:spram" in tally.features
