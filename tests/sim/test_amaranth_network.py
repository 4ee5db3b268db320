"""Whole random networks in Amaranth's simulator, bit-exact against golden.forward; latency and
cycles per inference against the simulated cycles."""

import numpy as np
import pytest

from qnnfab import random_net
from qnnfab.spec import golden
from qnnfab.rtl.network import Network
from qnnfab.sim.amaranth_sim import run_amaranth


def _check(net, codes, run, seed):
    trace = golden.forward(net, codes)
    last = len(net.layers) - 1
    for v, k in zip(*np.nonzero(run.scores != trace.scores)):
        raise AssertionError(f"seed {seed}: vector {v} layer {last} score {k}: expected "
                             f"{trace.scores[v, k]}, got {run.scores[v, k]}")
    for v in np.flatnonzero(run.classes != trace.classes):
        raise AssertionError(f"seed {seed}: vector {v} class: expected {trace.classes[v]}, "
                             f"got {run.classes[v]}")


NETS = [
    # features, input_bits, hidden_bits, folding
    ((16, 8, 8, 4), 5, 1, None),
    ((16, 8, 8, 4), 5, 1, [(1, 1), (2, 4), (4, 8)]),
    ((12, 6, 10), 1, 2, [(3, 4), (2, 3)]),
    ((20, 10, 10, 10, 3), 3, 1, [(5, 4), (10, 1), (1, 10), (3, 2)]),
]


@pytest.mark.parametrize("features, input_bits, hidden_bits, folding", NETS)
def test_random_network_bit_exact(features, input_bits, hidden_bits, folding):
    seed = sum(features) * 7 + input_bits
    rng = np.random.default_rng(seed)
    net = random_net.random_network(rng, features=list(features), input_bits=input_bits,
                                    hidden_bits=hidden_bits)
    codes = random_net.random_inputs(rng, net, 24)
    done = []
    run = run_amaranth(net, codes, folding, progress=lambda d, t: done.append((d, t)))
    _check(net, codes, run, seed)
    assert done[-1] == (24, 24) and len(done) == 24
    dut = Network(net, folding)
    # Back to back inputs: the first result after `latency`, then one per interval.
    assert run.out_cycles[0] - run.in_cycles[0] == dut.latency
    assert set(np.diff(run.out_cycles).tolist()) == {dut.interval}
    assert run.cycles == run.out_cycles[-1] + 1


@pytest.mark.parametrize("ready_p", [0.2, 0.7])
def test_random_back_pressure_and_gaps(ready_p):
    seed = int(ready_p * 100)
    rng = np.random.default_rng(seed)
    net = random_net.random_network(rng, features=[16, 8, 8, 4], input_bits=5)
    codes = random_net.random_inputs(rng, net, 24)
    ctl = np.random.default_rng(seed + 1)
    run = run_amaranth(net, codes, [(2, 4), (2, 2), (4, 8)],
                       ready=lambda cycle: ctl.random() < ready_p,
                       gaps=lambda k: int(ctl.integers(0, 4)))
    _check(net, codes, run, seed)


def test_zero_vectors_and_bad_input():
    net = random_net.random_network(np.random.default_rng(0), features=[4, 2, 2])
    run = run_amaranth(net, np.zeros((0, 4), dtype=np.int64))
    assert run.scores.shape == (0, 2) and run.cycles == 0
    with pytest.raises(ValueError, match=r"inputs: codes must lie in 0..1"):
        run_amaranth(net, np.full((1, 4), 2))


@pytest.mark.slow
def test_default_size_network_bit_exact():
    """The default 64(5-bit)-256-256-10 shape with the automatic folding, 20 vectors."""
    seed = 2026
    rng = np.random.default_rng(seed)
    net = random_net.random_network(rng, features=[64, 256, 256, 10], input_bits=5)
    codes = random_net.random_inputs(rng, net, 20)
    run = run_amaranth(net, codes)
    _check(net, codes, run, seed)
    dut = Network(net)
    assert run.out_cycles[0] - run.in_cycles[0] == dut.latency
    assert set(np.diff(run.out_cycles).tolist()) == {dut.interval}
