"""Binary × binary dot products: XNOR then popcount, ``PE`` of them over ``SIMD`` lanes.

A binary activation bit ``x`` (1 ↦ +1, 0 ↦ -1) times a binary weight bit ``w`` is +1 exactly
when ``x == w``, so ``Σ x_i·w_i = 2·popcount(xnor(x, w)) - n``. The unit emits the popcount;
the matrix-vector unit accumulates popcounts over the folded inputs; the affine map back to
``Σ x·w`` (:meth:`XnorPopcount.scale_for`, :meth:`XnorPopcount.offsets`) is folded into the
thresholds.
"""


import numpy as np

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import data
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ._checks import quiet_on_error
from .dot_unit import DotUnit, adder_lane_cells, dot_unit_shape

__all__ = ["XnorPopcount", "adder_tree", "popcount", "tree_depth", "register_levels",
           "REGISTER_EVERY"]


def adder_tree(m, values, *, register=None, en=None, name="tree"):
    """Sum ``values`` (Amaranth values) with a balanced tree of adders of minimal width.

    ``register`` is a set of tree levels (0 = the leaves) whose sums are registered in the
    ``sync`` domain, gated by ``en``; returns ``(sum, levels_registered)``.
    """
    register = set(register or ())
    level = 0
    values = list(values)
    if not values:
        raise ValueError("adder_tree: nothing to sum")
    n_reg = 0
    while True:
        if level in register:
            regs = []
            for k, v in enumerate(values):
                r = Signal(v.shape(), name=f"{name}_l{level}_{k}")
                if en is None:
                    m.d.sync += r.eq(v)
                else:
                    with m.If(en):
                        m.d.sync += r.eq(v)
                regs.append(r)
            values = regs
            n_reg += 1
        if len(values) == 1:
            break
        nxt = []
        for k in range(0, len(values) - 1, 2):
            nxt.append(values[k] + values[k + 1])
        if len(values) % 2:
            nxt.append(values[-1])
        values = nxt
        level += 1
    return values[0], n_reg


def tree_depth(leaves):
    """Adder levels of a balanced tree over ``leaves`` values."""
    return (leaves - 1).bit_length() if leaves > 1 else 0


#: A pipelined dot unit registers its adder tree every this many levels. The registers sit on
#: LUT/carry outputs, so they pack into the same logic cells (+~200 LCs for the default network,
#: against +~13 ns of logic and routing per unregistered level: every 2 levels the 256-lane
#: popcount was the critical path at ~45 MHz on the UP5K, every level it is not).
REGISTER_EVERY = 1


def register_levels(leaves):
    """The tree levels that get a pipeline register in a pipelined dot unit (the output is
    registered too)."""
    return tuple(range(REGISTER_EVERY, tree_depth(leaves), REGISTER_EVERY))


def popcount(m, bits, *, register=None, en=None, name="popcount"):
    """Number of ones in ``bits`` (an Amaranth value): pairs of bits summed first (a 4-input
    LUT pair each), then a balanced adder tree. Returns ``(count, levels_registered)``."""
    n = len(bits)
    leaves = [bits[k:k + 2] for k in range(0, n, 2)]
    pairs = [(v[0] + v[1]) if len(v) == 2 else v[0] for v in leaves]
    return adder_tree(m, pairs, register=register, en=en, name=name)


class XnorPopcount(DotUnit):
    """``PE`` XNOR-popcount dot products of one ``SIMD``-bit activation word with ``PE``
    ``SIMD``-bit weight words.

    Parameters
    ----------
    pe : int
        Dot products computed in parallel.
    simd : int
        Lanes (bits) per dot product.
    in_bits : int
        Must be 1 (accepted so that every dot unit is built the same way).
    pipelined : bool
        Register the popcounts and every :data:`REGISTER_EVERY` levels of the adder tree
        (latency ``1 + len(register_levels(...))``), instead of a purely combinational unit
        (latency 0).

    Members
    -------
    x : In(simd)
        Activation bits, lane ``s`` at bit ``s`` (1 ↦ +1, 0 ↦ -1).
    w : In(pe * simd)
        Weight bits, PE ``p`` lane ``s`` at bit ``p * simd + s``.
    en : In(1)
        Clock enable of the pipeline register (ignored when not pipelined).
    o : Out(ArrayLayout(unsigned(ceil_log2(simd + 1)), pe))
        ``popcount(xnor(x, w_p))`` per PE, :attr:`latency` cycles (of ``en``) after ``x``/``w``.

    Latency: :attr:`latency` (0 or 1). Throughput: one word per cycle.
    """

    @quiet_on_error
    def __init__(self, *, pe, simd, in_bits=1, pipelined=True):
        self.pe, self.simd, self.in_bits = dot_unit_shape(pe, simd, in_bits)
        if self.in_bits != 1:
            raise ValueError(f"XnorPopcount takes 1-bit ±1 activations, not in_bits="
                             f"{self.in_bits} (use BinaryWeightDot for unsigned inputs)")
        self.pipelined = bool(pipelined)
        super().__init__({
            "x": In(self.simd),
            "w": In(self.pe * self.simd),
            "en": In(1, init=1),
            "o": Out(data.ArrayLayout(self.partial_shape, self.pe)),
        })

    @staticmethod
    def pipeline_latency(simd, pipelined=True, in_bits=1):
        """Latency of a unit of ``simd`` lanes, without building one."""
        if not pipelined:
            return 0
        return 1 + len(register_levels((simd + 1) // 2))

    @staticmethod
    def scale_for(in_bits=1):
        """``scale`` of ``acc = scale·S + offset``: 2 (``Σ x·w = 2·popcount - fan_in``)."""
        return 2

    @staticmethod
    def sum_shape(fan_in, in_bits=1):
        """Shape of the sum ``S`` of the partials over ``fan_in`` inputs."""
        return unsigned(ceil_log2(fan_in + 1))

    @staticmethod
    def offsets(layer):
        """Per-neuron ``offset`` of ``acc = scale·S + offset``: ``-in_features``."""
        return np.full(layer.out_features, -layer.in_features, dtype=np.int64)

    @staticmethod
    def lane_cells(layer):
        """Logic cells per lane: :func:`~qnnfab.rtl.dot_unit.adder_lane_cells`."""
        return adder_lane_cells(layer)

    def elaborate(self, platform):
        m = Module()
        for p in range(self.pe):
            xn = Signal(self.simd, name=f"xnor{p}")
            m.d.comb += xn.eq(~(self.x ^ self.w[p * self.simd:(p + 1) * self.simd]))
            levels = register_levels((self.simd + 1) // 2) if self.pipelined else ()
            count, _ = popcount(m, xn, register=levels, en=self.en, name=f"pc{p}")
            if self.pipelined:
                with m.If(self.en):
                    m.d.sync += self.o[p].eq(count)
            else:
                m.d.comb += self.o[p].eq(count)
        return m
