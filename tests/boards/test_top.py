"""BoardTop end to end in Amaranth's simulator: UART bits in, network, UART bits out, compared
exactly with the golden model; garbage on the line must not wedge it."""

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from qnnfab import random_net
from qnnfab.boards import protocol
from qnnfab.boards.top import BoardTop
from qnnfab.boards.uart import serial_read, serial_write
from qnnfab.spec import golden

from .fake_boards import FakeBoard

DIVISOR = 4
BAUD = 1_000_000
CLK = DIVISOR * BAUD


def _top(net, folding=None, **kwargs):
    return BoardTop(net, folding, clk_freq=CLK, baud=BAUD, **kwargs)


class Session:
    """Drives a BoardTop's rx line and decodes its tx line; bounded, so it always ends."""

    def __init__(self, top):
        self.top = top
        self.fmt = top.frame

    async def send(self, ctx, data, **kwargs):
        await serial_write(ctx, self.top.rx, data, divisor=DIVISOR, **kwargs)

    async def read_response(self, ctx, *, max_cycles):
        """Read one response; None if no start bit comes within ``max_cycles``."""
        for _ in range(max_cycles):
            if ctx.get(self.top.tx) == 0:
                break
            await ctx.tick()
        else:
            return None
        data = []
        for _ in range(self.fmt.response_length):
            data.append(await serial_read(ctx, self.top.tx, divisor=DIVISOR))
        return bytes(data)

    def answer_wait(self):
        return int(self.top.cycles_per_inference + self.top.latency + 40 * DIVISOR + 100)


def _check(net, codes, response, k, seed):
    fmt = protocol.FrameFormat.from_network(net)
    assert response is not None, f"seed {seed}: vector {k}: no response"
    cls, scores = fmt.decode_response(response)
    trace = golden.forward(net, codes[None, :])
    exp_cls, exp_scores = int(trace.classes[0]), trace.scores[0]
    for j, (e, g) in enumerate(zip(exp_scores, scores)):
        assert e == g, (f"seed {seed}: vector {k}: layer {len(net.layers) - 1} (scores) index "
                        f"{j}: expected {e}, got {g}; all expected {exp_scores.tolist()}, "
                        f"got {scores.tolist()}")
    assert cls == exp_cls, f"seed {seed}: vector {k}: class expected {exp_cls}, got {cls}"


def _simulate(top, bench):
    sim = Simulator(top)
    sim.add_clock(1 / CLK)
    sim.add_testbench(bench)
    sim.run()


NETS = {
    # name: (features, input_bits, hidden_bits, folding (None: auto_folding), input buffer)
    "binary-in": ([6, 8, 3], 1, 1, None, False),
    "binary-in-folded": ([6, 8, 3], 1, 1, [(2, 3), (1, 2)], False),
    "2bit-in": ([5, 7, 4], 2, 1, [(7, 5), (2, 7)], False),
    "8bit-in-2-byte-scores": ([4, 3], 8, 1, [(1, 2)], False),
    "2bit-hidden": ([5, 6, 3], 3, 2, [(3, 1), (3, 6)], False),
    # The input vector in block RAM: codes go to the network one by one.
    "8bit-in-buffered": ([12, 8, 3], 8, 1, [(2, 4), (3, 8)], True),
    "buffered-simd-1": ([6, 8, 3], 3, 2, [(8, 1), (1, 2)], True),
}


@pytest.mark.parametrize("name", list(NETS))
def test_uart_inference_matches_golden(name):
    features, input_bits, hidden_bits, folding, input_buffer = NETS[name]
    seed = 100 + list(NETS).index(name)
    rng = np.random.default_rng(seed)
    net = random_net.random_network(rng, features=features, input_bits=input_bits,
                                    hidden_bits=hidden_bits)
    codes = random_net.random_inputs(rng, net, 4)
    codes[0] = 0
    codes[1] = (1 << input_bits) - 1
    top = _top(net, folding, input_buffer=input_buffer)
    assert top.input_buffer == input_buffer
    s = Session(top)
    if name == "8bit-in-2-byte-scores":
        assert top.frame.score_bytes == 2
    responses = []

    async def bench(ctx):
        for vec in codes:
            await s.send(ctx, s.fmt.encode_request(vec))
            responses.append(await s.read_response(ctx, max_cycles=s.answer_wait()))

    _simulate(top, bench)
    for k, (vec, response) in enumerate(zip(codes, responses)):
        _check(net, vec, response, k, seed)


@pytest.mark.parametrize("input_buffer", [False, True], ids=["vector-register", "input-buffer"])
def test_garbage_does_not_wedge(input_buffer):
    # With the input buffer a dropped frame leaves codes in a bank: the next frame must start
    # at element 0 again.
    seed = 7
    rng = np.random.default_rng(seed)
    net = random_net.random_network(rng, features=[5, 6, 3], input_bits=2)
    fmt = protocol.FrameFormat.from_network(net)
    codes = random_net.random_inputs(rng, net, 6)
    top = _top(net, [(3, 1), (3, 6)] if input_buffer else None, input_buffer=input_buffer)
    s = Session(top)
    results = {}

    async def expect_silence(ctx, what):
        got = await s.read_response(ctx, max_cycles=s.answer_wait())
        assert got is None, f"{what}: expected no response, got {got.hex(' ')}"

    async def good(ctx, k, what):
        await s.send(ctx, fmt.encode_request(codes[k]))
        results[what] = (k, await s.read_response(ctx, max_cycles=s.answer_wait()))

    async def bench(ctx):
        # Noise before any frame (everything but the sync byte is ignored).
        noise = bytes(b for b in rng.integers(0, 256, 40).tolist() if b != protocol.REQUEST_SYNC)
        await s.send(ctx, noise)
        await expect_silence(ctx, "noise")
        assert ctx.get(top.leds) == 0
        await good(ctx, 0, "after noise")
        assert ctx.get(top.leds) == 0b01
        # A frame with an out-of-range code: dropped, error LED on.
        bad = bytearray(fmt.encode_request(codes[1]))
        bad[3] = 0x80
        await s.send(ctx, bytes(bad))
        await expect_silence(ctx, "out-of-range code")
        assert ctx.get(top.leds) & 0b10, "error LED should light after a dropped frame"
        await good(ctx, 1, "after out-of-range code")
        assert ctx.get(top.leds) == 0b00, "answer toggles leds[0], clears the error LED"
        # A sync byte mid-frame restarts the frame.
        await s.send(ctx, fmt.encode_request(codes[3])[:3])
        await good(ctx, 2, "sync mid-frame")
        # A truncated frame, then silence: the timeout drops it; the next frame works.
        await s.send(ctx, fmt.encode_request(codes[3])[:4])
        await ctx.tick().repeat(top.timeout_cycles + 20)
        await expect_silence(ctx, "truncated frame")
        await good(ctx, 3, "after timeout")
        # A framing error and a break in a frame, then a good frame.
        await s.send(ctx, fmt.encode_request(codes[3])[:2])
        await s.send(ctx, b"\x01", stop_bit=0)
        ctx.set(top.rx, 0)
        await ctx.tick().repeat(25 * DIVISOR)
        ctx.set(top.rx, 1)
        await ctx.tick().repeat(top.timeout_cycles + 20)
        await expect_silence(ctx, "framing error")
        await good(ctx, 4, "after break")
        # Bytes sent while it answers are dropped: the rest of a frame sent after the answer
        # must not complete one.
        await s.send(ctx, fmt.encode_request(codes[5]))
        await ctx.tick().repeat(top.latency + top.cycles_per_inference + 10)
        await s.send(ctx, fmt.encode_request(codes[5])[:3])
        await ctx.tick().repeat(fmt.response_length * 12 * DIVISOR)
        await s.send(ctx, fmt.encode_request(codes[5])[3:])
        await expect_silence(ctx, "frame started during the answer")
        await ctx.tick().repeat(top.timeout_cycles + 20)
        await good(ctx, 0, "after answer")

    _simulate(top, bench)
    for what, (k, response) in results.items():
        try:
            _check(net, codes[k], response, k, seed)
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}") from None


def test_signature_and_properties():
    rng = np.random.default_rng(1)
    net = random_net.random_network(rng, features=[4, 5, 2], input_bits=2)
    top = _top(net)
    assert set(top.signature.members) == {"rx", "tx", "leds"}
    assert top.divisor == DIVISOR
    assert top.timeout_cycles == protocol.TIMEOUT_BYTES * 10 * DIVISOR
    assert top.cycles_per_inference >= 1
    text = verilog.convert(top, name="qnnfab_top", emit_src=False)
    for port in ("input rx", "output tx", "output [1:0] leds", "input clk", "input rst"):
        assert port in text, f"{port!r} missing from the Verilog ports"
    with pytest.raises(ValueError, match=r"too fast"):
        BoardTop(net, clk_freq=1e6, baud=1_000_000)


# -- protocol and host driver ---------------------------------------------------------------

def test_driver_against_fake_board():
    from qnnfab.boards.driver import BoardTimeout, infer
    rng = np.random.default_rng(5)
    net = random_net.random_network(rng, features=[4, 6, 3], input_bits=8)
    board = FakeBoard(net, noise=b"\x00\x17")
    for k, codes in enumerate(random_net.random_inputs(rng, net, 5)):
        cls, scores = infer(board, codes, network=net, timeout=1.0)
        trace = golden.forward(net, codes[None, :])
        assert cls == int(trace.classes[0]), f"vector {k}"
        assert scores.tolist() == trace.scores[0].tolist(), f"vector {k}"
        assert board.requests[-1] == bytes([0x51, *codes.tolist()])
    with pytest.raises(protocol.ProtocolError, match=r"class 238 out of range 0\.\.2"):
        infer(FakeBoard(net, corrupt=True), codes, network=net, timeout=1.0)

    class Silent(FakeBoard):
        def write(self, data):
            pass
    with pytest.raises(BoardTimeout, match=r"no response from the board within 0.2 s"):
        infer(Silent(net), codes, network=net, timeout=0.2)
    with pytest.raises(ValueError, match=r"codes: must lie in 0\.\.255 \(8 bits\), got 256 at "
                                         r"index 1"):
        infer(board, [0, 256, 0, 0], network=net)


def test_driver_missing_port():
    from qnnfab.boards.driver import infer
    rng = np.random.default_rng(5)
    net = random_net.random_network(rng, features=[4, 3], input_bits=1)
    with pytest.raises(FileNotFoundError, match=r"serial port /dev/qnnfab-no-such-port does not "
                                                r"exist"):
        infer("/dev/qnnfab-no-such-port", [0, 1, 0, 1], network=net, timeout=0.5)


def test_protocol_round_trip_and_errors():
    fmt = protocol.FrameFormat(input_features=3, input_bits=2, n_outputs=4, acc_width=11)
    assert fmt.score_bytes == 2 and fmt.request_length == 4 and fmt.response_length == 10
    assert fmt.encode_request(np.array([0, 3, 1])) == b"\x51\x00\x03\x01"
    data = fmt.encode_response(2, [-1024, 1023, 0, -1])
    assert data == bytes([0x52, 2, 0x00, 0xFC, 0xFF, 0x03, 0, 0, 0xFF, 0xFF])
    cls, scores = fmt.decode_response(data)
    assert cls == 2 and scores.tolist() == [-1024, 1023, 0, -1]
    with pytest.raises(protocol.ProtocolError, match=r"expected 10 bytes, got 3"):
        fmt.decode_response(data[:3])
    with pytest.raises(protocol.ProtocolError, match=r"expected first byte 0x52, got 0x00"):
        fmt.decode_response(b"\x00" + data[1:])
    with pytest.raises(ValueError, match=r"scores\[0\]: 1024 does not fit 11 signed bits"):
        fmt.encode_response(0, [1024, 0, 0, 0])
    with pytest.raises(ValueError, match=r"codes: expected shape \(3,\), got \(2,\)"):
        fmt.encode_request(np.array([0, 1]))
    with pytest.raises(ValueError, match=r"n_outputs must be at most 256"):
        protocol.FrameFormat(input_features=3, input_bits=2, n_outputs=300, acc_width=11)


def test_board_top_verilog():
    from qnnfab.boards.top import board_top_verilog
    net = random_net.random_network(np.random.default_rng(2), features=[4, 5, 2], input_bits=2)
    text = board_top_verilog(net, [(5, 2), (2, 5)], board="icebreaker")
    assert "module qnnfab_top(" in text
    for port in ("input rx", "output tx", "output [1:0] leds"):
        assert port in text, f"{port!r} missing from the Verilog ports"
    with pytest.raises(ValueError, match=r"unknown board 'nope'"):
        board_top_verilog(net, board="nope")
