"""Quantizers with straight-through estimators (torch).

Forward passes produce exactly the values the integer model uses (see :mod:`qnnfab.numerics`):

* binary weights: ``+1`` where the latent weight is ``>= 0`` (so ``sign(0) = +1``), else ``-1``;
  the stored code is 1 for ``+1`` and 0 for ``-1`` (:func:`binary_weight_codes`);
* sign activation: ``+1`` where the input is ``>= 0``, else ``-1`` (code 1 / code 0).

Backward passes are straight-through: the incoming gradient passes unchanged where the input
lies in ``[-1, 1]`` and is zero outside (the weight STE clipped to ``|w| <= 1``; the activation
STE is the gradient of ``hardtanh``).
"""

import numpy as np
import torch

__all__ = ["BinaryWeightSTE", "SignSTE", "binarize_weight", "sign_activation", "sign_exact",
           "binary_weight_codes"]


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
