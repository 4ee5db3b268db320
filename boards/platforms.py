"""amaranth-boards platforms as qnnfab builds them, where the stock class lacks what the board
top needs.

* :class:`OrangeCrab25FPlatform` — the OrangeCrab r0.2 (LFE5U-25F) has no UART resource (its
  USB port goes straight to the FPGA): qnnfab adds one on the Feather header's serial pins,
  pin 0 (RX, N17) and pin 1 (TX, M18), where the Feather convention and LiteX-Boards'
  ``feather_serial`` put it, for a 3.3 V USB-serial adapter. The stock platform also runs
  ``dfu-suffix`` after ``ecppack`` (a Debian tool, for ``dfu-util``); qnnfab's builds leave
  that step out (``openFPGALoader -b orangecrab`` programs the bare bitstream over DFU).
"""

from amaranth.build import Attrs
from amaranth.vendor import LatticeECP5Platform
from amaranth_boards.orangecrab_r0_2 import OrangeCrabR0_2_25FPlatform
from amaranth_boards.resources import UARTResource

__all__ = ["OrangeCrab25FPlatform"]


class OrangeCrab25FPlatform(OrangeCrabR0_2_25FPlatform):
    """OrangeCrab r0.2 25F with a UART on the Feather header (see the module docstring)."""

    resources = [
        *OrangeCrabR0_2_25FPlatform.resources,
        UARTResource(0, rx="0", tx="1", conn=("io", 0),
                     attrs=Attrs(IO_TYPE="LVCMOS33", PULLMODE="UP")),
    ]

    @property
    def required_tools(self):
        return LatticeECP5Platform.required_tools.fget(self)

    @property
    def command_templates(self):
        return LatticeECP5Platform.command_templates.fget(self)
