"""The boards qnnfab builds for: a short name → :class:`Board` (platform, device, resources).

Resource totals are the device's (data sheet; nextpnr's report gives the same "available"
counts). ``lut`` counts iCE40 logic cells (LUT4 + FF + carry) or ECP5 LUT4s.
"""

from dataclasses import dataclass

from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.ulx3s import ULX3S_25F_Platform, ULX3S_85F_Platform

__all__ = ["Board", "BOARDS", "get_board"]


@dataclass(frozen=True)
class Board:
    """One board.

    Attributes
    ----------
    name : str, the registry key (``icebreaker``)
    description : str, one line
    platform : type, the amaranth-boards platform class (instantiate one per build)
    family : str, ``"ice40"`` or ``"ecp5"``
    device, package : str
    lut : int, logic cells (iCE40) or LUT4s (ECP5)
    ff : int, flip-flops
    bram_blocks : int, block RAMs (iCE40 EBR, 4 kbit; ECP5 DP16KD, 18 kbit)
    bram_bits : int, total bits of block RAM
    dsp : int, multiplier blocks (iCE40 SB_MAC16, ECP5 MULT18X18D)
    clock_mhz : float, the board oscillator (the default design clock)
    uart_baud : int, the rate of the board top's UART
    """
    name: str
    description: str
    platform: type
    family: str
    device: str
    package: str
    lut: int
    ff: int
    bram_blocks: int
    bram_bits: int
    dsp: int
    clock_mhz: float
    uart_baud: int = 115200

    @property
    def bitstream_suffix(self):
        return {"ice40": ".bin", "ecp5": ".bit"}[self.family]

    def resource_totals(self):
        return {"lut": self.lut, "ff": self.ff, "bram": self.bram_blocks, "dsp": self.dsp}


BOARDS = {
    "icebreaker": Board(
        name="icebreaker",
        description="1BitSquared iCEBreaker: Lattice iCE40 UP5K (5280 LCs, 30 EBR), 12 MHz",
        platform=ICEBreakerPlatform, family="ice40", device="iCE40UP5K", package="SG48",
        lut=5280, ff=5280, bram_blocks=30, bram_bits=30 * 4096, dsp=8, clock_mhz=12.0),
    "ulx3s-85f": Board(
        name="ulx3s-85f",
        description="Radiona ULX3S: Lattice ECP5 LFE5U-85F (83640 LUTs, 208 EBR), 25 MHz",
        platform=ULX3S_85F_Platform, family="ecp5", device="LFE5U-85F", package="BG381",
        lut=83640, ff=83640, bram_blocks=208, bram_bits=208 * 18432, dsp=156, clock_mhz=25.0),
    "ulx3s-25f": Board(
        name="ulx3s-25f",
        description="Radiona ULX3S: Lattice ECP5 LFE5U-25F (24288 LUTs, 56 EBR), 25 MHz",
        platform=ULX3S_25F_Platform, family="ecp5", device="LFE5U-25F", package="BG381",
        lut=24288, ff=24288, bram_blocks=56, bram_bits=56 * 18432, dsp=28, clock_mhz=25.0),
}


def get_board(name):
    """The :class:`Board` called ``name`` (a Board passes through); ValueError listing the
    known names otherwise."""
    if isinstance(name, Board):
        return name
    try:
        return BOARDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}") from None
