"""Stream driver and monitor for cocotb (2.x), the counterpart of :mod:`qnnfab.sim.stream_io`.

Ports are found by the names ``qnnfab.rtl.verilog.to_verilog`` gives a stream interface
``name``: ``name__payload``, ``name__valid``, ``name__ready``. One coroutine,
:func:`drive_streams`, drives every source and sink, one loop iteration per clock cycle::

    rng = random.Random(seed)
    offer = chance(valid_p, rng)
    source = StreamDriver(dut, "i", words, idle=lambda k: not offer(), what="input")
    sink = StreamMonitor(dut, "o", len(words), ready=chance(ready_p, rng), what="output")
    cycles, error = await drive_streams(dut.clk, [source], [sink], stall_limit=100_000)

Each cycle, after the rising edge, the sources' stalls are asked first, then the sinks', in
the order given (as in :func:`qnnfab.sim.stream_io.run_streams`), so stalls drawn from one
generator repeat for a seed. Transfers are sampled in the read-only phase just before the next
rising edge, so combinational ready paths have settled. Stream rules followed: a source holds
``valid`` and the payload until ``ready`` accepts it; ``valid`` never waits for ``ready``.
Cycles count from 1, the first rising edge after the call.
"""

from cocotb.triggers import ReadOnly, RisingEdge

from .stream_io import chance

__all__ = ["StreamDriver", "StreamMonitor", "drive_streams", "chance"]


class StreamDriver:
    """Offers integer ``words`` in order on the DUT's stream ``name`` (an input stream).

    ``idle(k) -> bool``, asked in each cycle word ``k`` waits to be offered, keeps ``valid``
    low that cycle when True. ``what`` names one word in messages (default ``name``).
    Members: ``sent`` (words accepted)."""

    def __init__(self, dut, name, words, *, idle=None, what=None):
        self.name = name
        self.what = what or name
        self.words = list(words)
        self.idle = idle
        self._payload = getattr(dut, f"{name}__payload")
        self._valid = getattr(dut, f"{name}__valid")
        self._ready = getattr(dut, f"{name}__ready")
        self.sent = 0
        self._offering = False
        self._valid_wire = False

    def reset(self):
        """Drive ``valid`` and the payload low (call while the DUT is in reset)."""
        self._valid.value = 0
        self._payload.value = 0

    @property
    def done(self):
        return self.sent == len(self.words)

    def _before(self):
        if not self._offering and self.sent < len(self.words) and \
                (self.idle is None or not self.idle(self.sent)):
            self._payload.value = self.words[self.sent]
            self._offering = True
        if self._offering != self._valid_wire:
            self._valid.value = int(self._offering)
            self._valid_wire = self._offering

    def _after(self):
        if self._offering and str(self._ready.value) == "1":
            self.sent += 1
            self._offering = False
            return True
        return False


class StreamMonitor:
    """Takes ``count`` words from the DUT's stream ``name`` (an output stream).

    ``ready(cycle) -> bool`` is ``ready`` in each cycle (None: always), asked every cycle of the
    run. ``on_transfer(n)`` is called with the number of words taken after each transfer.
    ``what`` names one word in messages (default ``name``). Members: ``words`` (integers, in
    order)."""

    def __init__(self, dut, name, count, *, ready=None, on_transfer=None, what=None):
        self.name = name
        self.what = what or name
        self.count = int(count)
        self.ready = ready
        self.on_transfer = on_transfer
        self._payload = getattr(dut, f"{name}__payload")
        self._valid = getattr(dut, f"{name}__valid")
        self._ready_port = getattr(dut, f"{name}__ready")
        self.words = []
        self._ready = None

    def reset(self):
        """Drive ``ready`` low (call while the DUT is in reset)."""
        self._ready_port.value = 0

    @property
    def done(self):
        return len(self.words) >= self.count

    def _before(self, cycle):
        r = self.ready is None or bool(self.ready(cycle))
        if r != self._ready:
            self._ready_port.value = int(r)
            self._ready = r

    def _after(self, cycle):
        """True on a transfer; raises ``ValueError`` with a message on X/Z payload bits."""
        if self._ready and str(self._valid.value) == "1":
            value = self._payload.value
            try:
                self.words.append(value.to_unsigned())
            except ValueError:
                raise ValueError(f"{self.what} {len(self.words)}: {self.name}__payload has "
                                 f"X/Z bits at cycle {cycle}: {value}") from None
            if self.on_transfer is not None:
                self.on_transfer(len(self.words))
            return True
        return False


async def drive_streams(clk, sources, sinks, *, stall_limit):
    """Run every source and sink until each sink has its count; returns ``(cycles, error)``:
    the cycle of the last sink transfer, and None or a message (X/Z bits on a payload, or no
    sink transfer for ``stall_limit`` cycles, naming how far each stream got)."""
    cycle = idle = last = 0
    while not all(s.done for s in sinks):
        await RisingEdge(clk)
        cycle += 1
        for s in sources:
            s._before()
        for s in sinks:
            s._before(cycle)
        await ReadOnly()
        for s in sources:
            s._after()
        moved = False
        try:
            for s in sinks:
                moved = s._after(cycle) or moved
        except ValueError as exc:
            return last, str(exc)
        if moved:
            last, idle = cycle, 0
        else:
            idle += 1
            if idle > stall_limit:
                got = " and ".join(f"{len(s.words)} of {s.count} {s.what}s" for s in sinks)
                sent = ", ".join(f"{s.sent} {s.what}s accepted" for s in sources)
                return last, (f"stalled: no output for {stall_limit} cycles after {got} "
                              f"({sent}) at cycle {cycle}")
    return last, None
