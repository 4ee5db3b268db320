"""The on-chip self-test: stored test vectors run through the network back to back, so the chip
itself measures its inferences per second (the UART would hide it: ~132 frames/s at 115200
baud) and counts the classes it got right.
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from qnnfab.rtl.argmax import argmax_layout

__all__ = ["SelfTest", "COUNTER_BITS", "expected_cycles"]

#: Width of the cycle counter (saturates: 2**32 - 1 cycles is 86 s at 50 MHz).
COUNTER_BITS = 32


def expected_cycles(n, latency, interval):
    """The cycles :class:`SelfTest` counts for ``n`` vectors through a core of ``latency`` and
    ``interval`` (:mod:`qnnfab.rtl.timing`): from the cycle the first vector is offered to the
    cycle the last output is taken, both included — the first output ``latency`` cycles after
    the first offer, one more every ``interval``."""
    return latency + (n - 1) * interval + 1


class SelfTest(wiring.Component):
    """Runs ``n`` stored input vectors through a network core as fast as it accepts them and
    counts the cycles and the outputs whose class equals the stored label.

    Parameters
    ----------
    codes : int array (n, features), the input codes (``input_bits`` each)
    labels : int array (n,), the expected class of each
    input_bits : int
    n_outputs, acc_width : the core's output (its :func:`~qnnfab.rtl.argmax.argmax_layout`)

    Interface
    ---------
    start : In(1)
        A one-cycle pulse starts a run (ignored while one runs).
    x : Out(stream.Signature(ArrayLayout(unsigned(input_bits), features)))
        To the core's input: vector ``k`` in order, valid whenever one is left.
    y : In(stream.Signature(argmax_layout(n_outputs, acc_width)))
        From the core's output; always ready while running (outputs are consumed at once).
    busy : Out(1)
        High from ``start`` to the last output.
    cycles : Out(COUNTER_BITS)
        Cycles of the last run, from the first vector offered to the last output taken, both
        included (:func:`expected_cycles`; saturating).
    correct : Out(16)
        Outputs of the last run whose class equals its label.

    Storage: the vectors and labels in two ROMs (block RAM, synchronous read ports whose
    address is the next index, so the word for index ``k`` is there when ``k`` is). Throughput:
    one vector per cycle offered; the core sets the pace.
    """

    def __init__(self, codes, labels, *, input_bits, n_outputs, acc_width):
        codes = [[int(c) for c in row] for row in codes]
        labels = [int(v) for v in labels]
        if not codes or len(codes) != len(labels):
            raise ValueError(f"SelfTest: expected n >= 1 vectors and as many labels, got "
                             f"{len(codes)} and {len(labels)}")
        if len(codes) >= 1 << 16:
            raise ValueError(f"SelfTest: at most {(1 << 16) - 1} vectors, got {len(codes)}")
        self.n, self.features, self.input_bits = len(codes), len(codes[0]), int(input_bits)
        top = (1 << self.input_bits) - 1
        if any(len(r) != self.features or min(r) < 0 or max(r) > top for r in codes):
            raise ValueError(f"SelfTest: every vector needs {self.features} codes in 0..{top}")
        if min(labels) < 0 or max(labels) >= n_outputs:
            raise ValueError(f"SelfTest: labels must lie in 0..{n_outputs - 1}")
        self._words = [sum(c << (k * self.input_bits) for k, c in enumerate(r)) for r in codes]
        self._labels = labels
        self.n_outputs = n_outputs
        super().__init__({
            "start": In(1),
            "x": Out(stream.Signature(data.ArrayLayout(unsigned(self.input_bits),
                                                       self.features))),
            "y": In(stream.Signature(argmax_layout(n_outputs, acc_width))),
            "busy": Out(1),
            "cycles": Out(COUNTER_BITS),
            "correct": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.n
        m.submodules.vectors = vectors = Memory(shape=self.features * self.input_bits,
                                                depth=n, init=self._words)
        m.submodules.labels = labels = Memory(shape=range(self.n_outputs), depth=n,
                                              init=self._labels)
        vec_rd, lab_rd = vectors.read_port(), labels.read_port()
        sent = Signal(range(n + 1))
        got = Signal(range(n + 1))
        sending = Signal()
        m.d.comb += sending.eq(self.busy & (sent < n))

        fire_in = self.x.valid & self.x.ready
        fire_out = self.y.valid & self.y.ready
        # Read addresses run one ahead: the word for `sent` (`got`) is on the read data
        # whenever `sent` (`got`) holds it.
        m.d.comb += [
            vec_rd.addr.eq(Mux(self.busy, Mux(fire_in, sent + 1, sent), 0)),
            lab_rd.addr.eq(Mux(self.busy, Mux(fire_out, got + 1, got), 0)),
            self.x.payload.eq(vec_rd.data),
            self.x.valid.eq(sending),
            self.y.ready.eq(self.busy),
        ]
        with m.If(self.busy):
            with m.If(self.cycles != (1 << COUNTER_BITS) - 1):
                m.d.sync += self.cycles.eq(self.cycles + 1)
            with m.If(fire_in):
                m.d.sync += sent.eq(sent + 1)
            with m.If(fire_out):
                m.d.sync += got.eq(got + 1)
                with m.If(self.y.payload.cls == lab_rd.data):
                    m.d.sync += self.correct.eq(self.correct + 1)
                with m.If(got == n - 1):
                    m.d.sync += self.busy.eq(0)
        with m.Elif(self.start):
            # The read ports show word 0 now (the addresses were 0 while idle).
            m.d.sync += [self.busy.eq(1), sent.eq(0), got.eq(0), self.cycles.eq(0),
                         self.correct.eq(0)]
        return m
