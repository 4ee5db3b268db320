"""MultiThreshold against golden.threshold: random thresholds, both signs, several PE."""

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from amaranth.sim import Simulator

from qnnfab import numerics, random_net
from qnnfab.spec import golden
from qnnfab.rtl.threshold import MultiThreshold, threshold_entries


@pytest.mark.parametrize("out_features, pe, out_bits", [(4, 4, 1), (8, 2, 1), (6, 3, 2),
                                                        (5, 1, 3)])
def test_threshold_matches_golden(out_features, pe, out_bits):
    seed = 100 * out_features + 10 * pe + out_bits
    rng = np.random.default_rng(seed)
    fan_in, in_bits = 20, 1
    layer = random_net.random_dense(rng, in_features=fan_in, out_features=out_features,
                                    in_bits=in_bits, out_bits=out_bits)
    bound = numerics.acc_bound(fan_in, in_bits, "binary")
    aw = layer.acc_width
    n = 12
    accs = rng.integers(-bound, bound + 1, size=(n, out_features))
    # Hit every threshold exactly and one below it, too.
    t = layer.thresholds
    accs[0] = np.clip(t[:, 0], -bound, bound)
    accs[1] = np.clip(t[:, -1] - 1, -bound, bound)
    accs[2] = np.clip(-t[:, 0], -bound, bound)
    accs[3] = np.clip(1 - t[:, 0], -bound, bound)
    expected = golden.threshold(layer, accs)
    dut = MultiThreshold(thresholds=layer.thresholds, signs=layer.threshold_sign, pe=pe,
                         in_shape=signed(aw))
    assert dut.out_bits == layer.out_bits
    groups = out_features // pe

    async def tb(ctx):
        for k in range(n):
            for g in range(groups):
                ctx.set(dut.addr, g)
                if groups > 1:          # the ROM read takes a cycle
                    await ctx.tick()
                for p in range(pe):
                    ctx.set(dut.acc[p], int(accs[k, g * pe + p]))
                for p in range(pe):
                    got = ctx.get(dut.o[p])
                    j = g * pe + p
                    assert got == expected[k, j], (
                        f"seed {seed} vector {k} output {j}: acc {accs[k, j]} sign "
                        f"{layer.threshold_sign[j]} thresholds {layer.thresholds[j].tolist()}: "
                        f"expected {expected[k, j]}, got {got}")

    sim = Simulator(dut)
    if groups > 1:
        sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"signs: expected shape \(4,\), got \(3,\)"):
        MultiThreshold(thresholds=np.zeros((4, 1), dtype=int), signs=np.ones(3, dtype=int),
                       pe=1, in_shape=signed(4))
    with pytest.raises(ValueError, match="pe=3 does not divide out_features=4"):
        MultiThreshold(thresholds=np.zeros((4, 1), dtype=int), signs=np.ones(4, dtype=int),
                       pe=3, in_shape=signed(4))


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_folded_thresholds_match_the_affine_accumulator(scale):
    """threshold_entries: [sign·(scale·S + c) >= T] == the folded comparison, exhaustively."""
    rng = np.random.default_rng(scale)
    n, n_thr = 40, 3
    t = np.sort(rng.integers(-60, 61, size=(n, n_thr)), axis=1)
    signs = rng.choice([-1, 1], size=n)
    c = rng.integers(-50, 51, size=n)
    tp, neg = threshold_entries(t, signs, scale=scale, offsets=c, lo=0, hi=40)
    for s_val in range(0, 41):
        acc = scale * s_val + c
        want = (signs[:, None] * acc[:, None] >= t).sum(axis=1)
        cnt = (s_val >= tp).sum(axis=1)
        got = np.where(neg, n_thr - cnt, cnt)
        assert (got == want).all(), (s_val, np.flatnonzero(got != want))


def test_threshold_on_unsigned_sums_with_offsets():
    """A popcount-style unsigned sum with scale 2 and offset -fan_in, in hardware."""
    rng = np.random.default_rng(9)
    fan_in, n_out, pe = 9, 4, 2
    t = np.sort(rng.integers(-10, 11, size=(n_out, 3)), axis=1)
    signs = rng.choice([-1, 1], size=n_out)
    dut = MultiThreshold(thresholds=t, signs=signs, pe=pe, in_shape=unsigned(4), scale=2,
                         offsets=np.full(n_out, -fan_in))

    async def tb(ctx):
        for s_val in range(fan_in + 1):
            for g in range(n_out // pe):
                ctx.set(dut.addr, g)
                await ctx.tick()
                for p in range(pe):
                    ctx.set(dut.acc[p], s_val)
                for p in range(pe):
                    j = g * pe + p
                    want = int((signs[j] * (2 * s_val - fan_in) >= t[j]).sum())
                    assert ctx.get(dut.o[p]) == want, (s_val, j)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
