"""Reading what the tools say about a build: nextpnr's JSON report (``--report FILE``) and the
cell statistics at the end of Yosys's log.

nextpnr's report (0.x) looks like::

    {"utilization": {"ICESTORM_LC": {"used": 425, "available": 5280}, ...},
     "fmax": {"cd_sync.clk": {"achieved": 22.9, "constraint": 12.0}},
     "critical_paths": [...]}
"""

import json
import os
import re

from .families import get_family

__all__ = ["NextpnrReport", "parse_nextpnr_report", "parse_yosys_cells", "parse_yosys_version",
           "resources"]

class NextpnrReport:
    """A parsed nextpnr report.

    Attributes
    ----------
    utilization : dict, cell type → ``{"used": n, "available": n}``
    fmax : dict, clock net → ``{"achieved": MHz, "constraint": MHz}``
    """

    def __init__(self, utilization, fmax):
        self.utilization = utilization
        self.fmax = fmax

    def used(self, cell_type):
        return int(self.utilization.get(cell_type, {}).get("used", 0))

    def available(self, cell_type):
        return int(self.utilization.get(cell_type, {}).get("available", 0))

    @property
    def fmax_mhz(self):
        """The lowest achieved fmax over the constrained clocks (None if there is none)."""
        achieved = [float(v["achieved"]) for v in self.fmax.values() if "achieved" in v]
        return min(achieved) if achieved else None

    @property
    def constraint_mhz(self):
        constraints = [float(v["constraint"]) for v in self.fmax.values() if "constraint" in v]
        return max(constraints) if constraints else None


def parse_nextpnr_report(source):
    """Parse a nextpnr ``--report`` file (path) or its already-loaded dict; ValueError naming
    the file if it is not a nextpnr report."""
    where = "nextpnr report"
    if isinstance(source, (str, os.PathLike)):
        where = os.fspath(source)
        with open(source, encoding="utf-8") as f:
            try:
                source = json.load(f)
            except ValueError as exc:
                raise ValueError(f"{where}: not JSON ({exc})") from None
    if not isinstance(source, dict) or not isinstance(source.get("utilization"), dict):
        raise ValueError(f"{where}: expected a nextpnr report with a 'utilization' object")
    fmax = source.get("fmax") or {}
    if not isinstance(fmax, dict):
        raise ValueError(f"{where}: 'fmax' should be an object, got {type(fmax).__name__}")
    return NextpnrReport(source["utilization"], fmax)


_STATS = re.compile(r"^\s*(\d+)\s+(\S+)\s*$")


def parse_yosys_cells(log_text):
    """Cell counts ``{type: n}`` of the last "Printing statistics" block of a Yosys log."""
    start = log_text.rfind("Printing statistics")
    if start < 0:
        return {}
    block = log_text[start:]
    end = block.find("design hierarchy")
    if end > 0:
        block = block[:end]
    cells = {}
    for line in block.splitlines():
        match = _STATS.match(line)
        if match and not match.group(2).startswith("$"):
            name = match.group(2)
            if name in ("wires", "ports", "cells", "submodules", "memories", "processes"):
                continue
            cells[name] = int(match.group(1))
    return cells


def parse_yosys_version(log_text):
    match = re.search(r"Yosys (\d+\.\d+\S*)", log_text)
    return match.group(1) if match else None


def resources(family, report, yosys_cells, *, totals=None):
    """The report.json ``resources``: ``lut``, ``ff``, ``bram``, ``dsp`` as
    ``{"used": n, "total": n}``. Totals are the smaller of nextpnr's "available" count and
    the board's data-sheet ``totals``: nextpnr places an LFE5U-12F on the 25F die it shares
    and reports the die's 24,288 LUTs, of which the 12F offers 12,096."""
    types = get_family(family).cell_types
    totals = totals or {}

    def cells_of(cell):
        # A resource may be several cell types sharing the first one's sites (Gowin: an ALU,
        # the carry chain, takes a LUT4's place): used is their sum, available the first's.
        return (cell,) if isinstance(cell, str) else tuple(cell)

    def total(key, cell):
        counts = [n for n in (report.available(cells_of(cell)[0]), int(totals.get(key, 0)))
                  if n]
        return min(counts) if counts else 0
    out = {}
    for key in ("lut", "bram", "dsp"):
        cell = types[key]
        out[key] = {"used": sum(report.used(c) for c in cells_of(cell)),
                    "total": total(key, cell)}
    if types["ff"] is not None:
        out["ff"] = {"used": report.used(types["ff"]), "total": total("ff", types["ff"])}
    else:
        # iCE40: every logic cell has one flip-flop; nextpnr counts cells, Yosys counts FFs.
        used = sum(n for name, n in yosys_cells.items() if name.startswith(types["ff_cells"]))
        out["ff"] = {"used": used, "total": total("ff", types["lut"])}
    return {key: out[key] for key in ("lut", "ff", "bram", "dsp")}
