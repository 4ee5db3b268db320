"""Quantized torch layers whose inference is exactly what the integer model computes.

* :class:`QuantLinear` — latent float weights, forward with the exact integer weight levels
  (binary ``±1``, ternary ``-1/0/+1``, or adaptive: either, chosen by Smart Quantization,
  :mod:`qnnfab.model.sq`), no bias, no scale. With integer-valued inputs its outputs are
  integers held exactly in float32 (every accumulator here is far below ``2**24``).
* :class:`QuantDense` — ``QuantLinear → (× input step) → BatchNorm1d → activation``: a hidden
  layer. The activation is ``sign`` (1 bit, ``±1``) or a k-bit unsigned code
  (:func:`~qnnfab.model.quantizers.quantize_activation`, learned clipping). A k-bit layer hands
  the next one its integer codes and its step ``clip / (2**k - 1)``; the next layer multiplies
  its integer accumulator by that step before its batch-norm. In eval mode all of that is
  :meth:`QuantDense.post`, the one float function that :mod:`qnnfab.model.export` also
  evaluates to find the integer thresholds, so the float and the integer model agree on every
  accumulator value, rounding included.
* :class:`QuantOutput` — ``QuantLinear`` times the input step and one learnable positive scalar
  (a softmax temperature), no bias: float argmax equals the integer argmax of the raw
  accumulators.
* :class:`QuantMLP` — the hidden layers then the output layer; :class:`BinaryMLP` is the
  all-binary one.

The first layer takes integer input codes as floats (multi-bit unsigned values).
"""

import math
import operator

import numpy as np
import torch
from torch import nn

from qnnfab import kinds

from .quantizers import WEIGHT_QUANTIZERS, quantize_activation, sign_activation, weight_quantizer

__all__ = ["QuantLinear", "QuantDense", "QuantOutput", "QuantMLP", "BinaryMLP", "batchnorm_eval",
           "WEIGHT_MODES", "ADAPTIVE_KINDS", "CLIP_INIT"]

#: What a :class:`QuantLinear`'s ``weight_kind`` may be: every trainable kind of
#: :data:`~qnnfab.model.quantizers.WEIGHT_QUANTIZERS`, ``"adaptive"`` and ``"float"``
#: (``"codebook"`` comes from :meth:`QuantLinear.set_codebook`, after training).
WEIGHT_MODES = (*(k for k, q in WEIGHT_QUANTIZERS.items() if q.trainable), "adaptive", "float")

#: The depths an adaptive layer chooses between (Smart Quantization, :mod:`qnnfab.model.sq`).
ADAPTIVE_KINDS = ("binary", "ternary")

#: Initial clipping level of k-bit activations (batch-normalized inputs).
CLIP_INIT = 3.0


def batchnorm_eval(acc, bn):
    """Inference batch-norm ``(acc - μ) / sqrt(σ² + eps) · γ + β`` over the last axis.

    Every step is one correctly rounded float32 operation, so the result is monotone in ``acc``
    (non-decreasing for ``γ >= 0``, non-increasing for ``γ < 0``) and the same for the same
    ``acc`` whatever the batch: :mod:`qnnfab.model.export` relies on both.
    """
    sigma = torch.sqrt(bn.running_var + bn.eps)
    return (acc - bn.running_mean) / sigma * bn.weight + bn.bias


def _name_tensor(name):
    """``name`` as a uint8 tensor of its ASCII bytes."""
    return torch.tensor(list(name.encode("ascii")), dtype=torch.uint8)


class QuantLinear(nn.Module):
    """A fully connected layer with quantized weights: ``x @ q(W).T``.

    Parameters
    ----------
    in_features, out_features : int
    weight_kind : str
        ``"binary"`` (``±1``: ``sign(w)``, ``sign(0) = +1``), ``"ternary"`` (``-1/0/+1``:
        non-zero where ``|w| > α/2``), ``"adaptive"`` (either; :meth:`set_kind` switches) or
        ``"float"`` (not quantized: for post-training quantization, which then makes the layer
        a ``"codebook"`` one with :meth:`set_codebook`).

    Members
    -------
    weight : Parameter, shape (out_features, in_features)
        The latent float weights; training clips them to ``[-1, 1]`` (:meth:`clip_`).
    log_alpha : Parameter, scalar
        ``log α``: the scale of the levels ``{-α, (0,) +α}`` the Smart Quantization regularizer
        pulls the weights to; ``α/2`` is the ternary threshold.
    depth_logit : Parameter, scalar (adaptive layers only)
        Smart Quantization's depth gate ``s``: ``p = sigmoid(s)`` is how ternary the layer is
        (0 binary, 1 ternary) while :attr:`soft_depth` is on (the ``"regularizer"`` method,
        :mod:`qnnfab.model.sq`); unused otherwise.
    soft_depth : bool
        When true (an adaptive layer only), the forward pass uses the gated mix
        ``(1 − p)·binary(w) + p·ternary(w)`` instead of :attr:`kind`'s levels. Not saved: a
        trained layer has a fixed depth.
    kind : str
        The weight kind by name: a trainable kind (``"binary"``, ``"ternary"``: an adaptive
        layer's current depth), ``"float"`` or ``"codebook"``. It is part of the state dict
        (``<prefix>_extra_state``), so checkpoints keep it; old checkpoints' ``ternary`` flag
        loads too.
    """

    def __init__(self, in_features, out_features, weight_kind="binary"):
        super().__init__()
        self.in_features = operator.index(in_features)
        self.out_features = operator.index(out_features)
        if self.in_features < 1 or self.out_features < 1:
            raise ValueError(f"features must be >= 1, not {in_features}, {out_features}")
        if weight_kind not in WEIGHT_MODES:
            raise ValueError(f"weight_kind: expected one of {', '.join(WEIGHT_MODES)}, got "
                             f"{weight_kind!r}")
        self.adaptive = weight_kind == "adaptive"
        self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features))
        nn.init.uniform_(self.weight, -1 / math.sqrt(self.in_features),
                         1 / math.sqrt(self.in_features))
        self.log_alpha = nn.Parameter(torch.zeros(()))
        if self.adaptive:
            self.depth_logit = nn.Parameter(torch.zeros(()))
        self.soft_depth = False
        # An adaptive layer starts binary (Smart Quantization sets its initial depth).
        self._kind = ADAPTIVE_KINDS[0] if self.adaptive else weight_kind
        self.is_float = weight_kind == "float"
        self.register_buffer("code_indices", None)
        self.register_buffer("code_levels", None)
        self.register_buffer("code_scale", None)
        if not self.is_float:
            self.fit_alpha_()

    @property
    def kind(self):
        """The weight kind's name (see the class docstring)."""
        if self.code_levels is not None:
            return "codebook"
        return self._kind

    # The kind in the state dict: its name as ASCII bytes in a uint8 tensor (every value of a
    # state dict stays a tensor, for the checkpoint writer and ``weights_only`` loading).
    def get_extra_state(self):
        return _name_tensor(self._kind)

    def set_extra_state(self, state):
        kind = bytes(state.tolist()).decode("ascii")
        if kind not in WEIGHT_MODES or kind == "adaptive" or (kind == "float") != self.is_float:
            raise ValueError(f"state dict: weight kind {kind!r} does not fit this "
                             f"{'float' if self.is_float else 'quantized'} layer")
        self._kind = kind

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before the kind was stored by name hold a ``ternary`` flag.
        old = state_dict.pop(prefix + "ternary", None)
        if old is not None and prefix + "_extra_state" not in state_dict:
            kind = "float" if self.is_float else ("ternary" if bool(old) else "binary")
            state_dict[prefix + "_extra_state"] = _name_tensor(kind)
        # Adaptive layers saved before the depth gate existed: the gate was 0 (undecided).
        if self.adaptive and prefix + "depth_logit" not in state_dict \
                and prefix + "weight" in state_dict:
            state_dict[prefix + "depth_logit"] = torch.zeros(())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def levels(self):
        """The integer value of each weight code: a kind name's table, or the codebook."""
        if self.kind == "codebook":
            return tuple(int(v) for v in self.code_levels.tolist())
        if self.kind == "float":
            raise ValueError("float weights have no integer levels (quantize them first)")
        return kinds.weight_kind(self.kind).levels

    @property
    def w_scale(self):
        """What one integer weight level is worth (codebook layers), else None."""
        return self.code_scale

    @torch.no_grad()
    def set_codebook(self, indices, levels, scale):
        """Quantize a float layer's weights to ``levels[indices] · scale``.

        ``indices``: integer array (out, in) of codes; ``levels``: the integer levels
        (``2**k`` of them); ``scale``: a positive float, the value of level 1. The forward pass
        then computes the exact integer ``x @ levels[indices].T`` and the next step (batch-norm,
        or the output scale) multiplies it by ``scale``.
        """
        if not self.is_float:
            raise ValueError(f"only a float layer takes a codebook, this one is {self.kind}")
        indices = torch.as_tensor(np.asarray(indices), dtype=torch.int64)
        levels = np.asarray(levels)
        if indices.shape != self.weight.shape:
            raise ValueError(f"indices: expected shape {tuple(self.weight.shape)}, got "
                             f"{tuple(indices.shape)}")
        if not np.issubdtype(levels.dtype, np.integer):
            raise ValueError(f"levels must be integers, got dtype {levels.dtype}")
        if indices.min() < 0 or indices.max() >= len(levels):
            raise ValueError(f"indices must lie in 0..{len(levels) - 1}")
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive number, got {scale}")
        self.code_indices = indices
        self.code_levels = torch.as_tensor(levels, dtype=torch.float32)
        self.code_scale = torch.tensor(float(scale), dtype=torch.float32)

    @property
    def alpha(self):
        return self.log_alpha.exp()

    @torch.no_grad()
    def fit_alpha_(self):
        """Set ``α`` to the best fit of the current levels to the latent weights."""
        alpha, _ = weight_quantizer(self.kind).fit_scale(self.weight)
        self.log_alpha.fill_(math.log(max(alpha, 1e-6)))

    @torch.no_grad()
    def set_kind(self, kind):
        """Switch the depth (``"binary"``/``"ternary"``) of an adaptive layer; re-fits ``α``."""
        if kind not in ADAPTIVE_KINDS:
            raise ValueError(f"kind: expected 'binary' or 'ternary', got {kind!r}")
        if not self.adaptive and kind != self.kind:
            raise ValueError(f"a {self.kind} layer cannot become {kind} (not adaptive)")
        self._kind = kind
        self.fit_alpha_()

    def weight_values(self):
        """The quantized weights (``±1`` / ``0`` floats, differentiable through the STE; the
        integer levels of a codebook layer; the weights themselves for a float layer): the
        kind's :class:`~qnnfab.model.quantizers.WeightQuantizer`."""
        if self.kind == "float":
            return self.weight
        if self.soft_depth and self.adaptive:
            return self.gated_values()
        return weight_quantizer(self.kind).values(self)

    def depth_gate(self):
        """``p = sigmoid(depth_logit)`` of an adaptive layer (differentiable): 0 binary, 1
        ternary."""
        if not self.adaptive:
            raise ValueError(f"a {self.kind} layer has no depth gate (not adaptive)")
        return torch.sigmoid(self.depth_logit)

    def gated_values(self):
        """``(1 − p)·binary(w) + p·ternary(w)``: weights above the ternary threshold ``α/2``
        stay ``±1``, the ones below it are ``±(1 − p)``. Straight-through in ``w`` (both
        quantizers pass the same gradient); ``∂/∂p = ternary(w) − binary(w)``, so the task loss
        tells the gate whether zeroing the small weights helps."""
        b = weight_quantizer("binary").values(self)
        t = weight_quantizer("ternary").values(self)
        return b + self.depth_gate() * (t - b)

    def forward(self, x):
        return x @ self.weight_values().t()

    @torch.no_grad()
    def clip_(self):
        """Clip the latent weights to ``[-1, 1]`` (where the STE passes gradient)."""
        if self.is_float:
            return
        self.weight.clamp_(-1, 1)
        self.log_alpha.clamp_(math.log(1e-4), 0.0)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"kind={self.kind}{' (adaptive)' if self.adaptive else ''}")


class QuantDense(nn.Module):
    """A hidden layer: ``QuantLinear → (× in_step) → BatchNorm1d → activation`` (optional
    dropout on its input).

    ``forward(x, in_step)`` returns ``(out, step)``: for ``act_bits == 1`` the ``±1`` floats
    (``+1`` where the normalized accumulator is ``>= 0``) and ``None``; for ``act_bits >= 2`` the
    codes ``0 .. 2**act_bits - 1`` as floats and their step ``clip / (2**act_bits - 1)``.
    """

    def __init__(self, in_features, out_features, *, weight_kind="binary", act_bits=1,
                 dropout=0.0):
        super().__init__()
        self.act_bits = operator.index(act_bits)
        if not 1 <= self.act_bits <= 8:
            raise ValueError(f"act_bits must be 1..8, not {act_bits}")
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.linear = QuantLinear(in_features, out_features, weight_kind)
        self.bn = nn.BatchNorm1d(out_features)
        if self.act_bits > 1:
            self.clip = nn.Parameter(torch.tensor(CLIP_INIT))

    @property
    def step(self):
        """What one output code is worth to the next layer (None: ``±1`` values)."""
        if self.act_bits == 1:
            return None
        return self.clip / ((1 << self.act_bits) - 1)

    def accumulate(self, x):
        """The integer-valued accumulators (before scaling and batch-norm)."""
        return self.linear(self.dropout(x))

    def normalize(self, acc):
        """Batch-norm: batch statistics when training, :func:`batchnorm_eval` otherwise."""
        return self.bn(acc) if self.training else batchnorm_eval(acc, self.bn)

    def post(self, acc, in_step=None):
        """Scale, normalize and quantize accumulators: ``±1`` values or k-bit codes (floats).

        The accumulator is multiplied by the input step and the weight scale (codebook layers),
        each when there is one, in that order."""
        step = _product(in_step, self.linear.w_scale)
        y = self.normalize(acc if step is None else acc * step)
        if self.act_bits == 1:
            return sign_activation(y)
        return quantize_activation(y, self.clip, self.act_bits)

    def forward(self, x, in_step=None):
        return self.post(self.accumulate(x), in_step), self.step

    @torch.no_grad()
    def output_codes(self, out):
        """IR codes of this layer's outputs: ``±1 ↦ 1/0`` for one bit, else the codes."""
        return (out > 0).to(torch.int64) if self.act_bits == 1 else out.to(torch.int64)

    @torch.no_grad()
    def constrain_(self):
        """Keep parameters where the quantizers are defined (called after each step)."""
        self.linear.clip_()
        if self.act_bits > 1:
            self.clip.clamp_(min=0.05)


class QuantOutput(nn.Module):
    """The output layer: ``QuantLinear`` times the input step and ``exp(log_scale)``, no bias."""

    def __init__(self, in_features, out_features, *, weight_kind="binary"):
        super().__init__()
        self.linear = QuantLinear(in_features, out_features, weight_kind)
        self.log_scale = nn.Parameter(torch.tensor(-0.5 * math.log(in_features)))

    @property
    def scale(self):
        return self.log_scale.exp()

    def forward(self, x, in_step=None):
        acc = self.linear(x)
        step = _product(in_step, self.linear.w_scale)
        if step is not None:
            acc = acc * step
        return acc * self.scale


def _product(a, b):
    """``a · b`` where either may be None (missing factor)."""
    if a is None:
        return b
    return a if b is None else a * b


def _per_layer(value, n, what):
    if isinstance(value, (str, int)):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"{what}: expected one value or {n}, got {len(value)}")
    return value


class QuantMLP(nn.Module):
    """A quantized multilayer perceptron.

    Parameters
    ----------
    features : sequence of int
        ``[inputs, hidden..., outputs]``, at least two entries.
    input_bits : int
        Bits of each input code (the first layer takes codes ``0 .. 2**input_bits - 1`` as floats).
    weight_kinds : str or sequence of str
        One of :data:`WEIGHT_MODES` for every layer, or one per layer.
    act_bits : int or sequence of int
        Bits of the hidden activations (1: sign), for every hidden layer or one per hidden layer.
    dropout : float
        Dropout before each hidden layer after the first (training only).
    """

    def __init__(self, features, *, input_bits, weight_kinds="binary", act_bits=1, dropout=0.0):
        super().__init__()
        features = [operator.index(f) for f in features]
        if len(features) < 2:
            raise ValueError(f"features must list inputs and outputs, not {features}")
        self.features = features
        self.input_bits = operator.index(input_bits)
        n_layers = len(features) - 1
        kinds = _per_layer(weight_kinds, n_layers, "weight_kinds")
        bits = _per_layer(act_bits, n_layers - 1, "act_bits")
        self.hidden = nn.ModuleList(
            QuantDense(i, o, weight_kind=kinds[n], act_bits=bits[n],
                       dropout=dropout if n else 0.0)
            for n, (i, o) in enumerate(zip(features[:-2], features[1:-1])))
        self.head = QuantOutput(features[-2], features[-1], weight_kind=kinds[-1])

    def quant_linears(self):
        """Every :class:`QuantLinear`, in layer order."""
        return [block.linear for block in self.hidden] + [self.head.linear]

    @torch.no_grad()
    def constrain_(self):
        for block in self.hidden:
            block.constrain_()
        self.head.linear.clip_()

    def forward(self, x):
        step = None
        for block in self.hidden:
            x, step = block(x, step)
        return self.head(x, step)

    @torch.no_grad()
    def trace(self, x):
        """``(codes, scores)``: the IR output codes of each hidden layer and the output layer's
        raw integer accumulators, in the current mode (use eval mode to compare with the
        golden)."""
        codes, step = [], None
        for block in self.hidden:
            x, step = block(x, step)
            codes.append(block.output_codes(x))
        return codes, self.head.linear(x)


class BinaryMLP(QuantMLP):
    """The all-binary :class:`QuantMLP` (binary weights, sign activations)."""

    def __init__(self, features, *, input_bits, dropout=0.0):
        super().__init__(features, input_bits=input_bits, weight_kinds="binary", act_bits=1,
                         dropout=dropout)
