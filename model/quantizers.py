"""Quantizers with straight-through estimators (torch).

Forward passes produce exactly the values the integer model uses (see :mod:`qnnfab.numerics`):

* binary weights: ``+1`` where the latent weight is ``>= 0`` (so ``sign(0) = +1``), else ``-1``;
  the stored code is 1 for ``+1`` and 0 for ``-1`` (:func:`binary_weight_codes`);
* sign activation: ``+1`` where the input is ``>= 0``, else ``-1`` (code 1 / code 0);
* ternary weights: ``+1`` where the latent weight is ``> Δ``, ``-1`` where ``< -Δ``, else ``0``
  (codes 1 / 2 / 0, :func:`weight_codes`);
* k-bit activations (k >= 2): unsigned codes ``0 .. 2**k - 1`` (:func:`quantize_activation`).

Backward passes are straight-through: the incoming gradient passes unchanged where the input
lies in ``[-1, 1]`` and is zero outside (the weight STE clipped to ``|w| <= 1``; the activation
STE is the gradient of ``hardtanh``).

:data:`WEIGHT_QUANTIZERS` has one :class:`WeightQuantizer` per weight kind of the registry
(:data:`qnnfab.kinds.WEIGHT_KINDS`): how :class:`~qnnfab.model.layers.QuantLinear` forms a
layer's weight values and fits their scale. Training a new kind means one entry there.
"""

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from qnnfab import kinds

from . import sq

__all__ = ["BinaryWeightSTE", "SignSTE", "binarize_weight", "sign_activation", "sign_exact",
           "binary_weight_codes", "TernaryWeightSTE", "ternary_exact", "ternarize_weight",
           "weight_codes", "quantize_activation", "WeightQuantizer", "WEIGHT_QUANTIZERS",
           "weight_quantizer"]


def sign_exact(x):
    """``+1`` where ``x >= 0`` else ``-1``, same dtype as ``x`` (no gradient)."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


class _SignClippedSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return sign_exact(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


class BinaryWeightSTE(_SignClippedSTE):
    """Binary weight quantizer: forward ``±1`` (``sign(0) = +1``), backward STE for ``|w| <= 1``."""


class SignSTE(_SignClippedSTE):
    """Sign activation: forward ``±1`` (``sign(0) = +1``), backward ``hardtanh``'s gradient."""


def binarize_weight(w):
    """The ``±1`` weights of latent weights ``w`` (differentiable through the STE)."""
    return BinaryWeightSTE.apply(w)


def sign_activation(x):
    """The ``±1`` activation of ``x`` (differentiable through the STE)."""
    return SignSTE.apply(x)


def binary_weight_codes(w):
    """The IR codes of latent weights ``w``: int64 numpy array, 1 for ``+1``, 0 for ``-1``."""
    w = w.detach().cpu()
    if not torch.isfinite(w).all():
        raise ValueError("weights: latent weights contain NaN or inf")
    return (w >= 0).numpy().astype(np.int64)


# -- ternary weights -------------------------------------------------------------------------------

def ternary_exact(w, delta):
    """``+1`` where ``w > delta``, ``-1`` where ``w < -delta``, else ``0`` (no gradient)."""
    one = torch.ones_like(w)
    return torch.where(w > delta, one, torch.where(w < -delta, -one, torch.zeros_like(w)))


class TernaryWeightSTE(torch.autograd.Function):
    """Ternary weight quantizer: forward ``{-1, 0, +1}`` with threshold ``delta`` (``|w| > delta``
    is non-zero), backward straight-through for ``|w| <= 1``. ``delta`` gets no gradient."""

    @staticmethod
    def forward(ctx, w, delta):
        ctx.save_for_backward(w)
        return ternary_exact(w, delta)

    @staticmethod
    def backward(ctx, grad):
        (w,) = ctx.saved_tensors
        return grad * (w.abs() <= 1).to(grad.dtype), None


def ternarize_weight(w, delta):
    """The ``{-1, 0, +1}`` weights of latent weights ``w`` for threshold ``delta`` (STE)."""
    return TernaryWeightSTE.apply(w, delta)


def weight_codes(values, weight_kind):
    """IR codes (int64 numpy) of quantized weight *values* (a tensor of ``±1`` / ``0``).

    binary: ``+1 ↦ 1``, ``-1 ↦ 0``; ternary: ``0 ↦ 0``, ``+1 ↦ 1``, ``-1 ↦ 2``
    (the levels of :data:`qnnfab.kinds.WEIGHT_KINDS`). Raises ValueError for a value the kind
    has no code for, or for a kind without fixed levels.
    """
    v = values.detach().cpu().numpy()
    if not np.isfinite(v).all():
        raise ValueError("weights: quantized weights contain NaN or inf")
    levels = kinds.weight_kind(weight_kind).levels_of()
    codes = np.full(v.shape, -1, dtype=np.int64)
    for code, level in enumerate(levels):
        codes[v == level] = code
    if (codes < 0).any():
        bad = v[codes < 0][0]
        raise ValueError(f"weights: value {bad} is not a {weight_kind} level {levels}")
    return codes


# -- one entry per weight kind ---------------------------------------------------------------------

@dataclass(frozen=True)
class WeightQuantizer:
    """How training treats one weight kind.

    Attributes
    ----------
    kind : str
        The registry name (:data:`qnnfab.kinds.WEIGHT_KINDS`).
    values : callable
        ``values(linear)``: the quantized weight values of a
        :class:`~qnnfab.model.layers.QuantLinear` of this kind, integer levels as floats,
        differentiable (straight-through) where the kind is trained.
    fit_scale : callable or None
        ``fit_scale(w)``: ``(α, error)``, the scale of the kind's levels that fits latent
        weights ``w`` best; None for a kind that is not trained from latent weights (a table
        kind: its layers get their indices and levels after training,
        :meth:`~qnnfab.model.layers.QuantLinear.set_codebook`).
    """
    kind: str
    values: Callable
    fit_scale: "Callable | None" = None

    @property
    def trainable(self):
        """A layer can be built with this kind and trained through the STE."""
        return self.fit_scale is not None


def _binary_values(lin):
    return binarize_weight(lin.weight)


def _ternary_values(lin):
    # ``α/2`` is the ternary threshold; ``α`` is fitted, not trained through this path.
    return ternarize_weight(lin.weight, lin.alpha.detach() / 2)


def _codebook_values(lin):
    return lin.code_levels[lin.code_indices]


#: Weight kind name → :class:`WeightQuantizer`, one per kind of the registry.
WEIGHT_QUANTIZERS = {q.kind: q for q in (
    WeightQuantizer("binary", _binary_values, functools.partial(sq.fit_levels, kind="binary")),
    WeightQuantizer("ternary", _ternary_values,
                    functools.partial(sq.fit_levels, kind="ternary")),
    WeightQuantizer("codebook", _codebook_values),
)}


def weight_quantizer(kind):
    """The :class:`WeightQuantizer` of weight kind ``kind``; ValueError naming the known kinds
    otherwise."""
    try:
        return WEIGHT_QUANTIZERS[kind]
    except (KeyError, TypeError):
        raise ValueError(f"no weight quantizer for kind {kind!r} (known: "
                         f"{', '.join(WEIGHT_QUANTIZERS)})") from None


# -- k-bit unsigned activations --------------------------------------------------------------------

class _ActivationCodes(torch.autograd.Function):
    """``code = floor(min(relu(y), clip) · (L / clip) + 0.5)`` with PACT's gradients.

    Backward treats the rounding as exact: ``∂code/∂y = L/clip`` for ``0 < y < clip`` (0
    elsewhere) and ``∂code/∂clip = -code/clip`` for ``y < clip`` (0 above, where the code is
    the constant ``L``), so that ``q = code · clip / L`` has ``∂q/∂y = [0 < y < clip]`` and
    ``∂q/∂clip = [y >= clip]``, PACT's gradients.
    """

    @staticmethod
    def forward(ctx, y, clip, levels):
        v = torch.minimum(torch.relu(y), clip)
        code = torch.floor(v * (levels / clip) + 0.5)
        ctx.save_for_backward(y, clip, code)
        ctx.levels = levels
        return code

    @staticmethod
    def backward(ctx, grad):
        y, clip, code = ctx.saved_tensors
        below = (y < clip).to(grad.dtype)
        inside = below * (y > 0).to(grad.dtype)
        grad_y = grad * inside * (ctx.levels / clip)
        grad_clip = -(grad * code * below / clip).sum().reshape(clip.shape)
        return grad_y, grad_clip, None


def quantize_activation(y, clip, bits):
    """Unsigned ``bits``-bit activation codes of ``y`` with clipping level ``clip`` (PACT-style).

    ``code = floor(min(relu(y), clip) · (L / clip) + 0.5)`` with ``L = 2**bits - 1``: codes
    ``0 .. L`` as floats, non-decreasing in ``y``. Backward: straight through the rounding, so
    ``code · clip / L`` has PACT's gradients (``y`` inside ``(0, clip)``, ``clip`` above it).
    """
    levels = float((1 << int(bits)) - 1)
    return _ActivationCodes.apply(y, clip, levels)
