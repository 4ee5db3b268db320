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
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

from . import protocol
from .uart import UARTRx, UARTTx, divisor_for

__all__ = ["BoardTop", "board_top_verilog", "pll_config"]


def pll_config(family, fin_hz, fout_hz):
    """PLL dividers for ``family`` ("ice40": SB_PLL40, "ecp5": EHXPLLL) producing the
    frequency nearest ``fout_hz`` from ``fin_hz`` within the PLL's VCO/PFD limits (the same
    searches as icepll/ecppll). Returns ``(params, actual_hz)``; ValueError if nothing lands
    within 1 % of the request."""
    best = None
    if family == "ice40":
        for divr in range(16):
            fpfd = fin_hz / (divr + 1)
            if not 10e6 <= fpfd <= 133e6:
                continue
            for divf in range(128):
                fvco = fpfd * (divf + 1)
                if not 533e6 <= fvco <= 1066e6:
                    continue
                for divq in range(1, 7):
                    fout = fvco / (1 << divq)
                    if best is None or abs(fout - fout_hz) < abs(best[1] - fout_hz):
                        filter_range = next(i for i, f in enumerate(
                            (17e6, 26e6, 44e6, 66e6, 101e6, float("inf")), start=1) if fpfd < f)
                        best = ({"DIVR": divr, "DIVF": divf, "DIVQ": divq,
                                 "FILTER_RANGE": filter_range}, fout)
    elif family == "ecp5":
        for clki_div in range(1, 129):
            fpfd = fin_hz / clki_div
            if not 3.125e6 <= fpfd <= 400e6:
                continue
            for clkfb_div in range(1, 81):
                fout = fpfd * clkfb_div
                if not 3.125e6 <= fout <= 400e6:
                    continue
                for clkop_div in range(1, 129):
                    if 400e6 <= fout * clkop_div <= 800e6:
                        break
                else:
                    continue
                if best is None or abs(fout - fout_hz) < abs(best[1] - fout_hz):
                    best = ({"CLKI_DIV": clki_div, "CLKFB_DIV": clkfb_div,
                             "CLKOP_DIV": clkop_div}, fout)
    else:
        raise ValueError(f"no PLL support for family {family!r} (expected ice40 or ecp5)")
    if best is None or abs(best[1] - fout_hz) > 0.01 * fout_hz:
        raise ValueError(f"{family} PLL cannot make {fout_hz / 1e6:g} MHz from "
                         f"{fin_hz / 1e6:g} MHz"
                         + (f" (nearest {best[1] / 1e6:.3f} MHz)" if best else ""))
    return best


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
    core : wiring.Component, optional
        Used instead of ``Network(network, folding)``; must have the same ``i``/``o`` stream
        members and the ``cycles_per_inference``, ``latency``, ``folding`` properties.

    Members
    -------
    rx : In(1), init 1
        UART receive line (simulation only; on a board the ``uart`` resource is used).
    tx : Out(1), init 1
        UART transmit line (simulation only).
    leds : Out(2)
        ``leds[0]`` toggles with each answer; ``leds[1]`` lights when a frame was dropped
        (bad code, timeout, framing error) and goes dark with the next answer. On a board they
        drive ``led`` 0 and 1.

    Latency: the answer's start bit begins about ``divisor / 2 + latency + 6`` cycles after the
    start of the last request byte's stop bit (``latency``: the network's). Throughput: one
    inference per request/response round trip, ``10 * divisor * (request_length +
    response_length)`` cycles at least, limited by the UART, not the network
    (``cycles_per_inference``).
    """

    def __init__(self, network, folding=None, *, clk_freq, baud, core=None):
        try:
            self.network = network
            self.frame = protocol.FrameFormat.from_network(network)
            self.clk_freq = float(clk_freq)
            self.baud = int(baud)
            self.divisor = divisor_for(self.clk_freq, self.baud)
            if core is None:
                from qnnfab.rtl.network import Network
                core = Network(network, folding=folding)
            # A learning core (LearningNetwork: ``i`` carries a label and a learn flag, and
            # its scores are the learner's, wider than the last layer's).
            self.learning = hasattr(core, "trace")
            if self.learning:
                score_shape = core.o.payload.shape()["scores"].shape.elem_shape
                self.frame = dataclasses.replace(self.frame, acc_width=score_shape.width)
        except Exception:
            self._MustUse__silence = True   # refused, not "created but never used"
            raise
        self.core = core
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "leds": Out(2),
        })

    @property
    def cycles_per_inference(self):
        if self.learning:
            return self.core.cycles_per_sample
        return self.core.cycles_per_inference

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
            for k in range(2):
                led = platform.request("led", k, dir="-")
                m.submodules[f"led{k}_buf"] = buf = io.Buffer("o", led)
                m.d.comb += buf.o.eq(leds[k])
            m.d.comb += self.leds.eq(leds)
        answered = Signal()
        error = Signal()
        m.d.comb += leds.eq(Cat(answered, error))

        # -- request: sync byte, then input_features codes, shifted into `vec` ----------------
        bits = fmt.input_bits
        vec = Signal(bits * fmt.input_features)
        count = Signal(range(max(fmt.input_features, fmt.response_length) + 1))
        timer = Signal(range(self.timeout_cycles + 1))
        byte = rx.o.payload
        got = rx.o.valid          # rx.o.ready is always high: bytes are consumed at once
        m.d.comb += rx.o.ready.eq(1)
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
        else:
            m.d.comb += core.i.payload.eq(vec)

        with m.FSM(name="frame"):
            with m.State("IDLE"):
                with m.If(got & (byte == protocol.REQUEST_SYNC)):
                    m.d.sync += [count.eq(0), timer.eq(0)]
                    if self.learning:
                        m.d.sync += learn.eq(0)
                    m.next = "RECEIVE"
                if self.learning:
                    with m.Elif(got & (byte == protocol.LEARN_SYNC)):
                        m.d.sync += [count.eq(0), timer.eq(0), learn.eq(1)]
                        m.next = "LABEL"
            if self.learning:
                with m.State("LABEL"):
                    with m.If(got):
                        m.d.sync += timer.eq(0)
                        with m.If(byte < fmt.n_outputs):
                            m.d.sync += label.eq(byte)
                            m.next = "RECEIVE"
                        with m.Else():
                            m.d.sync += error.eq(1)
                            m.next = "IDLE"
                    with m.Elif(timer == self.timeout_cycles):
                        m.d.sync += error.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += timer.eq(timer + 1)
            with m.State("RECEIVE"):
                with m.If(got):
                    m.d.sync += timer.eq(0)
                    with m.If(byte <= fmt.max_code):
                        m.d.sync += [vec.eq(Cat(vec[bits:], byte[:bits])), count.eq(count + 1)]
                        with m.If(count == fmt.input_features - 1):
                            m.next = "RUN"
                    with m.Else():
                        m.d.sync += [error.eq(1), count.eq(0)]
                        with m.If(byte != protocol.REQUEST_SYNC):
                            m.next = "IDLE"
                with m.Elif(timer == self.timeout_cycles):
                    m.d.sync += error.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += timer.eq(timer + 1)
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
        from amaranth.vendor import LatticeECP5Platform, LatticeICE40Platform
        if isinstance(platform, LatticeICE40Platform):
            family = "ice40"
        elif isinstance(platform, LatticeECP5Platform):
            family = "ecp5"
        else:
            raise ValueError(f"clk_freq {self.clk_freq / 1e6:g} MHz needs a PLL; no PLL support "
                             f"for {type(platform).__name__}")
        fin = platform.default_clk_frequency
        params, actual = pll_config(family, fin, self.clk_freq)
        if not math.isclose(actual, self.clk_freq, rel_tol=1e-6):
            raise ValueError(f"clk_freq {self.clk_freq / 1e6:g} MHz: the PLL makes "
                             f"{actual / 1e6:.6f} MHz; pass that (see pll_config)")
        clk_io = platform.request(platform.default_clk, dir="-")
        m.domains.sync = ClockDomain("sync")
        m.domains.por = ClockDomain("por", reset_less=True, local=True)
        lock = Signal()
        clk = Signal()
        if family == "ice40":
            m.submodules.pll = Instance(
                "SB_PLL40_PAD", p_FEEDBACK_PATH="SIMPLE",
                p_DIVR=params["DIVR"], p_DIVF=params["DIVF"], p_DIVQ=params["DIVQ"],
                p_FILTER_RANGE=params["FILTER_RANGE"],
                i_PACKAGEPIN=clk_io.io, i_RESETB=C(1), i_BYPASS=C(0),
                o_PLLOUTGLOBAL=clk, o_LOCK=lock)
        else:
            m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_io)
            div = params["CLKOP_DIV"]
            m.submodules.pll = Instance(
                "EHXPLLL",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
                p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=div, p_CLKOP_CPHASE=div - 1,
                p_CLKOP_FPHASE=0, p_CLKI_DIV=params["CLKI_DIV"], p_FEEDBK_PATH="CLKOP",
                p_CLKFB_DIV=params["CLKFB_DIV"],
                a_FREQUENCY_PIN_CLKI=f"{fin / 1e6:g}",
                a_FREQUENCY_PIN_CLKOP=f"{actual / 1e6:.6f}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
                a_MFG_GMCREF_SEL="2",
                i_CLKI=clk_buf.i, i_CLKFB=clk, i_RST=C(0), i_STDBY=C(0),
                i_PHASESEL0=C(0), i_PHASESEL1=C(0), i_PHASEDIR=C(1), i_PHASESTEP=C(1),
                i_PHASELOADREG=C(1), i_PLLWAKESYNC=C(0), i_ENCLKOP=C(0),
                o_CLKOP=clk, o_LOCK=lock)
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


def board_top_verilog(network, folding=None, *, board, name="qnnfab_top"):
    """Verilog of :class:`BoardTop` for ``board`` (its clock and baud), with plain ``rx``,
    ``tx``, ``leds``, ``clk``, ``rst`` ports (no pin constraints; builds use
    :func:`qnnfab.boards.build.build`)."""
    from .registry import get_board
    b = get_board(board)
    top = BoardTop(network, folding, clk_freq=b.clock_mhz * 1e6, baud=b.uart_baud)
    return verilog.convert(top, name=name, emit_src=False)
