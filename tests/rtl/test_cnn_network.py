"""Whole CNNs in hardware (pixel serializer, conv units with line buffers, max-pool, flatten,
dense units, argmax) against the golden model, output by output; their measured interval
against the Network's bound."""

import numpy as np
import pytest

from qnnfab import random_net
from qnnfab.spec import golden
from qnnfab.rtl.folding import FoldingError
from qnnfab.rtl.network import Network
from qnnfab.sim.amaranth_sim import run_amaranth

CASES = {
    "pad1-pool-kc-sign": dict(height=6, width=6, channels=[1, 4, 8], input_bits=3, pool=(0,),
                              kernels=5, sign=True, dense=(8,)),
    "1bit-binary": dict(height=5, width=4, channels=[2, 3, 4], input_bits=1, hidden_bits=1,
                        weight_kind="binary"),
    "k5-valid": dict(height=6, width=7, channels=[1, 3], input_bits=2, kernel_size=5,
                     padding=0),
    "k1-pool": dict(height=4, width=4, channels=[3, 4], input_bits=2, kernel_size=1,
                    padding=0, pool=(0,)),
    "codebook-kc": dict(height=4, width=4, channels=[2, 4], input_bits=2,
                        weight_kind="codebook", codebook=np.array([-5, -1, 1, 5]), kernels=3,
                        sign=True, pool=(0,)),
}


def _check(net, codes, run, name):
    trace = golden.forward(net, codes)
    for v, k in zip(*np.nonzero(run.scores != trace.scores)):
        raise AssertionError(f"{name}: vector {v} score {k}: expected {trace.scores[v, k]}, "
                             f"got {run.scores[v, k]}")
    assert np.array_equal(run.classes, trace.classes), name


@pytest.mark.parametrize("name", list(CASES))
def test_cnn_bit_exact_in_amaranth(name):
    rng = np.random.default_rng(len(name))
    net = random_net.random_cnn(rng, **CASES[name])
    codes = random_net.random_inputs(rng, net, 4)
    run = run_amaranth(net, codes)
    _check(net, codes, run, name)
    hw = Network(net)
    gaps = np.diff(run.out_cycles)
    # Eager source and sink: no stage beats its own eager cycles per image (the Network's
    # estimate is their max), and the stages overlap (less than running them one by one).
    assert gaps.min() >= hw.interval, (name, gaps, hw.stage_intervals)
    assert gaps.max() < sum(hw.stage_intervals), (name, gaps, hw.stage_intervals)


def test_cnn_with_backpressure_and_gaps():
    rng = np.random.default_rng(7)
    net = random_net.random_cnn(rng, **CASES["pad1-pool-kc-sign"])
    codes = random_net.random_inputs(rng, net, 4)
    stall = np.random.default_rng(1)
    run = run_amaranth(net, codes, ready=lambda c: stall.random() < 0.4,
                       gaps=lambda k: int(stall.integers(0, 30)))
    _check(net, codes, run, "back-pressure")


def test_other_foldings_are_bit_exact_too():
    rng = np.random.default_rng(3)
    net = random_net.random_cnn(rng, **CASES["pad1-pool-kc-sign"])
    codes = random_net.random_inputs(rng, net, 3)
    # conv0: 1x9 per window, conv2: 8 channels of 36 inputs one kernel at a time
    folding = [(1, 9), None, (2, 9), (2, 8), (1, 1)]
    run = run_amaranth(net, codes, folding)
    _check(net, codes, run, "folding")
    assert Network(net, folding).layer_cycles == [36 * 4, 36, 9 * 4 * 4, 72 // 8 * 4, 8 * 4]


def test_kernel_codebook_folding_must_read_whole_kernels():
    net = random_net.random_cnn(np.random.default_rng(0), **CASES["pad1-pool-kc-sign"])
    with pytest.raises(FoldingError, match=r"layers\[2\]: SIMD=4 must read whole 3x3 kernels "
                                           r"of the kernel codebook \(choose one of 9, 18, 36\)"):
        Network(net, [(4, 9), None, (2, 4), (1, 72), (1, 4)])
    with pytest.raises(FoldingError, match=r"layers\[1\]: a maxpool layer has no folding"):
        Network(net, [(4, 9), (2, 2), (2, 9), (1, 72), (1, 4)])


@pytest.mark.parametrize("folding", [[(1, 9), (1, 1), (1, 72), (1, 1), (1, 2)],
                                     [(4, 9), (1, 1), (2, 144), (1, 1), (1, 8)]],
                         ids=["icebreaker", "ulx3s-12f"])
def test_digits_cnn_shape_runs_at_its_slowest_stage(folding):
    """The digits-cnn shape (8x8x1 -> c16, p2, c32, p2, d10) at two boards' foldings: back to
    back, the measured cycles per image equal the slowest stage's (the hand-over FIFO before
    the second conv unit; without it 1335 and 395 cycles, 19 % and 11 % over)."""
    rng = np.random.default_rng(11)
    net = random_net.random_cnn(rng, height=8, width=8, channels=[1, 16, 32], input_bits=5,
                                pool=(0, 1), dense=(), n_outputs=10)
    codes = random_net.random_inputs(rng, net, 3)
    run = run_amaranth(net, codes, folding)
    _check(net, codes, run, "digits-cnn shape")
    hw = Network(net, folding)
    assert set(np.diff(run.out_cycles).tolist()) == {hw.interval}, hw.stage_intervals
