"""learn_sim on Amaranth's simulator: 1000 consecutive learning steps of the learner alone,
bit-exact after every step; and the argument checks of run_learning / compare_learning."""

import time

import numpy as np
import pytest

from qnnfab import random_net
from qnnfab.spec import golden
from qnnfab.spec import learn_rule as lr
from qnnfab.sim import learn_sim


def _features_and_labels(seed, n, features=(64, 32, 10)):
    """Features of a random network's last hidden layer (2-bit codes) and the network's own
    classes as labels: a target a learner of its last layer's shape can reach."""
    rng = np.random.default_rng(seed)
    net = random_net.random_network(rng, features=list(features), input_bits=5, hidden_bits=2,
                                    weight_kind="ternary")
    codes = random_net.random_inputs(rng, net, n)
    return net, learn_sim.learner_features(net, codes), golden.forward(net, codes).classes


def test_thousand_steps_bit_exact_in_amaranth():
    """The learner alone, 32 features of 2 bits, 10 classes, default rule: 1000 consecutive
    learning steps, class, scores, every weight and momentum compared after every step."""
    seed = 1000
    net, feats, labels = _features_and_labels(seed, 1000)
    rule = lr.DEFAULT_RULE
    st = lr.init_state(np.random.default_rng(seed), 10, 32, rule)
    dims = (32, 10, 2)
    start = time.perf_counter()
    run = learn_sim.run_learning(dims, rule, st, feats, labels)
    wall = time.perf_counter() - start
    cmp = learn_sim.compare_learning(rule, dims, st, feats, labels, run)
    assert cmp.ok, f"seed {seed}: {cmp.report()}"
    assert cmp.summary() == "1000/1000 update steps bit-exact"
    per = 2 * 32 + 10 + 16
    assert run.cycles == 1000 * per - 1, run.cycles     # back to back, no stall
    first, last = np.mean(run.classes[:100] == labels[:100]), np.mean(run.classes[-100:] ==
                                                                      labels[-100:])
    assert last > first + 0.2, (first, last)            # it learnt (predictions before update)
    print(f"amaranth: {run.cycles} cycles in {run.seconds:.1f} s "
          f"({run.cycles_per_second:.0f} cycles/s, {run.steps_per_second:.0f} steps/s; "
          f"{wall:.1f} s with elaboration)")


def test_run_learning_rejects_bad_arguments():
    rule = lr.LearnRule()
    st = lr.init_state(np.random.default_rng(0), 3, 4, rule)
    codes = np.zeros((2, 4), dtype=np.int64)
    with pytest.raises(ValueError, match=r"simulator must be one of 'amaranth', 'verilator', "
                                         r"not 'icarus'"):
        learn_sim.run_learning((4, 3, 2), rule, st, codes, [0, 1], simulator="icarus")
    with pytest.raises(ValueError, match=r"trace_ready_probability must be in \(0, 1\], "
                                         r"not 0"):
        learn_sim.run_learning((4, 3, 2), rule, st, codes, [0, 1], trace_ready_probability=0)
    with pytest.raises(ValueError, match=r"labels: must lie in 0..2"):
        learn_sim.run_learning((4, 3, 2), rule, st, codes, [0, 3])
    with pytest.raises(ValueError, match=r"codes: expected shape \(n, 4\), got \(2, 5\)"):
        learn_sim.run_learning((4, 3, 2), rule, st, np.zeros((2, 5), int), [0, 1])
    with pytest.raises(ValueError, match=r"codes: must lie in 0..3 \(2 bits\)"):
        learn_sim.run_learning((4, 3, 2), rule, st, codes + 4, [0, 1])
    with pytest.raises(ValueError, match=r"init_state: expected shape \(3, 5\), got \(3, 4\)"):
        learn_sim.run_learning((5, 3, 2), rule, st, np.zeros((2, 5), int), [0, 1])
    with pytest.raises(TypeError, match=r"network_or_dims must be an ir.Network or \(n_in, "
                                        r"n_out, in_bits\)"):
        learn_sim.run_learning("net", rule, st, codes, [0, 1])


def test_inference_only_steps_keep_the_weights():
    seed = 3
    net, feats, labels = _features_and_labels(seed, 12, features=(16, 8, 4))
    rule = lr.LearnRule(lr_shift=4, margin_exp=8)
    st = lr.init_state(np.random.default_rng(seed), 4, 8, rule)
    flags = np.array([1, 0, 0, 1, 0, 1, 1, 0, 0, 0, 1, 0], dtype=bool)
    run = learn_sim.run_learning((8, 4, 2), rule, st, feats, labels, learn=flags,
                                 ready_probability=0.5, seed=seed)
    cmp = learn_sim.compare_learning(rule, (8, 4, 2), st, feats, labels, run)
    assert cmp.ok, cmp.report()
    for k in np.flatnonzero(~flags):
        before = run.weights[k - 1] if k else st.weights
        assert np.array_equal(run.weights[k], before)
