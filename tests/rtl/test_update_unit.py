"""UpdateUnit: every formula piece against the learning rule (exhaustive on small widths,
random and corner values on the default widths), and no multiplier in the netlist."""

import itertools
import re
import subprocess

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from qnnfab.spec import learn_rule as lr
from qnnfab.rtl.update_unit import (UpdateUnit, decode_momentum, encode_momentum,
                                    q_exp_width, q_layout)


def reference(rule, w, m, q, v):
    """The rule's update of one (w, M) pair for error ``q`` and activation value ``v``, in
    Python integers, written out from the formula: d = (q·v) >> s, m = sat(decay(logq(M))
    - d), w' = sat(w + m), M' = logq(m) (what is stored)."""
    d = (int(q) * int(v)) >> rule.lr_shift
    lq = int(lr.decay(lr.logq(np.array([m]), rule.rounding), rule.momentum_decay)[0])
    m_new = int(lr.saturate(lq - d, rule.momentum_bits))
    w_new = int(lr.saturate(int(w) + m_new, rule.weight_bits))
    return w_new, int(lr.logq(np.array([m_new]), rule.rounding)[0])


def stored_momenta(rule):
    """Every stored momentum the code can hold: 0 and ±2**e, e = 0 .. momentum_bits - 1
    (+2**(momentum_bits-1) only under "nearest")."""
    lo, hi = rule.stored_momentum_range
    values = [0] + [sign * (1 << e) for e in range(rule.momentum_bits) for sign in (1, -1)]
    return [v for v in values if lo <= v <= hi]


def run_unit(dut, cases, *, stall_seed=None):
    """``cases``: list of (v_code, [(w, m, (exp, neg, nz)) per lane]); returns the
    (w_new, m_new) lists per case. Combinational units are read after each set; pipelined
    ones get one case per enabled cycle and are read ``latency`` enabled cycles later, with
    ``en`` low at random (``stall_seed``) in between."""
    out = []
    rng = None if stall_seed is None else np.random.default_rng(stall_seed)

    def apply(ctx, v, lanes):
        # Whole arrays per set: one settle each, not one per lane.
        ctx.set(dut.v, v)
        ctx.set(dut.w, [w for w, _, _ in lanes])
        width = dut.rule.momentum_code_bits
        ctx.set(dut.m.as_value(), sum(encode_momentum(m, dut.rule) << (width * j)
                                      for j, (_, m, _) in enumerate(lanes)))
        ctx.set(dut.q, [{"exp": e, "neg": neg, "nz": nz} for _, _, (e, neg, nz) in lanes])

    def read(ctx, n):
        w_new, m_value = ctx.get(dut.w_new), ctx.get(dut.m_value)
        codes = ctx.get(dut.m_new.as_value())
        width = dut.rule.momentum_code_bits
        decoded = [decode_momentum((codes >> (width * j)) & ((1 << width) - 1), dut.rule)
                   for j in range(n)]
        assert decoded == [m_value[j] for j in range(n)], (decoded, m_value)
        return [w_new[j] for j in range(n)], decoded

    async def comb_tb(ctx):
        for v, lanes in cases:
            apply(ctx, v, lanes)
            out.append(read(ctx, len(lanes)))

    async def pipe_tb(ctx):
        n = len(cases[0][1])
        k = 0
        enabled = 0
        while len(out) < len(cases):
            en = rng is None or rng.random() < 0.7
            ctx.set(dut.en, en)
            if en and k < len(cases):
                apply(ctx, *cases[k])
                k += 1
            await ctx.tick()
            if en:
                enabled += 1
                if enabled >= dut.latency:
                    out.append(read(ctx, n))

    sim = Simulator(dut)
    if dut.latency:
        sim.add_clock(1e-8)
        sim.add_testbench(pipe_tb)
    else:
        sim.add_testbench(comb_tb)
    sim.run()
    return out


def check(rule, in_bits, dut, cases, seed, stall_seed=None):
    got = run_unit(dut, cases, stall_seed=stall_seed)
    for k, ((v, lanes), (w_new, m_new)) in enumerate(zip(cases, got)):
        value = (2 * v - 1) if in_bits == 1 else v
        for j, (w, m, (exp, neg, nz)) in enumerate(lanes):
            q = 0 if not nz else (-(1 << exp) if neg else (1 << exp))
            exp_w, exp_m = reference(rule, w, m, q, value)
            assert (w_new[j], m_new[j]) == (exp_w, exp_m), (
                f"seed {seed} {rule} in_bits {in_bits}: case {k} lane {j}: w={w} m={m} "
                f"q={q} v={value}: expected (w', m') = {(exp_w, exp_m)}, got "
                f"{(w_new[j], m_new[j])}")


SMALL_RULES = [
    lr.LearnRule(weight_bits=6, momentum_bits=5, lr_shift=2, margin_exp=1, momentum_decay=0),
    lr.LearnRule(weight_bits=6, momentum_bits=5, lr_shift=1, margin_exp=1, momentum_decay=1,
                 rounding="nearest"),
    lr.LearnRule(weight_bits=4, momentum_bits=6, lr_shift=0, margin_exp=1, momentum_decay=2),
    lr.LearnRule(weight_bits=6, momentum_bits=5, lr_shift=2, margin_exp=1, momentum_decay=0,
                 rounding="nearest"),
]


@pytest.mark.parametrize("in_bits", [1, 2])
@pytest.mark.parametrize("rule", SMALL_RULES, ids=["floor-r0", "nearest-r1", "wide-m-r2",
                                                   "nearest-r0"])
def test_exhaustive_small_widths(rule, in_bits):
    """Every stored momentum, every error exponent the q port can carry (past ``max_shift``
    for the middle two rules: the clamp), both signs, zero error, every activation code;
    weights random plus both extremes."""
    seed = 100 + in_bits
    rng = np.random.default_rng(seed)
    n = 8
    dut = UpdateUnit(n_lanes=n, in_bits=in_bits, rule=rule, pipelined=False)
    mlo, mhi = rule.momentum_range
    wlo, whi = rule.weight_range
    exps = range(1 << q_exp_width(rule))
    lanes = [(m, (e, neg, nz)) for m, e, neg, nz in
             itertools.product(stored_momenta(rule), exps, (0, 1), (0, 1))]
    cases = []
    for v in range(1 << in_bits):
        for k in range(0, len(lanes), n):
            chunk = lanes[k:k + n]
            ws = rng.integers(wlo, whi + 1, size=len(chunk))
            ws[:2] = [wlo, whi][:len(chunk)]
            cases.append((v, [(int(w), mq[0], mq[1]) for w, mq in zip(ws, chunk)]))
    check(rule, in_bits, dut, cases, seed)


@pytest.mark.parametrize("in_bits, rounding, pipelined", [
    (1, "floor", True), (2, "floor", True), (5, "floor", False),
    (1, "nearest", False), (2, "nearest", True), (5, "nearest", True)])
def test_random_default_widths(in_bits, rounding, pipelined):
    """The default 16-bit widths: random values, with the extremes and powers of two mixed in;
    the pipelined unit with its clock enable low at random (stalls hold every stage)."""
    seed = 7 * in_bits + len(rounding)
    rng = np.random.default_rng(seed)
    rule = lr.LearnRule(rounding=rounding)
    n = 10
    dut = UpdateUnit(n_lanes=n, in_bits=in_bits, rule=rule, pipelined=pipelined)
    assert dut.latency == (4 if pipelined else 0)
    wlo, whi = rule.weight_range
    mlo, mhi = rule.momentum_range
    specials_m = stored_momenta(rule)
    cases = []
    for _ in range(150):
        lanes = []
        for _ in range(n):
            w = int(rng.choice([wlo, whi, int(rng.integers(wlo, whi + 1))], p=[.1, .1, .8]))
            # any momentum: the input is its stored logq (encode_momentum quantizes)
            m = int(rng.choice(specials_m)) if rng.random() < 0.5 \
                else int(lr.logq(np.array([int(rng.integers(mlo, mhi + 1))]),
                                 rule.rounding)[0])
            e = int(rng.integers(0, 1 << q_exp_width(rule)))
            lanes.append((w, m, (e, int(rng.integers(0, 2)), int(rng.random() < 0.9))))
        cases.append((int(rng.integers(0, 1 << in_bits)), lanes))
    check(rule, in_bits, dut, cases, seed, stall_seed=seed if pipelined else None)


def test_layouts_and_bad_parameters():
    rule = lr.LearnRule()
    assert rule.max_shift == 16 + rule.lr_shift
    assert q_exp_width(rule) == rule.max_shift.bit_length()
    assert set(q_layout(rule).members) == {"exp", "neg", "nz"}
    dut = UpdateUnit(n_lanes=3, in_bits=2, rule=rule)
    assert dut.shift_width == 2 + rule.max_shift and dut.latency == 4
    with pytest.raises(ValueError, match=r"n_lanes must be >= 1, not 0"):
        UpdateUnit(n_lanes=0, in_bits=2, rule=rule)
    with pytest.raises(ValueError, match=r"in_bits must be in 1..8, not 9"):
        UpdateUnit(n_lanes=1, in_bits=9, rule=rule)
    with pytest.raises(TypeError, match=r"rule must be a LearnRule, not 3"):
        UpdateUnit(n_lanes=1, in_bits=2, rule=3)


class _Ports(wiring.Component):
    """The unit behind plain ports (Yosys's abc9 and a structured top do not mix)."""

    def __init__(self, dut):
        self.dut = dut
        widths = {name: len(Value.cast(getattr(dut, name)))
                  for name in ("w", "m", "q", "v", "en", "w_new", "m_new", "m_value")}
        super().__init__({name: (Out if name in ("w_new", "m_new", "m_value") else In)(width)
                          for name, width in widths.items()})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.dut
        for name in ("w", "m", "q", "v", "en"):
            m.d.comb += Value.cast(getattr(self.dut, name)).eq(getattr(self, name))
        for name in ("w_new", "m_new", "m_value"):
            m.d.comb += getattr(self, name).eq(Value.cast(getattr(self.dut, name)))
        return m


@pytest.mark.parametrize("rounding", ["floor", "nearest"])
@pytest.mark.parametrize("pipelined", [True, False])
def test_no_multiplier_in_the_netlist(rounding, pipelined):
    dut = UpdateUnit(n_lanes=4, in_bits=2, rule=lr.LearnRule(rounding=rounding),
                     pipelined=pipelined)
    cells = set(re.findall(r"^\s*cell (\$\w+)", rtlil.convert(_Ports(dut), name="top"), re.M))
    assert "$add" in cells or "$sub" in cells
    assert not cells & {"$mul", "$div", "$mod", "$divfloor", "$modfloor", "$pow"}, cells


def test_synth_ice40_uses_no_dsp(tmp_path):
    """``synth_ice40 -dsp`` would put any multiplication in an SB_MAC16: there is none."""
    from qnnfab.boards.build import tool_path
    dut = UpdateUnit(n_lanes=2, in_bits=2, rule=lr.LearnRule())
    (tmp_path / "u.il").write_text(rtlil.convert(_Ports(dut), name="top"))
    subprocess.run([tool_path("yosys"), "-q", "-p",
                    "read_rtlil u.il; synth_ice40 -dsp -top top; tee -q -o stat.txt stat"],
                   cwd=tmp_path, check=True, capture_output=True)
    stat = (tmp_path / "stat.txt").read_text()
    assert "SB_LUT4" in stat and "SB_DFFE" in stat      # synthesized, pipeline registers
    assert "SB_MAC16" not in stat, stat
