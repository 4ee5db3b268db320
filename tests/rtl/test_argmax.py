"""Argmax: first index on ties, stream back-pressure."""

import numpy as np
import pytest
from amaranth.lib import data
from amaranth.hdl import signed, unsigned
from amaranth.sim import Simulator

from qnnfab.rtl.argmax import Argmax, argmax_layout
from qnnfab.sim.stream_io import stream_get, stream_put


def test_layout():
    assert argmax_layout(10, 9) == data.StructLayout({
        "cls": unsigned(4), "scores": data.ArrayLayout(signed(9), 10)})
    assert argmax_layout(1, 3).members["cls"] == unsigned(1)


@pytest.mark.parametrize("tree", [False, True])
@pytest.mark.parametrize("n, width", [(1, 4), (2, 3), (10, 9), (7, 5)])
def test_argmax_matches_numpy_with_back_pressure(n, width, tree):
    seed = 10 * n + width
    rng = np.random.default_rng(seed)
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    vectors = rng.integers(lo, hi + 1, size=(40, n))
    vectors[:10] = rng.integers(-1, 2, size=(10, n))     # many ties
    vectors[10] = lo
    vectors[11] = hi
    dut = Argmax(n=n, width=width, tree=tree)
    results = []

    async def producer(ctx):
        for k, v in enumerate(vectors):
            if rng.random() < 0.3:
                await ctx.tick()
            await stream_put(ctx, dut.i, [int(x) for x in v])

    async def consumer(ctx):
        for _ in vectors:
            for _ in range(int(rng.integers(0, 3))):
                await ctx.tick()
            results.append(await stream_get(ctx, dut.o))

    levels = max(1, (n - 1).bit_length())
    if tree:
        assert dut.latency == levels and dut.interval == levels + 1
    else:
        assert dut.latency == 2 * n + 1 and dut.interval == 2 * n + 2
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    for k, (v, r) in enumerate(zip(vectors, results)):
        assert r.cls == int(np.argmax(v)), f"seed {seed} vector {k} {v.tolist()}: " \
                                           f"expected {int(np.argmax(v))}, got {r.cls}"
        assert [r.scores[j] for j in range(n)] == v.tolist()
