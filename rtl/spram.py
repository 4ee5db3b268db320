"""A weight store in the iCE40 UP5K's single-port RAMs (SPRAM, ``SB_SPRAM256KA``).

The UP5K has four SPRAMs of 16384 words × 16 bits (256 kbit each, 1 Mbit together) beside
its 30 EBR of 4 kbit: a layer whose weights do not fit the EBR can live there. An SPRAM has
one port, 16 bits wide, and no initial contents in the bitstream: the weights are written
after configuration (the board top's load frame, :mod:`qnnfab.boards.protocol`).

:class:`SPRAMWeightStore` is read like the MVU's weight memory (``addr``, ``en``, ``data`` one
cycle later, held while ``en`` is low) and written 16 bits at a time through a
:func:`load_signature` port. In simulation and generic Verilog (``platform`` None or not an
iCE40) it is a :class:`~amaranth.lib.memory.Memory` (zero, or the given ``init``: a network
simulation starts from the loaded state); on an iCE40 platform it instantiates
``ceil(width / 16)`` ``SB_SPRAM256KA`` side by side.
"""

import operator

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ._checks import quiet_on_error

__all__ = ["SPRAMWeightStore", "load_signature", "SPRAM_DEPTH", "SPRAM_WIDTH", "SPRAM_BITS",
           "spram_blocks", "spram_words"]

#: Words of one SPRAM (``SB_SPRAM256KA``).
SPRAM_DEPTH = 16384
#: Bits of one SPRAM word (its port width).
SPRAM_WIDTH = 16
#: Bits of one SPRAM.
SPRAM_BITS = SPRAM_DEPTH * SPRAM_WIDTH


def spram_blocks(width):
    """SPRAMs side by side for a word of ``width`` bits: ``ceil(width / 16)``."""
    return -(-operator.index(width) // SPRAM_WIDTH)


def spram_words(width, depth):
    """16-bit words of the load address space of a ``width`` × ``depth`` store:
    ``spram_blocks(width) · depth``."""
    return spram_blocks(width) * operator.index(depth)


def load_signature(words):
    """The write (load) port of a weight store, seen from the writer: ``addr`` (a 16-bit word
    address, ``range(words)``), ``data`` (16 bits), ``en`` (write this cycle)."""
    return wiring.Signature({"addr": Out(range(max(2, words))), "data": Out(SPRAM_WIDTH),
                             "en": Out(1)})


def _is_ice40(platform):
    if platform is None:
        return False
    from amaranth.vendor import LatticeICE40Platform
    return isinstance(platform, LatticeICE40Platform)


class SPRAMWeightStore(wiring.Component):
    """A ``width`` × ``depth`` weight memory in ``ceil(width / 16)`` SPRAMs.

    Parameters
    ----------
    width : int, bits per word (the MVU's ``pe·simd·wbits``)
    depth : int, words, at most 16384 (one SPRAM's depth)
    init : list of int, optional
        The contents the simulation model starts with (default zero). An iCE40 SPRAM has no
        initial contents: on an iCE40 platform ``init`` is ignored and the store must be
        loaded through ``w``.

    Members
    -------
    addr : In(range(depth)), en : In(1)
        Read word ``addr`` when ``en`` is high.
    data : Out(width)
        The word read, one cycle after ``en`` (a synchronous read, like a ``lib.memory`` read
        port); held while ``en`` is low. Undefined after a cycle with ``w.en`` high until the
        next read: reads and writes share the one port, and a write wins.
    w : In(load_signature(ceil(width / 16) · depth))
        Write 16 bits: word ``addr = b·depth + row`` (block-major) is bits ``[16·b, 16·b + 16)``
        of row ``row`` (bits past ``width`` in the last block are stored and never read).

    Latency: reads 1 cycle; a write is registered (address decode) and lands 2 cycles after
    ``w.en``. Throughput: one read or one 16-bit write per cycle.
    """

    @quiet_on_error
    def __init__(self, *, width, depth, init=None):
        for name, value in (("width", width), ("depth", depth)):
            if isinstance(value, bool):
                raise TypeError(f"{name} must be an integer, not {value!r}")
            operator.index(value)
        self.width = operator.index(width)
        self.depth = operator.index(depth)
        if self.width < 1:
            raise ValueError(f"width must be >= 1, not {self.width}")
        if not 1 <= self.depth <= SPRAM_DEPTH:
            raise ValueError(f"depth must be 1..{SPRAM_DEPTH} (one SPRAM's words), not "
                             f"{self.depth}")
        self.init = None if init is None else [int(v) for v in init]
        if self.init is not None and len(self.init) > self.depth:
            raise ValueError(f"init: {len(self.init)} words for a depth of {self.depth}")
        super().__init__({
            "addr": In(range(max(2, self.depth))),
            "en": In(1),
            "data": Out(self.width),
            "w": In(load_signature(self.words)),
        })

    @property
    def blocks(self):
        """SPRAMs side by side: ``ceil(width / 16)``."""
        return spram_blocks(self.width)

    @property
    def words(self):
        """16-bit words of the load address space: ``blocks · depth``."""
        return self.blocks * self.depth

    @property
    def latency(self):
        """Cycles from ``en`` to ``data``."""
        return 1

    def elaborate(self, platform):
        m = Module()
        nb, depth = self.blocks, self.depth
        # -- the write, registered: which block, which row, the data ----------------------------
        w_row = Signal(range(max(2, depth)))
        w_mask = Signal(nb)
        w_data = Signal(SPRAM_WIDTH)
        w_en = Signal()
        m.d.sync += [w_en.eq(self.w.en), w_data.eq(self.w.data)]
        if nb == 1:
            m.d.sync += [w_row.eq(self.w.addr), w_mask.eq(1)]
        else:
            hits = [(self.w.addr >= b * depth) & (self.w.addr < (b + 1) * depth)
                    for b in range(nb)]
            row = 0
            for b, hit in enumerate(hits):
                row = row | Mux(hit, self.w.addr - b * depth, 0)
            m.d.sync += [w_row.eq(row), w_mask.eq(Cat(*hits))]

        if _is_ice40(platform):
            if not str(getattr(platform, "device", "")).startswith("iCE40UP"):
                raise ValueError(f"SPRAM weights need an iCE40 UltraPlus (UP5K); "
                                 f"{platform.device} has no SPRAM")
            address = Signal(14)
            m.d.comb += address.eq(Mux(w_en, w_row, self.addr))
            outs = []
            for b in range(nb):
                dout = Signal(SPRAM_WIDTH, name=f"dout{b}")
                write = Signal(name=f"write{b}")
                m.d.comb += write.eq(w_en & w_mask[b])
                m.submodules[f"spram{b}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=address, i_DATAIN=w_data, i_MASKWREN=Const(0b1111, 4),
                    i_WREN=write, i_CHIPSELECT=Mux(w_en, write, self.en),
                    i_CLOCK=ClockSignal(), i_STANDBY=Const(0, 1), i_SLEEP=Const(0, 1),
                    i_POWEROFF=Const(1, 1),   # active low: 1 = powered
                    o_DATAOUT=dout)
                outs.append(dout)
            m.d.comb += self.data.eq(Cat(*outs)[:self.width])
        else:
            mem = Memory(shape=nb * SPRAM_WIDTH, depth=depth,
                         init=self.init if self.init is not None else [])
            m.submodules.mem = mem
            rd = mem.read_port()
            wr = mem.write_port(granularity=SPRAM_WIDTH)
            m.d.comb += [rd.addr.eq(self.addr), rd.en.eq(self.en & ~w_en),
                         self.data.eq(rd.data[:self.width]),
                         wr.addr.eq(w_row), wr.data.eq(w_data.replicate(nb)),
                         wr.en.eq(Mux(w_en, w_mask, 0))]
        return m
