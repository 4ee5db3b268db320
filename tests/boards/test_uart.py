"""UART rx/tx (8N1) in Amaranth's simulator, bit level, small divisors."""

import random

import pytest
from amaranth import Module
from amaranth.sim import Simulator

from qnnfab.boards.uart import UARTRx, UARTTx, divisor_for, serial_read, serial_write


def _run(dut, *testbenches):
    # All testbenches are critical and end by themselves: a background testbench still waiting
    # when the simulation stops is closed mid-await, which pytest reports as a warning.
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for tb in testbenches:
        sim.add_testbench(tb)
    sim.run()


@pytest.mark.parametrize("divisor", [4, 5, 7])
def test_rx_receives_bytes(divisor):
    seed = 10 + divisor
    rng = random.Random(seed)
    data = bytes([0x00, 0xFF, 0x55, 0xAA] + [rng.randrange(256) for _ in range(12)])
    dut = UARTRx(divisor=divisor)
    got = []

    async def sender(ctx):
        await ctx.tick().repeat(3)
        await serial_write(ctx, dut.rx, data, divisor=divisor)
        await ctx.tick().repeat(3 * divisor)

    async def receiver(ctx):
        ctx.set(dut.o.ready, 1)
        for _ in data:
            await ctx.tick().until(dut.o.valid)
            got.append(ctx.get(dut.o.payload))
            assert ctx.get(dut.error) == 0

    _run(dut, sender, receiver)
    assert bytes(got) == data, f"seed {seed}: sent {data.hex(' ')}, received {bytes(got).hex(' ')}"


@pytest.mark.parametrize("divisor", [4, 6])
def test_tx_sends_bytes(divisor):
    seed = 20 + divisor
    rng = random.Random(seed)
    data = bytes([0x00, 0xFF, 0x01, 0x80] + [rng.randrange(256) for _ in range(10)])
    dut = UARTTx(divisor=divisor)
    got = []

    async def sender(ctx):
        for byte in data:
            ctx.set(dut.i.payload, byte)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def receiver(ctx):
        for _ in data:
            got.append(await serial_read(ctx, dut.tx, divisor=divisor))

    _run(dut, sender, receiver)
    assert bytes(got) == data, f"seed {seed}: sent {data.hex(' ')}, received {bytes(got).hex(' ')}"


def test_tx_idles_high_and_bit_timing():
    divisor = 5
    dut = UARTTx(divisor=divisor)

    async def tb(ctx):
        for _ in range(4):
            assert ctx.get(dut.tx) == 1
            await ctx.tick()
        ctx.set(dut.i.payload, 0b1010_0011)
        ctx.set(dut.i.valid, 1)
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        line = []
        for _ in range(10 * divisor):
            line.append(ctx.get(dut.tx))
            await ctx.tick()
        expected = []
        for bit in [0, 1, 1, 0, 0, 0, 1, 0, 1, 1]:
            expected += [bit] * divisor
        assert line == expected
        assert ctx.get(dut.tx) == 1 and ctx.get(dut.i.ready) == 1

    _run(dut, tb)


def test_loopback_tx_to_rx():
    divisor = 4
    rng = random.Random(3)
    data = bytes(rng.randrange(256) for _ in range(24))
    m = Module()
    m.submodules.tx = tx = UARTTx(divisor=divisor)
    m.submodules.rx = rx = UARTRx(divisor=divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    got = []

    async def sender(ctx):
        for byte in data:
            ctx.set(tx.i.payload, byte)
            ctx.set(tx.i.valid, 1)
            await ctx.tick().until(tx.i.ready)
        ctx.set(tx.i.valid, 0)

    async def receiver(ctx):
        ctx.set(rx.o.ready, 1)
        while len(got) < len(data):
            await ctx.tick().until(rx.o.valid)
            got.append(ctx.get(rx.o.payload))

    _run(m, sender, receiver)
    assert bytes(got) == data, f"sent {data.hex(' ')}, received {bytes(got).hex(' ')}"


def test_rx_framing_error_glitch_and_break():
    divisor = 4
    dut = UARTRx(divisor=divisor)
    got, errors = [], []

    async def sender(ctx):
        await ctx.tick().repeat(5)
        # A byte with its stop bit low: dropped, error pulse.
        await serial_write(ctx, dut.rx, b"\x3c", divisor=divisor, stop_bit=0)
        # A glitch shorter than half a bit: no byte.
        ctx.set(dut.rx, 0)
        await ctx.tick()
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(4 * divisor)
        # A break (line low for 30 bit times): one error, no bytes.
        ctx.set(dut.rx, 0)
        await ctx.tick().repeat(30 * divisor)
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(2 * divisor)
        # Then a good byte still arrives.
        await serial_write(ctx, dut.rx, b"\xa5", divisor=divisor)
        await ctx.tick().repeat(3 * divisor)

    async def monitor(ctx):
        ctx.set(dut.o.ready, 1)
        for _ in range(60 * divisor):
            await ctx.tick()
            if ctx.get(dut.o.valid):
                got.append(ctx.get(dut.o.payload))
            if ctx.get(dut.error):
                errors.append(1)

    _run(dut, sender, monitor)
    assert got == [0xA5], f"received {got}"
    assert len(errors) == 2, f"expected 2 framing errors (bad stop bit, break), got {errors}"


def test_rx_holds_byte_until_ready_and_flags_overrun():
    """A second byte arriving while the first waits is dropped: the waiting payload is held."""
    divisor = 4
    dut = UARTRx(divisor=divisor)

    async def tb(ctx):
        await serial_write(ctx, dut.rx, b"\x11", divisor=divisor)
        await ctx.tick().repeat(2 * divisor)
        assert ctx.get(dut.o.valid) == 1 and ctx.get(dut.o.payload) == 0x11
        overrun = False
        for bit in [0, *((0x22 >> i) & 1 for i in range(8)), 1]:
            ctx.set(dut.rx, bit)
            for _ in range(divisor):
                await ctx.tick()
                overrun |= bool(ctx.get(dut.overrun))
        for _ in range(2 * divisor):
            await ctx.tick()
            overrun |= bool(ctx.get(dut.overrun))
        assert overrun
        assert ctx.get(dut.o.valid) == 1 and ctx.get(dut.o.payload) == 0x11
        ctx.set(dut.o.ready, 1)
        await ctx.tick()
        assert ctx.get(dut.o.valid) == 0

    _run(dut, tb)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rx_payload_is_stable_while_valid_and_not_ready(seed):
    """Stream rule: while ``valid & ~ready`` the payload does not change (and ``valid`` stays
    up) until the transfer, under a reader that is often slower than the line."""
    divisor = 4
    rng = random.Random(seed)
    data = bytes(rng.randrange(256) for _ in range(16))
    dut = UARTRx(divisor=divisor)
    checked, taken = [], []

    async def sender(ctx):
        await ctx.tick().repeat(3)
        await serial_write(ctx, dut.rx, data, divisor=divisor)
        await ctx.tick().repeat(40 * divisor)

    async def reader(ctx):
        held = None                      # the payload offered and not taken last cycle
        for _ in range((len(data) + 44) * 10 * divisor):
            ready = rng.random() < 0.02  # usually much slower than one byte per frame
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if held is not None:
                checked.append(held)
                assert valid, f"seed {seed}: valid fell before the transfer"
                assert payload == held, (f"seed {seed}: payload changed from 0x{held:02x} to "
                                         f"0x{payload:02x} while valid and not ready")
            if valid and ready:
                taken.append(payload)
            held = payload if valid and not ready else None

    _run(dut, sender, reader)
    assert checked, f"seed {seed}: the reader never stalled a valid byte"
    # Overrun drops bytes, never reorders or alters them: what was taken is a subsequence.
    rest = iter(data)
    assert taken and all(b in rest for b in taken), \
        f"seed {seed}: sent {data.hex(' ')}, took {bytes(taken).hex(' ')}"


def test_bad_parameters():
    with pytest.raises(ValueError, match=r"divisor must be at least 4 clock cycles per bit, not 3"):
        UARTRx(divisor=3)
    with pytest.raises(TypeError, match=r"divisor must be an integer .* not 'x'"):
        UARTTx(divisor="x")
    assert divisor_for(12e6, 115200) == 104
    assert divisor_for(25e6, 115200) == 217
    with pytest.raises(ValueError, match=r"too fast for a 1 MHz clock"):
        divisor_for(1e6, 921600)
    with pytest.raises(ValueError, match=r"error \(at most 2 %\)"):
        divisor_for(1e6, 180000)
