"""The integer golden model: THE definition of what the hardware computes, bit for bit.

numpy only; independent of the float (torch) model. Every hardware path is compared with
:func:`forward` output by output.

Inputs are integer codes (see :mod:`qnnfab.numerics`): shape ``(batch, input_features)``, each
``0 .. 2**input_bits - 1``.
"""

from dataclasses import dataclass

import numpy as np

from qnnfab import ir

__all__ = ["activation_values", "weight_values", "int_matmul", "dense_acc", "conv_acc",
           "max_pool", "threshold", "layer_forward",
           "forward", "classify", "Trace", "check_inputs"]


def activation_values(codes, bits):
    """The values activation codes stand for: ±1 for one bit, the code itself otherwise."""
    codes = np.asarray(codes, dtype=np.int64)
    return 2 * codes - 1 if bits == 1 else codes


def weight_values(layer):
    """The signed integer weights of a layer, shape (out, in)."""
    return np.asarray(layer.weight_levels, dtype=np.int64)[layer.weights.astype(np.int64)]


#: float32 and float64 hold every integer of magnitude up to 2**24 and 2**53 exactly.
_FLOAT32_EXACT = 1 << 24
_FLOAT64_EXACT = 1 << 53
#: Rows of a conv layer's window matrix built at a time (bounds the memory of a large batch).
_CONV_ROWS = 1 << 18


def int_matmul(a, b):
    """``a @ b`` of two int64 matrices, exactly.

    numpy's integer matrix product has no BLAS behind it, so when every partial sum is bounded
    by ``Σ|a||b| <= inner · max|a| · max|b| < 2**24`` (``2**53``) the product is taken in
    float32 (float64), where each of those integers, in any order of summation and with or
    without fused multiply-add, is represented exactly; otherwise in int64."""
    dtype = _exact_float(a, b)
    if dtype is not None:
        return (a.astype(dtype) @ b.astype(dtype)).astype(np.int64)
    return a @ b


def _magnitude(x):
    return max(int(x.max()), -int(x.min())) if x.size else 0


def _exact_float(a, b, inner=None):
    """The narrowest float type in which every partial sum of ``a @ b`` (``inner`` terms
    each) is an exactly represented integer: float32 below 2**24, float64 below 2**53; None
    when neither holds."""
    inner = a.shape[-1] if inner is None else inner
    bound = _magnitude(a) * _magnitude(b) * inner
    if bound < _FLOAT32_EXACT:
        return np.float32
    return np.float64 if bound < _FLOAT64_EXACT else None


def dense_acc(layer, codes):
    """Accumulators ``Σ a_i·w_i`` of a dense layer, shape (batch, out), int64."""
    a = activation_values(codes, layer.in_bits)
    return int_matmul(a, weight_values(layer).T)


def threshold(layer, acc):
    """Multi-threshold activation ``Σ_t [sign·acc >= T_t]``: unsigned codes, shape (batch, out)."""
    sign = layer.threshold_sign.astype(np.int64)
    signed = acc if (sign == 1).all() else sign[None, :] * acc
    t = layer.thresholds.astype(np.int64)
    count = np.zeros(signed.shape, dtype=np.uint8 if t.shape[1] < 256 else np.int64)
    for j in range(t.shape[1]):
        count += signed >= t[None, :, j]
    return count.astype(np.int64)


def conv_acc(layer, codes):
    """Accumulators of a conv layer, shape (batch, out_height·out_width·out_channels) in
    ``(y, x, o)`` order, int64. Positions outside the image hold activation code 0."""
    h, w, c = layer.in_shape
    k, p = layer.kernel_size, layer.padding
    x = np.asarray(codes, dtype=np.int64).reshape(-1, h, w, c)
    x = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))  # code 0
    a = activation_values(x, layer.in_bits)
    ho, wo = layer.out_height, layer.out_width
    wv = np.asarray(layer.weight_levels, dtype=np.int64)[np.asarray(layer.weights, np.int64)]
    wv = wv.reshape(layer.out_channels, -1).T
    dtype = _exact_float(a, wv, inner=c * k * k)     # see int_matmul
    if dtype is not None:
        a, wv = a.astype(dtype), wv.astype(dtype)
    # windows[b, y, x, c, ky, kx] = a[b, y+ky, x+kx, c]
    windows = np.lib.stride_tricks.sliding_window_view(a, (k, k), axis=(1, 2))
    step = max(1, _CONV_ROWS // (ho * wo))
    acc = [(windows[b:b + step].reshape(-1, c * k * k) @ wv).astype(np.int64)
           for b in range(0, a.shape[0], step)]
    acc = np.concatenate(acc) if acc else np.zeros((0, layer.out_channels), np.int64)
    return acc.reshape(a.shape[0], ho * wo * layer.out_channels)


def max_pool(layer, codes):
    """Max-pooling of codes over ``size × size`` blocks, shape (batch, out_size)."""
    h, w, c = layer.in_shape
    s = layer.size
    x = np.asarray(codes, dtype=np.int64).reshape(-1, h // s, s, w // s, s, c)
    return x.max(axis=(2, 4)).reshape(x.shape[0], -1)


def layer_forward(layer, codes):
    """``(acc, out)`` of one layer; ``out`` is None for the output layer; ``acc`` is None for
    a pool layer. A conv layer's accumulators and codes are flattened in ``(y, x, o)`` order."""
    if isinstance(layer, ir.PoolLayer):
        return None, max_pool(layer, codes)
    if isinstance(layer, ir.ConvLayer):
        acc = conv_acc(layer, codes)
        out = threshold(layer, acc.reshape(-1, layer.out_channels))
        return acc, out.reshape(acc.shape)
    acc = dense_acc(layer, codes)
    return acc, (None if layer.is_output else threshold(layer, acc))


@dataclass
class Trace:
    """Everything the golden model computed for a batch.

    ``acts[i]`` are the codes entering layer ``i`` (``acts[0]`` the inputs), ``accs[i]`` its
    accumulators (None for a pool layer); ``scores`` the last layer's accumulators,
    ``classes`` their argmax (first index on ties).
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


#: Inputs :func:`classify` runs through :func:`forward` at a time.
CLASSIFY_BATCH = 128


def classify(network, codes, *, batch=CLASSIFY_BATCH):
    """``forward(network, codes).classes``, computed ``batch`` inputs at a time: the memory of
    one batch's trace (a 28x28 CNN's first layer holds 100,000 accumulators per image), and
    temporaries that stay in cache, instead of the whole data set's."""
    if not isinstance(network, ir.Network):
        raise TypeError(f"network must be a qnnfab.ir.Network, not {network!r}")
    if batch < 1:
        raise ValueError(f"batch: expected a positive number of inputs, got {batch}")
    x = check_inputs(network, codes)
    if len(x) <= batch:
        return forward(network, x).classes
    return np.concatenate([forward(network, x[i:i + batch]).classes
                           for i in range(0, len(x), batch)])
