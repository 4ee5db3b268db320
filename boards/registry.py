"""The boards qnnfab builds for: a short name → :class:`Board` (platform, device, resources,
and the per-board build defaults: folding budget and design clock).

Resource totals are the device's (data sheet; nextpnr's report gives the same "available"
counts). ``lut`` counts iCE40 logic cells (LUT4 + FF + carry), ECP5 LUT4s or Gowin LUT4 sites
(a LUT4 or an ALU each).

Each board also carries the defaults that make the default network (``digits-bnn``,
64x5b -> 256 -> 256 -> 10) run as fast as the device allows: ``max_lanes``, the weights read per
cycle by the largest layer (see :func:`qnnfab.rtl.folding.auto_folding`), and
``design_clock_mhz``, the clock the design runs at (made by the PLL from the oscillator,
``clock_mhz``), chosen at about 85-90 % of the fmax nextpnr measured for that folding.
:func:`board_folding` is the one place that turns (network, board) into a folding: the CLI's
``sim``, ``verilog``, ``build`` and ``flow`` all use it, so what is simulated is what is built.
"""

import operator
from dataclasses import dataclass

from amaranth_boards.colorlight_5a75b_r7_0 import Colorlight_5A75B_R70Platform
from amaranth_boards.ecp5_5g_evn import ECP55GEVNPlatform
from amaranth_boards.ice40_hx8k_b_evn import ICE40HX8KBEVNPlatform
from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.icesugar import ICESugarPlatform
from amaranth_boards.tang_nano_9k import TangNano9kPlatform
from amaranth_boards.ulx3s import ULX3S_12F_Platform, ULX3S_25F_Platform, ULX3S_85F_Platform

from qnnfab.rtl import estimate as _estimate

from .families import get_family
from .families.gowin import himbaechel_platform
from .platforms import OrangeCrab25FPlatform

__all__ = ["Board", "BOARDS", "get_board", "board_folding", "bram_blocks_for", "target_folding",
           "TargetUnreachable", "board_styles", "family_lane_scale", "WEIGHTS_IN",
           "board_weights", "spram_folding", "NoSPRAM", "INPUT_BUFFERS", "input_buffer_for",
           "lc_budget", "UNROLLED_LC_SHARE"]


@dataclass(frozen=True)
class Board:
    """One board.

    Attributes
    ----------
    name : str, the registry key (``icebreaker``)
    description : str, one line
    platform : type, the amaranth-boards platform class (instantiate one per build)
    family : str, a key of :data:`qnnfab.boards.families.FAMILIES` (``"ice40"``, ``"ecp5"``,
        ``"gowin"``):
        tools, bitstream suffix, block RAM ports, PLL and cell names come from the family
    device, package : str
    lut : int, logic cells (iCE40) or LUT4s (ECP5, Gowin)
    ff : int, flip-flops
    bram_blocks : int, block RAMs (iCE40 EBR, 4 kbit; ECP5 DP16KD, 18 kbit; Gowin BSRAM,
        18 kbit)
    bram_bits : int, total bits of block RAM
    dsp : int, multiplier blocks (iCE40 SB_MAC16, ECP5 MULT18X18D, Gowin MULT18X18)
    clock_mhz : float, the board oscillator (what the PLL starts from)
    max_lanes : int, the folding budget: weights read per cycle by the largest layer, passed
        to :func:`qnnfab.rtl.folding.auto_folding` by :func:`board_folding`
    design_clock_mhz : float, the default design clock (a PLL output, or the oscillator when
        equal to ``clock_mhz``); measured-fmax based, with margin
    nextpnr_opts : str, extra nextpnr options for this board's builds
    uart_baud : int, the rate of the board top's UART
    program_command : str, how to load a bitstream onto the board (``{bitstream}``: its path)
    uart_port : str, where the board's UART usually appears on a Linux host, and why
    spram_blocks : int, single-port RAMs for weights (iCE40 UP5K: 4 ``SB_SPRAM256KA`` of
        16384 × 16 bits; 0 elsewhere), see :func:`board_weights`
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
    max_lanes: int = 256
    design_clock_mhz: float = None
    nextpnr_opts: str = ""
    uart_baud: int = 115200
    program_command: str = ""
    uart_port: str = ""
    spram_blocks: int = 0

    def __post_init__(self):
        get_family(self.family)  # an unknown family fails here, naming the known ones
        lanes = self.max_lanes
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"Board {self.name!r}: max_lanes must be a positive integer, "
                             f"not {lanes!r}")
        if self.design_clock_mhz is None:
            object.__setattr__(self, "design_clock_mhz", float(self.clock_mhz))
        elif not float(self.design_clock_mhz) > 0:
            raise ValueError(f"Board {self.name!r}: design_clock_mhz must be a positive "
                             f"frequency in MHz, not {self.design_clock_mhz!r}")

    @property
    def bitstream_suffix(self):
        return get_family(self.family).bitstream_suffix

    @property
    def bram_port_bits(self):
        """Widest read port of one block RAM: iCE40 EBR 256x16, ECP5 DP16KD 512x36, Gowin
        BSRAM 512x36."""
        return get_family(self.family).bram_port_bits

    def resource_totals(self):
        return {"lut": self.lut, "ff": self.ff, "bram": self.bram_blocks, "dsp": self.dsp}


BOARDS = {
    "icebreaker": Board(
        name="icebreaker",
        description="1BitSquared iCEBreaker: Lattice iCE40 UP5K (5280 LCs, 30 EBR), 12 MHz",
        platform=ICEBreakerPlatform, family="ice40", device="iCE40UP5K", package="SG48",
        lut=5280, ff=5280, bram_blocks=30, bram_bits=30 * 4096, dsp=8, clock_mhz=12.0,
        # Measured (default net, 256 lanes = 258 cycles/inference): fmax 45.9 / 45.2 MHz at a
        # 36 MHz constraint (seeds 0, 1), 38.8 MHz at 39.75 MHz; 4.3k LCs, 23 EBR. 512 lanes
        # needs 45 EBR of 30, so 256 it is.
        max_lanes=256, design_clock_mhz=36.0,
        program_command="openFPGALoader -b icebreaker {bitstream}  (or: iceprog {bitstream})",
        uart_port="/dev/ttyUSB1 (the FT2232H's second channel; the first programs the flash)",
        spram_blocks=4),
    "ulx3s-85f": Board(
        name="ulx3s-85f",
        description="Radiona ULX3S: Lattice ECP5 LFE5U-85F (83640 LUTs, 208 EBR), 25 MHz",
        platform=ULX3S_85F_Platform, family="ecp5", device="LFE5U-85F", package="BG381",
        lut=83640, ff=83640, bram_blocks=208, bram_bits=208 * 18432, dsp=156, clock_mhz=25.0,
        # Measured (default net, 4096 lanes = 23 cycles/inference): fmax 57.4 MHz at a 100 MHz
        # constraint, 60.1 MHz at 50 MHz (router2; 35k LUTs, 148 DP16KD; ~13 min of P&R).
        # router1 had routed ~6k of its 114k arcs in 200 s.
        max_lanes=4096, design_clock_mhz=50.0, nextpnr_opts="--router router2",
        program_command="openFPGALoader -b ulx3s {bitstream}  (or: fujprog {bitstream})",
        uart_port="/dev/ttyUSB0 (the FT231X, the same USB port that programs the board)"),
    "ulx3s-25f": Board(
        name="ulx3s-25f",
        description="Radiona ULX3S: Lattice ECP5 LFE5U-25F (24288 LUTs, 56 EBR), 25 MHz",
        platform=ULX3S_25F_Platform, family="ecp5", device="LFE5U-25F", package="BG381",
        lut=24288, ff=24288, bram_blocks=56, bram_bits=56 * 18432, dsp=28, clock_mhz=25.0,
        # Measured (default net, 1024 lanes = 66 cycles/inference): fmax 81.9 MHz at a 50 MHz
        # constraint, 63.0 MHz at 65 MHz; 9.8k LUTs, 39 of 56 DP16KD (2048 lanes: ~75).
        max_lanes=1024, design_clock_mhz=55.0, nextpnr_opts="--router router2",
        program_command="openFPGALoader -b ulx3s {bitstream}  (or: fujprog {bitstream})",
        uart_port="/dev/ttyUSB0 (the FT231X, the same USB port that programs the board)"),
    "ulx3s-12f": Board(
        name="ulx3s-12f",
        description="Radiona ULX3S: Lattice ECP5 LFE5U-12F (12096 LUTs, 32 EBR), 25 MHz",
        platform=ULX3S_12F_Platform, family="ecp5", device="LFE5U-12F", package="BG381",
        lut=12096, ff=12096, bram_blocks=32, bram_bits=32 * 18432, dsp=28, clock_mhz=25.0,
        # The smallest ECP5 board: the build matrix of the slow tests uses it. Measured
        # (digits-bnn, 512 lanes): see README "Supported boards" (make bench-boards).
        max_lanes=512, design_clock_mhz=50.0, nextpnr_opts="--router router2",
        program_command="openFPGALoader -b ulx3s {bitstream}  (or: fujprog {bitstream})",
        uart_port="/dev/ttyUSB0 (the FT231X, the same USB port that programs the board)"),
    "icesugar": Board(
        name="icesugar",
        description="MuseLab iCESugar v1.5: Lattice iCE40 UP5K (5280 LCs, 30 EBR), 12 MHz",
        platform=ICESugarPlatform, family="ice40", device="iCE40UP5K", package="SG48",
        lut=5280, ff=5280, bram_blocks=30, bram_bits=30 * 4096, dsp=8, clock_mhz=12.0,
        # The iCEBreaker's chip: the same budget (512 lanes needs 45 EBR of 30). Measured
        # (digits-bnn, 256 lanes = 258 cycles/inference, seed 0): fmax 43.3 MHz at 36 MHz;
        # 4228 LCs, 23 EBR.
        max_lanes=256, design_clock_mhz=36.0,
        program_command="openFPGALoader -b icesugar {bitstream}  (or: icesprog {bitstream}; or "
                        "copy it to the iCELink USB drive)",
        uart_port="/dev/ttyACM0 (the iCELink's USB serial port, the one that programs it)",
        spram_blocks=4),
    "ice40-hx8k-b-evn": Board(
        name="ice40-hx8k-b-evn",
        description="Lattice iCE40-HX8K breakout: iCE40 HX8K (7680 LCs, 32 EBR, no SPRAM, no "
                    "DSP), 12 MHz",
        platform=ICE40HX8KBEVNPlatform, family="ice40", device="iCE40HX8K", package="CT256",
        lut=7680, ff=7680, bram_blocks=32, bram_bits=32 * 4096, dsp=0, clock_mhz=12.0,
        # The small-LUT reference: 512 lanes needs 45 EBR of 32. Its PLL is fed through the
        # oscillator's input buffer (SB_PLL40_CORE: J3 is no PLL pad). Measured (digits-bnn,
        # 256 lanes = 258 cycles/inference, seed 0): fmax 106.5 MHz at 48 MHz, 106.6 MHz at
        # 90 MHz; 4228 LCs, 23 EBR (the HX's fabric is over twice the UP5K's speed).
        max_lanes=256, design_clock_mhz=90.0,
        program_command="openFPGALoader -b ice40_generic {bitstream}  (or: iceprog {bitstream})",
        uart_port="/dev/ttyUSB1 (the FT2232H's second channel; the first programs the flash)"),
    "ecp5-evn": Board(
        name="ecp5-evn",
        description="Lattice ECP5-5G evaluation board: ECP5 LFE5UM5G-85F (83640 LUTs, 208 EBR), "
                    "12 MHz",
        platform=ECP55GEVNPlatform, family="ecp5", device="LFE5UM5G-85F", package="BG381",
        lut=83640, ff=83640, bram_blocks=208, bram_bits=208 * 18432, dsp=156, clock_mhz=12.0,
        # The ULX3S-85F's die in the faster speed grade 8: its budget. Measured (digits-bnn,
        # 4096 lanes = 23 cycles/inference, seed 0): fmax 76.3 MHz at 60 MHz (router2; 34.7k
        # LUTs, 148 DP16KD; ~13 min of P&R on two busy cores).
        max_lanes=4096, design_clock_mhz=60.0, nextpnr_opts="--router router2",
        program_command="openFPGALoader -b ecp5_evn {bitstream}",
        uart_port="/dev/ttyUSB1 (the FT2232H's second channel, once its UART resistors are "
                  "fitted and its EEPROM set for a UART: user guide section 6.2)"),
    "colorlight-5a75b": Board(
        name="colorlight-5a75b",
        description="Colorlight 5A-75B v7.0: Lattice ECP5 LFE5U-25F (24288 LUTs, 56 EBR), "
                    "25 MHz; no USB",
        platform=Colorlight_5A75B_R70Platform, family="ecp5", device="LFE5U-25F",
        package="BG256", lut=24288, ff=24288, bram_blocks=56, bram_bits=56 * 18432, dsp=28,
        clock_mhz=25.0,
        # The ULX3S-25F's die and speed grade: its budget and clock. Measured (digits-bnn,
        # 1024 lanes = 66 cycles/inference, seed 0): fmax 74.1 MHz at 55 MHz; 9808 LUTs,
        # 39 of 56 DP16KD.
        max_lanes=1024, design_clock_mhz=55.0, nextpnr_opts="--router router2",
        program_command="openFPGALoader -b colorlight -c ft232 {bitstream}  (a USB-JTAG adapter "
                        "on the J27 pads)",
        uart_port="a 3.3 V USB-serial adapter on J19 (/dev/ttyUSB0): its RX to DATA_LED- "
                  "(P11, the LED's pin: no LED for the board top), its TX to KEY+ (M13)"),
    "orangecrab-25f": Board(
        name="orangecrab-25f",
        description="Good Stuff Department OrangeCrab r0.2: Lattice ECP5 LFE5U-25F (24288 LUTs, "
                    "56 EBR), 48 MHz",
        platform=OrangeCrab25FPlatform, family="ecp5", device="LFE5U-25F", package="MG285",
        lut=24288, ff=24288, bram_blocks=56, bram_bits=56 * 18432, dsp=28, clock_mhz=48.0,
        # The 25F of the ULX3S-25F in speed grade 8: its budget. Measured (digits-bnn, 1024
        # lanes = 66 cycles/inference, seed 0): fmax 81.8 MHz at 60 MHz, 106.7 at 68, 101.3
        # at 84; 9.8k LUTs, 39 of 56 DP16KD.
        max_lanes=1024, design_clock_mhz=84.0, nextpnr_opts="--router router2",
        program_command="openFPGALoader -b orangecrab {bitstream}  (DFU: hold the button while "
                        "plugging in; or: dfu-util -D {bitstream})",
        uart_port="a 3.3 V USB-serial adapter on the Feather header (/dev/ttyUSB0): its TX to "
                  "pin 0 (FPGA RX), its RX to pin 1 (FPGA TX); USB is the FPGA's own"),
    "tang-nano-9k": Board(
        name="tang-nano-9k",
        description="Sipeed Tang Nano 9K: Gowin GW1NR-9C (8640 LUT4s, 26 BSRAM), 27 MHz",
        platform=himbaechel_platform(TangNano9kPlatform), family="gowin", device="GW1NR-9C",
        package="QN88P", lut=8640, ff=6480, bram_blocks=26, bram_bits=26 * 18432, dsp=20,
        clock_mhz=27.0,
        # Measured (digits-bnn, 512 lanes = 130 cycles/inference; nextpnr-himbaechel, seed 0):
        # fmax 84.8 MHz at the 27 MHz oscillator, 72.0 MHz at 67.5 MHz from the rPLL; 7241
        # LUT4 sites (4533 LUT4 + 2708 ALU), 3783 DFF, 21 of 26 BSRAM; ~10 min of P&R on two
        # busy cores. 1024 lanes needs more BSRAM than the chip has.
        max_lanes=512, design_clock_mhz=67.5,
        program_command="openFPGALoader -b tangnano9k {bitstream}  (add -f: write the flash)",
        uart_port="/dev/ttyUSB1 (the BL702's second channel; the first is its JTAG)"),
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


#: Share of the device's logic cells the estimate may use: a design that packs to 99 % of the
#: cells may not place (measured: a codebook net estimated at 97 % packed to 99.3 % and nextpnr
#: had not placed it after 12 minutes).
LC_HEADROOM = 0.95

#: Share of the device's logic cells a design with unrolled layers may take, per family (the
#: rest: :data:`LC_HEADROOM`). Unrolled layers are thousands of short carry chains, which
#: nextpnr-ecp5's placer has to legalize one by one; measured with the board top on the ECP5,
#: one carry chain per adder: digits-tnn(d32,d10) placed and routed at 36 % of the ULX3S-25F
#: (106.1 MHz) and digits-tnn(d48,d10) at 54 % (91.2 MHz), while digits-tnn(d64,d10) at 72 %
#: of the 25F and digits-tnn at 75 % of the ULX3S-85F found no legal placement ("Unable to
#: find legal placement for cell ... CCU2C"; 40+ minutes on the 85F).
UNROLLED_LC_SHARE = {"ecp5": 0.6}


def lc_budget(board, styles=None):
    """The logic cells the fit estimate may use on ``board``: :data:`LC_HEADROOM` of them, or
    :data:`UNROLLED_LC_SHARE` of its family's when ``styles`` unrolls a layer (``styles`` None:
    the budget a design with unrolled layers gets)."""
    board = get_board(board)
    share = LC_HEADROOM
    if styles is None or "unrolled" in styles:
        share = min(share, UNROLLED_LC_SHARE.get(board.family, share))
    return int(share * board.lut)


def board_folding(network, board, *, max_lanes=None):
    """The folding qnnfab uses for ``network`` on ``board`` (a name or a :class:`Board`):
    :func:`qnnfab.rtl.folding.auto_folding` with the board's ``max_lanes`` (or ``max_lanes``
    if given), halved until the crude logic estimate of :func:`qnnfab.rtl.estimate.estimate`
    fits :data:`LC_HEADROOM` of the device's cells (so a network larger than the default one
    still gets a folding that can place; the default network keeps the full budget) and the
    block RAMs it needs
    (:func:`bram_blocks_for`) fit the device. Returns a list of
    :class:`~qnnfab.rtl.folding.LayerFolding`, one per layer.

    ``qnnfab sim --board``, ``qnnfab verilog --board``, ``qnnfab build`` and ``qnnfab flow``
    all call this, so the simulated hardware is the built one.
    """
    from qnnfab.rtl.folding import auto_folding

    board = get_board(board)
    if max_lanes is None:
        lanes = board.max_lanes
    else:
        if isinstance(max_lanes, bool):
            raise TypeError(f"max_lanes must be an integer, not {max_lanes!r}")
        lanes = operator.index(max_lanes)
        if lanes < 1:
            raise ValueError(f"max_lanes must be >= 1, not {lanes}")
    folding = auto_folding(network, max_lanes=lanes)
    while lanes > 1 and (_board_estimate(network, folding, board)["lc"] > LC_HEADROOM * board.lut
                         or bram_blocks_for(network, folding, board) > board.bram_blocks):
        lanes //= 2
        folding = auto_folding(network, max_lanes=lanes)
    return folding


def family_lane_scale(family):
    """A family's ``lane_scale`` (:class:`~qnnfab.boards.families.base.Family`) with the
    unrolled style's factor (:data:`qnnfab.rtl.estimate.FAMILY_UNROLLED_SCALE`) under
    ``"unrolled"``: what the estimate of a styled network takes."""
    scale = dict(get_family(family).lane_scale)
    scale.setdefault("unrolled", _estimate.FAMILY_UNROLLED_SCALE.get(family, 1))
    return scale


def board_styles(network, board, style="folded", folding=None):
    """One style per layer (``"folded"`` or ``"unrolled"``) of ``network`` on ``board``:
    :func:`qnnfab.rtl.network.resolve_styles` of ``style`` (``"folded"``, ``"unrolled"``,
    ``"auto"`` or one per layer), ``auto`` with the board's logic budget for unrolled layers
    (:func:`lc_budget`, the family's unrolled factor) and ``folding`` for the
    folded layers (default :func:`board_folding`). ``qnnfab verilog``, ``sim``, ``build`` and
    ``flow`` (``--style``) all call this, so the simulated hardware is the built one."""
    from qnnfab.rtl.network import resolve_styles
    board = get_board(board)
    if style == "auto" and folding is None:
        folding = board_folding(network, board)
    return resolve_styles(network, style, folding=folding, budget_lc=lc_budget(board),
                          lane_scale=family_lane_scale(board.family))


class TargetUnreachable(ValueError):
    """No folding that fits the board meets the asked speed; the message gives the best
    reachable figure."""


def _board_estimate(network, folding, board):
    """:func:`qnnfab.rtl.estimate.estimate` of ``folding`` (checked) on ``board``: its
    family's lane costs, the input vector where ``--input-buffer auto`` puts it
    (:func:`input_buffer_for`)."""
    from qnnfab.rtl.folding import check_folding
    pairs = [(f.pe, f.simd) for f in check_folding(network, folding)]
    return _estimate.estimate(network, pairs, lane_scale=get_family(board.family).lane_scale,
                              input_buffer=input_buffer_for(network, board))


def _fits(network, folding, board):
    return (_board_estimate(network, folding, board)["lc"] <= LC_HEADROOM * board.lut
            and bram_blocks_for(network, folding, board) <= board.bram_blocks)


def network_interval(network, folding):
    """Cycles between inferences of the streaming network under ``folding`` (its
    ``interval``, the report's ``cycles_per_inference``)."""
    from qnnfab.rtl.network import Network
    return Network(network, folding).interval


def target_folding(network, board, *, target_ips=None, target_cycles=None, clock_mhz=None):
    """The cheapest folding that meets a speed target on ``board``, as FINN's SetFolding
    chooses: every layer gets the cheapest folding (:func:`qnnfab.rtl.folding.auto_folding`)
    whose cycles meet the target, so no stage is faster than it needs to be.

    ``target_ips``: inferences per second at ``clock_mhz`` (default: the board's design
    clock), or ``target_cycles``: cycles per inference. Returns ``(folding, description)``.
    Raises :class:`TargetUnreachable`, with the best reachable figure (the board's default
    folding, the fastest qnnfab places on it), when the folding that meets the target does
    not fit the board or no folding reaches it.
    """
    from qnnfab.rtl.folding import auto_folding
    board = get_board(board)
    if (target_ips is None) == (target_cycles is None):
        raise ValueError("target_folding: give target_ips or target_cycles")
    clock = float(board.design_clock_mhz if clock_mhz is None else clock_mhz)
    if target_ips is not None:
        if not target_ips > 0:
            raise ValueError(f"--target-ips: expected a positive rate, got {target_ips}")
        limit = int(clock * 1e6 // target_ips)
        what = f"--target-ips {target_ips:,.0f} at {clock:g} MHz"
    else:
        limit = operator.index(target_cycles)
        what = f"--target-cycles {limit}"

    def best_reachable():
        best = board_folding(network, board)
        cycles = network_interval(network, best)
        return (f"the fastest folding that fits {board.name} runs {cycles} cycles per "
                f"inference, {clock * 1e6 / cycles:,.0f} inferences/s at {clock:g} MHz")
    if limit < 1:
        raise TargetUnreachable(f"{what}: unreachable (less than one cycle per inference); "
                                f"{best_reachable()}")
    # Candidates: the per-layer cheapest folding for the limit (the network's interval is its
    # slowest stage plus the hand-overs, so aim lower until the whole network meets it), the
    # same for ever tighter aims, and the board's own; the cheapest by the fit estimate of
    # those that meet the limit and fit wins. (The per-layer search and the whole-design
    # estimate weigh the input multiplexers differently, so a faster folding can be cheaper.)
    candidates, aim, fastest = [], limit, None
    while aim >= 1:
        folding = auto_folding(network, target_cycles=aim)
        cycles = network_interval(network, folding)
        fastest = cycles if fastest is None else min(fastest, cycles)
        if cycles <= limit:
            candidates.append(folding)
            aim //= 2
        else:
            aim -= max(1, cycles - limit)
    default = board_folding(network, board)
    if network_interval(network, default) <= limit:
        candidates.append(default)
    fitting = [f for f in candidates if _fits(network, f, board)]
    if not fitting:
        if not candidates:
            raise TargetUnreachable(f"{what}: unreachable: the fastest folding of this network "
                                    f"takes {fastest} cycles; {best_reachable()}")
        raise TargetUnreachable(f"{what}: unreachable on {board.name}: the folding that meets "
                                f"it does not fit the device; {best_reachable()}")

    def cost(folding):
        return (_board_estimate(network, folding, board)["lc"],
                bram_blocks_for(network, folding, board))
    folding = min(fitting, key=cost)
    cycles = network_interval(network, folding)
    return folding, f"{what}: {cycles} cycles per inference, the cheapest folding that meets it"


def bram_blocks_for(network, folding, board, *, weights_in=None, input_buffer=None):
    """Block RAMs a folding needs on ``board`` (a name or a :class:`Board`):
    :func:`qnnfab.rtl.estimate.bram_blocks_for` with the board's read-port width and block
    size. ``folding``: ``LayerFolding``s or ``(pe, simd)`` pairs; ``weights_in``: one entry
    per layer, SPRAM layers not counted (None: all in block RAM); ``input_buffer``: the input
    vector in block RAM (None: as ``--input-buffer auto`` decides, :func:`input_buffer_for`)."""
    board = get_board(board)
    if input_buffer is None:
        input_buffer = input_buffer_for(network, board)
    return _estimate.bram_blocks_for(network, folding, board.bram_port_bits,
                                     board.bram_bits // board.bram_blocks,
                                     weights_in=weights_in, input_buffer=input_buffer)


#: What ``--input-buffer`` takes: the input vector in flip-flops, in block RAM, or ``auto``.
INPUT_BUFFERS = ("ff", "ebr", "auto")

#: ``--input-buffer auto`` keeps the input vector in block RAM when its flip-flops alone would
#: take more than this share of the device's cells (a 784-code 8-bit image on the UP5K: 6,272
#: of 5,280), and in flip-flops otherwise, so every build that fitted before is unchanged.
INPUT_BUFFER_AUTO_SHARE = 0.5


def input_buffer_for(network, board, input_buffer="auto", folding=None, styles=None):
    """Whether ``network``'s input vector is in block RAM on ``board``
    (:class:`~qnnfab.rtl.input_buffer.InputBuffer`): ``input_buffer`` ``"ff"`` (no),
    ``"ebr"`` (yes; ValueError when the network cannot, at ``folding`` with ``styles``:
    :func:`~qnnfab.rtl.input_buffer.why_no_input_buffer`) or ``"auto"`` (when it can and the
    vector's flip-flops would take more than :data:`INPUT_BUFFER_AUTO_SHARE` of the board's
    cells)."""
    from qnnfab.rtl.input_buffer import why_no_input_buffer
    board = get_board(board)
    if input_buffer not in INPUT_BUFFERS:
        raise ValueError(f"input_buffer must be one of {', '.join(INPUT_BUFFERS)}, not "
                         f"{input_buffer!r}")
    if input_buffer == "ff":
        return False
    why = why_no_input_buffer(network, folding, styles)
    if input_buffer == "ebr":
        if why is not None:
            raise ValueError(f"--input-buffer ebr: {why}")
        return True
    return (why is None and network.input_features * network.input_bits
            > INPUT_BUFFER_AUTO_SHARE * board.lut)


#: What ``--weights-in`` takes besides one entry per layer.
WEIGHTS_IN = ("ebr", "spram", "auto")


class NoSPRAM(ValueError):
    """SPRAM weights asked of a board without SPRAM, or more SPRAM than it has."""


def _spram_candidates(network, styles):
    from qnnfab import ir
    styles = ["folded"] * len(network.layers) if styles is None else list(styles)
    return [k for k, (layer, s) in enumerate(zip(network.layers, styles))
            if isinstance(layer, ir.DenseLayer) and s == "folded"]


def _spram_allotment(network, board, stores):
    """SPRAMs per SPRAM layer: each its capacity's share (``ceil(weight bits / 256 kbit)``),
    the rest to the layer with the most multiply-accumulates (its read width sets its
    speed)."""
    from qnnfab.rtl.spram import SPRAM_BITS
    ks = [k for k, s in enumerate(stores) if s == "spram"]
    alloc = {k: max(1, -(-int(network.layers[k].weight_bits) // SPRAM_BITS)) for k in ks}
    need = sum(alloc.values())
    if need > board.spram_blocks:
        raise NoSPRAM(f"the SPRAM layers ({', '.join(map(str, ks))}) need at least {need} "
                      f"SPRAMs; {board.name} has {board.spram_blocks}")
    if ks:
        alloc[max(ks, key=lambda k: (network.layers[k].macs, -k))] += board.spram_blocks - need
    return alloc


def spram_folding(layer, blocks, target):
    """The folding of a dense ``layer`` whose weights are in ``blocks`` SPRAMs side by side:
    words of at most ``16·blocks`` bits and at most 16384 of them; the cheapest that meets
    ``target`` cycles, else the fastest. ValueError when none fits."""
    from qnnfab import numerics
    from qnnfab.rtl.estimate import folding_cost
    from qnnfab.rtl.folding import LayerFolding, divisors, layer_cycles, simd_choices
    from qnnfab.rtl.spram import SPRAM_DEPTH
    wbits = numerics.weight_code_bits(layer.weight_levels)
    best = None
    for pe in divisors(layer.out_features):
        for simd in simd_choices(layer):
            f = LayerFolding(pe, simd)
            cycles = layer_cycles(layer, f)
            if pe * simd * wbits > 16 * blocks or cycles > SPRAM_DEPTH:
                continue
            key = (cycles > target, cycles if cycles > target else 0, folding_cost(layer, f),
                   -simd)
            if best is None or key < best[0]:
                best = (key, f)
    if best is None:
        raise NoSPRAM(f"{layer.weight_bits:,} weight bits do not fit {blocks} SPRAMs at any "
                      f"folding")
    return best[1]


def _spram_board_folding(network, board, stores, max_lanes=None):
    """:func:`board_folding` with the SPRAM layers of ``stores`` folded to their SPRAMs'
    width (:func:`spram_folding`) and left out of the block RAM count."""
    from qnnfab import ir
    from qnnfab.rtl.folding import auto_folding
    alloc = _spram_allotment(network, board, stores)
    lanes = board.max_lanes if max_lanes is None else operator.index(max_lanes)

    def make(lanes):
        folding = auto_folding(network, max_lanes=lanes)
        target = max(-(-ly.macs // lanes) for ly in network.layers
                     if not isinstance(ly, ir.PoolLayer))
        for k in alloc:
            folding[k] = spram_folding(network.layers[k], alloc[k], target)
        return folding

    def fits(folding):
        return (_board_estimate(network, folding, board)["lc"] <= LC_HEADROOM * board.lut
                and bram_blocks_for(network, folding, board, weights_in=stores)
                <= board.bram_blocks)
    folding = make(lanes)
    while lanes > 1 and not fits(folding):
        lanes //= 2
        folding = make(lanes)
    return folding


def _check_spram(network, board, folding, stores):
    """NoSPRAM unless the SPRAM layers of ``stores`` fit ``board``'s SPRAMs at ``folding``."""
    from qnnfab.rtl.spram import SPRAM_DEPTH
    from qnnfab.rtl.folding import layer_cycles
    if "spram" not in stores:
        return
    if not board.spram_blocks:
        raise NoSPRAM(f"{board.name} ({board.device}) has no SPRAM: weights in SPRAM need an "
                      f"iCE40 UP5K board (icebreaker, icesugar); use --weights-in ebr")
    used = _estimate.spram_blocks_for(network, folding, stores)
    if used > board.spram_blocks:
        raise NoSPRAM(f"the SPRAM layers need {used} SPRAMs at this folding (one per 16 bits of "
                      f"PE·SIMD·weight bits); {board.name} has {board.spram_blocks}: lower "
                      f"their PE·SIMD")
    for k, s in enumerate(stores):
        if s == "spram" and layer_cycles(network.layers[k], folding[k]) > SPRAM_DEPTH:
            raise NoSPRAM(f"layers[{k}]: {layer_cycles(network.layers[k], folding[k])} weight "
                          f"words at this folding, more than an SPRAM's {SPRAM_DEPTH}: raise "
                          f"its PE·SIMD")


def board_weights(network, board, weights_in="ebr", folding=None, *, styles=None):
    """Where ``network``'s layers keep their weights on ``board``, and the folding that goes
    with it: ``(folding, weights_in list, note)``, ``note`` a line for the user (None when
    nothing is in SPRAM).

    ``weights_in``: ``"ebr"`` (every layer in block RAM: ``folding``, or
    :func:`board_folding`, unchanged), ``"spram"`` (every folded dense layer in SPRAM),
    ``"auto"`` (block RAM while the board's folding fits it; else the largest layers, by
    weight bits, move to SPRAM one by one until the rest fits) or one ``ebr``/``spram`` per
    layer. SPRAM layers get words at most ``16·blocks`` bits wide (the board's SPRAMs shared
    by capacity, the rest to the layer with the most MACs: :func:`spram_folding`) unless
    ``folding`` is given, and are not counted against the block RAM. :class:`NoSPRAM` for a
    board without SPRAM (``spram`` or a list; ``auto`` stays in block RAM there) or SPRAM
    layers that do not fit. ``styles``: the layers' styles (unrolled layers stay as they
    are)."""
    from qnnfab.rtl.folding import check_folding
    from qnnfab.rtl.network import resolve_weights_in
    board = get_board(board)
    if folding is not None:
        folding = check_folding(network, folding)
    given = folding
    if isinstance(weights_in, str) and weights_in == "ebr":
        stores = ["ebr"] * len(network.layers)
        return (board_folding(network, board) if folding is None else folding), stores, None
    if isinstance(weights_in, str) and weights_in == "auto":
        ebr = board_folding(network, board) if folding is None else folding
        if (not board.spram_blocks
                or (bram_blocks_for(network, ebr, board) <= board.bram_blocks
                    and _estimate.estimate(network, [(f.pe, f.simd) for f in ebr])
                    ["weight_bits"] <= board.bram_bits)):
            return ebr, ["ebr"] * len(network.layers), None
        order = sorted(_spram_candidates(network, styles),
                       key=lambda k: (-network.layers[k].weight_bits, k))
        stores = ["ebr"] * len(network.layers)
        last_error = None
        for k in order:
            stores[k] = "spram"
            try:
                folding = (_spram_board_folding(network, board, stores) if given is None
                           else given)
                _check_spram(network, board, folding, stores)
            except NoSPRAM as exc:
                last_error = exc
                break
            if bram_blocks_for(network, folding, board, weights_in=stores) <= board.bram_blocks:
                return folding, stores, _spram_note(network, board, folding, stores, "auto")
        raise NoSPRAM(f"--weights-in auto: the weights do not fit {board.name}'s block RAM "
                      f"and SPRAM" + (f" ({last_error})" if last_error else ""))
    if not board.spram_blocks:
        raise NoSPRAM(f"{board.name} ({board.device}) has no SPRAM: weights in SPRAM need an "
                      f"iCE40 UP5K board (icebreaker, icesugar); use --weights-in ebr")
    stores = resolve_weights_in(network, weights_in, styles)
    if folding is None:
        folding = _spram_board_folding(network, board, stores)
    _check_spram(network, board, folding, stores)
    return folding, stores, _spram_note(network, board, folding, stores,
                                        weights_in if isinstance(weights_in, str) else "given")


def _spram_note(network, board, folding, stores, how):
    if "spram" not in stores:
        return None
    ks = [k for k, s in enumerate(stores) if s == "spram"]
    used = _estimate.spram_blocks_for(network, folding, stores)
    return (f"weights in SPRAM: layer{'s' if len(ks) > 1 else ''} "
            f"{', '.join(map(str, ks))} ({used} of {board.spram_blocks} SPRAMs; --weights-in "
            f"{how}); the board takes them over the UART before the first inference")
