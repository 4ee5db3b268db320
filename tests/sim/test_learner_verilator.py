"""The learning network (frozen layers + on-chip learner) in Verilator: 1000 consecutive
learning steps with random stalls on every stream, each step's answer and every weight and
momentum compared with the integer rule after every step."""


import numpy as np
import pytest

from qnnfab import random_net
from qnnfab.spec import learn_rule as lr
from qnnfab.sim import learn_sim


@pytest.fixture(scope="module")
def cache(shared_build_dir):
    """This run's build cache, shared by the xdist workers: each design compiles once."""
    return shared_build_dir("simcache")


def test_thousand_steps_bit_exact_in_verilator(cache, monkeypatch):
    # The cache named relative to the working folder, as `--build-dir` is typed (the cocotb
    # job runs elsewhere, so this once failed to find its build).
    monkeypatch.chdir(cache.parent)
    seed = 1001
    rng = np.random.default_rng(seed)
    net = random_net.random_network(rng, features=[32, 24, 10], input_bits=3, hidden_bits=2,
                                    weight_kind="ternary")
    codes = random_net.random_inputs(rng, net, 1000)
    # Random labels: large errors every step, so the saturating paths get exercised too.
    labels = rng.integers(0, 10, size=1000)
    rule = lr.DEFAULT_RULE
    start = lr.init_state(rng, 10, 24, rule)
    learn = rng.random(1000) < 0.9                      # some inference-only steps too
    run = learn_sim.run_learning(net, rule, start, codes, labels, simulator="verilator",
                                 learn=learn, build_dir=cache.name, ready_probability=0.7,
                                 valid_probability=0.7, trace_ready_probability=0.7,
                                 seed=seed)
    cmp = learn_sim.compare_learning(rule, net, start, codes, labels, run)
    assert cmp.ok, cmp.report()
    assert cmp.summary() == "1000/1000 update steps bit-exact"
    assert run.simulator == "verilator" and not run.trace_errors
    assert not np.array_equal(run.weights[-1], start.weights)
