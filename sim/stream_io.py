"""Stream test harness for Amaranth's simulator (``lib.stream`` interfaces, async testbenches).

Two levels:

- :func:`stream_put` / :func:`stream_get`: one transfer, inside a testbench of your own.
- :class:`StreamSource` / :class:`StreamSink` and :func:`run_streams`: timed sources and sinks
  with optional stalls, all driven by **one** testbench coroutine, one loop iteration per clock
  cycle (one coroutine per stream costs about twice the simulation time). Cycles are counted
  from 0, the first cycle the testbench runs; a transfer's cycle is the cycle whose closing
  clock edge saw ``valid`` and ``ready`` both 1.

Stalls are callables, so the same harness serves seeded random stalls (:func:`chance`),
fixed gaps per item (:func:`gaps_per_item`) and anything else. Each cycle the sources are
asked first, then the sinks, in the order given -- so stalls drawn from one shared generator
repeat exactly for a seed. Stream rules followed: a source holds ``valid`` and the payload
until the transfer; ``valid`` never waits for ``ready``.

:func:`run_stream` is the one-input, one-output case used by the block tests::

    outs, t_in, t_out = run_stream(dut, items, n_out, seed=3, gap_p=0.4, ready_p=0.4)

The cocotb counterpart (same stall callables, same draw order) is
:mod:`qnnfab.sim.cocotb_streams`.
"""

import numpy as np

__all__ = ["stream_put", "stream_get", "chance", "gaps_per_item", "StreamSource", "StreamSink",
           "run_streams", "run_stream"]


async def stream_put(ctx, stream, payload):
    """Offer ``payload`` on ``stream`` (an interface the testbench drives) until accepted."""
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, payload)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream):
    """Accept one payload from ``stream`` (an interface the testbench reads) and return it."""
    ctx.set(stream.ready, 1)
    payload, = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


def _raw_value(payload):
    """A payload's value (a plain-shaped payload, a Signal, is its own)."""
    return payload.as_value() if hasattr(payload, "as_value") else payload


def chance(p, rng):
    """A callable (any arguments) that is True with probability ``p``, drawing
    ``rng.random()`` only when ``0 < p < 1`` (``p >= 1``: always True, ``p <= 0``: always
    False, no draw), so a run without stalls consumes no random numbers."""
    p = float(p)
    if p >= 1.0:
        return lambda *_: True
    if p <= 0.0:
        return lambda *_: False
    return lambda *_: rng.random() < p


def gaps_per_item(gaps):
    """An ``idle(k)`` callable for :class:`StreamSource` from ``gaps(k) -> int``: keep
    ``valid`` low for ``gaps(k)`` cycles before offering payload ``k`` (``gaps(k)`` is called
    once, in the first cycle payload ``k`` waits)."""
    state = {"k": None, "left": 0}

    def idle(k):
        if state["k"] != k:
            state["k"], state["left"] = k, int(gaps(k))
        if state["left"] > 0:
            state["left"] -= 1
            return True
        return False
    return idle


class StreamSource:
    """Offers ``payloads`` in order on ``stream``, an interface the testbench drives.

    Parameters
    ----------
    stream : ``stream.Interface`` (``valid``, ``ready``, ``payload``)
    payloads : sequence
        Values for ``stream.payload`` (anything ``ctx.set`` takes for its shape), or raw
        integers when ``raw``.
    idle : callable(k) -> bool, optional
        Asked in each cycle payload ``k`` waits to be offered (not while it is offered):
        True keeps ``valid`` low this cycle. None: offer at once.
    raw : bool
        Payloads are integers for ``stream.payload.as_value()``.

    Members
    -------
    offered : list of int
        The cycle each payload was first offered (``valid`` raised).
    accepted : list of int
        The cycle of each transfer.
    """

    def __init__(self, stream, payloads, *, idle=None, raw=False):
        self.stream = stream
        self.payloads = list(payloads)
        self.idle = idle
        self.raw = bool(raw)
        self.offered, self.accepted = [], []
        self._offering = False

    @property
    def done(self):
        return len(self.accepted) == len(self.payloads)

    def _payload_value(self):
        return _raw_value(self.stream.payload) if self.raw else self.stream.payload

    def _before(self, ctx, cycle, target):
        k = len(self.accepted)
        if self._offering or k == len(self.payloads):
            return
        if self.idle is not None and self.idle(k):
            return
        ctx.set(target, self.payloads[k])
        ctx.set(self.stream.valid, 1)
        self.offered.append(cycle)
        self._offering = True

    def _after(self, ctx, cycle, ready):
        if self._offering and ready:
            self.accepted.append(cycle)
            self._offering = False
            ctx.set(self.stream.valid, 0)


class StreamSink:
    """Takes ``count`` payloads from ``stream``, an interface the testbench reads.

    Parameters
    ----------
    stream : ``stream.Interface``
    count : int
        Payloads to take (the run ends when every sink has its count).
    ready : callable(cycle) -> bool, optional
        ``ready`` in each cycle (None: always ready). Asked every cycle of the run, also
        after the count is reached (so the draws of a shared generator do not depend on
        which sink finished first).
    hold : int
        Raise ``ready`` only once a payload has been offered for ``hold`` cycles without being
        taken (a consumer slower than one payload per cycle; 0: no such wait).
    raw : bool
        Record ``stream.payload.as_value()`` (integers) rather than the payload's value.
    on_transfer : callable(n), optional
        Called with the number of payloads taken after each transfer.

    Members
    -------
    payloads : list
        What was taken, in order.
    cycles : list of int
        The cycle of each transfer.
    """

    def __init__(self, stream, count, *, ready=None, hold=0, raw=False, on_transfer=None):
        self.stream = stream
        self.count = int(count)
        self.ready = ready
        self.hold = int(hold)
        self.raw = bool(raw)
        self.on_transfer = on_transfer
        self.payloads, self.cycles = [], []
        self._waited = 0
        self._ready = None

    @property
    def done(self):
        return len(self.payloads) >= self.count

    def _payload_value(self):
        return _raw_value(self.stream.payload) if self.raw else self.stream.payload

    def _before(self, ctx, cycle):
        r = self._waited >= self.hold and (self.ready is None or bool(self.ready(cycle)))
        if r != self._ready:
            ctx.set(self.stream.ready, r)
            self._ready = r

    def _after(self, ctx, cycle, valid, payload):
        """True when a transfer happened in ``cycle``."""
        if valid and self._ready:
            self.payloads.append(payload)
            self.cycles.append(cycle)
            self._waited = 0
            if self.on_transfer is not None:
                self.on_transfer(len(self.payloads))
            return True
        if valid:
            self._waited += 1
        return False


def run_streams(dut, sources, sinks, *, limit=None, what="run_streams"):
    """Simulate ``dut`` (clock period 10 ns) with one testbench driving every source and sink
    until each has finished; returns the cycle count, one past the last transfer on any sink
    (0 without one). ``limit`` (cycles) turns a hang into an ``AssertionError`` naming
    ``what`` and how far each stream got."""
    from amaranth.sim import Simulator

    sources, sinks = list(sources), list(sinks)
    last = {"cycle": -1}

    async def testbench(ctx):
        src_targets = [s._payload_value() for s in sources]
        signals = [s.stream.ready for s in sources]
        for s in sinks:
            signals += [s.stream.valid, s._payload_value()]
        n_src = len(sources)
        src_steps = list(zip(sources, src_targets, range(2, 2 + n_src)))
        sink_steps = [(s, 2 + n_src + 2 * j) for j, s in enumerate(sinks)]
        cycle = 0
        while not (all(s.done for s in sinks) and all(s.done for s in sources)):
            for s, target, _ in src_steps:
                s._before(ctx, cycle, target)
            for s, _ in sink_steps:
                s._before(ctx, cycle)
            sampled = await ctx.tick().sample(*signals)
            for s, _, j in src_steps:
                s._after(ctx, cycle, sampled[j])
            for s, j in sink_steps:
                if s._after(ctx, cycle, sampled[j], sampled[j + 1]):
                    last["cycle"] = cycle
            cycle += 1
            if limit is not None and cycle >= limit:
                got = ", ".join(f"{len(s.payloads)} of {s.count} taken" for s in sinks)
                sent = ", ".join(f"{len(s.accepted)} of {len(s.payloads)} sent"
                                 for s in sources)
                raise AssertionError(f"{what}: no end after {cycle} cycles ({got}; {sent})")
        for s in sinks:
            if s._ready:
                ctx.set(s.stream.ready, 0)

    if not all(s.done for s in sources + sinks):
        sim = Simulator(dut)
        sim.add_clock(1e-8)
        sim.add_testbench(testbench)
        sim.run()
    return last["cycle"] + 1


def run_stream(dut, items, n_out, *, seed, gap_p=0.0, ready_p=1.0, interval=1):
    """Offer ``items`` on ``dut.i``, take ``n_out`` payloads from ``dut.o``; returns
    ``(outputs array, input transfer cycles, output transfer cycles)``.

    Stalls: before each input, idle cycles while a draw is below ``gap_p`` (generator
    ``seed``); ``o.ready`` with probability ``ready_p`` (generator ``seed + 1``), and only
    once a payload has been offered for ``interval - 1`` cycles. A hang fails after a generous
    limit, with the seed in the message."""
    rng_in, rng_out = np.random.default_rng(seed), np.random.default_rng(seed + 1)
    source = StreamSource(dut.i, [[int(v) for v in item] for item in items],
                          idle=chance(gap_p, rng_in))
    sink = StreamSink(dut.o, n_out, ready=chance(ready_p, rng_out), hold=interval - 1)
    limit = 1000 + 20 * interval * (len(items) + n_out)
    run_streams(dut, [source], [sink], limit=limit, what=f"seed {seed}")
    outs = [[payload[j] for j in range(len(payload))] for payload in sink.payloads]
    return np.array(outs), source.accepted, sink.cycles
