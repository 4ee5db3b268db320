"""Quantizers: exact forward values (sign(0) = +1) and straight-through gradients."""

import numpy as np
import pytest
import torch

from qnnfab.model.quantizers import (BinaryWeightSTE, SignSTE, binarize_weight,
                                     binary_weight_codes, sign_activation, sign_exact)

X = [-3.0, -1.0, -0.5, -1e-30, -0.0, 0.0, 1e-30, 0.5, 1.0, 1.0001, 7.0]
SIGN = [-1, -1, -1, -1, 1, 1, 1, 1, 1, 1, 1]
# STE passes the gradient where |x| <= 1 (both ends included), zero elsewhere.
PASS = [0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]


@pytest.mark.parametrize("fn", [binarize_weight, sign_activation, sign_exact])
def test_forward_values(fn):
    x = torch.tensor(X)
    y = fn(x)
    assert y.dtype == x.dtype
    assert y.tolist() == SIGN, f"{fn.__name__}: inputs {X}, expected {SIGN}, got {y.tolist()}"


@pytest.mark.parametrize("fn", [binarize_weight, sign_activation])
def test_straight_through_gradient(fn):
    x = torch.tensor(X, requires_grad=True)
    upstream = torch.arange(1.0, len(X) + 1)
    (fn(x) * upstream).sum().backward()
    expected = (upstream * torch.tensor(PASS, dtype=torch.float32)).tolist()
    assert x.grad.tolist() == expected, f"{fn.__name__}: expected {expected}, got {x.grad.tolist()}"


def test_activation_gradient_is_hardtanh_gradient():
    x = torch.linspace(-2.5, 2.5, 101, requires_grad=True)
    sign_activation(x).sum().backward()
    ref = x.detach().clone().requires_grad_(True)
    torch.nn.functional.hardtanh(ref).sum().backward()
    inside = x.detach().abs() != 1  # hardtanh's gradient at ±1 is a convention; ours passes
    assert torch.equal(x.grad[inside], ref.grad[inside])


def test_functions_are_autograd_functions():
    assert issubclass(BinaryWeightSTE, torch.autograd.Function)
    assert issubclass(SignSTE, torch.autograd.Function)


def test_weight_codes():
    w = torch.tensor([[-0.3, 0.0, 0.2], [1.0, -1.0, -0.0]])
    codes = binary_weight_codes(w)
    assert codes.dtype == np.int64
    assert codes.tolist() == [[0, 1, 1], [1, 0, 1]]
    assert np.array_equal(2 * codes - 1, binarize_weight(w).numpy().astype(np.int64))


def test_weight_codes_reject_nan():
    with pytest.raises(ValueError, match="NaN"):
        binary_weight_codes(torch.tensor([0.1, float("nan")]))
