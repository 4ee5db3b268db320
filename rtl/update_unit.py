"""The weight-update datapath of the on-chip learner: one input index, ``n_lanes`` lanes.

For input ``i`` and each lane ``j`` (:mod:`qnnfab.spec.learn_rule` is the spec)::

    d      = (q_j · v_i) >> lr_shift            q_j = ±2**exp or 0; v_i the activation value
    m      = sat(decay(M_j) - d, momentum_bits)  M_j = ±2**e or 0: the stored logq(momentum)
    w_new  = sat(w_j + m, weight_bits)
    M_new  = logq(m)                             stored again as a code

The momentum is stored as a code (:func:`momentum_code_layout`: exponent, sign, non-zero
flag; 6 bits for the default 16-bit momentum) because the rule only ever reads ``logq`` of it
(:mod:`qnnfab.spec.learn_rule`): ``decay(M)`` of a stored code is a decoder (no leading-one
search on the way in), and the leading one is found once, on the way out.

Built from zero tests of the momentum's upper bits (``logq``), a barrel shifter
(``v << exp``), one adder per sum and saturation: no ``*`` anywhere (Yosys would map a
``$mul`` to a DSP block), and with the default pipeline no more than one carry chain or a
few LUT levels between registers.

* ``q_j · v_i`` is ``±(|v_i| << exp)``: a barrel shift of the activation's magnitude (1 for a
  ±1 input) by the error's exponent, negated when exactly one of ``q_j`` and ``v_i`` is
  negative. The exponent is clamped to :attr:`LearnRule.max_shift
  <qnnfab.spec.learn_rule.LearnRule.max_shift>` (any larger exponent saturates the momentum
  the same way), so the shifter is ``in_bits + momentum_bits + lr_shift`` bits wide.
* ``>> lr_shift`` is an arithmetic (floor) shift by a constant: wiring.
* ``decay(M)`` of the stored ``±2**e`` is ``±2**(e - momentum_decay)`` (0 below ``2**0``):
  each bit of ``+2**E`` and of ``-2**E`` (ones from bit ``E`` up) is a comparison of the
  small exponent with a constant: no adder, no chain.
* ``logq(m)``: the exponent is the position of ``|m|``'s leading one; with ``"nearest"``
  rounding ``|m|`` is also compared with ``ceil(sqrt(2)·2**e)`` (a constant chosen by the
  leading one) and the exponent raised by one when it is not smaller.

The helpers :func:`leading_one`, :func:`one_hot_index`, :func:`logq_exponent` and
:func:`saturate` are shared with :class:`~qnnfab.rtl.learner.OnlineLearner`.

Simulation speed: Amaranth's simulator re-runs a module's whole combinational function once
per delta cycle, and every intermediate signal on a path adds one; each lane is therefore
its own small module, and its registers are only clocked (``en``) during an update pass.
"""

import operator

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from qnnfab.spec.learn_rule import ROUNDINGS, LearnRule, sqrt2_threshold

from . import timing
from ._checks import quiet_on_error

__all__ = ["UpdateUnit", "q_layout", "q_exp_width", "momentum_code_layout",
           "encode_momentum", "decode_momentum", "leading_one", "one_hot_index",
           "logq_exponent", "saturate"]


def q_exp_width(rule):
    """Bits of the error exponent the update unit takes: enough for ``0 .. rule.max_shift``."""
    return max(1, rule.max_shift.bit_length())


def q_layout(rule):
    """The layout of one lane's quantized error ``q = logq(e)``: ``exp`` (the power of two),
    ``neg`` (``q < 0``), ``nz`` (``q != 0``; ``exp`` and ``neg`` are ignored when 0)."""
    return data.StructLayout({"exp": unsigned(q_exp_width(rule)), "neg": unsigned(1),
                              "nz": unsigned(1)})


def momentum_code_layout(rule):
    """The layout of one stored momentum ``M = logq(m)``: ``exp`` (``|M| = 2**exp``), ``neg``
    (``M < 0``), ``nz`` (``M != 0``; ``exp`` and ``neg`` are 0 when it is 0):
    :attr:`LearnRule.momentum_code_bits <qnnfab.spec.learn_rule.LearnRule.momentum_code_bits>`
    bits."""
    return data.StructLayout({"exp": unsigned(rule.momentum_exp_bits), "neg": unsigned(1),
                              "nz": unsigned(1)})


def encode_momentum(value, rule):
    """The code (an int, :func:`momentum_code_layout` packed) of the stored momentum
    ``logq(value)`` (any integer in the rule's range; it is quantized first)."""
    from qnnfab.spec.learn_rule import logq
    stored = int(logq(np.array([int(value)]), rule.rounding)[0])
    if stored == 0:
        return 0
    exp = abs(stored).bit_length() - 1
    e_bits = rule.momentum_exp_bits
    return exp | (int(stored < 0) << e_bits) | (1 << (e_bits + 1))


def decode_momentum(code, rule):
    """The stored momentum (an int, ``±2**exp`` or 0) of a code."""
    e_bits = rule.momentum_exp_bits
    exp, neg, nz = code & ((1 << e_bits) - 1), (code >> e_bits) & 1, (code >> (e_bits + 1)) & 1
    return 0 if not nz else (-(1 << exp) if neg else 1 << exp)


def leading_one(x):
    """The bits of ``x``'s leading one, a list of 1-bit values: bit ``k`` is ``x[k]`` and no
    bit above it set (all 0 for 0). Each bit is its own small expression (``x[k]`` and a
    zero test of the bits above), not one link of a chain: Yosys builds the same logic, and
    Amaranth's simulator evaluates it without a delta cycle per bit."""
    n = len(x)
    return [x[k] & (x[k + 1:] == 0) if k + 1 < n else x[k] for k in range(n)]


def one_hot_index(bits):
    """The index of the set bit among ``bits`` (a list of 1-bit values, at most one set; 0
    for none): an OR over the set bit's index."""
    width = max(1, (len(bits) - 1).bit_length())
    value = Const(0, width)
    for k in range(1, len(bits)):
        value = value | Mux(bits[k], k, 0)
    return value


def _round_up(m, mag, ones, rounding, name):
    """``"nearest"``: 1 when ``mag >= ceil(sqrt(2)·2**e)`` for its leading one ``2**e``."""
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {', '.join(map(repr, ROUNDINGS))}, "
                         f"not {rounding!r}")
    if rounding == "floor" or len(mag) < 2:
        return Const(0, 1)
    # The threshold of the leading one's position, selected by the one-hot (AND-OR); e = 0
    # never rounds up (|x| = 1 < sqrt 2).
    thr = Const(0, len(mag))
    for e in range(1, len(mag)):
        thr = thr | Mux(ones[e], sqrt2_threshold(e), 0)
    up = Signal(name=f"{name}_up")
    m.d.comb += up.eq((mag[1:] != 0) & (mag >= thr))
    return up


def logq_exponent(m, mag, rounding, *, name="logq"):
    """The exponent of ``logq(x)`` of the unsigned magnitude ``mag`` (a signal), 0 for 0:
    the leading one's index, plus one where ``"nearest"`` rounds up; a signal."""
    ones = leading_one(mag)
    up = _round_up(m, mag, ones, rounding, name)
    exp = Signal(range(len(mag) + 1), name=f"{name}_exp")
    m.d.comb += exp.eq(one_hot_index(ones) + up)
    return exp


def saturate(value, bits):
    """``value`` (a value; unsigned ones are taken as they are) clamped to the ``bits``-bit
    two's-complement range, as an expression. No comparators: ``value`` fits iff its bits
    from ``bits - 1`` up are all copies of the sign; otherwise the result is the extreme of
    the sign, ``0111..1`` or ``1000..0``."""
    if not value.shape().signed:
        value = Cat(value, Const(0, 1)).as_signed()
    if len(value) <= bits:
        return value
    top = value[bits - 1:]
    fits = (top == 0) | (top == (1 << len(top)) - 1)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return Mux(fits, value[:bits].as_signed(), Mux(value[-1], lo, hi))


class UpdateUnit(wiring.Component):
    """The update of one input index's weights and momenta, ``n_lanes`` lanes at once.

    Parameters
    ----------
    n_lanes : int
        Lanes updated together (the learner's ``lanes``).
    in_bits : int
        Bits of the activation code ``v`` (1: ±1).
    rule : qnnfab.spec.learn_rule.LearnRule
    pipelined : bool
        Four register stages (default), each holding at most one carry chain and a few LUT
        levels: ``decay(M)`` (a decoder) and ``-d``; ``m = sat(decay(M) - d)``;
        ``w_new = sat(w + m)`` and ``|m|``; ``logq(m)``'s code (leading one). Without:
        purely combinational.

    Members
    -------
    w : In(ArrayLayout(signed(weight_bits), n_lanes))
    m : In(ArrayLayout(momentum_code_layout(rule), n_lanes))
        Each lane's stored momentum code.
    q : In(ArrayLayout(q_layout(rule), n_lanes))
        Each lane's ``logq(e)``; an exponent above ``rule.max_shift`` acts as ``max_shift``.
    v : In(unsigned(in_bits))
        The input's activation code.
    en : In(1, init=1)
        Clock enable of every pipeline register (ignored without a pipeline).
    w_new : Out(ArrayLayout(signed(weight_bits), n_lanes))
    m_new : Out(ArrayLayout(momentum_code_layout(rule), n_lanes))
        The code to store, ``logq(m)``.
    m_value : Out(ArrayLayout(signed(momentum_bits + 1), n_lanes))
        The value of ``m_new`` (``±2**exp`` or 0), for a trace; unused in a bitstream, it
        costs nothing there.

    Latency: :attr:`latency` enabled cycles from inputs to outputs (4, or 0 when not
    pipelined). Throughput: one set of inputs per enabled cycle.
    """

    @quiet_on_error
    def __init__(self, *, n_lanes, in_bits, rule, pipelined=True):
        self.n_lanes = operator.index(n_lanes)
        self.in_bits = operator.index(in_bits)
        if self.n_lanes < 1:
            raise ValueError(f"n_lanes must be >= 1, not {self.n_lanes}")
        if not 1 <= self.in_bits <= 8:
            raise ValueError(f"in_bits must be in 1..8, not {self.in_bits}")
        if not isinstance(rule, LearnRule):
            raise TypeError(f"rule must be a LearnRule, not {rule!r}")
        self.rule = rule
        self.pipelined = bool(pipelined)
        wl = data.ArrayLayout(signed(rule.weight_bits), self.n_lanes)
        ml = data.ArrayLayout(momentum_code_layout(rule), self.n_lanes)
        super().__init__({
            "w": In(wl), "m": In(ml),
            "q": In(data.ArrayLayout(q_layout(rule), self.n_lanes)),
            "v": In(unsigned(self.in_bits)),
            "en": In(1, init=1),
            "w_new": Out(wl), "m_new": Out(ml),
            "m_value": Out(data.ArrayLayout(signed(rule.momentum_bits + 1), self.n_lanes)),
        })

    @property
    def latency(self):
        """Enabled cycles from inputs to outputs: 4 pipelined, else 0
        (:func:`qnnfab.rtl.timing.update_unit`)."""
        return timing.update_unit(self.pipelined).latency

    @property
    def shift_width(self):
        """Bits of the barrel shifter's output, ``|v| << exp``."""
        vbits = 1 if self.in_bits == 1 else self.in_bits
        return vbits + self.rule.max_shift

    def elaborate(self, platform):
        m = Module()
        for j in range(self.n_lanes):
            # One module per lane: Amaranth's simulator re-runs a module's combinational code
            # once per delta cycle, so small modules simulate faster; the hardware is the same.
            lane = _Lane(self.rule, self.in_bits, self.shift_width, self.pipelined)
            m.submodules[f"lane{j}"] = lane
            m.d.comb += [lane.w.eq(self.w[j]), lane.m.eq(self.m[j]), lane.q.eq(self.q[j]),
                         lane.v.eq(self.v), lane.en.eq(self.en),
                         self.w_new[j].eq(lane.w_new), self.m_new[j].eq(lane.m_new),
                         self.m_value[j].eq(lane.m_value)]
        return m


def _power_of_two(m, exp, neg, nz, width, shift, name):
    """``±2**(exp - shift)`` (0 when ``nz`` is low or ``exp < shift``) as a ``width``-bit
    signed value: each bit a comparison of the small ``exp`` with a constant (``+2**E`` has bit
    ``j`` iff ``E == j``; ``-2**E`` has the bits from ``E`` up)."""
    valid = Signal(name=f"{name}_valid")
    m.d.comb += valid.eq(nz & (exp >= shift) if shift else nz)
    pos = [exp == j + shift for j in range(width)]
    ones = [exp <= j + shift for j in range(width)]
    value = Mux(neg, Cat(*[b & valid for b in ones]).as_signed(),
                Cat(*[b & valid for b in pos]).as_signed())
    return value


class _Lane(wiring.Component):
    """One lane of :class:`UpdateUnit` (the same members, for one lane)."""

    def __init__(self, rule, in_bits, width, pipelined):
        self.rule, self.in_bits, self.width, self.pipelined = rule, in_bits, width, pipelined
        code = momentum_code_layout(rule)
        super().__init__({
            "w": In(signed(rule.weight_bits)), "m": In(code),
            "q": In(q_layout(rule)), "v": In(in_bits), "en": In(1),
            "w_new": Out(signed(rule.weight_bits)), "m_new": Out(code),
            "m_value": Out(signed(rule.momentum_bits + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        rule, width, q = self.rule, self.width, self.q
        bm, s = rule.momentum_bits, rule.lr_shift

        def stage(value, name):
            """A pipeline register (enabled by ``en``) holding ``value``, or ``value`` itself
            when not pipelined (a signal, so shared terms are computed once)."""
            sig = Signal(value.shape(), name=name)
            if self.pipelined:
                with m.If(self.en):
                    m.d.sync += sig.eq(value)
            else:
                m.d.comb += sig.eq(value)
            return sig

        # -- stage A: L = decay(M) from the stored code, and -d from q and v ------------------
        if self.in_bits == 1:
            vmag, vneg = Const(1, 1), ~self.v[0]   # code 1 is +1, code 0 is -1
        else:
            vmag, vneg = self.v, Const(0, 1)
        exp = q.exp
        if (1 << len(q.exp)) - 1 > rule.max_shift:
            exp = Mux(q.exp > rule.max_shift, rule.max_shift, q.exp)
        # |g| = |v| << exp (0 for a zero error), g negative when q and v differ in sign.
        gmag = (Mux(q.nz, vmag, 0) << exp)[:width]
        gneg = q.neg ^ vneg
        # d = floor(g / 2**s). For g >= 0, -d = -gh = ~gh + 1; for g < 0,
        # -d = ceil(|g| / 2**s) = gh + [low bits != 0]: one adder later, L + (±gh) + carry.
        gh = gmag[s:] if s < width else Const(0, 1)
        low = (gmag[:s] != 0) if s else Const(0, 1)
        minus_d = stage(Mux(gneg, gh, ~Cat(gh, Const(0, 1)).as_signed()), "minus_d_a")
        carry = stage(Mux(gneg, low, 1), "carry_a")
        # |M| <= 2**(bm-1), so decay(M) fits bm + 1 signed bits.
        lq = stage(_power_of_two(m, self.m.exp, self.m.neg, self.m.nz, bm + 1,
                                 rule.momentum_decay, "decay"), "lq_a")
        w_a = stage(self.w, "w_a")

        # -- stage B: m = sat(L - d) -----------------------------------------------------------
        m_b = stage(saturate(lq + minus_d + carry, bm), "m_b")
        w_b = stage(w_a, "w_b")

        # -- stage C: w_new = sat(w + m), and |m| -----------------------------------------------
        w_c = stage(saturate(w_b + m_b, rule.weight_bits), "w_c")
        mneg_c = stage(m_b[-1], "mneg_c")
        mabs_c = stage(Mux(m_b[-1], -m_b, m_b)[:bm], "mabs_c")    # |m| <= 2**(bm-1)

        # -- stage D: the code of logq(m) --------------------------------------------------------
        code = Signal(momentum_code_layout(rule), name="code_d_next")
        e = logq_exponent(m, mabs_c, rule.rounding, name="logq")
        nz = mabs_c != 0
        m.d.comb += [code.exp.eq(Mux(nz, e, 0)), code.neg.eq(mneg_c & nz), code.nz.eq(nz)]
        code_d = stage(code.as_value(), "code_d")
        w_d = stage(w_c, "w_d")
        m.d.comb += [self.w_new.eq(w_d), self.m_new.eq(code_d)]
        out = code_d
        m.d.comb += self.m_value.eq(_power_of_two(
            m, out[:rule.momentum_exp_bits], out[rule.momentum_exp_bits],
            out[rule.momentum_exp_bits + 1], bm + 1, 0, "value"))
        return m
