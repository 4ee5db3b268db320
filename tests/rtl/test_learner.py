"""OnlineLearner and LearningNetwork: bit-exact with the learning rule after every step (short
runs, every input width, both roundings, saturating widths, random stalls), interfaces,
timing, parameter checks. The 1000-step runs are in tests/sim/test_learn_sim.py and
tests/sim/test_learner_verilator.py."""

import re

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import signed, unsigned
from amaranth.lib import data
from amaranth.sim import Simulator

from qnnfab import ir, random_net
from qnnfab.spec import golden
from qnnfab.spec import learn_rule as lr
from qnnfab.rtl.argmax import argmax_layout
from qnnfab.rtl.learner import (LearningNetwork, OnlineLearner, learner_input_layout,
                                trace_layout)
from qnnfab.sim import learn_sim


def _check(rule, dims_or_net, st, codes, labels, run, seed):
    cmp = learn_sim.compare_learning(rule, dims_or_net, st, codes, labels, run)
    assert cmp.ok, f"seed {seed}: {cmp.report()}"
    assert cmp.summary() == f"{len(codes)}/{len(codes)} update steps bit-exact"


CASES = [  # n_in, n_out, in_bits, lanes, rule
    (12, 5, 2, None, lr.LearnRule()),
    (12, 6, 2, 2, lr.LearnRule()),
    (9, 3, 1, 1, lr.LearnRule(lr_shift=3, margin_exp=6)),
    (8, 4, 3, None, lr.LearnRule(rounding="nearest", momentum_decay=2)),
    # Narrow widths and a big step: weights and momenta saturate all the time.
    (10, 4, 2, 2, lr.LearnRule(weight_bits=6, momentum_bits=5, lr_shift=0, margin_exp=3,
                               momentum_decay=0)),
    (6, 2, 4, None, lr.LearnRule(weight_bits=10, momentum_bits=12, lr_shift=2, margin_exp=5,
                                 rounding="nearest")),
    # 40 inputs: three 16-code chunks, the last one padded.
    (40, 3, 2, 1, lr.LearnRule(lr_shift=5, margin_exp=9)),
]


@pytest.mark.parametrize("n_in, n_out, in_bits, lanes, rule", CASES,
                         ids=["2b", "2b-lanes2", "1b-lanes1", "3b-nearest", "saturating-lanes2",
                              "4b-wide-m", "40in-lanes1"])
def test_learner_bit_exact_with_stalls(n_in, n_out, in_bits, lanes, rule):
    seed = n_in * 10 + in_bits
    rng = np.random.default_rng(seed)
    n = 40 if n_in < 16 else 15
    st = lr.init_state(rng, n_out, n_in, rule, init_bits=min(4, rule.weight_bits - 2))
    st.momentum[:] = rng.integers(*rule.momentum_range, size=st.momentum.shape)
    codes = rng.integers(0, 1 << in_bits, size=(n, n_in))
    codes[0], codes[1] = 0, (1 << in_bits) - 1
    labels = rng.integers(0, n_out, size=n)
    flags = rng.random(n) < 0.8
    run = learn_sim.run_learning((n_in, n_out, in_bits), rule, st, codes, labels, learn=flags,
                                 lanes=lanes, ready_probability=0.5, valid_probability=0.6,
                                 trace_ready_probability=0.6, seed=seed)
    assert run.learn.tolist() == flags.tolist() and not run.trace_errors
    _check(rule, (n_in, n_out, in_bits), st, codes, labels, run, seed)
    if rule.weight_bits == 6:
        lo, hi = rule.weight_range
        assert np.any(run.weights == lo) and np.any(run.weights == hi)   # saturation happened


def test_a_broken_run_is_reported_step_and_weight():
    rule = lr.LearnRule(lr_shift=3, margin_exp=5)
    rng = np.random.default_rng(2)
    st = lr.init_state(rng, 3, 5, rule, init_bits=4)
    codes = rng.integers(0, 4, size=(6, 5))
    labels = rng.integers(0, 3, size=6)
    run = learn_sim.run_learning((5, 3, 2), rule, st, codes, labels)
    run.weights[4:, 1, 2] += 1           # as if the hardware had written one wrong weight
    cmp = learn_sim.compare_learning(rule, (5, 3, 2), st, codes, labels, run)
    assert not cmp.ok and cmp.summary() == "4/6 update steps bit-exact"
    exp = int(run.weights[4, 1, 2]) - 1
    assert str(cmp.first_mismatch) == f"step 4, weight (1, 2): expected {exp}, got {exp + 1}"


def test_interfaces():
    rule = lr.LearnRule(weight_bits=12, momentum_bits=10)
    st = lr.init_state(np.random.default_rng(0), 10, 20, rule)
    dut = OnlineLearner(20, 10, 2, rule, st.weights)
    bound = 20 * (1 << 11) * 3
    assert dut.acc_width == (2 * bound).bit_length()
    members = dut.signature.members
    assert members["i"].signature.members["payload"].shape == learner_input_layout(20, 2, 10)
    assert learner_input_layout(20, 2, 10) == data.StructLayout({
        "x": data.ArrayLayout(unsigned(2), 20), "label": unsigned(4), "learn": unsigned(1)})
    assert members["o"].signature.members["payload"].shape == argmax_layout(10, dut.acc_width)
    assert members["trace"].signature.members["payload"].shape == trace_layout(20, 10, rule)
    assert trace_layout(20, 10, rule) == data.StructLayout({
        "index": unsigned(5), "group": unsigned(1), "w": data.ArrayLayout(signed(12), 10),
        "m": data.ArrayLayout(signed(11), 10)})
    assert trace_layout(20, 10, rule, 2) == data.StructLayout({
        "index": unsigned(5), "group": unsigned(3), "w": data.ArrayLayout(signed(12), 2),
        "m": data.ArrayLayout(signed(11), 2)})
    assert dut.memory_bits == 20 * 10 * (12 + 6)   # weight + momentum code (4-bit exponent)


@pytest.mark.parametrize("in_bits, lanes", [(1, None), (3, 2)])
def test_no_multiplier_in_the_netlist(in_bits, lanes):
    rule = lr.LearnRule(rounding="nearest")
    st = lr.init_state(np.random.default_rng(0), 4, 20, rule)
    text = rtlil.convert(OnlineLearner(20, 4, in_bits, rule, st.weights, lanes=lanes),
                         name="top")
    cells = set(re.findall(r"^\s*cell (\$\w+)", text, re.M))
    assert "$add" in cells and "$memwr_v2" in cells
    assert not cells & {"$mul", "$div", "$mod", "$divfloor", "$modfloor", "$pow"}, cells


def test_bad_parameters():
    rule = lr.LearnRule(weight_bits=8)
    w = np.zeros((3, 4), dtype=np.int64)
    with pytest.raises(ValueError, match=r"init_weights: expected shape \(3, 4\) \(n_out, "
                                         r"n_in\), got \(4, 3\)"):
        OnlineLearner(4, 3, 2, rule, w.T)
    with pytest.raises(ValueError, match=r"weights\[0, 1\] = 200 does not fit 8 bits"):
        OnlineLearner(4, 3, 2, rule, np.array([[0, 200, 0, 0]] * 3))
    with pytest.raises(ValueError, match=r"init_momentum: expected shape \(3, 4\), got \(3,\)"):
        OnlineLearner(4, 3, 2, rule, w, np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match=r"in_bits must be in 1..8, not 9"):
        OnlineLearner(4, 3, 9, rule, w)
    with pytest.raises(ValueError, match=r"n_in and n_out must be >= 1, not n_in=0 n_out=3"):
        OnlineLearner(0, 3, 2, rule, w)
    with pytest.raises(TypeError, match=r"rule must be a LearnRule, not None"):
        OnlineLearner(4, 3, 2, None, w)
    with pytest.raises(ValueError, match=r"lanes must divide n_out = 3, not 2"):
        OnlineLearner(4, 3, 2, rule, w, lanes=2)
    with pytest.raises(TypeError, match=r"network must be a qnnfab.ir.Network, not 3"):
        LearningNetwork(3, rule, w)


@pytest.mark.parametrize("learn, lanes", [(True, None), (False, None), (True, 1), (True, 2)])
def test_timing(learn, lanes):
    """Latency and cycles per sample with an eager source and sinks, as documented."""
    n_in, n_out = 7, 4
    rule = lr.LearnRule()
    st = lr.init_state(np.random.default_rng(1), n_out, n_in, rule)
    dut = OnlineLearner(n_in, n_out, 2, rule, st.weights, lanes=lanes)
    groups = n_out // (lanes or n_out)
    layout = learner_input_layout(n_in, 2, n_out)
    word = layout.const({"x": [1] * n_in, "label": 1, "learn": int(learn)}).as_bits()
    i_cycles, o_cycles = [], []

    async def tb(ctx):
        ctx.set(dut.i.payload.as_value(), word)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.trace.ready, 1)
        for cycle in range(4 * dut.interval):
            _, _, i_ready, o_valid = await ctx.tick().sample(dut.i.ready, dut.o.valid)
            if i_ready:
                i_cycles.append(cycle)
            if o_valid:
                o_cycles.append(cycle)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    per = dut.interval if learn else dut.inference_interval
    assert per == (2 * n_in * groups + n_out + 16 if learn else n_in * groups + n_out + 10)
    assert o_cycles[0] == dut.latency == n_in * groups + n_out + 9
    assert np.all(np.diff(i_cycles) == per), i_cycles
    assert np.all(np.diff(o_cycles) == per), o_cycles
    assert i_cycles[0] == per - 1          # acknowledged in the sample's last cycle


def _small_network(rng):
    return random_net.random_network(rng, features=[16, 24, 12, 6], input_bits=3,
                                     hidden_bits=[2, 2], weight_kind=["ternary", "binary",
                                                                      "ternary"])


def test_learning_network_bit_exact_with_stalls():
    """Frozen MVUs (ternary on 3-bit inputs, binary on 2-bit) feeding the learner; the label
    FIFO keeps labels with their vectors under back-pressure."""
    seed = 4
    rng = np.random.default_rng(seed)
    net = _small_network(rng)
    rule = lr.LearnRule(weight_bits=12, momentum_bits=12, lr_shift=4, margin_exp=7)
    st = lr.init_state(rng, 6, 12, rule, init_bits=4)
    n = 40
    codes = random_net.random_inputs(rng, net, n)
    labels = golden.forward(net, codes).classes     # a target the learner can reach
    run = learn_sim.run_learning(net, rule, st, codes, labels, folding=[(4, 4), (2, 12), (1, 1)],
                                 lanes=3, learn=rng.random(n) < 0.8, ready_probability=0.5,
                                 valid_probability=0.5, trace_ready_probability=0.7, seed=seed)
    _check(rule, net, st, codes, labels, run, seed)
    feats = learn_sim.learner_features(net, codes)
    assert feats.shape == (n, 12) and feats.max() <= 3


def test_learning_network_of_one_layer_is_the_learner():
    seed = 6
    rng = np.random.default_rng(seed)
    layer = random_net.random_dense(rng, in_features=8, out_features=4, in_bits=2, output=True)
    net = ir.Network(input_features=8, input_bits=2, layers=[layer]).validate()
    rule = lr.LearnRule(lr_shift=3, margin_exp=6)
    st = lr.init_state(rng, 4, 8, rule, init_bits=4)
    codes = random_net.random_inputs(rng, net, 20)
    labels = rng.integers(0, 4, size=20)
    run = learn_sim.run_learning(net, rule, st, codes, labels, ready_probability=0.7, seed=seed)
    _check(rule, net, st, codes, labels, run, seed)


def test_learning_network_interfaces_and_timing():
    rng = np.random.default_rng(7)
    net = _small_network(rng)
    rule = lr.LearnRule()
    st = lr.init_state(rng, 6, 12, rule)
    dut = LearningNetwork(net, rule, st.weights)
    assert dut.signature.members["i"].signature.members["payload"].shape == \
        learner_input_layout(16, 3, 6)
    assert dut.signature.members["o"] == dut.learner.signature.members["o"]
    assert dut.learner.n_in == 12 and dut.learner.in_bits == 2
    assert dut.fifo_depth == 2 * 2 + 2
    assert dut.interval >= dut.learner.interval
    cnn = random_net.random_cnn(rng, height=4, width=4, channels=[1, 2], input_bits=2,
                                pool=(), dense=(), n_outputs=3)
    with pytest.raises(ValueError, match=r"init_weights: expected shape \(3, 32\)"):
        LearningNetwork(cnn, rule, st.weights)
