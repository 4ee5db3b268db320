"""FPGA families: everything qnnfab knows about one family of chips, in one module each.

* :mod:`.ice40` — Lattice iCE40 (UP5K, HX/LP): Yosys ``synth_ice40``, ``nextpnr-ice40``,
  ``icepack``; 4 kbit EBR; ``SB_PLL40_PAD``.
* :mod:`.ecp5` — Lattice ECP5: Yosys ``synth_ecp5``, ``nextpnr-ecp5``, ``ecppack``; 18 kbit
  ``DP16KD``; ``EHXPLLL``.
* :mod:`.gowin` — Gowin LittleBee (GW1NR-9C): Yosys ``synth_gowin``, ``nextpnr-himbaechel``,
  Apicula's ``gowin_pack``; 18 kbit BSRAM; ``rPLL``.

A board entry (:mod:`qnnfab.boards.registry`) names its family; the build, the board top's
PLL, report parsing and gate-level simulation ask the family (:func:`get_family`). Adding a
family is one module here with a :class:`~.base.Family` subclass, plus its entry in
:data:`FAMILIES`.
"""

from .base import Family
from .ecp5 import ECP5
from .gowin import Gowin
from .ice40 import ICE40

__all__ = ["Family", "FAMILIES", "get_family"]

#: Family name → :class:`Family`.
FAMILIES = {family.name: family for family in (ICE40(), ECP5(), Gowin())}


def get_family(name):
    """The :class:`Family` called ``name`` (a Family passes through); ValueError listing the
    known families otherwise."""
    if isinstance(name, Family):
        return name
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown FPGA family {name!r}; known families: "
                         f"{', '.join(FAMILIES)}") from None
