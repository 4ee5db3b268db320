"""Quantized torch layers whose inference is exactly what the integer model computes.

* :class:`BinaryLinear` — latent float weights, forward with the exact ``±1`` weights, no bias,
  no scale. With integer-valued inputs its outputs are integers held exactly in float32 (every
  accumulator here is far below ``2**24``).
* :class:`BinaryDense` — ``BinaryLinear → BatchNorm1d → sign``: a hidden layer. In eval mode the
  batch-norm is computed by :func:`batchnorm_eval`, the one float formula that
  :mod:`qnnfab.model.export` also evaluates to find the integer thresholds, so the float and the
  integer model agree on every accumulator value, rounding included.
* :class:`BinaryOutput` — ``BinaryLinear`` times one learnable positive scalar (a softmax
  temperature), no bias: float argmax equals the integer argmax of the raw accumulators.
* :class:`BinaryMLP` — the hidden layers then the output layer.

The first layer takes integer input codes as floats (multi-bit unsigned values × ±1 weights);
every later layer takes ``±1`` activations.
"""

import math
import operator

import torch
from torch import nn

from .quantizers import binarize_weight, sign_activation

__all__ = ["BinaryLinear", "BinaryDense", "BinaryOutput", "BinaryMLP", "batchnorm_eval"]


def batchnorm_eval(acc, bn):
    """Inference batch-norm ``(acc - μ) / sqrt(σ² + eps) · γ + β`` over the last axis.

    Every step is one correctly rounded float32 operation, so the result is monotone in ``acc``
    (non-decreasing for ``γ >= 0``, non-increasing for ``γ < 0``) and the same for the same
    ``acc`` whatever the batch: :mod:`qnnfab.model.export` relies on both.
    """
    sigma = torch.sqrt(bn.running_var + bn.eps)
    return (acc - bn.running_mean) / sigma * bn.weight + bn.bias


class BinaryLinear(nn.Module):
    """A fully connected layer with binary weights: ``x @ sign(W).T`` (``sign(0) = +1``).

    Parameters
    ----------
    in_features, out_features : int

    Members
    -------
    weight : Parameter, shape (out_features, in_features)
        The latent float weights; training clips them to ``[-1, 1]`` (:meth:`clip_`).
    """

    def __init__(self, in_features, out_features):
        super().__init__()
        self.in_features = operator.index(in_features)
        self.out_features = operator.index(out_features)
        if self.in_features < 1 or self.out_features < 1:
            raise ValueError(f"features must be >= 1, not {in_features}, {out_features}")
        self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features))
        nn.init.uniform_(self.weight, -1 / math.sqrt(self.in_features),
                         1 / math.sqrt(self.in_features))

    def forward(self, x):
        return x @ binarize_weight(self.weight).t()

    @torch.no_grad()
    def clip_(self):
        """Clip the latent weights to ``[-1, 1]`` (where the STE passes gradient)."""
        self.weight.clamp_(-1, 1)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}"


class BinaryDense(nn.Module):
    """A hidden layer: ``BinaryLinear → BatchNorm1d → sign`` (optional dropout on its input).

    Output ``±1`` floats (``+1`` where the normalized accumulator is ``>= 0``).
    """

    def __init__(self, in_features, out_features, *, dropout=0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.linear = BinaryLinear(in_features, out_features)
        self.bn = nn.BatchNorm1d(out_features)

    def accumulate(self, x):
        """The integer-valued accumulators (before batch-norm)."""
        return self.linear(self.dropout(x))

    def normalize(self, acc):
        """Batch-norm: batch statistics when training, :func:`batchnorm_eval` otherwise."""
        return self.bn(acc) if self.training else batchnorm_eval(acc, self.bn)

    def forward(self, x):
        return sign_activation(self.normalize(self.accumulate(x)))


class BinaryOutput(nn.Module):
    """The output layer: ``BinaryLinear`` times ``exp(log_scale)`` (a positive scalar), no bias."""

    def __init__(self, in_features, out_features):
        super().__init__()
        self.linear = BinaryLinear(in_features, out_features)
        self.log_scale = nn.Parameter(torch.tensor(-0.5 * math.log(in_features)))

    @property
    def scale(self):
        return self.log_scale.exp()

    def forward(self, x):
        return self.linear(x) * self.scale


class BinaryMLP(nn.Module):
    """A binarized multilayer perceptron.

    Parameters
    ----------
    features : sequence of int
        ``[inputs, hidden..., outputs]``, at least two entries.
    input_bits : int
        Bits of each input code (the first layer takes codes ``0 .. 2**input_bits - 1`` as floats).
    dropout : float
        Dropout before each hidden layer after the first (training only).
    """

    def __init__(self, features, *, input_bits, dropout=0.0):
        super().__init__()
        features = [operator.index(f) for f in features]
        if len(features) < 2:
            raise ValueError(f"features must list inputs and outputs, not {features}")
        self.features = features
        self.input_bits = operator.index(input_bits)
        self.hidden = nn.ModuleList(
            BinaryDense(i, o, dropout=dropout if n else 0.0)
            for n, (i, o) in enumerate(zip(features[:-2], features[1:-1])))
        self.head = BinaryOutput(features[-2], features[-1])

    def binary_linears(self):
        return [block.linear for block in self.hidden] + [self.head.linear]

    def forward(self, x):
        for block in self.hidden:
            x = block(x)
        return self.head(x)

    @torch.no_grad()
    def trace(self, x):
        """``(acts, scores)``: the ``±1`` outputs of each hidden layer and the output layer's
        raw accumulators, in the current mode (use eval mode to compare with the golden)."""
        acts = []
        for block in self.hidden:
            x = block(x)
            acts.append(x)
        return acts, self.head.linear(x)
