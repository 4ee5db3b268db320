"""SlidingWindow against a numpy im2col over shapes, kernel sizes and every padding; frames back
to back, random stalls on both sides, and the documented latency and cycles per frame."""

import numpy as np
import pytest
from amaranth.back import verilog

from amaranth.hdl import Module
from amaranth.lib import wiring

from qnnfab.rtl.maxpool import MaxPool
from qnnfab.rtl.pixels import PixelsToVector, VectorToPixels
from qnnfab.rtl.sliding_window import SlidingWindow

from qnnfab.sim.stream_io import run_stream


def ref_windows(img, k, p):
    """im2col: (Ho·Wo, C·k·k), windows in raster order, each in (c, ky, kx) order, code 0
    outside the image."""
    h, w, c = img.shape
    padded = np.zeros((h + 2 * p, w + 2 * p, c), dtype=np.int64)
    padded[p:p + h, p:p + w] = img
    ho, wo = h + 2 * p - k + 1, w + 2 * p - k + 1
    out = np.empty((ho, wo, c * k * k), dtype=np.int64)
    for y in range(ho):
        for x in range(wo):
            out[y, x] = padded[y:y + k, x:x + k, :].transpose(2, 0, 1).reshape(-1)
    return out.reshape(ho * wo, -1)


def _frames(rng, shape, bits, n=3):
    """``n`` random images; the second has no code 0, so only padding supplies zeros."""
    imgs = rng.integers(0, 1 << bits, size=(n, *shape))
    imgs[1] = rng.integers(1, 1 << bits, size=shape) if bits > 1 else 1
    return imgs


def _check(imgs, got, k, p, seed):
    expected = np.concatenate([ref_windows(img, k, p) for img in imgs])
    assert got.shape == expected.shape, f"seed {seed}: {got.shape} != {expected.shape}"
    for r, j in zip(*np.nonzero(got != expected)):
        raise AssertionError(f"seed {seed}: window {r} element {j}: expected {expected[r, j]}, "
                             f"got {got[r, j]}")


CASES = [
    # H, W, C, bits, k, p
    (4, 4, 2, 5, 1, 0),
    (5, 3, 1, 1, 1, 0),
    (5, 7, 1, 1, 3, 1),
    (6, 4, 3, 2, 3, 0),
    (8, 8, 1, 2, 3, 1),
    (4, 6, 2, 5, 3, 1),
    (7, 5, 2, 5, 5, 0),
    (5, 6, 1, 1, 5, 1),
    (6, 5, 3, 2, 5, 2),
    (4, 5, 1, 2, 7, 3),
    (3, 3, 2, 1, 3, 0),         # a single window per frame
    (1, 1, 1, 2, 3, 1),         # a single pixel, padded
]


def _seed(case):
    return sum((7 ** n) * v for n, v in enumerate(case))


@pytest.mark.parametrize("h, w, c, bits, k, p", CASES)
def test_sliding_window_eager(h, w, c, bits, k, p):
    seed = _seed((h, w, c, bits, k, p))
    rng = np.random.default_rng(seed)
    imgs = _frames(rng, (h, w, c), bits)
    dut = SlidingWindow(h, w, c, bits, kernel_size=k, padding=p)
    assert (dut.out_height, dut.out_width) == (h + 2 * p - k + 1, w + 2 * p - k + 1)
    n_win = dut.out_height * dut.out_width
    got, _, t_out = run_stream(dut, imgs.reshape(-1, c), len(imgs) * n_win, seed=seed)
    _check(imgs, got, k, p, seed)
    # Eager source and sink: the padded image is scanned one position per cycle, frames back
    # to back; the window of output (y, x) leaves the cycle after position (y+k-1, x+k-1).
    hp, wp = h + 2 * p, w + 2 * p
    expected = [f * hp * wp + (y + k - 1) * wp + (x + k - 1) + 1
                for f in range(len(imgs))
                for y in range(dut.out_height) for x in range(dut.out_width)]
    assert t_out == expected
    assert t_out[0] == dut.latency == (k - 1) * wp + k
    assert dut.interval == hp * wp == t_out[n_win] - t_out[0]


@pytest.mark.parametrize("h, w, c, bits, k, p, interval", [
    (5, 7, 1, 1, 3, 1, 3), (6, 5, 3, 2, 5, 2, 2), (4, 4, 2, 5, 1, 0, 4), (5, 6, 1, 1, 5, 0, 5)])
def test_sliding_window_slow_consumer(h, w, c, bits, k, p, interval):
    """A consumer that takes each window ``interval`` cycles after it is offered (an MVU)."""
    seed = _seed((h, w, c, bits, k, p, interval))
    rng = np.random.default_rng(seed)
    imgs = _frames(rng, (h, w, c), bits)
    dut = SlidingWindow(h, w, c, bits, kernel_size=k, padding=p)
    n_win = dut.out_height * dut.out_width
    got, _, t_out = run_stream(dut, imgs.reshape(-1, c), len(imgs) * n_win, seed=seed,
                         interval=interval)
    _check(imgs, got, k, p, seed)
    period = dut.interval_for(interval)
    assert period == (h + 2 * p) * (w + 2 * p) + n_win * (interval - 1)
    assert [t_out[(f + 1) * n_win] - t_out[f * n_win] for f in range(len(imgs) - 1)] == \
        [period] * (len(imgs) - 1)
    # Within an output row, one window every ``interval`` cycles.
    wo = dut.out_width
    for r in range(len(imgs) * dut.out_height):
        row = t_out[r * wo:(r + 1) * wo]
        assert np.diff(row).tolist() == [interval] * (wo - 1), f"seed {seed}: row {r}"


@pytest.mark.parametrize("h, w, c, bits, k, p", CASES)
def test_sliding_window_random_stalls(h, w, c, bits, k, p):
    seed = 1 + _seed((h, w, c, bits, k, p))
    rng = np.random.default_rng(seed)
    imgs = _frames(rng, (h, w, c), bits, n=4)
    dut = SlidingWindow(h, w, c, bits, kernel_size=k, padding=p)
    n_win = dut.out_height * dut.out_width
    got, _, _ = run_stream(dut, imgs.reshape(-1, c), len(imgs) * n_win, seed=seed,
                     gap_p=0.4, ready_p=0.5)
    _check(imgs, got, k, p, seed)


@pytest.mark.parametrize("kwargs, message", [
    (dict(kernel_size=4, padding=1), r"kernel_size must be odd, 1 to 7, not 4"),
    (dict(kernel_size=9, padding=1), r"kernel_size must be odd, 1 to 7, not 9"),
    (dict(kernel_size=3, padding=2), r"padding must be 0 to kernel_size // 2 = 1, not 2"),
    (dict(kernel_size=1, padding=-1), r"padding must be 0 to kernel_size // 2 = 0, not -1"),
    (dict(kernel_size=7, padding=0), r"a 7x7 kernel with padding 0 does not fit a 4x8 image"),
    (dict(channels=0), r"SlidingWindow: channels must be >= 1, not 0"),
    (dict(ram_style="bram"), r"SlidingWindow: ram_style must be None, 'block' or 'logic', "
                             r"not 'bram'"),
])
def test_sliding_window_rejects_bad_parameters(kwargs, message):
    params = dict(height=4, width=8, channels=1, bits=1) | kwargs
    with pytest.raises(ValueError, match=message):
        SlidingWindow(**params)


def test_sliding_window_converts_to_verilog():
    for k, p, style in [(1, 0, None), (3, 1, None), (5, 2, "block"), (3, 0, "logic")]:
        dut = SlidingWindow(6, 5, 2, 2, kernel_size=k, padding=p, ram_style=style)
        text = verilog.convert(dut, name=f"sliding_window_{k}", emit_src=False)
        assert f"module sliding_window_{k}" in text
        assert ("ram_style" in text) == (style is not None)
        if style:
            assert f'(* ram_style = "{style}" *)' in text


class _Chain(wiring.Component):
    """Vector -> pixels -> max-pool -> windows -> flattened vector of all windows."""

    def __init__(self, h, w, c, bits, k, p, s):
        self.stages = [VectorToPixels(h, w, c, bits), MaxPool(h, w, c, bits, size=s),
                       SlidingWindow(h // s, w // s, c, bits, kernel_size=k, padding=p)]
        sw = self.stages[-1]
        self.stages.append(PixelsToVector(sw.out_height, sw.out_width, sw.window_features, bits))
        super().__init__({"i": self.stages[0].signature.members["i"],
                          "o": self.stages[-1].signature.members["o"]})

    def elaborate(self, platform):
        m = Module()
        for n, stage in enumerate(self.stages):
            m.submodules[f"s{n}"] = stage
        wiring.connect(m, wiring.flipped(self.i), self.stages[0].i)
        for a, b in zip(self.stages, self.stages[1:]):
            wiring.connect(m, a.o, b.i)
        wiring.connect(m, self.stages[-1].o, wiring.flipped(self.o))
        return m


@pytest.mark.parametrize("stalls", [False, True])
def test_chain_with_the_other_stream_blocks(stalls):
    h, w, c, bits, k, p, s = 6, 8, 2, 2, 3, 1, 2
    seed = 23 + stalls
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 1 << bits, size=(3, h, w, c))
    dut = _Chain(h, w, c, bits, k, p, s)
    kw = dict(gap_p=0.3, ready_p=0.3) if stalls else {}
    got, _, t_out = run_stream(dut, imgs.reshape(len(imgs), -1), len(imgs), seed=seed, **kw)
    pooled = imgs.reshape(len(imgs), h // s, s, w // s, s, c).max(axis=(2, 4))
    expected = np.stack([ref_windows(img, k, p).reshape(-1) for img in pooled])
    assert (got == expected).all(), f"seed {seed}"
    if not stalls:
        # VectorToPixels and MaxPool take H·W cycles per image; without buffering between the
        # stages, the window scan's padding-only positions can add at most their own count.
        sw = dut.stages[2]
        pad_only = sw.padded_height * sw.padded_width - (h // s) * (w // s)
        period = np.diff(t_out).tolist()
        assert len(set(period)) == 1 and h * w <= period[0] <= h * w + pad_only, period
