"""Shared drivers for the RTL tests."""

import pytest
from amaranth.sim import Simulator


def pack(values, bits=1):
    """Values as one integer, element k at bits [k*bits, (k+1)*bits)."""
    return sum(int(v) << (k * bits) for k, v in enumerate(values))


def drive_dot_unit(dut, x_words, w_words):
    """Feed one (x, w) word per cycle to a dot unit (``x``, ``w`` in; ``o[p]`` out) and return
    ``o`` per word, lined up by ``dut.latency`` (0: combinational)."""
    n = len(x_words)
    got = []

    async def tb(ctx):
        for k in range(n + dut.latency):
            if k < n:
                ctx.set(dut.x.as_value() if hasattr(dut.x, "as_value") else dut.x, x_words[k])
                ctx.set(dut.w, w_words[k])
            if k >= dut.latency:
                got.append([ctx.get(dut.o[p]) for p in range(len(dut.o))])
            if dut.latency:
                await ctx.tick()
            else:
                await ctx.delay(1e-8)

    sim = Simulator(dut)
    if dut.latency:
        sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return got


@pytest.fixture
def dot_unit():
    return drive_dot_unit
