"""Export a trained float model to the network IR, batch-norm and sign folded into thresholds.

A hidden layer ``BinaryLinear → BatchNorm1d → sign`` outputs ``+1`` where ``bn(acc) >= 0``.
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
"""

import numpy as np
import torch

from qnnfab import ir, numerics

from .layers import BinaryMLP, batchnorm_eval
from .quantizers import binary_weight_codes

__all__ = ["export", "fold_bn_sign"]


@torch.no_grad()
def fold_bn_sign(bn, *, in_features, in_bits, weight_kind="binary", where="layer"):
    """Integer ``(thresholds (out, 1), threshold_sign (out,))`` of ``sign(batchnorm_eval(acc))``.

    ``bn`` is a ``BatchNorm1d`` (its running statistics and affine parameters are used). For
    every integer ``acc`` in ``±acc_bound(in_features, in_bits, weight_kind)``:
    ``[sign·acc >= T] == [batchnorm_eval(acc) >= 0]``.
    """
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
    n = bn.num_features
    bound = numerics.acc_bound(in_features, in_bits, weight_kind)
    tlo, thi = numerics.threshold_bounds(in_features, in_bits, weight_kind)
    gamma = bn.weight.detach()
    sign = torch.where(gamma < 0, -1, 1).to(torch.int64)
    dtype = bn.running_mean.dtype

    def on(t):
        acc = (sign * t).to(dtype)[None, :]
        return (batchnorm_eval(acc, bn) >= 0)[0]

    # Invariant: on(t) is False for every t < lo; on(hi) is True or hi == bound + 1 ("never").
    lo = torch.full((n,), -bound, dtype=torch.int64)
    hi = torch.full((n,), bound + 1, dtype=torch.int64)
    while bool((lo < hi).any()):
        active = lo < hi
        mid = torch.div(lo + hi, 2, rounding_mode="floor")
        hit = on(mid)
        hi = torch.where(active & hit, mid, hi)
        lo = torch.where(active & ~hit, mid + 1, lo)
    thresholds = torch.clamp(hi, tlo, thi)
    return (thresholds.numpy().astype(np.int64)[:, None], sign.numpy().astype(np.int64))


def export(model, *, meta, classes=None):
    """The :class:`qnnfab.ir.Network` of a trained :class:`~qnnfab.model.layers.BinaryMLP`.

    Weights become 0/1 codes ``(out, in)``; each hidden layer's batch-norm and sign become one
    integer threshold per output (:func:`fold_bn_sign`); the output layer keeps raw
    accumulators (its positive scale does not change the argmax and is dropped).
    ``meta`` (a JSON-serializable dict) is copied into ``network.meta``. Returns the network,
    validated.
    """
    if not isinstance(model, BinaryMLP):
        raise TypeError(f"model must be a qnnfab.model.layers.BinaryMLP, not {model!r}")
    if not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict, not {meta!r}")
    layers = []
    in_bits = model.input_bits
    for i, block in enumerate(model.hidden):
        lin = block.linear
        thresholds, sign = fold_bn_sign(block.bn, in_features=lin.in_features, in_bits=in_bits,
                                        where=f"layers[{i}]")
        layers.append(ir.DenseLayer(
            in_features=lin.in_features, out_features=lin.out_features, in_bits=in_bits,
            weight_kind="binary", weights=binary_weight_codes(lin.weight),
            thresholds=thresholds, threshold_sign=sign, name=f"dense{i}"))
        in_bits = 1
    lin = model.head.linear
    layers.append(ir.DenseLayer(
        in_features=lin.in_features, out_features=lin.out_features, in_bits=in_bits,
        weight_kind="binary", weights=binary_weight_codes(lin.weight),
        name=f"dense{len(model.hidden)}"))
    network = ir.Network(input_features=model.features[0], input_bits=model.input_bits,
                         layers=layers, classes=list(classes or []), meta=dict(meta))
    return network.validate()
