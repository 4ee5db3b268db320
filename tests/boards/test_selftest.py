"""The on-chip self-test (``build --selftest N``): stored vectors run back to back; the chip
counts the cycles (checked against the timing model's formula) and the right classes (checked
against the golden model), and answers over the UART."""

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from qnnfab import random_net
from qnnfab.boards import protocol
from qnnfab.boards.selftest import SelfTest, expected_cycles
from qnnfab.boards.top import BoardTop
from qnnfab.boards.uart import serial_read, serial_write
from qnnfab.rtl.network import Network
from qnnfab.spec import golden

CLK, BAUD = 1_000_000, 100_000
DIVISOR = CLK // BAUD


def _case(seed, features, input_bits, n, hidden_bits=1, input_shape=None):
    rng = np.random.default_rng(seed)
    net = random_net.random_network(rng, features=features, input_bits=input_bits,
                                    hidden_bits=hidden_bits)
    codes = random_net.random_inputs(rng, net, n)
    classes = golden.forward(net, codes).classes
    labels = np.where(rng.random(n) < 0.6, classes, (classes + 1) % features[-1])
    return net, codes, labels, int((classes == labels).sum())


@pytest.mark.parametrize("seed, features, input_bits, folding, n", [
    (1, [16, 8, 4], 3, None, 7),
    (2, [12, 10, 6, 5], 2, [(1, 3), (2, 5), (5, 6)], 5),
    (3, [9, 4], 1, [(4, 9)], 12),    # one vector per cycle
])
def test_selftest_counts_cycles_and_correct_classes(seed, features, input_bits, folding, n):
    net, codes, labels, right = _case(seed, features, input_bits, n)
    core = Network(net, folding)
    test = SelfTest(codes, labels, input_bits=input_bits, n_outputs=features[-1],
                    acc_width=net.layers[-1].acc_width)
    m = Module()
    m.submodules.core, m.submodules.test = core, test
    wiring.connect(m, test.x, core.i)
    wiring.connect(m, core.o, test.y)
    sim = Simulator(m)
    sim.add_clock(1e-6)
    runs = []

    async def bench(ctx):
        for _ in range(2):   # twice: a second run starts from scratch
            await ctx.tick().repeat(2)
            ctx.set(test.start, 1)
            await ctx.tick()
            ctx.set(test.start, 0)
            for _ in range(10_000):
                if not ctx.get(test.busy):
                    break
                await ctx.tick()
            runs.append((ctx.get(test.cycles), ctx.get(test.correct)))
    sim.add_testbench(bench)
    sim.run()
    want = expected_cycles(n, core.latency, core.interval)
    assert runs == [(want, right)] * 2, f"latency {core.latency}, interval {core.interval}"


def test_board_answers_the_selftest_over_the_uart():
    net, codes, labels, right = _case(4, [6, 8, 3], 2, 9)
    top = BoardTop(net, clk_freq=CLK, baud=BAUD, selftest=(codes, labels))
    answers = []

    async def read(ctx, length):
        for _ in range(200_000):
            if ctx.get(top.tx) == 0:
                break
            await ctx.tick()
        return bytes([await serial_read(ctx, top.tx, divisor=DIVISOR) for _ in range(length)])

    async def bench(ctx):
        await serial_write(ctx, top.rx, bytes([protocol.SELFTEST_SYNC]), divisor=DIVISOR)
        answers.append(await read(ctx, protocol.SELFTEST_LENGTH))
        # an ordinary inference still works afterwards
        await serial_write(ctx, top.rx, top.frame.encode_request(codes[2]), divisor=DIVISOR)
        answers.append(await read(ctx, top.frame.response_length))
    sim = Simulator(top)
    sim.add_clock(1 / CLK)
    sim.add_testbench(bench)
    sim.run()
    n, correct, cycles = protocol.decode_selftest_response(answers[0])
    assert (n, correct) == (9, right)
    assert cycles == expected_cycles(9, top.core.latency, top.core.interval)
    cls, scores = top.frame.decode_response(answers[1])
    trace = golden.forward(net, codes[2:3])
    assert cls == trace.classes[0] and scores.tolist() == trace.scores[0].tolist()


def test_selftest_protocol_and_refusals():
    data = protocol.encode_selftest_response(300, 288, 77_000)
    assert protocol.decode_selftest_response(data) == (300, 288, 77_000)
    with pytest.raises(protocol.ProtocolError, match="expected 9 bytes starting 0x53"):
        protocol.decode_selftest_response(data[:-1])
    with pytest.raises(protocol.ProtocolError, match="5 correct of 4 vectors"):
        protocol.decode_selftest_response(protocol.encode_selftest_response(4, 5, 1))
    with pytest.raises(ValueError, match="every vector needs 3 codes in 0..1"):
        SelfTest([[0, 1, 2]], [0], input_bits=1, n_outputs=2, acc_width=4)
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        SelfTest([[0, 1, 1]], [2], input_bits=1, n_outputs=2, acc_width=4)


def test_plan_stores_the_vectors_and_the_expected_figures(tmp_path):
    from qnnfab.boards.build import plan_build
    net, _, _, _ = _case(5, [64, 16, 10], 5, 1)
    plan = plan_build(net, "icebreaker", tmp_path, selftest=20)
    entry = plan.selftest
    assert entry["vectors"] == 20 and entry["labels"] == "golden classes"
    assert entry["golden_correct"] == 20   # without a data set the labels are its classes
    assert entry["expected_cycles"] == expected_cycles(20, plan.top.core.latency,
                                                       plan.top.core.interval)
    assert plan.top.selftest.n == 20
    with pytest.raises(ValueError, match=r"--selftest 5000: the stored vectors need about "
                                         r"\d+ block RAMs"):
        plan_build(net, "icebreaker", tmp_path, selftest=5000)
    with pytest.raises(ValueError, match="a learning board has no self-test"):
        plan_build(net, "icebreaker", tmp_path, selftest=2, learn=True)
