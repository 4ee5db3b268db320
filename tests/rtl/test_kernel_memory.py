"""KernelCodebookMemory reads the same words as the plain weight memory of the decoded
weights; a kernel-codebook conv layer's MVU against the golden model, window by window."""

import numpy as np
import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from qnnfab import random_net
from qnnfab.spec import golden
from qnnfab.rtl.kernel_memory import KernelCodebookMemory
from qnnfab.rtl.mvu import MatrixVectorUnit, weight_words

from .test_mvu import _run

CASES = [
    # weight kind, codebook, cin, cout, k, kernels, sign, (pe, simd)
    ("ternary", None, 4, 4, 3, 5, False, (2, 18)),
    ("ternary", None, 4, 6, 3, 3, True, (3, 9)),
    ("binary", None, 2, 4, 3, 4, True, (4, 18)),
    ("binary", None, 3, 2, 1, 2, False, (1, 3)),
    ("codebook", (-5, -1, 1, 5), 2, 4, 3, 6, True, (2, 9)),
    ("codebook", (-6, -2, 0, 3, 5, 1, -1, 7), 2, 2, 5, 3, False, (2, 25)),
    ("ternary", None, 2, 2, 3, 1, False, (2, 18)),  # K = 1: no index bits at all
]


def _layer(case, seed):
    kind, cb, cin, cout, k, kernels, sign, _ = case
    rng = np.random.default_rng(seed)
    return random_net.random_conv(
        rng, in_channels=cin, out_channels=cout, height=4, width=4, in_bits=2, out_bits=2,
        kernel_size=k, padding=k // 2, weight_kind=kind,
        codebook=None if cb is None else np.array(cb), kernels=kernels, sign=sign)


@pytest.mark.parametrize("case", CASES)
def test_words_equal_plain_weight_words(case):
    layer = _layer(case, 0)
    pe, simd = case[-1]
    dut = KernelCodebookMemory(layer, pe, simd)
    want = weight_words(layer.dense_view(), pe, simd)
    got = []

    async def tb(ctx):
        ctx.set(dut.en, 1)
        for a in range(dut.depth):
            ctx.set(dut.addr, a)
            await ctx.tick()
            got.append(ctx.get(dut.data))

    top = Module()  # a one-word memory is a constant: give the simulation a clock anyway
    top.submodules.dut = dut
    tick = Signal()
    top.d.sync += tick.eq(~tick)
    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    for a, (w, g) in enumerate(zip(want, got)):
        assert w == g, f"word {a}: expected {w:#x}, got {g:#x}"


@pytest.mark.parametrize("case", CASES[:5])
def test_mvu_on_windows_matches_golden(case):
    layer = _layer(case, 1)
    view = layer.dense_view()
    rng = np.random.default_rng(2)
    x = rng.integers(0, 4, size=(5, view.in_features))
    got, _, _ = _run(MatrixVectorUnit(layer, case[-1]), x, ready_p=0.7, gap_p=0.2)
    _, want = golden.layer_forward(view, x)
    for v, j in zip(*np.nonzero(got != want)):
        raise AssertionError(f"window {v} output {j}: expected {want[v, j]}, got {got[v, j]}")


def test_simd_must_cover_whole_kernels():
    layer = _layer(CASES[0], 0)
    with pytest.raises(ValueError, match="SIMD=6 must be a multiple of kernel_size²=9"):
        MatrixVectorUnit(layer, (2, 6))
