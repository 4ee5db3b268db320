"""A second, independent implementation of what the integer golden model computes.

Written from the *definitions*, in plain numpy, sharing no code with ``qnnfab.spec.golden``,
``qnnfab.numerics`` or any value-computing helper of ``qnnfab.ir`` (no ``weight_levels``,
``KernelCodebook.decode``, ``negated_codes``, ``dense_view``, ``in_shape``/``out_shape``). It
reads only the IR objects' plain fields. Where golden vectorizes over codes (matrix products,
``np.pad``, a reshape for pooling, ``np.argmax``), this file loops over positions and taps on
activation *values*, groups inputs by weight code, counts XNOR agreements, bisects the sorted
thresholds and scans for the maximum. The two therefore share no implementation, and a wrong
rule in one shows up as a disagreement with the other.

Definitions implemented, and where each is written down:

1. **Activation values** (README "Numerics"; ``qnnfab/numerics.py`` module docstring; DESIGN.md
   "Numerics"): a 1-bit code means ±1 (1 ↦ +1, 0 ↦ −1); a k-bit code (k > 1) is the unsigned
   integer itself.
2. **Weight values** (``DenseLayer`` docstring in ``qnnfab/ir.py``; README "Numerics"): binary
   code 1 ↦ +1, 0 ↦ −1; ternary 0 ↦ 0, 1 ↦ +1, 2 ↦ −1; codebook: ``codebook[code]``, the
   layer's own table of ``2**k`` signed levels.
3. **Dense accumulator** ``acc_o = Σ_i a_i·w_oi`` (``qnnfab/ir.py`` module docstring). For ±1
   inputs × binary weights this is computed as XNOR-popcount, ``2·popcount(xnor(x, w)) − n``
   (README "In hardware every dot unit sums..."); otherwise by grouping the inputs per weight
   code: ``acc_o = Σ_level level · Σ_{i: w_oi has that level} a_i`` (add, subtract, skip for
   ternary).
4. **Multi-threshold activation** ``out = Σ_t [sign·acc ≥ T_t]`` (``qnnfab/ir.py`` module and
   ``DenseLayer`` docstrings; README): thresholds are ascending per row, so the count is the
   number of thresholds ``≤ sign·acc``, found by bisection. ``sign = −1`` flips the comparison.
   A k-bit output has ``2**k − 1`` thresholds, a 1-bit output one.
5. **Convolution** (``ConvLayer`` docstring; README "Convolutions and kernel clustering"):
   stride 1; output ``(y, x, o) = Σ_{c,ky,kx} a[y+ky−p, x+kx−p, c]·w[o, c, ky, kx]``, where a
   position outside the image holds activation *code* 0 (value 0 for k-bit, −1 for 1-bit
   activations); output size ``H + 2p − k + 1``; then the thresholds of (4) per output channel.
6. **Kernel codebook** (``KernelCodebook`` docstring; README): kernel ``(o, c)`` is
   ``kernels[index[o, c]]``; where ``sign[o, c] == −1`` every code is replaced by the code of the
   negated level. Taken here on values: the kernel's values are ``sign[o, c] · value(code)``
   (the same thing, because the IR only allows a sign −1 on kernels whose levels' negations
   exist).
7. **Max-pool** (``PoolLayer`` docstring; README): stride ``size``, output ``(y, x, c)`` is the
   largest code of the ``size × size`` block (the OR for 1-bit codes); it works on codes, after
   the activation.
8. **Image layout** (``ConvLayer`` docstring; README): images are flattened in ``(y, x, c)`` order,
   flat index ``(y·W + x)·C + c``; conv accumulators and codes are reported in ``(y, x, o)``
   order, and a dense layer after a spatial one reads the flat vector.
9. **Output layer** (``qnnfab/ir.py`` module docstring; README): the last layer (dense, no
   thresholds) emits its accumulators ("scores") and their argmax, the *first* index on ties.

Definitions that had to be inferred (the IR text does not spell them out): the flat order of a
conv layer's *accumulators* (golden's ``layer_forward`` docstring: ``(y, x, o)``, like its codes);
that a pool layer has no accumulator; and that "the largest code" of a block of 1-bit codes is
also the largest value (the code ↦ value map is increasing, so max-pool commutes with it).
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["LayerResult", "forward", "activation_value", "weight_value_table"]

# Definition 2, written out from the README (not read from qnnfab.numerics).
_FIXED_WEIGHT_VALUES = {
    "binary": {0: -1, 1: +1},
    "ternary": {0: 0, 1: +1, 2: -1},
}


@dataclass
class LayerResult:
    """What one layer computed for a batch.

    ``acc``: accumulators, int64 (batch, outputs) -- a conv layer's flattened in ``(y, x, o)``
    order; None for a pool layer. ``out``: output codes, int64 (batch, outputs) in the same
    order; None for the output layer (its accumulators are the scores).
    """
    acc: "np.ndarray | None"
    out: "np.ndarray | None"


def activation_value(code, bits):
    """Definition 1, for one code or an array of codes: ±1 for 1-bit codes, else the code."""
    code = np.asarray(code, dtype=np.int64)
    if bits == 1:
        return np.where(code == 1, 1, -1).astype(np.int64)
    return code


def weight_value_table(layer):
    """Definition 2: ``{code: value}`` of the layer's weight kind."""
    if layer.weight_kind == "codebook":
        return {code: int(level) for code, level in enumerate(layer.codebook)}
    if layer.weight_kind not in _FIXED_WEIGHT_VALUES:
        raise ValueError(f"independent reference: unknown weight kind {layer.weight_kind!r}")
    return dict(_FIXED_WEIGHT_VALUES[layer.weight_kind])


def _layer_type(layer):
    """'conv', 'pool' or 'dense', from the IR's ``kind`` tag (no ir helper involved)."""
    kind = getattr(layer, "kind", None)
    if kind == "conv":
        return "conv"
    if kind == "maxpool":
        return "pool"
    if kind == "dense":
        return "dense"
    raise ValueError(f"independent reference: cannot run a {kind!r} layer")


# -- definition 3: dense accumulators --------------------------------------------------------------

def _dense_acc(layer, codes):
    codes = np.asarray(codes, dtype=np.int64)
    batch, n = codes.shape
    weights = np.asarray(layer.weights, dtype=np.int64)
    n_out = weights.shape[0]
    acc = np.zeros((batch, n_out), dtype=np.int64)
    if layer.in_bits == 1 and layer.weight_kind == "binary":
        # XNOR-popcount: an input bit that agrees with the weight bit is a product +1.
        for o in range(n_out):
            agree = (codes == weights[o][None, :]).sum(axis=1)
            acc[:, o] = 2 * agree - n
        return acc
    values = activation_value(codes, layer.in_bits)
    table = weight_value_table(layer)
    for o in range(n_out):
        for code, level in table.items():
            if level == 0:
                continue  # skip
            chosen = weights[o] == code
            acc[:, o] += level * values[:, chosen].sum(axis=1)
    return acc


# -- definition 4: thresholds ----------------------------------------------------------------------

def _threshold(layer, acc):
    """``acc`` (batch, out_channels) -> codes: the number of thresholds ``<= sign·acc``."""
    thresholds = np.asarray(layer.thresholds, dtype=np.int64)
    signs = np.asarray(layer.threshold_sign, dtype=np.int64)
    out = np.empty_like(acc)
    for o in range(acc.shape[1]):
        row = thresholds[o]
        if np.any(np.diff(row) < 0):
            raise ValueError(f"independent reference: thresholds of output {o} are not "
                             f"ascending: {row.tolist()}")
        s = int(signs[o])
        if s not in (1, -1):
            raise ValueError(f"independent reference: threshold_sign[{o}] is {s}, not ±1")
        out[:, o] = np.searchsorted(row, s * acc[:, o], side="right")
    return out


# -- definitions 5, 6: convolution ---------------------------------------------------------------

def _kernel_values(layer):
    """Kernel values (out, in, k, k), through the kernel codebook when there is one."""
    table = weight_value_table(layer)
    kc = layer.kernel_codebook
    cout, cin, k = layer.out_channels, layer.in_channels, layer.kernel_size
    values = np.zeros((cout, cin, k, k), dtype=np.int64)
    for o in range(cout):
        for c in range(cin):
            if kc is None:
                codes = np.asarray(layer.weights)[o, c]
                sign = 1
            else:
                codes = np.asarray(kc.kernels)[int(kc.index[o, c])]
                sign = 1 if kc.sign is None else int(kc.sign[o, c])
            for ky in range(k):
                for kx in range(k):
                    values[o, c, ky, kx] = sign * table[int(codes[ky, kx])]
    return values


def _conv(layer, image):
    """``image``: codes (batch, H, W, C) -> (acc, out) as (batch, H', W', O) arrays."""
    batch, h, w, cin = image.shape
    k, p = layer.kernel_size, layer.padding
    ho, wo = h + 2 * p - k + 1, w + 2 * p - k + 1
    values = activation_value(image, layer.in_bits)
    pad_value = int(activation_value(0, layer.in_bits))  # a position outside holds code 0
    kernels = _kernel_values(layer)
    acc = np.zeros((batch, ho, wo, layer.out_channels), dtype=np.int64)
    for y in range(ho):
        for x in range(wo):
            for ky in range(k):
                for kx in range(k):
                    iy, ix = y + ky - p, x + kx - p
                    if 0 <= iy < h and 0 <= ix < w:
                        a = values[:, iy, ix, :]  # (batch, C)
                    else:
                        a = np.full((batch, cin), pad_value, dtype=np.int64)
                    # Σ_c a[c]·w[o, c, ky, kx] for every o
                    acc[:, y, x, :] += (a[:, None, :] * kernels[None, :, :, ky, kx]).sum(axis=2)
    out = _threshold(layer, acc.reshape(-1, layer.out_channels)).reshape(acc.shape)
    return acc, out


# -- definition 7: max-pool ------------------------------------------------------------------------

def _pool(layer, image):
    batch, h, w, c = image.shape
    s = layer.size
    out = np.empty((batch, h // s, w // s, c), dtype=np.int64)
    for y in range(h // s):
        for x in range(w // s):
            best = image[:, y * s, x * s, :].copy()
            for dy in range(s):
                for dx in range(s):
                    best = np.maximum(best, image[:, y * s + dy, x * s + dx, :])
            out[:, y, x, :] = best
    return out


# -- definition 8: image layout --------------------------------------------------------------------

def _unflatten(flat, h, w, c):
    """Flat (batch, H·W·C) codes -> (batch, H, W, C), by the index formula ``(y·W + x)·C + c``."""
    image = np.empty((flat.shape[0], h, w, c), dtype=np.int64)
    for y in range(h):
        for x in range(w):
            for ch in range(c):
                image[:, y, x, ch] = flat[:, (y * w + x) * c + ch]
    return image


def _flatten(image):
    batch, h, w, c = image.shape
    flat = np.empty((batch, h * w * c), dtype=np.int64)
    for y in range(h):
        for x in range(w):
            for ch in range(c):
                flat[:, (y * w + x) * c + ch] = image[:, y, x, ch]
    return flat


# -- definition 9: argmax --------------------------------------------------------------------------

def _first_argmax(scores):
    classes = np.zeros(scores.shape[0], dtype=np.int64)
    for b in range(scores.shape[0]):
        best = 0
        for j in range(1, scores.shape[1]):
            if scores[b, j] > scores[b, best]:  # strictly greater: the first index wins ties
                best = j
        classes[b] = best
    return classes


def forward(network, codes):
    """Run ``network`` on input codes (batch, input_features) or one vector.

    Returns ``(classes, scores, layers)``: classes (batch,), scores (batch, n_outputs), and one
    :class:`LayerResult` per layer of ``network.layers``.
    """
    codes = np.asarray(codes)
    if codes.ndim == 1:
        codes = codes[None, :]
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"independent reference: expected integer codes, got {codes.dtype}")
    top = 2 ** int(network.input_bits) - 1
    if codes.size and (codes.min() < 0 or codes.max() > top):
        raise ValueError(f"independent reference: input codes must lie in 0..{top}, got "
                         f"{int(codes.min())}..{int(codes.max())}")
    x = codes.astype(np.int64)
    results = []
    n_layers = len(network.layers)
    for i, layer in enumerate(network.layers):
        kind = _layer_type(layer)
        last = i == n_layers - 1
        if kind == "conv":
            image = _unflatten(x, layer.height, layer.width, layer.in_channels)
            acc, out = _conv(layer, image)
            results.append(LayerResult(acc=_flatten(acc), out=_flatten(out)))
        elif kind == "pool":
            image = _unflatten(x, layer.height, layer.width, layer.channels)
            results.append(LayerResult(acc=None, out=_flatten(_pool(layer, image))))
        else:
            acc = _dense_acc(layer, x)
            if layer.thresholds is None:
                if not last:
                    raise ValueError(f"independent reference: layer {i} has no thresholds but "
                                     f"is not the last layer")
                results.append(LayerResult(acc=acc, out=None))
            else:
                results.append(LayerResult(acc=acc, out=_threshold(layer, acc)))
        if last:
            break
        x = results[-1].out
        if x is None:
            raise ValueError(f"independent reference: layer {i} emits no codes")
    scores = results[-1].acc
    if results[-1].out is not None or scores is None:
        raise ValueError("independent reference: the last layer must be dense without thresholds")
    return _first_argmax(scores), scores, results
