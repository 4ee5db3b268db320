"""qnnfab.rtl.folding: checks, messages and the automatic folding."""

import numpy as np
import pytest

from qnnfab import random_net
from qnnfab.rtl.estimate import folding_cost
from qnnfab.rtl.folding import (FoldingError, LayerFolding, auto_folding, check_folding,
                                divisors, layer_cycles, network_cycles)


def _net(features=(64, 256, 256, 10), input_bits=5, seed=0):
    return random_net.random_network(np.random.default_rng(seed), features=list(features),
                                     input_bits=input_bits)


def test_divisors():
    assert divisors(10) == [1, 2, 5, 10]
    assert divisors(1) == [1]
    assert divisors(256) == [1, 2, 4, 8, 16, 32, 64, 128, 256]


def test_check_folding_accepts_pairs_and_layer_foldings():
    net = _net()
    f = check_folding(net, [(1, 64), LayerFolding(2, 128), (5, 2)])
    assert f == [LayerFolding(1, 64), LayerFolding(2, 128), LayerFolding(5, 2)]
    assert [layer_cycles(layer, x) for layer, x in zip(net.layers, f)] == [256, 256, 256]
    assert network_cycles(net, f) == 256


def test_non_dividing_pe_is_refused_with_the_choices():
    net = _net()
    with pytest.raises(FoldingError) as exc:
        check_folding(net, [(1, 64), (1, 256), (3, 2)])
    assert str(exc.value) == ("layers[2]: PE=3 does not divide out_features=10 "
                              "(choose one of 1, 2, 5, 10)")


def test_non_dividing_simd_is_refused_with_the_choices():
    net = _net(features=(12, 8, 10), input_bits=1)
    with pytest.raises(FoldingError) as exc:
        check_folding(net, [(1, 5), (1, 1)])
    assert str(exc.value) == ("layers[0]: SIMD=5 does not divide in_features=12 "
                              "(choose one of 1, 2, 3, 4, 6, 12)")


@pytest.mark.parametrize("folding, message", [
    ([(1, 1)], "folding: expected 3 entries (one per layer), got 1"),
    ("abc", "folding: expected a list of (pe, simd) pairs, one per layer, got 'abc'"),
    ([(1, 1), (1, 1), (0, 1)], "layers[2]: LayerFolding.pe must be >= 1, not 0"),
    ([(1, 1), 7, (1, 1)], "layers[1]: expected a LayerFolding or a (pe, simd) pair, got 7"),
])
def test_bad_folding_messages(folding, message):
    with pytest.raises(FoldingError) as exc:
        check_folding(_net(), folding)
    assert str(exc.value) == message


def test_layer_folding_rejects_non_integers():
    with pytest.raises(TypeError, match=r"LayerFolding.simd must be an integer, not 2.5"):
        LayerFolding(1, 2.5)
    with pytest.raises(TypeError, match=r"LayerFolding.pe must be an integer, not True"):
        LayerFolding(True, 2)


def test_auto_folding_default_net_is_balanced():
    net = _net()
    f = auto_folding(net)
    cycles = [layer_cycles(layer, x) for layer, x in zip(net.layers, f)]
    assert max(cycles) == 256, (f, cycles)
    assert f == [LayerFolding(1, 64), LayerFolding(1, 256), LayerFolding(1, 16)]


@pytest.mark.parametrize("target", [1, 16, 64, 1024, 100000])
def test_auto_folding_meets_any_reachable_target(target):
    net = _net(features=(16, 32, 8, 4), input_bits=2)
    f = check_folding(net, auto_folding(net, target_cycles=target))
    for layer, x in zip(net.layers, f):
        c = layer_cycles(layer, x)
        assert c <= max(target, 1)
        assert folding_cost(layer, x) == min(
            folding_cost(layer, LayerFolding(p, q))
            for p in divisors(layer.out_features) for q in divisors(layer.in_features)
            if layer_cycles(layer, LayerFolding(p, q)) <= target)


def test_auto_folding_argument_errors():
    with pytest.raises(ValueError, match="target_cycles must be >= 1, not 0"):
        auto_folding(_net(), target_cycles=0)
    with pytest.raises(TypeError, match="network must be a qnnfab.ir.Network"):
        auto_folding("net")
