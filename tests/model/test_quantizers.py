"""Quantizers: exact forward values (sign(0) = +1, ternary ``|w| > Δ``, k-bit codes rounded half
up) and straight-through gradients (PACT for the k-bit activation)."""

import numpy as np
import pytest
import torch

from qnnfab import numerics
from qnnfab.model.quantizers import (BinaryWeightSTE, SignSTE, TernaryWeightSTE, binarize_weight,
                                     binary_weight_codes, quantize_activation, sign_activation,
                                     sign_exact, ternarize_weight, ternary_exact, weight_codes)

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


# -- ternary weights -------------------------------------------------------------------------------

DELTA = 0.25  # exact in float32, so |w| == Δ really is on the boundary
W3 = [-2.0, -1.0, -0.5, -0.2500001, -0.25, -0.1, -0.0, 0.0, 0.1, 0.25, 0.2500001, 0.5, 1.0, 1.5]
TERN = [-1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
PASS3 = [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]


@pytest.mark.parametrize("delta", [DELTA, torch.tensor(DELTA)], ids=["float", "tensor"])
@pytest.mark.parametrize("fn", [ternarize_weight, ternary_exact])
def test_ternary_forward_values(fn, delta):
    w = torch.tensor(W3)
    y = fn(w, delta)
    assert y.dtype == w.dtype
    assert y.tolist() == TERN, f"{fn.__name__}: inputs {W3}, expected {TERN}, got {y.tolist()}"


def test_ternary_zero_threshold():
    """Δ = 0: only an exact zero stays zero."""
    w = torch.tensor([-1e-30, -0.0, 0.0, 1e-30])
    assert ternarize_weight(w, 0.0).tolist() == [-1, 0, 0, 1]


def test_ternary_straight_through_gradient():
    w = torch.tensor(W3, requires_grad=True)
    delta = torch.tensor(DELTA, requires_grad=True)
    upstream = torch.arange(1.0, len(W3) + 1)
    (ternarize_weight(w, delta) * upstream).sum().backward()
    expected = (upstream * torch.tensor(PASS3, dtype=torch.float32)).tolist()
    assert w.grad.tolist() == expected, f"expected {expected}, got {w.grad.tolist()}"
    assert delta.grad is None, f"delta must get no gradient, got {delta.grad}"
    assert issubclass(TernaryWeightSTE, torch.autograd.Function)


# -- weight codes ----------------------------------------------------------------------------------

FIXED_KINDS = list(numerics.WEIGHT_LEVELS)


@pytest.mark.parametrize("kind", FIXED_KINDS)
def test_weight_codes_round_trip(kind):
    """Codes index numerics.WEIGHT_LEVELS back to the values, for every level, as int64."""
    levels = numerics.WEIGHT_LEVELS[kind]
    rng = np.random.default_rng(0)
    values = rng.choice(levels, size=(7, 9))
    codes = weight_codes(torch.tensor(values, dtype=torch.float32), kind)
    assert codes.dtype == np.int64 and codes.shape == (7, 9)
    assert set(np.unique(codes).tolist()) == set(range(len(levels)))
    assert np.array_equal(np.asarray(levels)[codes], values)


def test_weight_codes_explicit():
    v = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    assert weight_codes(v, "binary").tolist() == [[1, 0], [0, 1]]
    t = torch.tensor([0.0, 1.0, -1.0, -0.0])
    assert weight_codes(t, "ternary").tolist() == [0, 1, 2, 0]
    # the binary codes of quantized latent weights are binary_weight_codes' codes
    w = torch.tensor([[-0.3, 0.0, 0.2], [1.0, -1.0, -0.0]])
    assert np.array_equal(weight_codes(binarize_weight(w), "binary"), binary_weight_codes(w))


@pytest.mark.parametrize("kind, values, bad", [
    ("binary", [1.0, 0.0, -1.0], "0.0"),
    ("binary", [1.0, -1.0, 2.0], "2.0"),
    ("ternary", [0.0, 1.0, 0.5], "0.5"),
    ("ternary", [-1.0, -2.0], "-2.0"),
])
def test_weight_codes_reject_non_levels(kind, values, bad):
    with pytest.raises(ValueError, match=rf"weights: value {bad} is not a {kind} level"):
        weight_codes(torch.tensor(values), kind)


@pytest.mark.parametrize("kind", FIXED_KINDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_weight_codes_of_values_reject_nan(kind, bad):
    with pytest.raises(ValueError, match="NaN or inf"):
        weight_codes(torch.tensor([1.0, bad]), kind)


# -- k-bit activations -----------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("clip", [0.4, 1.0, 3.0, 5.5])
def test_activation_codes_range_and_monotone(bits, clip):
    levels = (1 << bits) - 1
    y = torch.linspace(-2 * clip, 2 * clip, 4001)
    codes = quantize_activation(y, torch.tensor(clip), bits)
    assert codes.dtype == y.dtype
    assert torch.equal(codes, codes.round()), "codes must be whole numbers"
    assert codes.min() == 0 and codes.max() == levels, (codes.min(), codes.max())
    assert set(codes.tolist()) == set(range(levels + 1)), "every code is reached"
    assert bool((codes.diff() >= 0).all()), "codes must be non-decreasing in y"
    # clipping: everything <= 0 is code 0, everything >= clip is code L
    assert bool((codes[y <= 0] == 0).all()) and bool((codes[y >= clip] == levels).all())
    # and the value is the nearest level (within the quantization step, in float32)
    v = torch.clamp(y, 0, clip) * levels / clip
    assert float((codes - v).abs().max()) <= 0.5 + 1e-5


@pytest.mark.parametrize("bits, clip", [(2, 3.0), (2, 1.5), (3, 7.0), (3, 1.75), (4, 3.75)])
def test_activation_rounds_half_up(bits, clip):
    """At an exact half step (exactly representable here: L/clip is a power of two) the code
    rounds up; just below or above it, to the nearest code.

    (``floor(x + 0.5)`` is evaluated in float32, so ``x = 0.5 - 2**-25`` also gives 1: the
    addition rounds. Harmless for exactness — the export folds this very function — so not
    asserted either way.)"""
    levels = (1 << bits) - 1
    step = clip / levels
    assert (levels / clip) in (0.5, 1.0, 2.0, 4.0), "test setup: L/clip must be a power of two"
    half = torch.tensor([(j + 0.5) * step for j in range(levels)])
    c = torch.tensor(clip)
    assert quantize_activation(half, c, bits).tolist() == list(range(1, levels + 1))
    assert quantize_activation(half - 1e-3 * step, c, bits).tolist() == list(range(levels))
    assert quantize_activation(half + 1e-3 * step, c, bits).tolist() == list(range(1, levels + 1))
    # and the same at the exact half steps below zero / above clip: clipped first
    assert quantize_activation(torch.tensor([-0.5 * step, clip + 0.5 * step]), c,
                               bits).tolist() == [0, levels]


@pytest.mark.parametrize("bits", [2, 3])
def test_activation_gradient_wrt_y(bits):
    """Straight through the rounding: d code / dy = L / clip inside (0, clip), 0 outside."""
    levels = (1 << bits) - 1
    clip = 2.0
    y = torch.tensor([-3.0, -0.5, 0.1, 0.4, 1.0, 1.3, 1.9, 2.5, 10.0], requires_grad=True)
    upstream = torch.arange(1.0, len(y) + 1)
    (quantize_activation(y, torch.tensor(clip), bits) * upstream).sum().backward()
    inside = ((y > 0) & (y < clip)).detach()
    expected = torch.where(inside, upstream * levels / clip, torch.zeros_like(upstream))
    assert torch.allclose(y.grad, expected), f"expected {expected.tolist()}, got {y.grad.tolist()}"


@pytest.mark.parametrize("bits", [2, 3])
def test_activation_pact_gradients(bits):
    """The value ``q = code · clip / L`` has PACT's gradients (the docstring's promise):
    dq/dy = 1 for y inside (0, clip), else 0; dq/dclip = 1 for y > clip, else 0 — the clip
    level learns only from the inputs it clips."""
    levels = (1 << bits) - 1
    y_in = [0.1, 0.37, 0.5, 1.0, 1.3, 1.61, 1.9]          # inside (0, 2), off the half steps
    y_out = [-3.0, -0.5, 2.5, 10.0]                        # below 0 or above clip
    for ys, want_dclip in ((y_in, 0.0), (y_out, 2.0), (y_in + y_out, 2.0)):
        y = torch.tensor(ys, requires_grad=True)
        clip = torch.tensor(2.0, requires_grad=True)
        q = quantize_activation(y, clip, bits) * clip / levels
        q.sum().backward()
        inside = ((y > 0) & (y < 2.0)).to(torch.float32)
        assert torch.allclose(y.grad, inside), f"dq/dy: expected {inside.tolist()}, got " \
                                                f"{y.grad.tolist()}"
        assert abs(float(clip.grad) - want_dclip) < 1e-6, (
            f"dq/dclip for y = {ys}: expected {want_dclip} (one per y > clip), got "
            f"{float(clip.grad)}")
