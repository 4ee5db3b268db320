"""A stream driver shared by the pixel-stream block tests (pixels, sliding window, max-pool)."""

import numpy as np
from amaranth.sim import Simulator

__all__ = ["run_stream"]


def run_stream(dut, items, n_out, *, seed, gap_p=0.0, ready_p=1.0, interval=1):
    """Offer ``items`` on ``dut.i`` (gaps with probability ``gap_p`` before each), take
    ``n_out`` payloads from ``dut.o`` (ready with probability ``ready_p``, and only from the
    ``interval``-th cycle a payload is offered). Returns (outputs, input transfer cycles,
    output transfer cycles), cycles counted from 0. A hang fails after a generous limit."""
    limit = 1000 + 20 * interval * (len(items) + n_out)
    rng_in, rng_out = np.random.default_rng(seed), np.random.default_rng(seed + 1)
    outs, t_in, t_out = [], [], []

    async def producer(ctx):
        cycle = 0
        for item in items:
            while gap_p and rng_in.random() < gap_p:
                await ctx.tick()
                cycle += 1
            ctx.set(dut.i.payload, [int(v) for v in item])
            ctx.set(dut.i.valid, 1)
            while True:
                _, _, ready = await ctx.tick().sample(dut.i.ready)
                cycle += 1
                if ready:
                    break
            t_in.append(cycle - 1)
            ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        cycle, waited = 0, 0
        while len(outs) < n_out:
            ready = waited >= interval - 1 and (ready_p >= 1 or rng_out.random() < ready_p)
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid and ready:
                outs.append([payload[j] for j in range(len(payload))])
                t_out.append(cycle)
                waited = 0
            elif valid:
                waited += 1
            cycle += 1
            assert cycle < limit, f"seed {seed}: {len(outs)} of {n_out} outputs in {cycle} cycles"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return np.array(outs), t_in, t_out
