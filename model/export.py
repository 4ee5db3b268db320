"""Export a trained float model to the network IR, batch-norm and activation folded into
integer thresholds.

A hidden layer ``QuantLinear → BatchNorm1d → sign`` outputs ``+1`` where ``bn(acc) >= 0``.
Mathematically, with ``σ = sqrt(var + eps)``:

* ``γ > 0``: ``out = 1 ⇔ acc >= μ − β·σ/γ``, i.e. ``acc >= T`` with ``T = ceil(μ − β·σ/γ)``;
* ``γ < 0``: the comparison flips: ``out = 1 ⇔ −acc >= T`` (``threshold_sign = −1``);
* ``γ = 0``: the output is constant (``β >= 0``: always 1, else never).

Rather than trusting that formula in floating point (``ceil`` of a value that lands within a
rounding error of an integer goes wrong), :func:`fold_bn_sign` finds each threshold as the
smallest integer ``t`` with ``bn(sign·t) >= 0`` *evaluated by the very float32 function the model
uses at inference* (:func:`qnnfab.model.layers.batchnorm_eval`), by bisection over the
accumulator range. That function is monotone in ``acc`` (each step is one correctly rounded
operation), so the integer layer reproduces the float layer exactly for every reachable
accumulator. Thresholds are clamped to :func:`qnnfab.numerics.threshold_bounds`.

A k-bit hidden layer is the same search once per level: threshold ``T_j`` is the smallest
integer ``t`` whose code ``post(sign·t)`` (:meth:`qnnfab.model.layers.QuantDense.post`: input
step, batch-norm, clipping, rounding — the model's own float32 function) is ``>= j``, for
``j = 1 .. 2**k - 1``; then ``code = Σ_j [sign·acc >= T_j]``. The step of a k-bit input and the
scale ``α`` of the weights are inside that function, so they are folded into the thresholds
too. Weights become IR codes of each layer's own kind (:data:`qnnfab.kinds.WEIGHT_KINDS`:
binary or ternary, an adaptive layer the kind it ended with; a codebook layer its indices and
table).

A :class:`~qnnfab.model.conv.QuantCNN` exports each conv block as an ``ir.ConvLayer`` (the same
per-channel threshold search over its window accumulators; weights ``(C_out, C_in, k, k)``
codes; an ``ir.KernelCodebook`` when its kernels come from a clustered table,
:mod:`qnnfab.model.kernel_finetune`), followed by an ``ir.PoolLayer`` when it pools. The first
dense layer's columns are permuted from torch's ``(c, y, x)`` flatten order to the IR's
``(y, x, c)``.
"""

import numpy as np
import torch

from qnnfab import ir, kinds, numerics

from .conv import QuantCNN
from .layers import QuantMLP, batchnorm_eval
from .quantizers import weight_codes

__all__ = ["export", "export_float", "fold_bn_sign", "fold_levels", "fold_dense",
           "flatten_permutation"]


def _check_bn(bn, where):
    tensors = {"running_mean": bn.running_mean, "running_var": bn.running_var,
               "weight": bn.weight, "bias": bn.bias}
    for name, t in tensors.items():
        if t is None:
            raise ValueError(f"{where}: batch-norm needs affine parameters and running "
                             f"statistics, {name} is missing")
        bad = ~torch.isfinite(t)
        if bad.any():
            idx = int(torch.nonzero(bad)[0, 0])
            raise ValueError(f"{where}: batch-norm {name}[{idx}] is {float(t[idx])}, "
                             f"expected a finite number")


@torch.no_grad()
def fold_levels(code_fn, n_levels, sign, *, in_features, in_bits, weight_kind="binary"):
    """Integer thresholds ``(out, n_levels)`` of a monotone activation.

    ``code_fn(acc)`` maps a float tensor ``(1, out)`` of integer accumulators to codes
    ``0 .. n_levels``, non-decreasing in ``sign·acc`` per output (``sign`` an int64 tensor of
    ±1). Threshold ``j-1`` is the smallest ``t`` in ``±acc_bound`` with
    ``code_fn(sign·t) >= j``, clamped to :func:`qnnfab.numerics.threshold_bounds`.
    """
    bound = numerics.acc_bound(in_features, in_bits, weight_kind)
    tlo, thi = numerics.threshold_bounds(in_features, in_bits, weight_kind)
    n = len(sign)
    columns = []
    for j in range(1, n_levels + 1):
        # Invariant: on(t) is False for every t < lo; on(hi) or hi == bound + 1 ("never").
        lo = torch.full((n,), -bound, dtype=torch.int64)
        hi = torch.full((n,), bound + 1, dtype=torch.int64)
        while bool((lo < hi).any()):
            active = lo < hi
            mid = torch.div(lo + hi, 2, rounding_mode="floor")
            hit = code_fn((sign * mid).to(torch.float32)[None, :])[0] >= j
            hi = torch.where(active & hit, mid, hi)
            lo = torch.where(active & ~hit, mid + 1, lo)
        columns.append(torch.clamp(hi, tlo, thi))
    return torch.stack(columns, dim=1).numpy().astype(np.int64)


@torch.no_grad()
def fold_bn_sign(bn, *, in_features, in_bits, weight_kind="binary", where="layer"):
    """Integer ``(thresholds (out, 1), threshold_sign (out,))`` of ``sign(batchnorm_eval(acc))``.

    ``bn`` is a ``BatchNorm1d`` (its running statistics and affine parameters are used). For
    every integer ``acc`` in ``±acc_bound(in_features, in_bits, weight_kind)``:
    ``[sign·acc >= T] == [batchnorm_eval(acc) >= 0]``.
    """
    _check_bn(bn, where)
    sign = torch.where(bn.weight.detach() < 0, -1, 1).to(torch.int64)
    dtype = bn.running_mean.dtype
    thresholds = fold_levels(lambda acc: (batchnorm_eval(acc.to(dtype), bn) >= 0).to(torch.int64),
                             1, sign, in_features=in_features, in_bits=in_bits,
                             weight_kind=weight_kind)
    return thresholds, sign.numpy().astype(np.int64)


@torch.no_grad()
def fold_dense(block, in_step, *, in_bits, where="layer"):
    """``(thresholds, threshold_sign)`` of a :class:`~qnnfab.model.layers.QuantDense` in eval
    mode whose input has step ``in_step`` (None: the accumulator is used as is)."""
    lin = block.linear
    if block.act_bits == 1 and in_step is None and lin.w_scale is None:
        return fold_bn_sign(block.bn, in_features=lin.in_features, in_bits=in_bits,
                            weight_kind=lin.levels, where=where)
    _check_bn(block.bn, where)
    if in_step is not None and not (torch.isfinite(in_step) and in_step > 0):
        raise ValueError(f"{where}: input step {float(in_step)} must be a positive number")
    if block.act_bits > 1 and not (torch.isfinite(block.clip) and block.clip > 0):
        raise ValueError(f"{where}: activation clip {float(block.clip)} must be positive")
    was_training = block.training
    block.eval()
    try:
        sign = torch.where(block.bn.weight.detach() < 0, -1, 1).to(torch.int64)

        def codes(acc):
            return block.output_codes(block.post(acc, in_step))

        thresholds = fold_levels(codes, (1 << block.act_bits) - 1, sign,
                                 in_features=lin.in_features, in_bits=in_bits,
                                 weight_kind=lin.levels)
    finally:
        block.train(was_training)
    return thresholds, sign.numpy().astype(np.int64)


def _ir_weights(lin, where):
    """``(codes, codebook)`` of a quantized linear for the IR."""
    if lin.kind == "float":
        raise ValueError(f"{where}: float weights cannot be exported as integers; quantize "
                         f"the network (qnnfab.model.ptq) or export it with export_float")
    if kinds.weight_kind(lin.kind).table:  # indices into the layer's own levels
        levels = lin.code_levels.detach().cpu().numpy()
        return (lin.code_indices.detach().cpu().numpy().astype(np.int64),
                np.rint(levels).astype(np.int64))
    return weight_codes(lin.weight_values(), lin.kind), None


def flatten_permutation(channels, height, width):
    """``perm`` with ``ir_column[j] = torch_column[perm[j]]``: the IR flattens an image
    ``(y, x, c)``, torch ``(c, y, x)``."""
    return np.arange(channels * height * width).reshape(channels, height, width) \
        .transpose(1, 2, 0).reshape(-1)


def _kernel_codebook(conv, tables, where):
    """The ``ir.KernelCodebook`` of a conv whose kernels come from a clustered table (its
    ``kernel_source`` has ``kernel_codebook()``), else None. Layers drawing on one table get
    one ``kernels`` array (``tables``: id of the table -> its array)."""
    source = conv.kernel_source
    make = getattr(source, "kernel_codebook", None)
    if make is None:
        return None
    kc = make()
    table = getattr(source, "table", source)
    shared = tables.setdefault(id(table), kc.kernels)
    if shared is not kc.kernels:
        if not np.array_equal(shared, kc.kernels):
            raise ValueError(f"{where}: a shared kernel table exported two different ways")
        kc = ir.KernelCodebook(index=kc.index, kernels=shared, sign=kc.sign)
    return kc


def _export_cnn(model, *, meta, classes):
    layers, tables = [], {}
    in_bits, in_step = model.input_bits, None
    h, w, _ = model.input_shape
    for i, block in enumerate(model.convs):
        conv, where = block.conv, f"convs[{i}]"
        codes, codebook = _ir_weights(conv, where)
        k = conv.kernel_size
        thresholds, sign = fold_dense(block, in_step, in_bits=in_bits, where=where)
        layers.append(ir.ConvLayer(
            in_channels=conv.in_channels, out_channels=conv.out_channels, height=h, width=w,
            kernel_size=k, padding=conv.padding, in_bits=in_bits, weight_kind=conv.kind,
            weights=codes.reshape(conv.out_channels, conv.in_channels, k, k),
            thresholds=thresholds, threshold_sign=sign, codebook=codebook,
            kernel_codebook=_kernel_codebook(conv, tables, where), name=f"conv{i}"))
        h, w = conv.output_size(h, w)
        if block.pooled:
            layers.append(ir.PoolLayer(channels=conv.out_channels, height=h, width=w,
                                       size=block.pool, bits=block.act_bits, name=f"pool{i}"))
            h, w = h // block.pool, w // block.pool
        in_bits, in_step = block.act_bits, block.step
    perm = flatten_permutation(*model.flat_shape)
    blocks = [*model.hidden, model.head]
    for j, block in enumerate(blocks):
        lin, where = block.linear, f"dense[{j}]"
        weights, codebook = _ir_weights(lin, where)
        if j == 0:
            weights = weights[:, perm]
        thresholds = sign = None
        if block is not model.head:
            thresholds, sign = fold_dense(block, in_step, in_bits=in_bits, where=where)
        layers.append(ir.DenseLayer(
            in_features=lin.in_features, out_features=lin.out_features, in_bits=in_bits,
            weight_kind=lin.kind, weights=weights, codebook=codebook, thresholds=thresholds,
            threshold_sign=sign, name=f"dense{j}"))
        if block is not model.head:
            in_bits, in_step = block.act_bits, block.step
    network = ir.Network(input_features=model.input_features, input_bits=model.input_bits,
                         layers=layers, classes=list(classes or []), meta=dict(meta))
    return network.validate()


def export(model, *, meta, classes=None):
    """The :class:`qnnfab.ir.Network` of a trained :class:`~qnnfab.model.layers.QuantMLP` or
    :class:`~qnnfab.model.conv.QuantCNN`.

    Weights become IR codes of each layer's kind ``(out, in)``; each hidden layer's scaling,
    batch-norm and activation become ``2**act_bits - 1`` integer thresholds per output
    (:func:`fold_dense`); the output layer keeps raw accumulators (its positive scale and
    input step do not change the argmax and are dropped). ``meta`` (a JSON-serializable dict)
    is copied into ``network.meta``. Returns the network, validated.
    """
    if not isinstance(model, (QuantMLP, QuantCNN)):
        raise TypeError(f"model must be a qnnfab.model.layers.QuantMLP (e.g. BinaryMLP) or a "
                        f"qnnfab.model.conv.QuantCNN, not {model!r}")
    if not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict, not {meta!r}")
    if isinstance(model, QuantCNN):
        return _export_cnn(model, meta=meta, classes=classes)
    layers = []
    in_bits, in_step = model.input_bits, None
    for i, block in enumerate(model.hidden):
        lin = block.linear
        weights, codebook = _ir_weights(lin, f"layers[{i}]")
        thresholds, sign = fold_dense(block, in_step, in_bits=in_bits, where=f"layers[{i}]")
        layers.append(ir.DenseLayer(
            in_features=lin.in_features, out_features=lin.out_features, in_bits=in_bits,
            weight_kind=lin.kind, weights=weights, codebook=codebook,
            thresholds=thresholds, threshold_sign=sign, name=f"dense{i}"))
        in_bits, in_step = block.act_bits, block.step
    lin = model.head.linear
    weights, codebook = _ir_weights(lin, f"layers[{len(model.hidden)}]")
    layers.append(ir.DenseLayer(
        in_features=lin.in_features, out_features=lin.out_features, in_bits=in_bits,
        weight_kind=lin.kind, weights=weights, codebook=codebook,
        name=f"dense{len(model.hidden)}"))
    network = ir.Network(input_features=model.features[0], input_bits=model.input_bits,
                         layers=layers, classes=list(classes or []), meta=dict(meta))
    return network.validate()


@torch.no_grad()
def export_float(model, *, meta, classes=None):
    """The float :class:`qnnfab.ir.Network` (``FloatDenseLayer``) of a :class:`QuantMLP` whose
    layers all have float weights: weights, batch-norm statistics and activation clips as
    they are, for post-training quantization (:mod:`qnnfab.model.ptq`)."""
    if not isinstance(model, QuantMLP):
        raise TypeError(f"model must be a qnnfab.model.layers.QuantMLP, not {model!r}")
    kinds = [lin.kind for lin in model.quant_linears()]
    if any(k != "float" for k in kinds):
        raise ValueError(f"export_float needs float weights in every layer, got {kinds}")
    layers = []
    in_bits = model.input_bits
    for i, block in enumerate(model.hidden):
        lin, bn = block.linear, block.bn
        _check_bn(bn, f"layers[{i}]")
        layers.append(ir.FloatDenseLayer(
            in_features=lin.in_features, out_features=lin.out_features, in_bits=in_bits,
            weights=lin.weight.detach().numpy().astype(np.float32),
            bn_mean=bn.running_mean.numpy().astype(np.float32),
            bn_var=bn.running_var.numpy().astype(np.float32),
            bn_weight=bn.weight.detach().numpy().astype(np.float32),
            bn_bias=bn.bias.detach().numpy().astype(np.float32), bn_eps=float(bn.eps),
            act_bits=block.act_bits,
            clip=float(block.clip) if block.act_bits > 1 else None, name=f"dense{i}"))
        in_bits = block.act_bits
    lin = model.head.linear
    layers.append(ir.FloatDenseLayer(
        in_features=lin.in_features, out_features=lin.out_features, in_bits=in_bits,
        weights=lin.weight.detach().numpy().astype(np.float32),
        name=f"dense{len(model.hidden)}"))
    meta = dict(meta)
    meta["output_log_scale"] = float(model.head.log_scale)
    network = ir.Network(input_features=model.features[0], input_bits=model.input_bits,
                         layers=layers, classes=list(classes or []), meta=meta)
    return network.validate()
