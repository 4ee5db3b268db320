"""Random valid networks and inputs, for tests, benchmarks and fuzzing (numpy only).

Any weight kind of the registry (:data:`qnnfab.kinds.WEIGHT_KINDS`) works: codes are drawn
uniformly from the kind's code range; a table kind (``codebook``) draws its table with
:func:`random_codebook` unless one is given."""

import numpy as np

from . import ir, kinds, numerics

__all__ = ["random_codebook", "random_dense", "random_network", "random_inputs", "random_conv",
           "random_kernel_codebook", "random_cnn"]


def random_codebook(rng, bits=3, level_bits=6):
    """``2**bits`` random signed integer levels of at most ``level_bits`` bits."""
    top = (1 << (level_bits - 1)) - 1
    return rng.integers(-top, top + 1, size=1 << bits, dtype=np.int64)


def random_dense(rng, *, in_features, out_features, in_bits, out_bits=1, weight_kind="binary",
                 output=False, codebook=None):
    """A random dense layer; thresholds spread over the reachable accumulator range.

    A table kind (``weight_kind="codebook"``) takes ``codebook`` (levels; default
    :func:`random_codebook`)."""
    kind = kinds.weight_kind(weight_kind)
    if kind.table:
        codebook = random_codebook(rng) if codebook is None else np.asarray(codebook, np.int64)
    lo, hi = kind.code_range(codebook)
    weights = rng.integers(lo, hi + 1, size=(out_features, in_features), dtype=np.int64)
    layer = ir.DenseLayer(in_features=in_features, out_features=out_features, in_bits=in_bits,
                          weight_kind=weight_kind, weights=weights, codebook=codebook)
    if output:
        return layer
    n_thr = (1 << out_bits) - 1
    levels = layer.weight_levels
    bound = numerics.acc_bound(in_features, in_bits, levels)
    # Most thresholds near the middle of the range (where accumulators usually are), a few
    # at and beyond its ends so always-true/never-true comparisons get exercised too.
    spread = max(1, int(np.sqrt(in_features)) * max(1, (1 << in_bits) - 1 if in_bits > 1 else 1)
                 * numerics.weight_magnitude(levels))
    centre = 0  # ±1 weights: accumulators centre on zero
    thr = rng.integers(centre - 2 * spread, centre + 2 * spread + 1, size=(out_features, n_thr))
    edge = rng.random(size=thr.shape) < 0.05
    thr = np.where(edge, rng.choice([-bound, bound + 1], size=thr.shape), thr)
    tlo, thi = numerics.threshold_bounds(in_features, in_bits, levels)
    layer.thresholds = np.sort(np.clip(thr, tlo, thi), axis=1).astype(np.int64)
    layer.threshold_sign = rng.choice([-1, 1], size=out_features).astype(np.int64)
    return layer


def random_kernel_codebook(rng, layer, kernels, *, sign=False):
    """A random :class:`~qnnfab.ir.KernelCodebook` of ``kernels`` representatives for a conv
    layer (``sign``: random per-kernel signs; the levels must be symmetric for codebook kinds)."""
    k = layer.kernel_size
    n_codes = len(layer.weight_levels)
    table = rng.integers(0, n_codes, size=(kernels, k, k), dtype=np.int64)
    index = rng.integers(0, kernels, size=(layer.out_channels, layer.in_channels),
                         dtype=np.int64)
    signs = rng.choice([-1, 1], size=index.shape).astype(np.int64) if sign else None
    return ir.KernelCodebook(index=index, kernels=table, sign=signs)


def random_conv(rng, *, in_channels, out_channels, height, width, in_bits, out_bits=1,
                kernel_size=3, padding=1, weight_kind="binary", codebook=None, kernels=None,
                sign=False):
    """A random conv layer (thresholds as :func:`random_dense`); ``kernels``: a random kernel
    codebook of that many representatives (``sign``: with per-kernel signs)."""
    view = random_dense(rng, in_features=in_channels * kernel_size ** 2,
                        out_features=out_channels, in_bits=in_bits, out_bits=out_bits,
                        weight_kind=weight_kind, codebook=codebook)
    k = kernel_size
    layer = ir.ConvLayer(
        in_channels=in_channels, out_channels=out_channels, height=height, width=width,
        kernel_size=k, padding=padding, in_bits=in_bits, weight_kind=weight_kind,
        weights=view.weights.reshape(out_channels, in_channels, k, k),
        thresholds=view.thresholds, threshold_sign=view.threshold_sign, codebook=view.codebook)
    if kernels is not None:
        layer.kernel_codebook = random_kernel_codebook(rng, layer, kernels, sign=sign)
        layer.weights = layer.kernel_codebook.decode(layer.weight_levels)
    return layer


def random_cnn(rng, *, height, width, channels, input_bits=2, hidden_bits=2, kernel_size=3,
               padding=1, pool=(), weight_kind="ternary", dense=(), n_outputs=4,
               codebook=None, kernels=None, sign=False):
    """A random CNN: conv layers with ``channels`` = [in, out1, out2, ...] channels, a 2x2
    max-pool after conv ``i`` for each ``i`` in ``pool``, then dense layers of widths ``dense``
    and an output layer of ``n_outputs``. ``weight_kind``, ``codebook``, ``kernels`` and
    ``sign`` apply to every conv layer; dense layers are binary."""
    layers = []
    h, w, bits = height, width, input_bits
    for i, (cin, cout) in enumerate(zip(channels[:-1], channels[1:])):
        conv = random_conv(rng, in_channels=cin, out_channels=cout, height=h, width=w,
                           in_bits=bits, out_bits=hidden_bits, kernel_size=kernel_size,
                           padding=padding, weight_kind=weight_kind, codebook=codebook,
                           kernels=kernels, sign=sign)
        layers.append(conv)
        h, w, bits = conv.out_height, conv.out_width, conv.out_bits
        if i in pool:
            layers.append(ir.PoolLayer(channels=cout, height=h, width=w, size=2, bits=bits))
            h, w = h // 2, w // 2
    features = h * w * channels[-1]
    for n in dense:
        layers.append(random_dense(rng, in_features=features, out_features=n, in_bits=bits,
                                   out_bits=hidden_bits))
        features, bits = n, layers[-1].out_bits
    layers.append(random_dense(rng, in_features=features, out_features=n_outputs, in_bits=bits,
                               output=True))
    return ir.Network(input_features=height * width * channels[0], input_bits=input_bits,
                      layers=layers, meta={"random": True}).validate()


def random_network(rng, *, features, input_bits=1, hidden_bits=1, weight_kind="binary"):
    """A random network with layer sizes ``features`` = [inputs, hidden..., outputs].

    ``hidden_bits`` and ``weight_kind`` are one value for every layer or a list with one entry
    per hidden layer (``hidden_bits``) / per layer (``weight_kind``), for mixed networks.
    """
    n_layers = len(features) - 1
    kinds = [weight_kind] * n_layers if isinstance(weight_kind, str) else list(weight_kind)
    hbits = [hidden_bits] * (n_layers - 1) if isinstance(hidden_bits, int) \
        else list(hidden_bits)
    if len(kinds) != n_layers or len(hbits) != n_layers - 1:
        raise ValueError(f"random_network: expected {n_layers} weight kinds and {n_layers - 1} "
                         f"hidden widths, got {len(kinds)} and {len(hbits)}")
    layers = []
    bits = input_bits
    for i, (n_in, n_out) in enumerate(zip(features[:-1], features[1:])):
        last = i == n_layers - 1
        out_bits = 1 if last else hbits[i]
        layers.append(random_dense(rng, in_features=n_in, out_features=n_out, in_bits=bits,
                                   out_bits=out_bits, weight_kind=kinds[i], output=last))
        bits = out_bits
    return ir.Network(input_features=features[0], input_bits=input_bits, layers=layers,
                      meta={"random": True}).validate()


def random_inputs(rng, network, n):
    """``n`` random input code vectors for ``network``, shape (n, input_features)."""
    return rng.integers(0, 1 << network.input_bits, size=(n, network.input_features),
                        dtype=np.int64)
