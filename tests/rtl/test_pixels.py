"""VectorToPixels and PixelsToVector against numpy reshapes in (y, x, c) order; images back to
back, random stalls on both sides, the documented latency and cycles per image, and the two
chained (vector -> pixels -> vector)."""

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Module
from amaranth.lib import wiring

from qnnfab.rtl.pixels import PixelsToVector, VectorToPixels

from qnnfab.sim.stream_io import run_stream


SHAPES = [
    # H, W, C, bits
    (1, 1, 1, 1),
    (1, 5, 2, 2),
    (4, 6, 1, 1),
    (6, 4, 3, 2),
    (8, 8, 1, 5),
    (3, 5, 4, 5),
]


def _seed(case):
    return sum((7 ** n) * v for n, v in enumerate(case))


def _images(rng, h, w, c, bits, n):
    imgs = rng.integers(0, 1 << bits, size=(n, h, w, c))
    imgs[0] = (1 << bits) - 1
    return imgs


@pytest.mark.parametrize("h, w, c, bits", SHAPES)
@pytest.mark.parametrize("stalls", [False, True])
def test_vector_to_pixels(h, w, c, bits, stalls):
    seed = _seed((h, w, c, bits, stalls))
    rng = np.random.default_rng(seed)
    imgs = _images(rng, h, w, c, bits, 4)
    dut = VectorToPixels(h, w, c, bits)
    vectors = imgs.reshape(len(imgs), -1)           # (y, x, c) order
    kw = dict(gap_p=0.4, ready_p=0.5) if stalls else {}
    got, t_in, t_out = run_stream(dut, vectors, len(imgs) * h * w, seed=seed, **kw)
    expected = imgs.reshape(-1, c)                  # raster order, C codes per pixel
    assert got.shape == expected.shape
    for r, j in zip(*np.nonzero(got != expected)):
        raise AssertionError(f"seed {seed}: pixel {r} channel {j}: expected {expected[r, j]}, "
                             f"got {got[r, j]}")
    if not stalls:
        # One pixel per cycle from the cycle after the first offer; an image every H·W cycles.
        assert dut.interval == h * w and dut.latency == 1
        assert t_out == list(range(dut.latency, dut.latency + len(imgs) * h * w))
        assert np.diff(t_in).tolist() == [dut.interval] * (len(imgs) - 1)


@pytest.mark.parametrize("h, w, c, bits", SHAPES)
@pytest.mark.parametrize("stalls", [False, True])
def test_pixels_to_vector(h, w, c, bits, stalls):
    seed = 5 + _seed((h, w, c, bits, stalls))
    rng = np.random.default_rng(seed)
    imgs = _images(rng, h, w, c, bits, 4)
    dut = PixelsToVector(h, w, c, bits)
    kw = dict(gap_p=0.4, ready_p=0.3) if stalls else {}
    got, t_in, t_out = run_stream(dut, imgs.reshape(-1, c), len(imgs), seed=seed, **kw)
    expected = imgs.reshape(len(imgs), -1)
    assert got.shape == expected.shape
    for r, j in zip(*np.nonzero(got != expected)):
        raise AssertionError(f"seed {seed}: image {r} code {j}: expected {expected[r, j]}, "
                             f"got {got[r, j]}")
    if not stalls:
        # A pixel every cycle, no gap between images; the vector the cycle after its last pixel.
        assert dut.interval == h * w and dut.latency == 1
        assert t_in == list(range(len(imgs) * h * w))
        n = h * w
        assert t_out == [t_in[(f + 1) * n - 1] + dut.latency for f in range(len(imgs))]


def test_pixels_to_vector_slow_consumer_stalls_the_pixels():
    """The finished vector holds off the next image's pixels until it is taken; the next
    image's first pixel enters in the cycle of the take."""
    h, w, c, bits, delay = 3, 4, 2, 2, 6
    rng = np.random.default_rng(11)
    imgs = _images(rng, h, w, c, bits, 3)
    dut = PixelsToVector(h, w, c, bits)
    got, t_in, t_out = run_stream(dut, imgs.reshape(-1, c), len(imgs), seed=11, interval=delay)
    assert (got == imgs.reshape(len(imgs), -1)).all()
    n = h * w
    for f in range(len(imgs)):
        assert t_out[f] == t_in[(f + 1) * n - 1] + dut.latency + delay - 1
        if f + 1 < len(imgs):
            assert t_in[(f + 1) * n] == t_out[f]


class _Chain(wiring.Component):
    def __init__(self, h, w, c, bits):
        self.v2p = VectorToPixels(h, w, c, bits)
        self.p2v = PixelsToVector(h, w, c, bits)
        super().__init__({"i": self.v2p.signature.members["i"],
                          "o": self.p2v.signature.members["o"]})

    def elaborate(self, platform):
        m = Module()
        m.submodules.v2p, m.submodules.p2v = self.v2p, self.p2v
        wiring.connect(m, wiring.flipped(self.i), self.v2p.i)
        wiring.connect(m, self.v2p.o, self.p2v.i)
        wiring.connect(m, self.p2v.o, wiring.flipped(self.o))
        return m


@pytest.mark.parametrize("stalls", [False, True])
def test_vector_pixels_round_trip(stalls):
    h, w, c, bits = 5, 3, 2, 5
    seed = 17 + stalls
    rng = np.random.default_rng(seed)
    vectors = rng.integers(0, 1 << bits, size=(4, h * w * c))
    dut = _Chain(h, w, c, bits)
    kw = dict(gap_p=0.3, ready_p=0.3) if stalls else {}
    got, t_in, t_out = run_stream(dut, vectors, len(vectors), seed=seed, **kw)
    assert (got == vectors).all()
    if not stalls:
        assert np.diff(t_out).tolist() == [h * w] * (len(vectors) - 1)


@pytest.mark.parametrize("cls", [VectorToPixels, PixelsToVector])
def test_pixels_reject_bad_parameters(cls):
    with pytest.raises(ValueError, match=rf"{cls.__name__}: width must be >= 1, not 0"):
        cls(4, 0, 1, 1)
    with pytest.raises(ValueError, match=rf"{cls.__name__}: bits must be >= 1, not -2"):
        cls(4, 4, 1, -2)
    with pytest.raises(TypeError):
        cls(4, 4.5, 1, 1)


def test_pixels_convert_to_verilog():
    for cls in (VectorToPixels, PixelsToVector):
        for shape in [(1, 1, 1, 1), (4, 5, 3, 2)]:
            text = verilog.convert(cls(*shape), name=cls.__name__.lower(), emit_src=False)
            assert f"module {cls.__name__.lower()}" in text
