"""The golden model against a plain-loop reading of the numerics definition."""

import numpy as np
import pytest

from qnnfab import random_net
from qnnfab.model import golden


def loop_forward(network, x):
    """Straight from DESIGN.md: values, dot products, multi-thresholds, argmax (first wins)."""
    codes = [int(c) for c in x]
    for layer in network.layers:
        vals = [2 * c - 1 if layer.in_bits == 1 else c for c in codes]
        accs = []
        for o in range(layer.out_features):
            acc = 0
            for i in range(layer.in_features):
                w = 1 if layer.weights[o, i] else -1
                acc += w * vals[i]
            accs.append(acc)
        if layer.is_output:
            best = 0
            for o, a in enumerate(accs):
                if a > accs[best]:
                    best = o
            return best, accs
        codes = [sum(int(layer.threshold_sign[o]) * accs[o] >= int(t)
                     for t in layer.thresholds[o]) for o in range(layer.out_features)]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("features,input_bits,hidden_bits", [
    ([16, 8, 4], 1, 1), ([12, 10, 6, 3], 5, 1), ([9, 7, 5], 3, 2), ([20, 6, 5], 8, 3)])
def test_golden_matches_loops(seed, features, input_bits, hidden_bits):
    rng = np.random.default_rng(seed)
    net = random_net.random_network(rng, features=features, input_bits=input_bits,
                                    hidden_bits=hidden_bits)
    xs = random_net.random_inputs(rng, net, 12)
    trace = golden.forward(net, xs)
    for k, x in enumerate(xs):
        cls, scores = loop_forward(net, x)
        assert list(trace.scores[k]) == scores, f"seed {seed} vector {k}"
        assert int(trace.classes[k]) == cls, f"seed {seed} vector {k}"


def test_argmax_ties_pick_the_first_index():
    rng = np.random.default_rng(0)
    net = random_net.random_network(rng, features=[4, 3])
    net.layers[0].weights[:] = 1  # every class gets the same score
    trace = golden.forward(net, np.array([[1, 0, 1, 1]]))
    assert trace.classes.tolist() == [0]


def test_inputs_out_of_range_are_refused():
    rng = np.random.default_rng(0)
    net = random_net.random_network(rng, features=[4, 3], input_bits=2)
    with pytest.raises(ValueError, match=r"codes must lie in 0..3 \(2 bits\), got 0..4"):
        golden.forward(net, np.array([[0, 1, 4, 2]]))
    with pytest.raises(ValueError, match=r"expected shape \(batch, 4\), got \(1, 5\)"):
        golden.forward(net, np.zeros((1, 5), dtype=np.int64))
