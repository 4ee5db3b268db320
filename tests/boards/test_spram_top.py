"""The board top with SPRAM layers in Amaranth's simulator: the SPRAM starts at zero, the
weights go in over the simulated UART (the 0x57 frame), then inferences match the golden
model bit for bit; a truncated load times out without wedging. The host side of the load
(protocol bytes, driver) against a stand-in board."""

import numpy as np
import pytest

from qnnfab import random_net
from qnnfab.boards import protocol
from qnnfab.boards.top import BoardTop
from qnnfab.boards.uart import serial_read
from qnnfab.rtl.network import Network

from .test_top import BAUD, CLK, DIVISOR, Session, _check, _simulate

FOLDING = [(2, 8), (3, 8), (2, 4)]


def _net(seed=11):
    return random_net.random_network(np.random.default_rng(seed), features=[16, 24, 12, 4],
                                     input_bits=2, hidden_bits=2, weight_kind="ternary")


def test_load_over_uart_then_infer_bit_exact():
    seed = 11
    net = _net(seed)
    rng = np.random.default_rng(seed)
    codes = random_net.random_inputs(rng, net, 3)
    top = BoardTop(net, FOLDING, clk_freq=CLK, baud=BAUD, weights_in="spram")
    words = Network(net, FOLDING, weights_in="spram").load_words()
    assert top.load_words == len(words) == 2 * 24 + 3 * 12 + 1 * 6   # blocks · depth
    s = Session(top)
    fmt = s.fmt
    results = {}

    async def read_byte(ctx, max_cycles):
        for _ in range(max_cycles):
            if ctx.get(top.tx) == 0:
                return await serial_read(ctx, top.tx, divisor=DIVISOR)
            await ctx.tick()
        return None

    async def bench(ctx):
        # Before any load the SPRAM holds zeros: the board answers, with the wrong scores.
        await s.send(ctx, fmt.encode_request(codes[0]))
        results["unloaded"] = await s.read_response(ctx, max_cycles=s.answer_wait())
        # A truncated load: the timeout drops it (error LED), no ack.
        frame = protocol.encode_load(words)
        await s.send(ctx, frame[:9])
        await ctx.tick().repeat(top.timeout_cycles + 20)
        assert await read_byte(ctx, 200) is None, "ack to a truncated load"
        assert ctx.get(top.leds) & 0b10, "error LED should light after a dropped load"
        # The whole load: one ack byte.
        await s.send(ctx, frame)
        ack = await read_byte(ctx, 40 * DIVISOR)
        assert ack == protocol.LOAD_ACK, f"expected ack 0x{protocol.LOAD_ACK:02x}, got {ack!r}"
        assert ctx.get(top.leds) == 0b00, "the ack toggles leds[0] and clears the error LED"
        for k, vec in enumerate(codes):
            await s.send(ctx, fmt.encode_request(vec))
            results[k] = await s.read_response(ctx, max_cycles=s.answer_wait())

    _simulate(top, bench)
    for k, vec in enumerate(codes):
        _check(net, vec, results[k], k, seed)
    with pytest.raises(AssertionError):
        _check(net, codes[0], results["unloaded"], 0, seed)


def test_top_without_spram_has_no_load_frame():
    top = BoardTop(_net(), FOLDING, clk_freq=CLK, baud=BAUD)
    assert top.load_words == 0
    assert "load" not in top.core.signature.members


def test_encode_load():
    assert protocol.encode_load([0x1234, 0, 0xFFFF]) == bytes([0x57, 0x34, 0x12, 0, 0, 0xFF,
                                                               0xFF])
    with pytest.raises(ValueError, match=r"words\[1\]: 65536 is not a 16-bit word"):
        protocol.encode_load([0, 65536])


class _LoadBoard:
    """A stand-in board that acks a complete load frame."""

    def __init__(self, n_words, *, ack=True):
        self.n, self.ack, self.got, self.out = n_words, ack, bytearray(), bytearray()

    def reset_input_buffer(self):
        self.out.clear()

    def write(self, data):
        self.got += data
        if self.ack and len(self.got) == 1 + 2 * self.n:
            self.out += b"\x00" + bytes([protocol.LOAD_ACK])

    def read(self, n):
        data, self.out[:] = bytes(self.out[:n]), self.out[n:]
        return data


def test_driver_load_weights():
    from qnnfab.boards.driver import LOAD_CHUNK, BoardTimeout, load_weights
    words = list(range(700))
    board = _LoadBoard(len(words))
    seen = []
    load_weights(board, words, progress=lambda done, total: seen.append((done, total)))
    assert bytes(board.got) == protocol.encode_load(words)
    total = 1 + 2 * len(words)
    assert seen == [(min(k + LOAD_CHUNK, total), total) for k in range(0, total, LOAD_CHUNK)]
    with pytest.raises(BoardTimeout, match=r"no ack \(0x41\) to the weight load"):
        load_weights(_LoadBoard(3, ack=False), [1, 2, 3], timeout=0.2)


def test_session_loads_what_the_build_report_says(tmp_path):
    import json

    from qnnfab.boards import session
    net = _net()
    report = {"board": "icebreaker", "weights_in": ["spram", "ebr", "spram"],
              "folding": [{"pe": pe, "simd": simd} for pe, simd in FOLDING],
              "uart": {"baud": 115200}}
    (tmp_path / "report.json").write_text(json.dumps(report))
    build = session.load_build(tmp_path, net)
    assert build.needs_load and build.folding == FOLDING
    words = Network(net, FOLDING, weights_in=["spram", "ebr", "spram"]).load_words()
    assert session.load_words(net, build) == words
    board = _LoadBoard(len(words))
    session.load_weights(board, net, build)
    assert bytes(board.got) == protocol.encode_load(words)
    # A block RAM build loads nothing.
    (tmp_path / "report.json").write_text(json.dumps({"board": "icebreaker"}))
    plain = session.load_build(tmp_path, net)
    assert not plain.needs_load and session.load_weights(_LoadBoard(0), net, plain) == 0.0
