"""Unrolled dense layers (weights in logic): bit-exact against the golden model, one vector per
clock, back-pressure without loss, the timing model, refusals."""

import numpy as np
import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from qnnfab import ir, random_net
from qnnfab.rtl.adder_tree import ge_const
from qnnfab.rtl.argmax import argmax_layout
from qnnfab.rtl.unrolled_dense import UnrolledChain, UnrolledDense, UnrollError
from qnnfab.sim.stream_io import StreamSink, StreamSource, chance, run_streams
from qnnfab.spec import golden


def _layer(seed, kind, in_bits, out_bits, output=False, n_in=12, n_out=7):
    rng = np.random.default_rng(seed)
    codebook = np.array([-5, 3, 0, 12, -1, 7, 2, -16]) if kind == "codebook" else None
    return random_net.random_dense(rng, in_features=n_in, out_features=n_out, in_bits=in_bits,
                                   out_bits=out_bits, weight_kind=kind, output=output,
                                   codebook=codebook)


def _run(dut, items, *, seed, gap_p=0.0, ready_p=1.0, limit=4000):
    """Feed raw input words; return (output words, input transfer cycles, output cycles,
    offered cycles)."""
    rng = np.random.default_rng(seed)
    src = StreamSource(dut.i, items, raw=True, idle=chance(gap_p, rng))
    snk = StreamSink(dut.o, len(items), raw=True,
                     ready=chance(ready_p, np.random.default_rng(seed + 1)))
    run_streams(dut, [src], [snk], limit=limit, what=f"seed {seed}")
    return snk.payloads, src.accepted, snk.cycles, src.offered


def _pack(codes, bits):
    return [sum(int(v) << (k * bits) for k, v in enumerate(row)) for row in codes]


def _unpack(words, n, bits, signed_=False):
    out = []
    for w in words:
        row = []
        for k in range(n):
            v = (w >> (k * bits)) & ((1 << bits) - 1)
            if signed_ and v >> (bits - 1):
                v -= 1 << bits
            row.append(v)
        out.append(row)
    return np.array(out)


def test_signatures():
    hidden = _layer(0, "ternary", 2, 2)
    out = _layer(1, "binary", 2, 1, output=True)
    dut = UnrolledDense(hidden)
    assert dut.signature.members["i"] == In(stream.Signature(data.ArrayLayout(unsigned(2), 12)))
    assert dut.signature.members["o"] == Out(stream.Signature(data.ArrayLayout(unsigned(2), 7)))
    dut = UnrolledDense(out)
    assert dut.signature.members["o"] == Out(stream.Signature(
        data.ArrayLayout(signed(out.acc_width), 7)))
    dut = UnrolledDense(out, argmax=True)
    assert dut.signature.members["o"] == Out(stream.Signature(argmax_layout(7, out.acc_width)))
    assert dut.interval == 1


CASES = [("binary", 1, 1), ("binary", 3, 2), ("ternary", 1, 3), ("ternary", 5, 2),
         ("codebook", 2, 1), ("codebook", 1, 2)]


@pytest.mark.parametrize("kind, in_bits, out_bits", CASES,
                         ids=[f"{k}-{i}b-{o}b" for k, i, o in CASES])
@pytest.mark.parametrize("k", [1, 3])
def test_hidden_layer_bit_exact_one_per_clock(kind, in_bits, out_bits, k):
    """Codes equal the golden layer's, one vector per clock with an eager source and sink
    (the first after ``latency``), and again with stalls on both sides."""
    seed = 100 * k + len(kind) + 7 * in_bits + out_bits
    layer = _layer(seed, kind, in_bits, out_bits)
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 1 << in_bits, size=(24, layer.in_features))
    codes[0] = (1 << in_bits) - 1
    codes[1] = 0
    _, want = golden.layer_forward(layer, codes)
    dut = UnrolledDense(layer, levels_per_stage=k)
    assert dut.latency == dut.registers + 2
    for gap_p, ready_p in ((0.0, 1.0), (0.3, 0.4)):
        words, acc, out_cycles, offered = _run(dut, _pack(codes, in_bits), seed=seed,
                                               gap_p=gap_p, ready_p=ready_p)
        got = _unpack(words, layer.out_features, layer.out_bits)
        for v, r in zip(*np.nonzero(got != want)):
            raise AssertionError(f"seed {seed} stalls {gap_p}/{ready_p}: vector {v} neuron "
                                 f"{r}: expected {want[v, r]}, got {got[v, r]}")
        if gap_p == 0:
            assert np.diff(acc).tolist() == [1] * (len(codes) - 1)
            assert np.diff(out_cycles).tolist() == [1] * (len(codes) - 1)
            assert out_cycles[0] - offered[0] == dut.latency


@pytest.mark.parametrize("kind, in_bits", [("binary", 1), ("ternary", 3), ("codebook", 2)])
def test_output_layer_scores_and_argmax(kind, in_bits):
    seed = 11 + in_bits
    layer = _layer(seed, kind, in_bits, 1, output=True, n_in=10, n_out=5)
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 1 << in_bits, size=(20, layer.in_features))
    codes[2] = codes[3] = 0
    acc = golden.dense_acc(layer, codes)
    dut = UnrolledDense(layer)
    words, *_ = _run(dut, _pack(codes, in_bits), seed=seed, gap_p=0.2, ready_p=0.6)
    assert (_unpack(words, 5, layer.acc_width, signed_=True) == acc).all()
    dut = UnrolledDense(layer, argmax=True)
    words, _, out_cycles, offered = _run(dut, _pack(codes, in_bits), seed=seed)
    assert out_cycles[0] - offered[0] == dut.latency
    cls_bits = 3
    cls = np.array([w & ((1 << cls_bits) - 1) for w in words])
    scores = _unpack([w >> cls_bits for w in words], 5, layer.acc_width, signed_=True)
    assert (scores == acc).all()
    assert (cls == np.argmax(acc, axis=1)).all()


def test_argmax_ties_keep_the_first_index():
    """All-zero weights: every score equal, class 0; two equal maxima: the lower index."""
    layer = _layer(5, "ternary", 2, 1, output=True, n_in=4, n_out=6)
    layer.weights = np.zeros_like(layer.weights)
    layer.weights[3] = [1, 1, 0, 0]
    layer.weights[5] = [1, 1, 0, 0]
    codes = np.array([[0, 0, 0, 0], [3, 3, 0, 0], [1, 0, 2, 2]])
    dut = UnrolledDense(layer, argmax=True)
    words, *_ = _run(dut, _pack(codes, 2), seed=1)
    cls = [w & 7 for w in words]
    assert cls == [0, 3, 3]


def test_chain_back_pressure_loses_nothing():
    """A two-layer chain with argmax behind a sink that takes nothing for a long time: the
    chain stops taking inputs once the FIFO's credits are spent, and delivers every vector,
    in order, when the sink resumes."""
    rng = np.random.default_rng(8)
    net = random_net.random_network(rng, features=[9, 11, 4], input_bits=2, hidden_bits=2,
                                    weight_kind="ternary")
    dut = UnrolledChain(net.layers, argmax=True)
    codes = random_net.random_inputs(rng, net, 3 * dut.fifo_depth)
    src = StreamSource(dut.i, _pack(codes, 2), raw=True)
    snk = StreamSink(dut.o, len(codes), raw=True, ready=lambda cycle: cycle >= 80)
    run_streams(dut, [src], [snk], limit=2000)
    # Nothing taken before cycle 80: exactly fifo_depth inputs were accepted by then.
    assert sum(c < 80 for c in src.accepted) == dut.fifo_depth
    cls = np.array([w & 3 for w in snk.payloads])
    assert (cls == golden.forward(net, codes).classes).all()
    assert np.diff(snk.cycles).max() == 1          # then one per clock


def test_refusals():
    conv = random_net.random_conv(np.random.default_rng(2), in_channels=1, out_channels=2,
                                  height=4, width=4, in_bits=2)
    with pytest.raises(UnrollError, match=r"^conv1: only dense layers are unrolled"):
        UnrolledDense(conv, name="conv1")
    a = _layer(0, "ternary", 2, 2)
    b = _layer(1, "ternary", 1, 2, n_in=7)
    with pytest.raises(UnrollError, match=r"^layers\[1\]: expects 7x1b inputs, layers\[0\] "
                                          r"gives 7x2b$"):
        UnrolledChain([a, b])
    with pytest.raises(UnrollError, match=r"^layers\[0\]: argmax needs the output layer"):
        UnrolledChain([a], argmax=True)
    out = _layer(2, "binary", 2, 1, output=True, n_in=12)
    with pytest.raises(UnrollError, match=r"^layers\[0\]: an output layer \(no thresholds\) "
                                          r"must be the last"):
        UnrolledChain([out, a])
    with pytest.raises(ValueError, match=r"^levels_per_stage must be >= 1, not 0$"):
        UnrolledDense(a, levels_per_stage=0)
    with pytest.raises(UnrollError, match=r"^layers\[0\]: only dense layers are unrolled, "
                                          r"not PoolLayer"):
        UnrolledChain([ir.PoolLayer(channels=1, height=2, width=2, size=2, bits=1)])


@pytest.mark.parametrize("shape", [unsigned(4), signed(4), unsigned(1)])
def test_ge_const_exhaustive(shape):
    """The AND/OR comparator chain against every constant and every value of the shape."""
    v = Signal(shape)
    lo, hi = (-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1) if shape.signed \
        else (0, (1 << shape.width) - 1)
    ts = list(range(lo - 1, hi + 3))
    m = Module()
    outs = []
    for t in ts:
        o = Signal(name=f"ge_{t + 100}")
        m.d.comb += o.eq(ge_const(v, t))
        outs.append(o)
    bad = []

    async def tb(ctx):
        for x in range(lo, hi + 1):
            ctx.set(v, x)
            await ctx.delay(1e-9)
            for t, o in zip(ts, outs):
                if ctx.get(o) != int(x >= t):
                    bad.append((x, t))

    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()
    assert not bad, bad[:5]


def test_shared_carry_chains_in_a_reset_less_domain():
    """The adders of a level share carry chains whose separators are the reset signal; in a
    domain without reset they are constants (the chains split again in synthesis) and the
    results stay exact."""
    from amaranth.hdl import ClockDomain, Fragment

    layer = _layer(21, "ternary", 5, 2, n_in=16, n_out=6)
    dut = UnrolledDense(layer, shared_chains=True)
    frag = Fragment.get(dut, None)
    assert any(name.startswith("l0_chain") for name in _signal_names(frag))

    m = Module()
    m.domains.sync = ClockDomain(reset_less=True)
    m.submodules.dut = dut2 = UnrolledDense(layer, shared_chains=True)
    rng = np.random.default_rng(21)
    codes = rng.integers(0, 32, size=(8, 16))
    _, want = golden.layer_forward(layer, codes)
    got = []

    async def tb(ctx):
        for row in _pack(codes, 5):
            ctx.set(dut2.i.payload.as_value(), row)
            ctx.set(dut2.i.valid, 1)
            ctx.set(dut2.o.ready, 1)
            await ctx.tick()
            if ctx.get(dut2.o.valid):
                got.append(ctx.get(dut2.o.payload.as_value()))
        ctx.set(dut2.i.valid, 0)
        for _ in range(dut2.latency + 2):
            await ctx.tick()
            if ctx.get(dut2.o.valid):
                got.append(ctx.get(dut2.o.payload.as_value()))

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert (_unpack(got, 6, 2) == want).all()


def _signal_names(frag):
    """Names of the signals the fragment's statements assign."""
    return {st.lhs.name for stmts in frag.statements.values() for st in stmts
            if isinstance(st.lhs, Signal)}


@pytest.mark.parametrize("kind", ["binary", "ternary"])
def test_with_shared_chains(kind):
    """The adders of a level as segments of shared carry chains (opt-in) compute the same,
    with back-pressure and input gaps."""
    layer = _layer(23, kind, 3, 2, n_in=14, n_out=5)
    codes = np.random.default_rng(23).integers(0, 8, size=(40, 14))
    _, want = golden.layer_forward(layer, codes)
    dut = UnrolledDense(layer, shared_chains=True)
    words, *_ = _run(dut, _pack(codes, 3), seed=23, gap_p=0.3, ready_p=0.6)
    assert (_unpack(words, 5, 2) == want).all()


def test_shared_chains_are_opt_in():
    """By default no adder shares a carry chain (they route far better alone); asked for,
    the wide adders of a level are computed in chain words."""
    from amaranth.hdl import Fragment

    layer = _layer(21, "ternary", 5, 2, n_in=16, n_out=6)
    plain = _signal_names(Fragment.get(UnrolledDense(layer), None))
    chained = _signal_names(Fragment.get(UnrolledDense(layer, shared_chains=True), None))
    assert not any(name.startswith("l0_chain") for name in plain)
    assert any(name.startswith("l0_chain") for name in chained)
