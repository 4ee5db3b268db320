"""The integer golden model: THE definition of what the hardware computes, bit for bit.

numpy only; independent of the float (torch) model. Every hardware path is compared with
:func:`forward` output by output.

Inputs are integer codes (see :mod:`qnnfab.numerics`): shape ``(batch, input_features)``, each
``0 .. 2**input_bits - 1``.
"""

from dataclasses import dataclass

import numpy as np

from qnnfab import ir

__all__ = ["activation_values", "weight_values", "dense_acc", "threshold", "layer_forward",
           "forward", "Trace", "check_inputs"]


def activation_values(codes, bits):
    """The values activation codes stand for: ±1 for one bit, the code itself otherwise."""
    codes = np.asarray(codes, dtype=np.int64)
    return 2 * codes - 1 if bits == 1 else codes


def weight_values(layer):
    """The signed integer weights of a layer, shape (out, in)."""
    return np.asarray(layer.weight_levels, dtype=np.int64)[layer.weights.astype(np.int64)]


def dense_acc(layer, codes):
    """Accumulators ``Σ a_i·w_i`` of a dense layer, shape (batch, out), int64."""
    a = activation_values(codes, layer.in_bits)
    return a @ weight_values(layer).T


def threshold(layer, acc):
    """Multi-threshold activation ``Σ_t [sign·acc >= T_t]``: unsigned codes, shape (batch, out)."""
    s = layer.threshold_sign.astype(np.int64)[None, :, None]
    t = layer.thresholds.astype(np.int64)[None, :, :]
    return (s * acc[:, :, None] >= t).sum(axis=2).astype(np.int64)


def layer_forward(layer, codes):
    """``(acc, out)`` of one layer; ``out`` is None for the output layer."""
    acc = dense_acc(layer, codes)
    return acc, (None if layer.is_output else threshold(layer, acc))


@dataclass
class Trace:
    """Everything the golden model computed for a batch.

    ``acts[i]`` are the codes entering layer ``i`` (``acts[0]`` the inputs), ``accs[i]`` its
    accumulators; ``scores`` the last layer's accumulators, ``classes`` their argmax (first
    index on ties).
    """
    acts: list
    accs: list
    scores: np.ndarray
    classes: np.ndarray


def check_inputs(network, codes):
    """Inputs as an int64 array (batch, features); ValueError naming what is wrong."""
    codes = np.asarray(codes)
    if codes.ndim == 1:
        codes = codes[None, :]
    if codes.ndim != 2 or codes.shape[1] != network.input_features:
        raise ValueError(f"inputs: expected shape (batch, {network.input_features}), "
                         f"got {codes.shape}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"inputs: expected integer codes, got dtype {codes.dtype}")
    hi = (1 << network.input_bits) - 1
    if codes.size and (codes.min() < 0 or codes.max() > hi):
        raise ValueError(f"inputs: codes must lie in 0..{hi} ({network.input_bits} bits), "
                         f"got {int(codes.min())}..{int(codes.max())}")
    return codes.astype(np.int64)


def forward(network, codes):
    """Run the integer network on a batch of input codes; returns a :class:`Trace`."""
    if not isinstance(network, ir.Network):
        raise TypeError(f"network must be a qnnfab.ir.Network, not {network!r}")
    network.require_integer("the integer golden model")
    x = check_inputs(network, codes)
    acts, accs = [x], []
    for layer in network.layers:
        acc, out = layer_forward(layer, x)
        accs.append(acc)
        if out is not None:
            acts.append(out)
            x = out
    scores = accs[-1]
    return Trace(acts=acts, accs=accs, scores=scores, classes=np.argmax(scores, axis=1))
