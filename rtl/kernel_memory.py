"""The weight memory of a conv layer whose kernels come from a kernel codebook.

Instead of every weight code, the memory holds one index (and a sign bit, with per-kernel signs)
per (output, input) channel pair; a table of the ``K`` representative kernels, a constant beside
the datapath, turns each index back into the ``k·k`` weight codes the dot-product unit reads.
"""

import numpy as np
from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from qnnfab import ir, numerics

from ._checks import quiet_on_error
from .estimate import BLOCK_RAM_MIN_BITS

__all__ = ["KernelCodebookMemory", "kernel_index_words"]


def kernel_index_words(layer, pe, simd):
    """The index memory's words: word ``nf * SF + sf`` holds, for PE ``p`` and the ``j``-th of
    the ``simd / k²`` input channels of slice ``sf``, ``index | sign << index_bits`` (sign 1 for
    a negated kernel) at bits ``(p * per_word + j) * slot_bits``
    (:attr:`~qnnfab.ir.KernelCodebook.slot_bits`)."""
    kc = layer.kernel_codebook
    per = simd // layer.kernel_size ** 2
    sf_n = layer.in_channels // per
    nf_n = layer.out_channels // pe
    slot = kc.slot_bits
    value = np.asarray(kc.index, dtype=np.int64)
    if kc.sign is not None:
        value = value | ((np.asarray(kc.sign) < 0).astype(np.int64) << kc.index_bits)
    # (nf, p, sf, j) -> (nf, sf, p, j)
    blocks = value.reshape(nf_n, pe, sf_n, per).transpose(0, 2, 1, 3).reshape(nf_n * sf_n,
                                                                              pe * per)
    words = []
    for row in blocks:
        word = 0
        for k, v in enumerate(row.tolist()):
            word |= int(v) << (k * slot)
        words.append(word)
    return words


class KernelCodebookMemory(wiring.Component):
    """Weight memory of a kernel-codebook conv layer, read like the plain weight memory.

    Parameters
    ----------
    layer : ir.ConvLayer with a ``kernel_codebook``
    pe, simd : int
        The MVU's folding; ``simd`` must be a multiple of ``kernel_size²`` (a slice covers
        whole kernels) dividing ``in_channels·kernel_size²``.

    Members
    -------
    addr : In(range(depth)), en : In(1)
        Word ``nf * SF + sf``, read when ``en`` is high (a synchronous read, like a
        ``lib.memory`` read port).
    data : Out(pe·simd·wbits)
        One cycle after the read: for PE ``p`` and lane ``s`` the weight code of output
        channel ``nf·pe + p`` and window input ``sf·simd + s`` (``(c, ky, kx)`` order) at bits
        ``(p·simd + s)·wbits``, exactly :func:`~qnnfab.rtl.mvu.weight_words` of the decoded
        weights.

    The index memory (``depth`` words of ``pe·simd/k²`` slots of ``index_bits`` + sign bit)
    is marked ``ram_style = "block"`` when large; each slot is decoded by the constant table of
    representatives (a multiplexer of ``K`` constants per code bit) and, for a negated kernel,
    by the weight kind's negation map (binary: invert; ternary: swap +1 and -1). The decode is
    combinational after the read register. Latency 1 cycle, one word per cycle.
    """

    @quiet_on_error
    def __init__(self, layer, pe, simd):
        if not isinstance(layer, ir.ConvLayer) or layer.kernel_codebook is None:
            raise TypeError(f"layer must be a qnnfab.ir.ConvLayer with a kernel codebook, not "
                            f"{layer!r}")
        k2 = layer.kernel_size ** 2
        if simd % k2 or (layer.in_channels * k2) % simd or layer.out_channels % pe:
            raise ValueError(f"{layer.name or 'conv layer'}: SIMD={simd} must be a multiple of "
                             f"kernel_size²={k2} dividing {layer.in_channels * k2}, and PE={pe} "
                             f"must divide {layer.out_channels}")
        self.layer = layer
        self.pe, self.simd = pe, simd
        self.wbits = numerics.weight_code_bits(layer.weight_levels)
        self.depth = (layer.in_channels * k2 // simd) * (layer.out_channels // pe)
        super().__init__({
            "addr": In(range(max(2, self.depth))),
            "en": In(1),
            "data": Out(pe * simd * self.wbits),
        })

    @property
    def index_memory_bits(self):
        kc = self.layer.kernel_codebook
        return kc.index.size * kc.slot_bits

    def elaborate(self, platform):
        m = Module()
        layer, kc = self.layer, self.layer.kernel_codebook
        k2 = layer.kernel_size ** 2
        per = self.simd // k2
        slot = kc.slot_bits
        words = kernel_index_words(layer, self.pe, self.simd)
        if self.depth == 1 or slot == 0:
            word = Const(words[0], max(1, self.pe * per * slot))
        else:
            attrs = {"ram_style": "block"} if self.index_memory_bits >= BLOCK_RAM_MIN_BITS \
                else {}
            m.submodules.index = mem = Memory(shape=self.pe * per * slot, depth=self.depth,
                                              init=words, attrs=attrs)
            rd = mem.read_port()
            m.d.comb += [rd.addr.eq(self.addr), rd.en.eq(self.en)]
            word = rd.data

        wbits = self.wbits
        table = [sum(int(c) << (t * wbits) for t, c in enumerate(rep.reshape(-1).tolist()))
                 for rep in np.asarray(kc.kernels, dtype=np.int64)]
        neg = numerics.negated_codes(layer.weight_levels)
        lanes = []
        for j in range(self.pe * per):
            bits = word[j * slot:(j + 1) * slot] if slot else Const(0, 1)
            rep = Signal(k2 * wbits, name=f"rep{j}")
            index = bits[:kc.index_bits] if kc.index_bits else Const(0, 1)
            with m.Switch(index):
                for i, value in enumerate(table):
                    with m.Case(i):
                        m.d.comb += rep.eq(value)
            if kc.sign is None:
                lanes.append(rep)
                continue
            flip = bits[kc.index_bits]
            codes = []
            for t in range(k2):
                code = rep[t * wbits:(t + 1) * wbits]
                out = Signal(wbits, name=f"code{j}_{t}")
                with m.If(flip):
                    with m.Switch(code):
                        for c, n in enumerate(neg):
                            with m.Case(c):
                                m.d.comb += out.eq(c if n is None else n)
                with m.Else():
                    m.d.comb += out.eq(code)
                codes.append(out)
            lanes.append(Cat(*codes))
        m.d.comb += self.data.eq(Cat(*lanes))
        return m
