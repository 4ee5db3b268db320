"""The board top: a network behind a UART (frame format: :mod:`qnnfab.boards.protocol`).

``BoardTop`` receives an input vector over the UART, runs it through
:class:`qnnfab.rtl.network.Network`, and sends back the class and the scores. It is the
design a bitstream is built from (:mod:`qnnfab.boards.build`) and what the UART simulation
tests drive.
"""

import dataclasses
import math

from amaranth import *
from amaranth.back import verilog
from amaranth.build import DiffPairs, Pins, ResourceError, Subsignal
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

from qnnfab.rtl._checks import mark_used

from . import protocol
from .families import FAMILIES, get_family
from .registry import get_board
from .uart import UARTRx, UARTTx, divisor_for

__all__ = ["BoardTop", "board_top_verilog", "board_leds", "pll_config"]


def pll_config(family, fin_hz, fout_hz):
    """PLL dividers for ``family`` (a name or :class:`~qnnfab.boards.families.Family`)
    producing the frequency nearest ``fout_hz`` from ``fin_hz`` within the PLL's limits (the
    family's :meth:`~qnnfab.boards.families.Family.pll_solve`). Returns
    ``(params, actual_hz)``; ValueError if nothing lands within 1 % of the request."""
    return get_family(family).pll_solve(fin_hz, fout_hz)


def _resource_pins(platform, resource):
    """The package pins of ``resource`` (connector pins resolved)."""
    pins = set()

    def walk(node):
        for item in node.ios:
            if isinstance(item, Subsignal):
                walk(item)
            elif isinstance(item, Pins):
                pins.update(item.map_names(platform._conn_pins, resource))
            elif isinstance(item, DiffPairs):
                pins.update(item.p.map_names(platform._conn_pins, resource))
                pins.update(item.n.map_names(platform._conn_pins, resource))
    walk(resource)
    return pins


def board_leds(platform, n):
    """The LEDs of ``platform`` for the board top's ``n`` LED signals, requested with
    ``dir="-"``: ``led`` 0, 1, ... while they exist, then, if fewer than ``n``, all channels of
    ``rgb_led`` 0, green first (``leds[0]`` shows answers, ``leds[1]``, red, errors; a channel
    past ``n`` is the caller's to switch off). An LED on a pin of ``uart`` 0 is left out (the
    Colorlight 5A-75B's UART transmits on its LED's pin): fewer, or none, may come back."""
    uart = set()
    try:
        uart = _resource_pins(platform, platform.lookup("uart", 0))
    except ResourceError:
        pass

    def free(name, number):
        try:
            resource = platform.lookup(name, number)
        except ResourceError:
            return None
        return resource if not _resource_pins(platform, resource) & uart else False
    leds = []
    number = 0
    while len(leds) < n:
        found = free("led", number)
        if found is None:
            break
        if found:
            leds.append(platform.request("led", number, dir="-"))
        number += 1
    if len(leds) < n and free("rgb_led", 0):
        rgb = platform.request("rgb_led", 0, dir="-")
        leds += [rgb.g, rgb.r, rgb.b]
    return leds


class BoardTop(wiring.Component):
    """A network behind a UART; see :mod:`qnnfab.boards.protocol` for the frames.

    Parameters
    ----------
    network : qnnfab.ir.Network
    folding : list of (PE, SIMD) per layer, or None for
        :func:`qnnfab.rtl.folding.auto_folding`.
    clk_freq : float
        Frequency of the ``sync`` domain in Hz.
    baud : int
        UART rate; ``round(clk_freq / baud)`` cycles per bit must be within 2 % (>= 4 cycles).
    style : str or list of str
        The layers' styles (``folded``, ``unrolled`` or one per layer,
        :func:`qnnfab.rtl.network.resolve_styles`) of the default core.
    core : wiring.Component, optional
        Used instead of ``Network(network, folding, style=style)``; must have the same
        ``i``/``o`` stream members and the ``interval``, ``latency``, ``folding`` properties.
    weights_in : str or list of str
        Where the default core's layers keep their weights (``"ebr"``, ``"spram"`` or one per
        layer, :func:`qnnfab.rtl.network.resolve_weights_in`). With SPRAM layers the top takes
        the load frame (0x57, :mod:`qnnfab.boards.protocol`) and the SPRAM starts empty (zero
        in simulation, unknown on the chip): load the weights before the first inference.
    input_buffer : bool
        The default core keeps its input vector in block RAM (``Network(input_buffer=True)``):
        each received code goes straight into the network's buffer instead of a register of
        ``input_features`` codes (no self-test then: its stored vectors are whole vectors).

    Members
    -------
    rx : In(1), init 1
        UART receive line (simulation only; on a board the ``uart`` resource is used).
    tx : Out(1), init 1
        UART transmit line (simulation only).
    leds : Out(2)
        ``leds[0]`` toggles with each answer; ``leds[1]`` lights when a frame was dropped
        (bad code, timeout, framing error) and goes dark with the next answer. On a board they
        drive ``led`` 0 and 1, or what the board has (:func:`board_leds`).

    Latency: the answer's start bit begins about ``divisor / 2 + latency + 7`` cycles after the
    start of the last request byte's stop bit (``latency``: the network's). Throughput: one
    inference per request/response round trip, ``10 * divisor * (request_length +
    response_length)`` cycles at least, limited by the UART, not the network
    (``cycles_per_inference``).
    """

    def __init__(self, network, folding=None, *, clk_freq, baud, core=None, selftest=None,
                 style="folded", weights_in="ebr", input_buffer=False):
        try:
            self.network = network
            self.frame = protocol.FrameFormat.from_network(network)
            self.clk_freq = float(clk_freq)
            self.baud = int(baud)
            self.divisor = divisor_for(self.clk_freq, self.baud)
            if core is None:
                from qnnfab.rtl.network import Network
                if isinstance(weights_in, str) and weights_in == "ebr":
                    core = Network(network, folding=folding, style=style,
                                   input_buffer=input_buffer)
                else:
                    core = Network(network, folding=folding, style=style,
                                   weights_in=weights_in, weights_loaded=False,
                                   input_buffer=input_buffer)
            # A learning core (LearningNetwork: ``i`` carries a label and a learn flag, and
            # its scores are the learner's, wider than the last layer's).
            self.learning = hasattr(core, "trace")
            if self.learning:
                score_shape = core.o.payload.shape()["scores"].shape.elem_shape
                self.frame = dataclasses.replace(self.frame, acc_width=score_shape.width)
            if selftest is not None:
                if self.learning:
                    raise ValueError("a learning board has no self-test (--selftest and "
                                     "--learn: give one)")
                from .selftest import SelfTest
                codes, labels = selftest
                selftest = SelfTest(codes, labels, input_bits=network.input_bits,
                                    n_outputs=self.frame.n_outputs,
                                    acc_width=self.frame.acc_width)
            #: The core takes the codes one by one into its block RAM buffer.
            self.input_buffer = bool(getattr(core, "input_buffer", False))
            if self.input_buffer and selftest is not None:
                raise ValueError("a self-test feeds whole stored vectors; a core with its "
                                 "input in block RAM takes codes one by one (keep the input "
                                 "in flip-flops for --selftest)")
        except Exception:
            mark_used(self)   # refused, not "created but never used"
            raise
        self.core = core
        self.selftest = selftest
        #: 16-bit words of the load frame (0: no SPRAM layers, no load frame).
        self.load_words = int(getattr(core, "spram_words", 0) or 0)
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "leds": Out(2),
        })

    @property
    def cycles_per_inference(self):
        """The core's ``interval`` (a learning core's: per learning sample), the report's
        ``cycles_per_inference``."""
        return self.core.interval

    @property
    def latency(self):
        return getattr(self.core, "latency", None)

    @property
    def folding(self):
        return self.core.folding

    @property
    def timeout_cycles(self):
        """Cycles of silence after which a half-received frame is dropped."""
        return protocol.TIMEOUT_BYTES * 10 * self.divisor

    def elaborate(self, platform):
        m = Module()
        fmt = self.frame
        m.submodules.core = core = self.core
        m.submodules.uart_rx = rx = UARTRx(divisor=self.divisor)
        m.submodules.uart_tx = tx = UARTTx(divisor=self.divisor)

        # -- clock: the board clock, or a PLL from it ----------------------------------------
        if platform is not None and not math.isclose(self.clk_freq,
                                                     platform.default_clk_frequency):
            self._elaborate_pll(m, platform)

        # -- pins ------------------------------------------------------------------------------
        if platform is None:
            m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx)]
            leds = self.leds
        else:
            uart = platform.request("uart", 0, dir="-")
            m.submodules.rx_buf = rx_buf = io.Buffer("i", uart.rx)
            m.submodules.tx_buf = tx_buf = io.Buffer("o", uart.tx)
            m.d.comb += [rx.rx.eq(rx_buf.i), tx_buf.o.eq(tx.tx)]
            leds = Signal(2)
            for k, led in enumerate(board_leds(platform, 2)):
                m.submodules[f"led{k}_buf"] = buf = io.Buffer("o", led)
                m.d.comb += buf.o.eq(leds[k] if k < 2 else 0)   # a spare RGB channel: off
            m.d.comb += self.leds.eq(leds)
        answered = Signal()
        error = Signal()
        m.d.comb += leds.eq(Cat(answered, error))

        # -- request: sync byte, then input_features codes, shifted into `vec` (or, with the
        # core's input buffer, passed to the core one by one) ------------------------------
        bits = fmt.input_bits
        vec = None if self.input_buffer else Signal(bits * fmt.input_features)
        count = Signal(range(max(fmt.input_features, fmt.response_length,
                                 protocol.SELFTEST_LENGTH) + 1))
        timer = Signal(range(self.timeout_cycles + 1))
        # rx.o.ready is always high: bytes are consumed at once. The received byte, its
        # valid and every test of it are registered (one cycle later): the test of a code
        # byte gates the shift of all input_features codes, and computed from the receiver's
        # register it was the iCEBreaker's critical path (22 ns into a global clock enable).
        m.d.comb += rx.o.ready.eq(1)
        byte, got = Signal(8), Signal()
        is_code = Signal()
        is_sync = {key: Signal(name=f"is_{key}") for key in ("request", "selftest", "learn")}
        if self.load_words:
            is_sync["load"] = Signal(name="is_load")
            m.d.sync += is_sync["load"].eq(rx.o.payload == protocol.LOAD_SYNC)
        is_label = Signal()
        m.d.sync += [byte.eq(rx.o.payload), got.eq(rx.o.valid),
                     is_code.eq(rx.o.payload <= fmt.max_code),
                     is_label.eq(rx.o.payload < fmt.n_outputs),
                     is_sync["request"].eq(rx.o.payload == protocol.REQUEST_SYNC),
                     is_sync["selftest"].eq(rx.o.payload == protocol.SELFTEST_SYNC),
                     is_sync["learn"].eq(rx.o.payload == protocol.LEARN_SYNC)]
        with m.If(rx.error):
            m.d.sync += error.eq(1)

        # -- response: sync byte, class byte, scores little-endian, read byte by byte straight
        # from the network's output, which holds its payload until it is acknowledged (after
        # the last byte): a byte multiplexer instead of a response shift register.
        nb = fmt.score_bytes
        payload = core.o.payload
        cls_byte = Signal(8)
        m.d.comb += cls_byte.eq(payload.cls)
        fields = [C(protocol.RESPONSE_SYNC, 8), cls_byte]
        for k in range(fmt.n_outputs):
            ext = Signal(signed(8 * nb), name=f"score{k}_ext")
            m.d.comb += ext.eq(payload.scores[k])
            fields.append(ext)
        resp = Cat(*fields)
        resp_bytes = Array(resp[8 * k:8 * (k + 1)] for k in range(fmt.response_length))
        m.d.comb += tx.i.payload.eq(resp_bytes[count])
        if self.learning:
            label = Signal(8)
            learn = Signal()
            m.d.comb += [core.i.payload.x.eq(vec), core.i.payload.label.eq(label),
                         core.i.payload.learn.eq(learn), core.trace.ready.eq(1)]
        elif self.input_buffer:
            # Codes go into the core's buffer as they arrive; outside RECEIVE (and on a bad
            # code) the buffer drops a half-received vector.
            m.d.comb += core.i.payload.eq(byte[:bits])
            restart = Signal(init=1)
            m.d.comb += core.restart.eq(restart)
        else:
            m.d.comb += core.i.payload.eq(vec)

        if self.load_words:
            word = Signal(range(self.load_words + 1))
            high, low, load_en = Signal(), Signal(8), Signal()
            m.d.sync += load_en.eq(0)
            m.d.comb += core.load.en.eq(load_en)

        test = self.selftest
        if test is not None:
            m.submodules.selftest = test
            answer = Cat(C(protocol.SELFTEST_RESPONSE_SYNC, 8), C(test.n, 16), test.correct,
                         test.cycles)
            answer_bytes = Array(answer[8 * k:8 * (k + 1)]
                                 for k in range(protocol.SELFTEST_LENGTH))

        def silence():
            # After ``with m.If(got)`` in a state that waits for the next byte of a frame:
            # the timeout drops the frame (error LED); until then the silence is counted.
            with m.Elif(timer == self.timeout_cycles):
                m.d.sync += error.eq(1)
                m.next = "IDLE"
            with m.Else():
                m.d.sync += timer.eq(timer + 1)

        with m.FSM(name="frame"):
            with m.State("IDLE"):
                with m.If(got & is_sync["request"]):
                    m.d.sync += [count.eq(0), timer.eq(0)]
                    if self.learning:
                        m.d.sync += learn.eq(0)
                    m.next = "RECEIVE"
                if test is not None:
                    with m.Elif(got & is_sync["selftest"]):
                        m.d.comb += test.start.eq(1)
                        m.next = "TEST"
                if self.learning:
                    with m.Elif(got & is_sync["learn"]):
                        m.d.sync += [count.eq(0), timer.eq(0), learn.eq(1)]
                        m.next = "LABEL"
                if self.load_words:
                    with m.Elif(got & is_sync["load"]):
                        m.d.sync += [word.eq(0), high.eq(0), timer.eq(0)]
                        m.next = "LOAD"
            if self.load_words:
                # Weight words, little-endian, written one per two bytes (registered).
                with m.State("LOAD"):
                    with m.If(got):
                        m.d.sync += [timer.eq(0), high.eq(~high)]
                        with m.If(~high):
                            m.d.sync += low.eq(byte)
                        with m.Else():
                            m.d.sync += [core.load.addr.eq(word),
                                         core.load.data.eq(Cat(low, byte)),
                                         load_en.eq(1), word.eq(word + 1)]
                            with m.If(word == self.load_words - 1):
                                m.next = "LOAD_ACK"
                    silence()
                with m.State("LOAD_ACK"):
                    m.d.comb += [tx.i.payload.eq(protocol.LOAD_ACK), tx.i.valid.eq(1)]
                    with m.If(tx.i.ready):
                        m.d.sync += [answered.eq(~answered), error.eq(0)]
                        m.next = "IDLE"
            if test is not None:
                # The stored vectors drive the core; its outputs go to the counter.
                with m.State("TEST"):
                    m.d.comb += [core.i.payload.eq(test.x.payload),
                                 core.i.valid.eq(test.x.valid),
                                 test.x.ready.eq(core.i.ready),
                                 test.y.payload.eq(core.o.payload),
                                 test.y.valid.eq(core.o.valid),
                                 core.o.ready.eq(test.y.ready)]
                    with m.If(~test.busy):
                        m.d.sync += count.eq(0)
                        m.next = "TEST_SEND"
                with m.State("TEST_SEND"):
                    m.d.comb += [tx.i.payload.eq(answer_bytes[count]), tx.i.valid.eq(1)]
                    with m.If(tx.i.ready):
                        m.d.sync += count.eq(count + 1)
                        with m.If(count == protocol.SELFTEST_LENGTH - 1):
                            m.d.sync += [answered.eq(~answered), error.eq(0)]
                            m.next = "IDLE"
            if self.learning:
                with m.State("LABEL"):
                    with m.If(got):
                        m.d.sync += timer.eq(0)
                        with m.If(is_label):
                            m.d.sync += label.eq(byte)
                            m.next = "RECEIVE"
                        with m.Else():
                            m.d.sync += error.eq(1)
                            m.next = "IDLE"
                    silence()
            with m.State("RECEIVE"):
                if self.input_buffer:
                    m.d.comb += restart.eq(0)
                with m.If(got):
                    m.d.sync += timer.eq(0)
                    with m.If(is_code):
                        if self.input_buffer:
                            # A bank is free: the last vector was released before its answer.
                            m.d.comb += core.i.valid.eq(1)
                            m.d.sync += count.eq(count + 1)
                            with m.If(count == fmt.input_features - 1):
                                m.next = "WAIT"
                        else:
                            m.d.sync += [vec.eq(Cat(vec[bits:], byte[:bits])),
                                         count.eq(count + 1)]
                            with m.If(count == fmt.input_features - 1):
                                m.next = "RUN"
                    with m.Else():
                        if self.input_buffer:
                            m.d.comb += restart.eq(1)
                        m.d.sync += [error.eq(1), count.eq(0)]
                        with m.If(~is_sync["request"]):
                            m.next = "IDLE"
                silence()
            with m.State("RUN"):
                m.d.comb += core.i.valid.eq(1)
                with m.If(core.i.ready):
                    m.next = "WAIT"
            with m.State("WAIT"):
                with m.If(core.o.valid):
                    m.d.sync += count.eq(0)
                    m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += tx.i.valid.eq(1)
                with m.If(tx.i.ready):
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == fmt.response_length - 1):
                        m.d.comb += core.o.ready.eq(1)
                        m.d.sync += [answered.eq(~answered), error.eq(0)]
                        m.next = "IDLE"
        return m

    def _elaborate_pll(self, m, platform):
        """Drive the ``sync`` domain from a PLL at ``clk_freq`` (reset until it locks, then
        15 µs more: iCE40 block RAMs read as zero for ~3 µs after configuration)."""
        family = next((f for f in FAMILIES.values() if isinstance(platform, f.vendor_platform)),
                      None)
        if family is None:
            raise ValueError(f"clk_freq {self.clk_freq / 1e6:g} MHz needs a PLL; no PLL support "
                             f"for {type(platform).__name__}")
        fin = platform.default_clk_frequency
        params, actual = family.pll_solve(fin, self.clk_freq)
        if not math.isclose(actual, self.clk_freq, rel_tol=1e-6):
            raise ValueError(f"clk_freq {self.clk_freq / 1e6:g} MHz: the PLL makes "
                             f"{actual / 1e6:.6f} MHz; pass that (see pll_config)")
        clk_io = platform.request(platform.default_clk, dir="-")
        m.domains.sync = ClockDomain("sync")
        m.domains.por = ClockDomain("por", reset_less=True, local=True)
        clk, lock = family.pll_instance(m, clk_io, params, fin, actual, platform=platform)
        platform.add_clock_constraint(clk, actual)
        delay = int(15e-6 * actual)
        timer = Signal(range(delay + 1))
        ready = Signal()
        m.d.comb += [ClockSignal("sync").eq(clk), ClockSignal("por").eq(clk)]
        with m.If(~lock):
            m.d.por += [timer.eq(0), ready.eq(0)]
        with m.Elif(timer == delay):
            m.d.por += ready.eq(1)
        with m.Else():
            m.d.por += timer.eq(timer + 1)
        m.d.comb += ResetSignal("sync").eq(~ready)


def board_top_verilog(network, folding=None, *, board, name="qnnfab_top", style="folded",
                      weights_in="ebr", input_buffer=False):
    """Verilog of :class:`BoardTop` for ``board`` (its clock and baud), with plain ``rx``,
    ``tx``, ``leds``, ``clk``, ``rst`` ports (no pin constraints; builds use
    :func:`qnnfab.boards.build.build`); ``style`` and ``weights_in`` as :class:`BoardTop`'s
    (SPRAM layers are memory models here, which Yosys may map to EBR or logic), and
    ``input_buffer``."""
    b = get_board(board)
    top = BoardTop(network, folding, clk_freq=b.clock_mhz * 1e6, baud=b.uart_baud,
                   style=style, weights_in=weights_in, input_buffer=input_buffer)
    return verilog.convert(top, name=name, emit_src=False)
