"""The bit layouts of a network's stream payloads, and packing to/from raw words.

The port contract of :class:`qnnfab.rtl.network.Network`: ``i.payload`` is an
``ArrayLayout(unsigned(input_bits), input_features)``; ``o.payload`` a
``StructLayout({"cls": ..., "scores": ArrayLayout(signed(acc_width), n_out)})``, fields packed LSB
first. Used by every simulator path (Amaranth and cocotb), so they read the same bits.
"""

import numpy as np
from amaranth.hdl import signed, unsigned
from amaranth.lib import data
from amaranth.utils import ceil_log2

from qnnfab import ir

__all__ = ["network_layouts", "pack_inputs", "unpack_outputs"]


def network_layouts(network):
    """``(input_layout, output_layout)`` of the network's ``i``/``o`` stream payloads, built from
    the port contract (see the module docstring)."""
    if not isinstance(network, ir.Network):
        raise TypeError(f"network must be a qnnfab.ir.Network, not {network!r}")
    last = network.layers[-1]
    n_out = last.out_features
    in_layout = data.ArrayLayout(unsigned(network.input_bits), network.input_features)
    out_layout = data.StructLayout({
        "cls": unsigned(max(1, ceil_log2(n_out))),
        "scores": data.ArrayLayout(signed(last.acc_width), n_out),
    })
    return in_layout, out_layout


def pack_inputs(layout, codes):
    """Input vectors (n, features) as ``i__payload`` words (Python ints) of an
    ``ArrayLayout``."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != layout.length:
        raise ValueError(f"inputs: expected shape (n, {layout.length}), got {codes.shape}")
    return [int(layout.const([int(x) for x in row]).as_bits()) for row in codes]


def unpack_outputs(layout, words):
    """``(classes, scores)`` arrays from ``o__payload`` words of an output ``StructLayout``
    with ``cls`` and ``scores`` fields."""
    n_out = layout["scores"].shape.length
    classes = np.zeros(len(words), dtype=np.int64)
    scores = np.zeros((len(words), n_out), dtype=np.int64)
    for i, word in enumerate(words):
        view = layout.from_bits(word)
        classes[i] = view.cls
        scores[i] = list(view.scores)
    return classes, scores
