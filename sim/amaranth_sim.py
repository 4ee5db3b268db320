"""Run :class:`qnnfab.rtl.network.Network` in Amaranth's Python simulator."""

from dataclasses import dataclass

import numpy as np
from amaranth.sim import Simulator

from qnnfab import ir
from qnnfab.model import golden

__all__ = ["AmaranthRun", "run_amaranth", "pack_vector", "unpack_output"]


@dataclass
class AmaranthRun:
    """Results of :func:`run_amaranth`: ``classes`` (n,), ``scores`` (n, n_out), ``cycles``
    (simulated clock cycles from the first input offered to the last output accepted),
    ``in_cycles`` (the cycle each input was first offered), ``out_cycles`` (the cycle of each
    output transfer)."""
    classes: np.ndarray
    scores: np.ndarray
    cycles: int
    in_cycles: list
    out_cycles: list


def pack_vector(codes, bits):
    """Pack codes LSB-first, ``bits`` bits each, into one integer."""
    value = 0
    for j, c in enumerate(codes):
        value |= int(c) << (j * bits)
    return value


def unpack_output(value, n_out, score_width):
    """``(cls, scores)`` from the raw ``o.payload`` integer."""
    cls_width = max(1, (n_out - 1).bit_length())
    cls = value & ((1 << cls_width) - 1)
    value >>= cls_width
    scores = []
    mask = (1 << score_width) - 1
    for _ in range(n_out):
        s = value & mask
        if s >> (score_width - 1):
            s -= 1 << score_width
        scores.append(s)
        value >>= score_width
    return cls, scores


def run_amaranth(network, codes, folding=None, *, progress=None, ready=None, gaps=None):
    """Simulate ``network`` on ``codes`` (n, input_features) and return an :class:`AmaranthRun`.

    Parameters
    ----------
    network : ir.Network
    codes : array of int
    folding : passed to :class:`~qnnfab.rtl.network.Network` (None: automatic)
    progress : callable(done, total), optional, called after each output
    ready : callable(cycle) -> bool, optional
        Back-pressure: ``o.ready`` in each cycle (default always ready).
    gaps : callable(k) -> int, optional
        Idle cycles before offering input ``k`` (default 0).
    """
    from qnnfab.rtl.network import Network

    if not isinstance(network, ir.Network):
        raise TypeError(f"network must be a qnnfab.ir.Network, not {network!r}")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a callable(done, total) or None, not {progress!r}")
    codes = golden.check_inputs(network, codes)
    n = len(codes)
    dut = Network(network, folding)
    n_out = network.n_outputs
    width = network.layers[-1].acc_width
    packed = [pack_vector(row, network.input_bits) for row in codes]
    classes = np.zeros(n, dtype=np.int64)
    scores = np.zeros((n, n_out), dtype=np.int64)
    in_cycles, out_cycles = [], []
    state = {"cycle": 0}

    async def clock(ctx):
        while True:
            await ctx.tick()
            state["cycle"] += 1

    async def producer(ctx):
        for k, value in enumerate(packed):
            if gaps is not None:
                for _ in range(int(gaps(k))):
                    await ctx.tick()
            ctx.set(dut.i.payload.as_value(), value)
            ctx.set(dut.i.valid, 1)
            in_cycles.append(state["cycle"])
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        got = 0
        while got < n:
            r = 1 if ready is None else int(bool(ready(state["cycle"])))
            ctx.set(dut.o.ready, r)
            _, _, valid, value = await ctx.tick().sample(dut.o.valid, dut.o.payload.as_value())
            if valid and r:
                cls, sc = unpack_output(value, n_out, width)
                classes[got] = cls
                scores[got] = sc
                out_cycles.append(state["cycle"] - 1)
                got += 1
                if progress is not None:
                    progress(got, n)
        ctx.set(dut.o.ready, 0)

    if n:
        sim = Simulator(dut)
        sim.add_clock(1e-8)
        sim.add_testbench(clock, background=True)
        sim.add_testbench(producer)
        sim.add_testbench(consumer)
        sim.run()
    cycles = (out_cycles[-1] + 1) if out_cycles else 0
    return AmaranthRun(classes=classes, scores=scores, cycles=cycles, in_cycles=in_cycles,
                       out_cycles=out_cycles)
