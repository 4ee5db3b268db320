"""The board top's learning mode over UART: labelled samples (0x4C frames) update the last
layer on chip; every answer (class and scores before the update) matches the integer
learning rule replayed on the host; inference frames leave the weights alone; a bad label is
dropped."""

import numpy as np
from amaranth.sim import Simulator

from qnnfab import random_net
from qnnfab.boards import protocol
from qnnfab.boards.top import BoardTop
from qnnfab.spec import learn_rule as lr
from qnnfab.rtl.learner import LearningNetwork
from qnnfab.sim.learn_sim import learner_features

from .test_top import BAUD, CLK, DIVISOR, Session


def test_uart_learning_matches_the_rule():
    rng = np.random.default_rng(11)
    net = random_net.random_network(rng, features=[6, 8, 3], input_bits=2, hidden_bits=2)
    rule = lr.LearnRule(weight_bits=10, momentum_bits=10, lr_shift=2, margin_exp=4)
    state = lr.init_state(rng, 3, 8, rule, init_bits=3)
    core = LearningNetwork(net, rule, state.weights, state.momentum)
    top = BoardTop(net, clk_freq=CLK, baud=BAUD, core=core)
    assert top.learning and top.frame.acc_width > net.layers[-1].acc_width
    s = Session(top)
    codes = random_net.random_inputs(rng, net, 6)
    labels = rng.integers(0, 3, size=6)
    learn = [True, True, False, True, True, False]
    wait = 60 * 10 * DIVISOR + 4 * core.interval
    responses = []

    async def bench(ctx):
        for x, y, f in zip(codes, labels, learn):
            frame = s.fmt.encode_learn_request(x, y) if f else s.fmt.encode_request(x)
            await s.send(ctx, frame)
            responses.append(await s.read_response(ctx, max_cycles=wait))
        # A label out of range drops the frame: no answer, the error LED lights.
        bad = bytearray(s.fmt.encode_learn_request(codes[0], 0))
        bad[1] = 3
        await s.send(ctx, bytes(bad))
        assert await s.read_response(ctx, max_cycles=wait) is None
        assert ctx.get(top.leds) & 0b10

    sim = Simulator(top)
    sim.add_clock(1 / CLK)
    sim.add_testbench(bench)
    sim.run()

    feats = learner_features(net, codes)
    for k, (x, y, f, response) in enumerate(zip(feats, labels, learn, responses)):
        assert response is not None, f"sample {k}: no answer"
        want = lr.step(rule, state, x, int(y), net.layers[-1].in_bits, learn=f)
        cls, scores = s.fmt.decode_response(response)
        assert scores.tolist() == want.scores.tolist(), (k, scores, want.scores)
        assert cls == want.cls, k
        state = want.state
    assert protocol.LEARN_SYNC == 0x4C
