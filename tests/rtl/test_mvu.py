"""MatrixVectorUnit against golden.layer_forward over random layers, foldings, back-pressure;
its latency and cycles_per_vector against the simulated cycles."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from qnnfab import random_net
from qnnfab.model import golden
from qnnfab.rtl.folding import FoldingError
from qnnfab.rtl.mvu import MatrixVectorUnit, weight_words
from qnnfab.sim.stream_io import stream_get, stream_put


def _run(dut, vectors, *, seed=0, ready_p=1.0, gap_p=0.0):
    """Feed ``vectors``, collect outputs; returns (outputs, offer cycles, output cycles)."""
    rng = np.random.default_rng(seed)
    outs, t_in, t_out = [], [], []
    clock = {"t": 0}

    async def count(ctx):
        while True:
            await ctx.tick()
            clock["t"] += 1

    async def producer(ctx):
        for v in vectors:
            while rng.random() < gap_p:
                await ctx.tick()
            t_in.append(clock["t"])            # the cycle the vector is first offered
            await stream_put(ctx, dut.i, [int(x) for x in v])

    async def consumer(ctx):
        for _ in vectors:
            while rng.random() > ready_p:
                await ctx.tick()
            payload = await stream_get(ctx, dut.o)
            t_out.append(clock["t"] - 1)
            outs.append([payload[j] for j in range(len(payload))])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(count, background=True)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return np.array(outs), t_in, t_out


def _check(layer, x, got, seed):
    acc, out = golden.layer_forward(layer, x)
    expected = acc if out is None else out
    assert got.shape == expected.shape
    for v, j in zip(*np.nonzero(got != expected)):
        raise AssertionError(f"seed {seed}: vector {v} output {j}: expected {expected[v, j]}, "
                             f"got {got[v, j]}")


CASES = [
    # in, out, in_bits, out_bits, output layer, (pe, simd)
    (8, 4, 1, 1, False, (1, 1)),
    (8, 4, 1, 1, False, (4, 8)),
    (16, 6, 1, 2, False, (3, 4)),
    (12, 4, 5, 1, False, (2, 3)),
    (12, 4, 5, 1, False, (4, 12)),
    (16, 5, 1, 1, True, (5, 2)),
    (10, 3, 4, 1, True, (1, 5)),
]


@pytest.mark.parametrize("n_in, n_out, in_bits, out_bits, output, fold", CASES)
def test_mvu_matches_golden(n_in, n_out, in_bits, out_bits, output, fold):
    seed = hash((n_in, n_out, in_bits, out_bits, output, fold)) % 10000
    rng = np.random.default_rng(seed)
    layer = random_net.random_dense(rng, in_features=n_in, out_features=n_out, in_bits=in_bits,
                                    out_bits=out_bits, output=output)
    x = rng.integers(0, 1 << in_bits, size=(12, n_in))
    dut = MatrixVectorUnit(layer, fold)
    got, t_in, t_out = _run(dut, x, seed=seed)
    _check(layer, x, got, seed)
    # Timing without back-pressure: first output after `latency`, then one per vector.
    assert t_out[0] - t_in[0] == dut.latency
    assert dut.cycles_per_vector == (n_in // fold[1]) * (n_out // fold[0])
    assert dut.interval == dut.cycles_per_vector + (fold[1] == n_in)
    assert np.diff(t_in).tolist() == [dut.interval] * (len(x) - 1)
    assert np.diff(t_out).tolist() == [dut.interval] * (len(x) - 1)


@pytest.mark.parametrize("fold", [(1, 1), (2, 4), (4, 16)])
def test_mvu_random_back_pressure(fold):
    seed = 31 + fold[0]
    rng = np.random.default_rng(seed)
    layer = random_net.random_dense(rng, in_features=16, out_features=4, in_bits=1, out_bits=2)
    x = rng.integers(0, 2, size=(16, 16))
    dut = MatrixVectorUnit(layer, fold)
    got, _, _ = _run(dut, x, seed=seed, ready_p=0.4, gap_p=0.3)
    _check(layer, x, got, seed)


def test_weight_words_layout():
    rng = np.random.default_rng(0)
    layer = random_net.random_dense(rng, in_features=6, out_features=4, in_bits=1)
    words = weight_words(layer, 2, 3)
    assert len(words) == 4
    for nf in range(2):
        for sf in range(2):
            for p in range(2):
                for s in range(3):
                    bit = (words[nf * 2 + sf] >> (p * 3 + s)) & 1
                    assert bit == layer.weights[nf * 2 + p, sf * 3 + s]


def test_mvu_refuses_non_dividing_folding():
    layer = random_net.random_dense(np.random.default_rng(0), in_features=6, out_features=4,
                                    in_bits=1)
    with pytest.raises(FoldingError, match=r"PE=3 does not divide out_features=4 "
                                           r"\(choose one of 1, 2, 4\)"):
        MatrixVectorUnit(layer, (3, 1))
