"""Log-quantized SGD and shift-based AdaMax: LogQ against an exact rational reference, one
hand-computed update of each optimizer, trajectories against independent numpy references, the
shift-only property of every update, argument errors, state-dict round trips, and convergence on a
quadratic."""

import io
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from qnnfab.model.log_optim import (LogQuantSGD, ShiftAdaMax, check_power_of_two,
                                    is_power_of_two, log2_round, logq, shift_betas)

SEED = 20240611


# -- references -----------------------------------------------------------------------------------

def ref_logq_exact(x, rounding):
    """``sign(x) * 2**k`` with exact rational arithmetic: ``2**k <= |x| < 2**(k+1)``, then for
    "nearest" one more when ``|x|**2 >= 2**(2k+1)`` (``|x| >= 2**k * sqrt 2``)."""
    if x == 0 or not math.isfinite(x):
        return x
    a = Fraction(abs(x))
    k = a.numerator.bit_length() - a.denominator.bit_length()
    while Fraction(2) ** k > a:
        k -= 1
    while Fraction(2) ** (k + 1) <= a:
        k += 1
    if rounding == "nearest" and a * a >= Fraction(2) ** (2 * k + 1):
        k += 1
    return math.copysign(2.0 ** k, x)


def np_logq(x, rounding):
    """numpy float64 LogQ via log2 (fine away from the rounding boundaries)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore"):
        e = np.log2(np.abs(x))
    e = np.floor(e) if rounding == "floor" else np.round(e)
    return np.where(x == 0, 0.0, np.sign(x) * 2.0 ** e)


def np_logq_sgd(w, grads, lr, rounding):
    """The published rule in numpy: m_t = LogQ(m_{t-1}) - lr g_t, w_t = w_{t-1} + m_t."""
    w, m = np.array(w, dtype=np.float64), None
    out = []
    for g in grads:
        m = -lr * g if m is None else np_logq(m, rounding) - lr * g
        w = w + m
        out.append(w.copy())
    return out


def np_shift_adamax(w, grads, lr, k1, k2, eps):
    """Algorithm 4 of Hubara et al. in numpy (betas 1 - 2**-k), AP2 via log2."""
    w = np.array(w, dtype=np.float64)
    m, v = np.zeros_like(w), np.zeros_like(w)
    b1, b2 = 1 - 2.0 ** -k1, 1 - 2.0 ** -k2
    out = []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = np.maximum(b2 * v, np.abs(g) + eps)
        step = lr * 2.0 ** np.round(np.log2(1 / (1 - b1 ** t)))
        w = w - step * m * 2.0 ** np.round(np.log2(1 / v))
        out.append(w.copy())
    return out


def is_signed_pow2_or_zero(t):
    mantissa, _ = torch.frexp(t)
    return bool(((t == 0) | (mantissa.abs() == 0.5)).all())


# -- logq -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_logq_matches_exact_reference(dtype):
    rng = np.random.default_rng(SEED)
    values = rng.normal(0, 1, 400) * 10.0 ** rng.uniform(-30, 30, 400)
    values = np.concatenate([values, [0.0, 1.0, -1.0, 3.0, 1.5, 1.4, 0.75, -0.7, 2 ** -20]])
    x = torch.tensor(values, dtype=torch.float64).to(dtype)
    xs = x.double().tolist()  # the values as the dtype holds them
    for rounding in ("floor", "nearest"):
        got = logq(x, rounding)
        assert got.dtype == dtype and got.shape == x.shape
        assert is_signed_pow2_or_zero(got)
        for i, (xi, gi) in enumerate(zip(xs, got.double().tolist())):
            want = ref_logq_exact(xi, rounding)
            assert gi == want, f"{rounding} {dtype} [{i}]: logq({xi!r}) = {gi!r}, want {want!r}"


def test_logq_floor_and_nearest_differ_exactly_above_sqrt2():
    rng = np.random.default_rng(SEED + 1)
    x = torch.tensor(rng.uniform(-64, 64, 2000), dtype=torch.float32)
    floor, nearest = logq(x, "floor"), logq(x, "nearest")
    nz = x != 0
    # floor <= |x| < 2 floor; nearest within a factor sqrt 2 of |x|.
    assert bool((floor.abs() <= x.abs()).all() and (x.abs() < 2 * floor.abs())[nz].all())
    ratio = (x.double() / nearest.double())[nz]
    assert bool((ratio >= 2 ** -0.5).all() and (ratio < 2 ** 0.5).all())
    mantissa = (x.double().abs() / floor.double().abs())[nz]  # in [1, 2)
    differ = (nearest != floor)[nz]
    assert torch.equal(differ, mantissa >= math.sqrt(2))
    assert torch.equal(nearest[nz][differ], 2 * floor[nz][differ])
    assert 0 < int(differ.sum()) < int(nz.sum())  # both cases occur
    # Hand-picked: 3 -> 2 or 4, 1.4 -> 1 either way, 1.5 -> 1 or 2, -0.75 -> -0.5 or -1.
    t = torch.tensor([3.0, 1.4, 1.5, -0.75, 0.0, -0.0])
    assert logq(t, "floor").tolist() == [2.0, 1.0, 1.0, -0.5, 0.0, 0.0]
    assert logq(t, "nearest").tolist() == [4.0, 1.0, 2.0, -1.0, 0.0, 0.0]


def test_logq_specials_and_errors():
    t = torch.tensor([float("inf"), -float("inf"), float("nan"), 1e-45, -3e-39])
    got = logq(t, "floor")
    assert got[0] == math.inf and got[1] == -math.inf and math.isnan(got[2])
    assert got[3:].tolist() == [ref_logq_exact(float(v), "floor") for v in t[3:]]
    assert log2_round(torch.tensor([0.375]), "floor").tolist() == [-2]
    assert log2_round(torch.tensor([0.375]), "nearest").tolist() == [-1]
    with pytest.raises(ValueError, match="rounding must be one of 'floor', 'nearest', not 'up'"):
        logq(torch.ones(2), "up")
    with pytest.raises(TypeError, match="floating-point tensor, got dtype torch.int64"):
        logq(torch.ones(2, dtype=torch.int64))


def test_power_of_two_checks():
    for x in (1, 0.5, 2.0 ** -30, 1024, 2.0 ** 100):
        assert is_power_of_two(x) and check_power_of_two(x) == float(x)
    for x in (0, -0.5, 0.1, 3, 1e-3, math.inf, math.nan, True, "0.5", None):
        assert not is_power_of_two(x)
    with pytest.raises(ValueError, match=r"lr must be a power of two .* not 0\.01 \(the nearest "
                                         r"are 2\*\*-7 = 0\.0078125 and 2\*\*-6 = 0\.015625\)"):
        check_power_of_two(0.01)
    assert shift_betas((0.9, 0.999)) == (3, 10)
    assert shift_betas((1 - 2 ** -3, 1 - 2 ** -10)) == (3, 10)
    assert shift_betas((0.0, 0.5)) == (0, 1)
    with pytest.raises(ValueError, match=r"betas\[1\] must be a number in \[0, 1\), not 1"):
        shift_betas((0.9, 1))
    with pytest.raises(ValueError, match="betas must be a pair"):
        shift_betas(0.9)


# -- one hand-computed step -----------------------------------------------------------------------

def _run(opt_cls, w0, grads, **kw):
    p = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    opt = opt_cls([p], **kw)
    out = []
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        out.append(p.detach().clone().tolist())
    return out, opt, p


def test_logq_sgd_hand_computed():
    w0, g1, g2 = [1.0, -2.0, 0.5, 0.0], [0.5, -1.5, 0.25, 0.0], [0.5, 0.5, -1.0, 0.0]
    # lr = 1/4. Step 1: m1 = -lr g1 = [-1/8, 3/8, -1/16, 0], w1 = w0 + m1.
    # floor:   LogQ(m1) = [-1/8, 1/4, -1/16, 0]; m2 = LogQ(m1) - lr g2 = [-1/4, 1/8, 3/16, 0]
    # nearest: LogQ(m1) = [-1/8, 1/2, -1/16, 0] (3/8 = 1.5 * 2**-2, 1.5 >= sqrt 2: up);
    #          m2 = [-1/4, 3/8, 3/16, 0]
    out, opt, p = _run(LogQuantSGD, w0, [g1, g2], lr=0.25)
    assert out == [[0.875, -1.625, 0.4375, 0.0], [0.625, -1.5, 0.625, 0.0]]
    assert opt.state[p]["momentum_logq"].tolist() == [-0.25, 0.125, 0.125, 0.0]
    assert opt.state[p]["step"] == 2
    out, opt, p = _run(LogQuantSGD, w0, [g1, g2], lr=0.25, rounding="nearest")
    assert out == [[0.875, -1.625, 0.4375, 0.0], [0.625, -1.25, 0.625, 0.0]]
    assert opt.state[p]["momentum_logq"].tolist() == [-0.25, 0.5, 0.25, 0.0]


def test_shift_adamax_hand_computed():
    w0, g1, g2 = [1.0, -1.0, 0.5], [0.5, -3.0, 0.25], [-0.5, 1.0, 0.25]
    # lr = 1/8, 1 - beta1 = 2**-3, 1 - beta2 = 2**-10, eps = 0.
    # Step 1: m1 = g1/8 = [1/16, -3/8, 1/32]; v1 = |g1| = [1/2, 3, 1/4];
    #   bias correction AP2(1 / (1 - 7/8)) = 8, so the step is 1/8 * 8 = 1;
    #   AP2(1/v1) = [2, 1/4 (log2(1/3) = -1.58), 4]; w1 = w0 - [1/8, -3/32, 1/8].
    # Step 2: m2 = m1 + (g2 - m1)/8 = [-1/128, -13/64, 15/256];
    #   v2 = max(v1 (1 - 2**-10), |g2|) = [1/2, 3 * 1023/1024, 1/4]; AP2(1/v2) = [2, 1/4, 4];
    #   AP2(1 / (1 - (7/8)**2)) = AP2(4.27) = 4, step 1/8 * 4 = 1/2;
    #   w2 = w1 - 1/2 * [-1/64, -13/256, 15/64].
    out, opt, p = _run(ShiftAdaMax, w0, [g1, g2], lr=0.125, eps=0.0)
    assert out[0] == [0.875, -0.90625, 0.375]
    assert out[1] == [0.875 + 1 / 128, -0.90625 + 13 / 512, 0.375 - 15 / 128]
    st = opt.state[p]
    assert st["exp_avg"].tolist() == [-1 / 128, -13 / 64, 15 / 256]
    assert st["exp_inf"].tolist() == [0.5, 3 * 1023 / 1024, 0.25]
    assert st["step"] == 2


# -- trajectories against numpy -------------------------------------------------------------------

@pytest.mark.parametrize("rounding", ["floor", "nearest"])
def test_logq_sgd_matches_numpy(rounding):
    rng = np.random.default_rng(SEED + 2)
    w0 = rng.normal(0, 1, 50)
    grads = [rng.normal(0, 1, 50) * 10.0 ** rng.uniform(-3, 1, 50) for _ in range(30)]
    lr = 2.0 ** -5
    got, _, _ = _run(LogQuantSGD, w0.tolist(), grads, lr=lr, rounding=rounding)
    want = np_logq_sgd(w0, grads, lr, rounding)
    for t, (a, b) in enumerate(zip(got, want)):
        assert np.allclose(a, b, rtol=1e-12, atol=1e-12), f"seed {SEED + 2}, step {t + 1}"


def test_shift_adamax_matches_numpy():
    rng = np.random.default_rng(SEED + 3)
    w0 = rng.normal(0, 1, 50)
    grads = [rng.normal(0, 1, 50) * 10.0 ** rng.uniform(-3, 1, 50) for _ in range(40)]
    lr, betas, eps = 2.0 ** -6, (0.9, 0.99), 1e-8
    k1, k2 = 3, 7  # AP2(0.1) = 2**-3, AP2(0.01) = 2**-7
    assert shift_betas(betas) == (k1, k2)
    got, _, _ = _run(ShiftAdaMax, w0.tolist(), grads, lr=lr, betas=betas, eps=eps)
    want = np_shift_adamax(w0, grads, lr, k1, k2, eps)
    for t, (a, b) in enumerate(zip(got, want)):
        assert np.allclose(a, b, rtol=1e-12, atol=1e-12), f"seed {SEED + 3}, step {t + 1}"


# -- every update is a shift ----------------------------------------------------------------------

@pytest.mark.parametrize("rounding", ["floor", "nearest"])
def test_logq_sgd_momentum_is_power_of_two(rounding):
    torch.manual_seed(SEED)
    p = torch.nn.Parameter(torch.zeros(200))
    lr = 2.0 ** -4
    opt = LogQuantSGD([p], lr=lr, rounding=rounding)
    q_prev = torch.zeros(200)
    for t in range(40):
        g = torch.randn(200) * 10.0 ** (torch.rand(200) * 4 - 3)
        p.grad = g
        with torch.no_grad():
            p.zero_()  # so that p holds the update itself, unrounded by an addition
        opt.step()
        q = opt.state[p]["momentum_logq"]
        assert is_signed_pow2_or_zero(q), f"step {t + 1}: momentum not a power of two"
        # The update is the stored power of two minus g shifted by log2(lr) = -4.
        assert torch.equal(p.detach(), q_prev + torch.ldexp(-g, torch.tensor(-4))), f"step {t}"
        assert torch.equal(q, logq(p.detach(), rounding))
        q_prev = q.clone()


def test_shift_adamax_update_is_a_shift_of_m():
    torch.manual_seed(SEED)
    p = torch.nn.Parameter(torch.zeros(300, dtype=torch.float64))
    lr = 2.0 ** -7
    opt = ShiftAdaMax([p], lr=lr)
    m_prev = torch.zeros(300, dtype=torch.float64)
    for t in range(1, 41):
        g = torch.randn(300, dtype=torch.float64) * 10.0 ** (torch.rand(300) * 4 - 3)
        p.grad = g
        with torch.no_grad():
            p.zero_()
        opt.step()
        m, v = opt.state[p]["exp_avg"], opt.state[p]["exp_inf"]
        # The moment update moves m by (g - m_prev) * 2**-3: a shift of the difference.
        assert torch.allclose(m - m_prev, (g - m_prev) / 8, rtol=1e-9, atol=1e-15)
        # The weight moves by -m times a power of two: lr * AP2(bias correction) * AP2(1/v).
        ratio = (p.detach() / m)[m != 0]
        assert is_signed_pow2_or_zero(ratio) and bool((ratio < 0).all()), f"step {t}"
        b1 = 1 - 2.0 ** -3
        want = -lr * np_logq(1 / (1 - b1 ** t), "nearest") \
            * np_logq(1 / v.numpy(), "nearest")
        assert np.array_equal(ratio.numpy(), want[(m != 0).numpy()]), f"step {t}"
        m_prev = m.clone()


# -- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [LogQuantSGD, ShiftAdaMax])
def test_lr_must_be_power_of_two(cls):
    p = torch.nn.Parameter(torch.zeros(3))
    for bad in (0.01, 0.0, -0.25, 3, math.nan, True):
        with pytest.raises(ValueError, match=f"lr must be a power of two .*not {bad!r}"):
            cls([p], lr=bad)
    with pytest.raises(ValueError, match=r"lr must be a power of two .* not 0\.1"):
        cls([{"params": [p], "lr": 0.1}], lr=0.5)
    opt = cls([p], lr=0.5)
    opt.param_groups[0]["lr"] = 0.3  # e.g. a scheduler
    p.grad = torch.ones(3)
    with pytest.raises(ValueError, match=r"lr \(param group\) must be a power of two"):
        opt.step()


def test_other_argument_errors():
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="rounding must be one of 'floor', 'nearest', not 'ceil'"):
        LogQuantSGD([p], lr=0.5, rounding="ceil")
    with pytest.raises(ValueError, match=r"betas\[0\] must be a number in \[0, 1\), not -0\.1"):
        ShiftAdaMax([p], lr=0.5, betas=(-0.1, 0.9))
    with pytest.raises(ValueError, match="eps must be a finite number >= 0, not -1"):
        ShiftAdaMax([p], lr=0.5, eps=-1)


# -- state dicts, groups, closures ----------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda ps, r: LogQuantSGD(ps, lr=2.0 ** -3, rounding=r),
    lambda ps, r: ShiftAdaMax(ps, lr=2.0 ** -5, betas=(0.75, 0.99) if r == "nearest"
                              else (0.9, 0.999)),
], ids=["LogQuantSGD", "ShiftAdaMax"])
def test_state_dict_round_trip(make):
    rng = np.random.default_rng(SEED + 4)
    grads = [[torch.tensor(rng.normal(0, 1, s), dtype=torch.float32) for s in ((4, 3), (5,))]
             for _ in range(6)]
    a = [torch.nn.Parameter(torch.tensor(rng.normal(0, 1, s), dtype=torch.float32))
         for s in ((4, 3), (5,))]
    opt_a = make(a, "nearest")

    def step(params, opt, gs):
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()

    for gs in grads[:3]:
        step(a, opt_a, gs)
    buf = io.BytesIO()
    torch.save(opt_a.state_dict(), buf)
    buf.seek(0)
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    opt_b = make(b, "floor")  # other hyperparameters: the state dict's win
    opt_b.load_state_dict(torch.load(buf, weights_only=True))
    assert opt_b.state_dict()["param_groups"] == opt_a.state_dict()["param_groups"]
    for gs in grads[3:]:
        step(a, opt_a, gs)
        step(b, opt_b, gs)
    for pa, pb in zip(a, b):
        assert torch.equal(pa, pb)
        for key, va in opt_a.state[pa].items():
            vb = opt_b.state[pb][key]
            assert torch.equal(torch.as_tensor(va), torch.as_tensor(vb)), key


def test_param_groups_closure_and_missing_grads():
    p1, p2, p3 = (torch.nn.Parameter(torch.ones(2)) for _ in range(3))
    opt = LogQuantSGD([{"params": [p1]}, {"params": [p2], "lr": 0.25, "rounding": "nearest"},
                       {"params": [p3]}], lr=0.5)

    def closure():
        opt.zero_grad()
        loss = (p1.sum() + p2.sum()) * 3  # p3 gets no gradient
        loss.backward()
        return loss

    assert float(opt.step(closure).detach()) == 12.0
    assert p1.tolist() == [-0.5, -0.5] and p2.tolist() == [0.25, 0.25] and p3.tolist() == [1, 1]
    assert p3 not in opt.state
    assert opt.state[p2]["momentum_logq"].tolist() == [-1.0, -1.0]  # -0.75 rounds to -1


# -- convergence ----------------------------------------------------------------------------------

@pytest.mark.parametrize("cls,kw", [(LogQuantSGD, {"lr": 2.0 ** -4}),
                                    (ShiftAdaMax, {"lr": 2.0 ** -4})])
def test_converges_on_a_quadratic(cls, kw):
    scales = torch.tensor([1.0, 4.0, 10.0], dtype=torch.float64)
    p = torch.nn.Parameter(torch.tensor([3.0, -2.0, 1.0], dtype=torch.float64))
    opt = cls([p], **kw)
    f0 = float((scales * p.detach() ** 2).sum())
    for _ in range(400):
        opt.zero_grad()
        loss = (scales * p ** 2).sum()
        loss.backward()
        opt.step()
    assert float((scales * p.detach() ** 2).sum()) < 1e-4 * f0
