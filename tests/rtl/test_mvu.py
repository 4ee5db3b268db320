"""MatrixVectorUnit against golden.layer_forward over random layers, foldings, back-pressure;
its latency and interval against the simulated cycles."""

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from qnnfab import random_net
from qnnfab.spec import golden
from qnnfab.rtl.folding import FoldingError
from qnnfab.rtl.binary_weight_dot import BinaryWeightDot
from qnnfab.rtl.codebook_dot import CodebookDot
from qnnfab.rtl.mvu import MatrixVectorUnit, dot_unit_class, weight_code_bits, weight_words
from qnnfab.rtl.ternary_dot import TernaryDot
from qnnfab.rtl.xnor_popcount import XnorPopcount
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
    # weight kind, in, out, in_bits, out_bits (None: output layer), (pe, simd)
    ("binary", 8, 4, 1, 1, (1, 1)),
    ("binary", 8, 4, 1, 1, (4, 8)),
    ("binary", 16, 6, 1, 2, (3, 4)),
    ("binary", 12, 4, 5, 1, (2, 3)),
    ("binary", 12, 4, 5, 1, (4, 12)),
    ("binary", 12, 4, 2, 3, (4, 12)),
    ("binary", 12, 6, 5, 2, (1, 1)),
    ("binary", 16, 4, 2, 2, (2, 4)),
    ("binary", 16, 5, 1, None, (5, 2)),
    ("binary", 10, 3, 4, None, (1, 5)),
    # Ternary: each in_bits with each out_bits once, over the three kinds of folding.
    ("ternary", 12, 4, 1, 1, (4, 12)),
    ("ternary", 12, 4, 1, 2, (1, 1)),
    ("ternary", 16, 6, 1, 3, (3, 4)),
    ("ternary", 16, 6, 2, 1, (3, 4)),
    ("ternary", 12, 4, 2, 2, (4, 12)),
    ("ternary", 8, 4, 2, 3, (1, 1)),
    ("ternary", 8, 4, 5, 1, (1, 1)),
    ("ternary", 12, 6, 5, 2, (2, 3)),
    ("ternary", 10, 4, 5, 3, (4, 10)),
    ("ternary", 12, 5, 1, None, (5, 3)),
    ("ternary", 12, 4, 2, None, (1, 1)),
    ("ternary", 10, 3, 5, None, (1, 10)),
]


def _layer(rng, kind, n_in, n_out, in_bits, out_bits, codebook=None):
    layer = random_net.random_dense(rng, in_features=n_in, out_features=n_out, in_bits=in_bits,
                                    out_bits=out_bits or 1, output=out_bits is None,
                                    weight_kind=kind, codebook=codebook)
    if out_bits is not None:
        layer.threshold_sign[:2] = [-1, 1]         # both comparison directions, always
    layer.validate()
    return layer


@pytest.mark.parametrize("kind, n_in, n_out, in_bits, out_bits, fold", CASES)
def test_mvu_matches_golden(kind, n_in, n_out, in_bits, out_bits, fold):
    seed = n_in * 1000 + n_out * 100 + in_bits * 10 + (out_bits or 0) + fold[0] * 7 + fold[1]
    rng = np.random.default_rng(seed)
    layer = _layer(rng, kind, n_in, n_out, in_bits, out_bits)
    x = rng.integers(0, 1 << in_bits, size=(12, n_in))
    x[0] = (1 << in_bits) - 1                      # the extremes of the input range
    x[1] = 0
    dut = MatrixVectorUnit(layer, fold)
    got, t_in, t_out = _run(dut, x, seed=seed)
    _check(layer, x, got, seed)
    # Timing without back-pressure: first output after `latency`, then one per vector.
    assert t_out[0] - t_in[0] == dut.latency
    assert dut.steps == (n_in // fold[1]) * (n_out // fold[0])
    assert dut.interval == dut.steps + (fold[1] == n_in)
    assert np.diff(t_in).tolist() == [dut.interval] * (len(x) - 1)
    assert np.diff(t_out).tolist() == [dut.interval] * (len(x) - 1)


# Codebooks: general (k = 2, 3, 4; 6-bit random, 8-bit and 16-bit extreme levels) and
# shift-add ones (every level 0 or ±2**e).
GENERAL = (-127, 127, 33, -5, 90, 0, 7, -12)
POW2 = (0, 1, -1, 2, -4, 8, -16, 32)
POW2_UNIT = (4, -4, 8, -8, 16, -16, 64, -64)
K2 = (-32767, 32767, 3, -1)
K4 = tuple(range(-8, 8))

CODEBOOK_CASES = [
    # codebook (None: random_codebook, 3-bit 6-bit levels), in, out, in_bits, out_bits, fold
    (GENERAL, 12, 4, 1, 1, (4, 12)),
    (POW2, 12, 4, 1, 2, (1, 1)),
    (None, 16, 6, 1, 3, (3, 4)),
    (POW2, 16, 6, 2, 1, (3, 4)),
    (GENERAL, 12, 4, 2, 2, (4, 12)),
    (K2, 8, 4, 2, 3, (1, 1)),
    (None, 8, 4, 5, 1, (1, 1)),
    (POW2_UNIT, 12, 6, 5, 2, (2, 3)),
    (K4, 10, 4, 5, 3, (4, 10)),
    (GENERAL, 12, 5, 1, None, (5, 3)),
    (POW2, 12, 4, 2, None, (1, 1)),
    (K2, 10, 3, 5, None, (1, 10)),
]


@pytest.mark.parametrize("codebook, n_in, n_out, in_bits, out_bits, fold", CODEBOOK_CASES)
def test_mvu_codebook_matches_golden(codebook, n_in, n_out, in_bits, out_bits, fold):
    seed = 77 + n_in * 1000 + n_out * 100 + in_bits * 10 + (out_bits or 0) + fold[0] * 7 + fold[1]
    rng = np.random.default_rng(seed)
    layer = _layer(rng, "codebook", n_in, n_out, in_bits, out_bits,
                   None if codebook is None else np.asarray(codebook))
    x = rng.integers(0, 1 << in_bits, size=(10, n_in))
    x[0] = (1 << in_bits) - 1                      # the extremes of the input range
    x[1] = 0
    # One neuron with every weight on the most negative level, one on the largest.
    layer.weights[0] = int(np.argmin(layer.codebook))
    layer.weights[-1] = int(np.argmax(layer.codebook))
    dut = MatrixVectorUnit(layer, fold)
    assert issubclass(dut.dot_class, CodebookDot) and dut.dot_class.levels == layer.weight_levels
    got, t_in, t_out = _run(dut, x, seed=seed)
    _check(layer, x, got, seed)
    assert t_out[0] - t_in[0] == dut.latency
    assert np.diff(t_out).tolist() == [dut.interval] * (len(x) - 1)


def test_mvu_codebook_cases_cover_every_combination():
    """Every codebook (in_bits, out_bits) pair and output layer, each folding kind, each path."""
    assert {(c[3], c[4]) for c in CODEBOOK_CASES if c[4]} == \
        {(i, o) for i in (1, 2, 5) for o in (1, 2, 3)}
    assert {c[3] for c in CODEBOOK_CASES if c[4] is None} == {1, 2, 5}
    folds = {"full" if c[5] == (c[2], c[1]) else "serial" if c[5] == (1, 1) else "mid"
             for c in CODEBOOK_CASES}
    assert folds == {"full", "serial", "mid"}
    paths = {CodebookDot.for_levels(c[0]).path_for(c[3]) for c in CODEBOOK_CASES
             if c[0] is not None}
    assert paths == {"select", "shift", "multiply"}


def test_mvu_cases_cover_every_ternary_combination():
    """Every ternary (in_bits, out_bits) pair, and each kind of folding for ternary."""
    tern = [c for c in CASES if c[0] == "ternary"]
    assert {(c[3], c[4]) for c in tern if c[4]} == {(i, o) for i in (1, 2, 5) for o in (1, 2, 3)}
    assert {c[3] for c in tern if c[4] is None} == {1, 2, 5}
    folds = {"full" if c[5] == (c[2], c[1]) else "serial" if c[5] == (1, 1) else "mid"
             for c in tern}
    assert folds == {"full", "serial", "mid"}


@pytest.mark.parametrize("kind, in_bits, fold", [("binary", 1, (1, 1)), ("binary", 1, (2, 4)),
                                                 ("binary", 1, (4, 16)), ("ternary", 1, (2, 4)),
                                                 ("ternary", 3, (4, 16)),
                                                 ("codebook", 3, (2, 4))])
def test_mvu_random_back_pressure(kind, in_bits, fold):
    seed = 31 + fold[0] + in_bits
    rng = np.random.default_rng(seed)
    layer = _layer(rng, kind, 16, 4, in_bits, 2)
    x = rng.integers(0, 1 << in_bits, size=(16, 16))
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


def test_weight_words_layout_ternary():
    rng = np.random.default_rng(1)
    layer = random_net.random_dense(rng, in_features=6, out_features=4, in_bits=2,
                                    weight_kind="ternary")
    assert weight_code_bits(layer) == 2
    words = weight_words(layer, 2, 3)
    assert len(words) == 4 and max(words) < 1 << (2 * 3 * 2)
    for nf in range(2):
        for sf in range(2):
            for p in range(2):
                for s in range(3):
                    code = (words[nf * 2 + sf] >> ((p * 3 + s) * 2)) & 3
                    assert code == layer.weights[nf * 2 + p, sf * 3 + s]


def test_weight_words_layout_codebook():
    rng = np.random.default_rng(5)
    layer = random_net.random_dense(rng, in_features=6, out_features=4, in_bits=2,
                                    weight_kind="codebook", codebook=np.asarray(K4))
    assert weight_code_bits(layer) == 4
    words = weight_words(layer, 2, 3)
    assert len(words) == 4 and max(words) < 1 << (2 * 3 * 4)
    for nf in range(2):
        for sf in range(2):
            for p in range(2):
                for s in range(3):
                    index = (words[nf * 2 + sf] >> ((p * 3 + s) * 4)) & 15
                    assert index == layer.weights[nf * 2 + p, sf * 3 + s]


def test_dot_unit_by_weight_kind():
    rng = np.random.default_rng(2)
    units = {}
    for kind in ("binary", "ternary"):
        for in_bits in (1, 4):
            layer = random_net.random_dense(rng, in_features=4, out_features=2, in_bits=in_bits,
                                            weight_kind=kind)
            units[kind, in_bits] = dot_unit_class(layer)
            mvu = MatrixVectorUnit(layer, (1, 2))
            assert mvu.scale == (2 if in_bits == 1 else 1)
            Fragment.get(mvu, None)                # elaborates: the built unit agrees
    assert units == {("binary", 1): XnorPopcount, ("binary", 4): BinaryWeightDot,
                     ("ternary", 1): TernaryDot, ("ternary", 4): TernaryDot}
    for in_bits, codebook, scale in [(1, POW2_UNIT, 8), (4, POW2_UNIT, 4), (4, GENERAL, 1)]:
        layer = random_net.random_dense(rng, in_features=4, out_features=2, in_bits=in_bits,
                                        weight_kind="codebook", codebook=np.asarray(codebook))
        cls = dot_unit_class(layer)
        assert issubclass(cls, CodebookDot) and cls is CodebookDot.for_levels(codebook)
        mvu = MatrixVectorUnit(layer, (1, 2))
        assert mvu.scale == scale
        Fragment.get(mvu, None)
    layer.weight_kind = "quinary"
    with pytest.raises(ValueError, match=r"no dot-product unit for weight kind 'quinary' "
                                         r"\(known: binary, ternary, codebook\)"):
        dot_unit_class(layer)


def test_mvu_refuses_non_dividing_folding():
    layer = random_net.random_dense(np.random.default_rng(0), in_features=6, out_features=4,
                                    in_bits=1)
    with pytest.raises(FoldingError, match=r"PE=3 does not divide out_features=4 "
                                           r"\(choose one of 1, 2, 4\)"):
        MatrixVectorUnit(layer, (3, 1))
