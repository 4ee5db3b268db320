"""MaxPool against a numpy block maximum over shapes, block sizes and code widths; frames back
to back, random stalls on both sides, and the documented latency and cycles per image."""

import numpy as np
import pytest
from amaranth.back import verilog

from qnnfab.rtl.maxpool import MaxPool

from qnnfab.sim.stream_io import run_stream


def ref_maxpool(img, s):
    """(H/s · W/s, C): the maximum of each s x s block, raster order."""
    h, w, c = img.shape
    return img.reshape(h // s, s, w // s, s, c).max(axis=(1, 3)).reshape(-1, c)


def _check(imgs, got, s, seed):
    expected = np.concatenate([ref_maxpool(img, s) for img in imgs])
    assert got.shape == expected.shape, f"seed {seed}: {got.shape} != {expected.shape}"
    for r, j in zip(*np.nonzero(got != expected)):
        raise AssertionError(f"seed {seed}: pixel {r} channel {j}: expected {expected[r, j]}, "
                             f"got {got[r, j]}")


CASES = [
    # H, W, C, bits, size
    (4, 6, 1, 1, 2),
    (6, 4, 3, 2, 2),
    (8, 8, 2, 5, 2),
    (2, 8, 3, 5, 2),
    (6, 2, 1, 2, 2),
    (6, 3, 2, 2, 3),
    (3, 6, 1, 5, 3),
    (4, 8, 3, 1, 4),
    (3, 5, 2, 2, 1),
]


def _seed(case):
    return sum((7 ** n) * v for n, v in enumerate(case))


def _frames(rng, shape, bits, n):
    imgs = rng.integers(0, 1 << bits, size=(n, *shape))
    imgs[1] = rng.integers(0, 2, size=shape) * ((1 << bits) - 1)     # extremes only
    return imgs


@pytest.mark.parametrize("h, w, c, bits, s", CASES)
def test_maxpool_eager(h, w, c, bits, s):
    seed = _seed((h, w, c, bits, s))
    rng = np.random.default_rng(seed)
    imgs = _frames(rng, (h, w, c), bits, 3)
    dut = MaxPool(h, w, c, bits, size=s)
    ho, wo = dut.out_height, dut.out_width
    assert (ho, wo) == (h // s, w // s)
    got, t_in, t_out = run_stream(dut, imgs.reshape(-1, c), len(imgs) * ho * wo, seed=seed)
    _check(imgs, got, s, seed)
    # One pixel per cycle, frames back to back; each output the cycle after its block's last
    # (bottom-right) pixel.
    assert t_in == list(range(len(imgs) * h * w))
    assert dut.interval == h * w
    last = [f * h * w + (y * s + s - 1) * w + x * s + s - 1
            for f in range(len(imgs)) for y in range(ho) for x in range(wo)]
    assert t_out == [t_in[j] + dut.latency for j in last]


@pytest.mark.parametrize("h, w, c, bits, s", CASES)
def test_maxpool_random_stalls(h, w, c, bits, s):
    seed = 3 + _seed((h, w, c, bits, s))
    rng = np.random.default_rng(seed)
    imgs = _frames(rng, (h, w, c), bits, 4)
    dut = MaxPool(h, w, c, bits, size=s)
    n_out = len(imgs) * dut.out_height * dut.out_width
    got, _, _ = run_stream(dut, imgs.reshape(-1, c), n_out, seed=seed, gap_p=0.4, ready_p=0.4)
    _check(imgs, got, s, seed)


def test_maxpool_slow_consumer_holds_only_the_last_pixel_of_a_block():
    """With the sink taking each output 5 cycles after it is offered, the input waits only
    at blocks' last pixels."""
    h, w, c, bits, s = 4, 6, 2, 2, 2
    rng = np.random.default_rng(7)
    imgs = _frames(rng, (h, w, c), bits, 3)
    dut = MaxPool(h, w, c, bits, size=s)
    n_out = len(imgs) * dut.out_height * dut.out_width
    got, t_in, t_out = run_stream(dut, imgs.reshape(-1, c), n_out, seed=7, interval=5)
    _check(imgs, got, s, 7)
    assert np.diff(t_out).min() >= 5
    waits = [j for j in range(1, len(t_in)) if t_in[j] - t_in[j - 1] > 1]
    block_last = [j for j in range(len(t_in))
                  if (j // w) % s == s - 1 and (j % w) % s == s - 1]
    assert waits and set(waits) <= set(block_last)


@pytest.mark.parametrize("args, message", [
    ((5, 4, 1, 1, 2), r"MaxPool: size 2 must divide the height and width, not 5x4"),
    ((4, 6, 1, 1, 4), r"MaxPool: size 4 must divide the height and width, not 4x6"),
    ((4, 4, 1, 1, 0), r"MaxPool: size must be >= 1, not 0"),
    ((4, 4, 1, 0, 2), r"MaxPool: bits must be >= 1, not 0"),
    ((0, 4, 1, 1, 2), r"MaxPool: height must be >= 1, not 0"),
])
def test_maxpool_rejects_bad_parameters(args, message):
    with pytest.raises(ValueError, match=message):
        MaxPool(*args)


def test_maxpool_rejects_unknown_ram_style():
    with pytest.raises(ValueError, match=r"MaxPool: ram_style must be None, 'block' or "
                                         r"'logic', not 'fast'"):
        MaxPool(4, 4, 1, 1, 2, ram_style="fast")


def test_maxpool_converts_to_verilog():
    for h, w, s in [(6, 6, 1), (6, 6, 2), (6, 6, 3), (4, 2, 2)]:       # (4, 2): one-word buffer
        text = verilog.convert(MaxPool(h, w, 3, 2, size=s), name=f"maxpool_{s}", emit_src=False)
        assert f"module maxpool_{s}" in text
    text = verilog.convert(MaxPool(4, 8, 3, 2, ram_style="block"), name="mp", emit_src=False)
    assert '(* ram_style = "block" *)' in text
