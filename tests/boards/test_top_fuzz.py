"""BoardTop under random garbage (hypothesis): whatever arrives on the UART line — noise, sync
bytes, partial and over-long frames, framing errors, breaks, glitches, gaps — a silence of at
least the frame timeout followed by a valid frame must get the golden model's answer.

The scripted cases are in ``test_top.py::test_garbage_does_not_wedge``; this file draws the
line contents at random and lets hypothesis shrink a failure to the shortest garbage."""

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from qnnfab import random_net
from qnnfab.boards import protocol

from .test_top import DIVISOR, Session, _check, _simulate, _top

SEED = 31
NET = random_net.random_network(np.random.default_rng(SEED), features=[5, 6, 3], input_bits=2)
FMT = protocol.FrameFormat.from_network(NET)
SYNC = protocol.REQUEST_SYNC

codes = st.lists(st.integers(0, FMT.max_code), min_size=FMT.input_features,
                 max_size=FMT.input_features).map(np.array)
frame = codes.map(FMT.encode_request)
# Bytes likely to build (partial) frames: sync bytes, valid codes, out-of-range codes.
framish = st.lists(st.sampled_from([SYNC, SYNC, protocol.LEARN_SYNC, 0, 1, FMT.max_code,
                                    FMT.max_code + 1, 0xFF]), max_size=10).map(bytes)
chunks = st.one_of(
    st.tuples(st.just("bytes"), st.binary(max_size=12)),                 # noise
    st.tuples(st.just("bytes"), framish),                                  # near-frames
    st.tuples(st.just("bytes"), st.tuples(frame, st.binary(min_size=1, max_size=6))
              .map(lambda t: t[0] + t[1])),                                # over-long frame
    st.tuples(st.just("bytes"), frame.map(lambda f: f[:-1])),              # truncated frame
    st.tuples(st.just("framing"), st.integers(0, 255)),                    # stop bit low
    st.tuples(st.just("low"), st.integers(1, 30 * DIVISOR)),              # glitch or break
    st.tuples(st.just("idle"), st.integers(1, 20 * 10 * DIVISOR)),        # gap (some > timeout)
)


def _describe(garbage):
    parts = []
    for kind, value in garbage:
        if kind == "bytes":
            parts.append(value.hex(" ") or "(no bytes)")
        elif kind == "framing":
            parts.append(f"0x{value:02x} with a low stop bit")
        else:
            parts.append(f"{kind} {value} cycles")
    return "; ".join(parts) or "(nothing)"


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage=st.lists(chunks, max_size=6), final=codes)
@example(garbage=[("bytes", FMT.encode_request(np.zeros(5, np.int64)) + bytes([SYNC, 1, 2]))],
         final=np.array([3, 2, 1, 0, 3]))
@example(garbage=[("bytes", bytes([SYNC, 1])), ("low", 25 * DIVISOR), ("bytes", bytes([SYNC]))],
         final=np.array([1, 1, 0, 0, 2]))
def test_garbage_then_silence_then_frame_gets_golden_answer(garbage, final):
    top = _top(NET)
    s = Session(top)
    # Silence after the garbage: past the frame timeout, and long enough with the tx line idle
    # that any answer the garbage triggered has been sent in full.
    quiet = max(s.answer_wait(), top.timeout_cycles + 20)
    limit = 20 * quiet                   # a board still transmitting after this is wedged
    got = {}

    async def bench(ctx):
        for kind, value in garbage:
            if kind == "bytes":
                await s.send(ctx, value)
            elif kind == "framing":
                await s.send(ctx, bytes([value]), stop_bit=0)
            elif kind == "low":
                ctx.set(top.rx, 0)
                await ctx.tick().repeat(value)
                ctx.set(top.rx, 1)
            else:
                await ctx.tick().repeat(value)
        idle = waited = 0
        while idle < quiet:
            assert waited < limit, (f"tx line still busy {limit} cycles after the garbage "
                                    f"({_describe(garbage)}): the board is wedged")
            idle = idle + 1 if ctx.get(top.tx) else 0
            waited += 1
            await ctx.tick()
        await s.send(ctx, FMT.encode_request(final))
        got["response"] = await s.read_response(ctx, max_cycles=s.answer_wait())
        got["leds"] = ctx.get(top.leds)

    _simulate(top, bench)
    try:
        _check(NET, final, got["response"], 0, SEED)
    except AssertionError as exc:
        raise AssertionError(f"after garbage {_describe(garbage)}: {exc}") from None
    assert not got["leds"] & 0b10, (f"after garbage {_describe(garbage)}: the error LED is still "
                                    f"on after a good answer")
