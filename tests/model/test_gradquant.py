"""Gradient quantization: each function against a numpy reference or its value set and mean,
the hooks (what they change, that remove() undoes them), and training with quantized
gradients."""

import numpy as np
import pytest
import torch

from qnnfab.model import gradquant
from qnnfab.model.gradquant import (GRAD_QUANTIZERS, STOCHASTIC, check_grad_quant,
                                    dorefa_quantize, log_quantize, quantize_gradients,
                                    stochastic_quantize, terngrad_quantize, uniform_quantize)
from qnnfab.model.layers import QuantMLP
from qnnfab.model.presets import Preset
from qnnfab.model.train import train

BITS = [2, 3, 4, 8]


def sample(seed, shape=(40, 25), heavy=False):
    """Gradient-like values (normal, or heavy-tailed so the log grid is exercised)."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal(shape)
    if heavy:
        g = g * np.exp2(rng.uniform(-12, 0, shape))
    return torch.tensor(g, dtype=torch.float32)


# -- numpy references (float64) ---------------------------------------------------------------

def ref_uniform(g, bits):
    g = g.numpy().astype(np.float64)
    s, n = np.abs(g).max(), 2 ** (bits - 1) - 1
    return np.clip(np.rint(g / s * n), -n, n) * s / n


def ref_log(g, bits):
    g = g.numpy().astype(np.float64)
    n = 2 ** (bits - 1) - 1
    e_max = np.rint(np.log2(np.abs(g).max()))
    out = np.zeros_like(g)
    nz = g != 0
    e = np.rint(np.log2(np.abs(g[nz])))
    out[nz] = np.where(e >= e_max - (n - 1), np.sign(g[nz]) * np.exp2(e), 0.0)
    return out


# -- the functions ----------------------------------------------------------------------------

@pytest.mark.parametrize("bits", BITS)
def test_uniform_matches_reference_and_levels(bits):
    g = sample(bits)
    q = uniform_quantize(g, bits)
    assert q.shape == g.shape and q.dtype == g.dtype
    np.testing.assert_allclose(q.numpy(), ref_uniform(g, bits), rtol=1e-6, atol=0)
    s, n = float(g.abs().max()), 2 ** (bits - 1) - 1
    k = q.numpy().astype(np.float64) * n / s
    assert np.allclose(k, np.rint(k), atol=1e-4), "uniform: values off the grid k·s/n"
    assert len(np.unique(np.rint(k))) <= 2 ** bits - 1
    # Round to nearest: the error is at most half a step.
    assert np.abs(q.numpy() - g.numpy()).max() <= s / n / 2 * (1 + 1e-5)


def test_uniform_two_bits_is_ternary():
    g = torch.tensor([-1.0, -0.6, -0.4, 0.0, 0.3, 0.51, 0.8])
    assert uniform_quantize(g, 2).tolist() == [-1.0, -1.0, 0.0, 0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("bits", BITS)
def test_log_matches_reference_and_is_powers_of_two(bits):
    g = sample(10 + bits, heavy=True)
    q = log_quantize(g, bits)
    assert q.shape == g.shape and q.dtype == g.dtype
    np.testing.assert_array_equal(q.numpy().astype(np.float64), ref_log(g, bits))
    nz = q.numpy() != 0
    e = np.log2(np.abs(q.numpy()[nz]).astype(np.float64))
    assert np.array_equal(e, np.rint(e)), "log: a non-zero output is not a power of two"
    assert np.all(np.sign(q.numpy()[nz]) == np.sign(g.numpy()[nz])), "log: sign changed"
    n = 2 ** (bits - 1) - 1
    e_max = np.rint(np.log2(float(g.abs().max())))
    assert e.max() == e_max and e.min() >= e_max - (n - 1)
    assert len(np.unique(q.numpy())) <= 2 ** bits - 1
    if bits <= 4:   # heavy tails: something falls below the range
        assert (q.numpy() == 0).any()


def test_log_rounds_in_the_log_domain():
    # sqrt(2) = 2**0.5 is the threshold between 1 and 2.
    g = torch.tensor([4.0, 1.40, 1.42, 0.2, -3.0, 0.0])
    assert log_quantize(g, 3).tolist() == [4.0, 1.0, 2.0, 0.0, -4.0, 0.0]   # 3 exponents: 4 2 1


@pytest.mark.parametrize("bits", BITS)
def test_dorefa_levels(bits):
    g = sample(20 + bits)
    q = dorefa_quantize(g, bits, generator=torch.Generator().manual_seed(0))
    s, levels = float(g.abs().max()), 2 ** bits - 1
    j = (q.numpy().astype(np.float64) / (2 * s) + 0.5) * levels
    assert np.allclose(j, np.rint(j), atol=1e-4), "dorefa: values off the grid s(2j/L - 1)"
    assert j.min() > -1e-4 and j.max() < levels + 1e-4
    assert len(np.unique(np.rint(j))) <= 2 ** bits
    # One of the two grid points around each value.
    x = (g.numpy().astype(np.float64) / (2 * s) + 0.5) * levels
    assert np.all((np.rint(j) == np.floor(x)) | (np.rint(j) == np.ceil(x)))


@pytest.mark.parametrize("bits", BITS)
def test_stochastic_levels(bits):
    g = sample(30 + bits)
    q = stochastic_quantize(g, bits, generator=torch.Generator().manual_seed(0))
    s, n = float(g.abs().max()), 2 ** (bits - 1) - 1
    k = q.numpy().astype(np.float64) * n / s
    assert np.allclose(k, np.rint(k), atol=1e-4)
    x = g.numpy().astype(np.float64) * n / s
    assert np.all((np.rint(k) == np.floor(x)) | (np.rint(k) == np.ceil(x))), \
        "stochastic: rounded past a neighbouring grid point"
    assert len(np.unique(np.rint(k))) <= 2 ** bits - 1


def test_terngrad_values():
    g = sample(40)
    q = terngrad_quantize(g, None, generator=torch.Generator().manual_seed(0)).numpy()
    s = float(g.abs().max())
    assert set(np.unique(q).tolist()) <= {-s, 0.0, s}
    nz = q != 0
    assert np.all(np.sign(q[nz]) == np.sign(g.numpy()[nz]))
    # bits is ignored (2-bit by construction): same draws, same result.
    q8 = terngrad_quantize(g, 8, generator=torch.Generator().manual_seed(0)).numpy()
    assert np.array_equal(q, q8)


@pytest.mark.parametrize("method", sorted(STOCHASTIC))
def test_stochastic_functions_are_unbiased(method):
    draws, bits = 4000, 2
    g = sample(50, shape=(1, 30))
    g[0, 0] = 1.5 * g.abs().max()      # the scale s, same in every row
    many = g.expand(draws, -1).contiguous()
    q = GRAD_QUANTIZERS[method](many, bits, generator=torch.Generator().manual_seed(1))
    mean = q.double().mean(0).numpy()
    s = float(g.abs().max())
    # One draw's error is at most one grid step (TernGrad: s); the mean's standard error is at
    # most step / (2 sqrt(draws)). Allow 5 of those.
    step = {"stochastic": s / (2 ** (bits - 1) - 1), "dorefa": 2 * s / (2 ** bits - 1),
            "terngrad": s}[method]
    tol = 5 * step / (2 * np.sqrt(draws))
    err = np.abs(mean - g[0].double().numpy())
    assert err.max() < tol, f"{method}: mean of {draws} draws off by {err.max():.4g} > {tol:.4g}"
    # ... while round to nearest is biased on the same values.
    det = uniform_quantize(g, bits)[0].double().numpy()
    assert np.abs(det - g[0].double().numpy()).max() > 10 * tol


@pytest.mark.parametrize("method", sorted(GRAD_QUANTIZERS))
def test_shapes_zeros_and_determinism(method):
    fn = GRAD_QUANTIZERS[method]
    g = sample(60, shape=(3, 4, 5))
    q1 = fn(g, 3, generator=torch.Generator().manual_seed(7))
    q2 = fn(g, 3, generator=torch.Generator().manual_seed(7))
    assert q1.shape == g.shape and q1.dtype == g.dtype
    assert torch.equal(q1, q2), f"{method}: same generator state, different result"
    if method in STOCHASTIC:
        q3 = fn(g, 3, generator=torch.Generator().manual_seed(8))
        assert not torch.equal(q1, q3), f"{method}: another seed gave the same draws"
    assert torch.equal(fn(torch.zeros(2, 3), 3), torch.zeros(2, 3))
    assert fn(torch.zeros(0, 3), 3).shape == (0, 3)
    assert fn(g.double(), 3).dtype == torch.float64
    assert torch.equal(g, sample(60, shape=(3, 4, 5))), f"{method} changed its input"


@pytest.mark.parametrize("method", sorted(GRAD_QUANTIZERS))
def test_bad_arguments(method):
    fn = GRAD_QUANTIZERS[method]
    g = sample(0)
    for bits in (1, 0, 17):
        with pytest.raises(ValueError, match=rf"bits must be 2\.\.16, not {bits}"):
            fn(g, bits)
    for bits in (2.5, "4", True):
        with pytest.raises(TypeError, match="bits must be an integer"):
            fn(g, bits)
    if method != "terngrad":
        with pytest.raises(TypeError, match="bits must be an integer, not None"):
            fn(g, None)
    with pytest.raises(TypeError, match="grad must be a torch.Tensor"):
        fn(g.numpy(), 4)
    with pytest.raises(TypeError, match="floating-point"):
        fn(torch.ones(3, dtype=torch.int64), 4)
    with pytest.raises(ValueError, match="NaN or inf") as info:
        fn(torch.tensor([1.0, float("nan")]), 4)
    assert isinstance(info.value, gradquant.NonFiniteGradient)   # a diverged training


def test_check_grad_quant():
    assert check_grad_quant(None) is None
    assert check_grad_quant(("log", 4)) == ("log", 4, ("error", "weight"))
    assert check_grad_quant(("terngrad", None)) == ("terngrad", None, ("error", "weight"))
    assert check_grad_quant(("log", 4, "weight")) == ("log", 4, ("weight",))
    assert check_grad_quant(("log", 4, ["weight", "error"])) == ("log", 4, ("error", "weight"))
    with pytest.raises(ValueError, match="unknown gradient quantizer 'nope'; known: uniform"):
        check_grad_quant(("nope", 4))
    with pytest.raises(ValueError, match=r"grad_quant must be None, \(method, bits\) or "
                                         r"\(method, bits, targets\)"):
        check_grad_quant("log")
    with pytest.raises(ValueError, match="grad_quant must be"):
        check_grad_quant(("log", 4, "error", "weight"))
    with pytest.raises(ValueError, match="targets: expected some of error, weight"):
        check_grad_quant(("log", 4, "bias"))
    with pytest.raises(ValueError, match="bits must be"):
        check_grad_quant(("uniform", 1))


# -- the hooks -----------------------------------------------------------------------------------

def small_model(kind="float"):
    torch.manual_seed(0)
    return QuantMLP([12, 16, 16, 5], input_bits=3, weight_kinds=kind, act_bits=2)


def batch():
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.integers(0, 8, (24, 12)), dtype=torch.float32)
    y = torch.tensor(rng.integers(0, 5, 24))
    return x, y


def gradients(model, capture=False):
    """Latent weight gradients of one loss; with ``capture``, also each layer's input and output
    gradient (hooks of the test's own, registered after any others)."""
    model.zero_grad(set_to_none=True)
    x, y = batch()
    seen = []

    def grab(module, args, out):
        entry = {"x": args[0].detach().clone()}
        out.register_hook(lambda g: entry.__setitem__("g", g.detach().clone()))
        seen.append(entry)

    hooks = [lin.register_forward_hook(grab) for lin in model.quant_linears()] if capture else []
    torch.nn.functional.cross_entropy(model(x), y).backward()
    for h in hooks:
        h.remove()
    grads = [lin.weight.grad.detach().clone() for lin in model.quant_linears()]
    return (grads, seen) if capture else grads


def test_weight_target_quantizes_each_weight_gradient():
    model = small_model("float")      # float weights: the latent gradient is dL/dW_q itself
    plain = gradients(model)
    with quantize_gradients(model, "uniform", 3, targets="weight") as handle:
        hooked = gradients(model)
        assert handle.calls == {"weight": 3}
    for i, (p, h) in enumerate(zip(plain, hooked)):
        np.testing.assert_allclose(h.numpy(), ref_uniform(p, 3), rtol=1e-5, atol=1e-9,
                                   err_msg=f"layer {i}")
    assert not handle.active
    assert all(torch.equal(a, b) for a, b in zip(plain, gradients(model))), \
        "remove() did not restore the gradients"


def test_error_target_quantizes_the_error_signal():
    model = small_model("float")
    with quantize_gradients(model, "log", 3, targets=("error",)) as handle:
        hooked, seen = gradients(model, capture=True)
        assert handle.calls == {"error": 3}
    # Every layer's output gradient is on the log grid, and its weight gradient is that
    # quantized error times the layer's input (dL/dW = q(g)^T x).
    for i, (entry, grad) in enumerate(zip(seen, hooked)):
        g = entry["g"]
        np.testing.assert_array_equal(g.numpy(), log_quantize(g, 3).numpy(),
                                      err_msg=f"layer {i}: error not quantized")
        ref = g.double().numpy().T @ entry["x"].double().numpy()
        np.testing.assert_allclose(grad.numpy(), ref, rtol=1e-5, atol=1e-6,
                                   err_msg=f"layer {i}")
    # The output layer's error comes straight from the loss: compare with the unhooked one.
    _, plain_seen = gradients(model, capture=True)
    np.testing.assert_array_equal(seen[-1]["g"].numpy(),
                                  log_quantize(plain_seen[-1]["g"], 3).numpy())


@pytest.mark.parametrize("kind", ["binary", "ternary"])
def test_hooks_change_gradients_and_remove_restores(kind):
    model = small_model(kind)
    plain = gradients(model)
    handle = quantize_gradients(model, "terngrad", None, seed=4)
    assert handle.active and "weight_values" in model.head.linear.__dict__
    hooked = gradients(model)
    assert handle.calls == {"error": 3, "weight": 3}
    assert all(not torch.equal(a, b) for a, b in zip(plain, hooked))
    with pytest.raises(ValueError, match="already has gradient quantization"):
        quantize_gradients(model, "log", 4)
    handle.remove()
    handle.remove()   # idempotent
    assert "weight_values" not in model.head.linear.__dict__
    assert all(torch.equal(a, b) for a, b in zip(plain, gradients(model)))
    # The same seed gives the same stochastic gradients.
    with quantize_gradients(model, "terngrad", None, seed=4):
        again = gradients(model)
    assert all(torch.equal(a, b) for a, b in zip(hooked, again))


def test_forward_unchanged_and_no_hooks_without_grad():
    model = small_model("ternary").eval()
    x, _ = batch()
    before = model(x)
    with quantize_gradients(model, "dorefa", 4) as handle, torch.no_grad():
        assert torch.equal(model(x), before)
    assert handle.calls == {"error": 0, "weight": 0}


def test_convolutions_get_quantized_gradients():
    from qnnfab.model.conv import QuantCNN
    from qnnfab.model.presets import ConvSpec
    torch.manual_seed(0)
    model = QuantCNN((6, 6, 1), (ConvSpec(4), ConvSpec(4, pool=0)), (8,), 3, input_bits=2,
                     weight_kinds="ternary", act_bits=2)
    x = torch.tensor(np.random.default_rng(0).integers(0, 4, (5, 36)), dtype=torch.float32)
    y = torch.tensor([0, 1, 2, 0, 1])

    def grads():
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        return [lin.weight.grad.clone() for lin in model.quant_linears()]

    plain = grads()
    with quantize_gradients(model, "uniform", 2) as handle:
        hooked = grads()
    n = len(model.quant_linears())
    assert n == 4 and handle.calls == {"error": n, "weight": n}
    assert all(not torch.equal(a, b) for a, b in zip(plain, hooked))
    assert all(torch.equal(a, b) for a, b in zip(plain, grads()))


def test_quantize_gradients_bad_arguments():
    model = small_model()
    with pytest.raises(ValueError, match="unknown gradient quantizer"):
        quantize_gradients(model, "float", 4)
    with pytest.raises(ValueError, match="bits must be 2..16, not 1"):
        quantize_gradients(model, "uniform", 1)
    with pytest.raises(ValueError, match="targets: expected some of error, weight"):
        quantize_gradients(model, "uniform", 4, targets=("bias",))
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        quantize_gradients(model, "uniform", 4, seed=-1)
    with pytest.raises(ValueError, match="no QuantLinear"):
        quantize_gradients(torch.nn.Linear(3, 2), "uniform", 4)
    assert not any("weight_values" in lin.__dict__ for lin in model.quant_linears())


# -- training ------------------------------------------------------------------------------------

SMALL = Preset(name="test-gradquant", hidden=(64, 64), weights="ternary", act_bits=2, epochs=6,
               batch_size=64, lr=1e-2)


def test_training_with_quantized_gradients_learns():
    r = train(SMALL, seed=0, progress=False, grad_quant=("log", 4))
    assert r.network.meta["grad_quant"] == {"method": "log", "bits": 4,
                                             "targets": ["error", "weight"]}
    assert r.integer_accuracy > 0.8, f"log 4-bit gradients: integer accuracy " \
                                     f"{r.integer_accuracy:.3f} (chance 0.1)"
    assert not any(gradquant._MARK in lin.__dict__ for lin in r.model.quant_linears()), \
        "train() left the gradient hooks on the model"
    s = train(SMALL, seed=0, progress=False, grad_quant=("stochastic", 2), epochs=3)
    assert s.integer_accuracy > 0.5, f"stochastic 2-bit: {s.integer_accuracy:.3f}"
    plain = train(SMALL, seed=0, progress=False, epochs=3)
    assert "grad_quant" not in plain.network.meta
    assert plain.history != s.history, "grad_quant had no effect on training"


def test_train_checks_grad_quant_first():
    with pytest.raises(ValueError, match="unknown gradient quantizer"):
        train(SMALL, grad_quant=("bogus", 4), progress=False)
