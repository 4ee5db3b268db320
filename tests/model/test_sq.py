"""Smart Quantization: level fitting, zero gain, the level penalties; the regularizer method (the
depth gates: gradients, the memory cost, the read-off, a short training exporting the read-off
depths); the rule method (its bit budget with an exact knapsack, patience and freeze); the depth
plot."""

import dataclasses
import functools
import itertools
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

from qnnfab import numerics
from qnnfab.model import sq
from qnnfab.model.layers import QuantLinear
from qnnfab.model.sq import (SQConfig, SQController, depth_plot_svg, fit_levels,
                             gated_regularizer, level_regularizer, zero_gain)

SVG = "{http://www.w3.org/2000/svg}"

#: Settings of each method (the controller tests below name the method they test).
Rule = functools.partial(SQConfig, method="rule")
Reg = functools.partial(SQConfig, method="regularizer")


def clusters(centres, n, noise, seed):
    """``n`` weights drawn evenly from ``centres`` plus Gaussian noise, shuffled."""
    rng = np.random.default_rng(seed)
    w = np.resize(np.asarray(centres, dtype=np.float64), n) + rng.normal(0, noise, n)
    return torch.tensor(rng.permutation(w), dtype=torch.float32)


# -- fit_levels and zero_gain ----------------------------------------------------------------------

@pytest.mark.parametrize("a", [0.05, 0.3, 0.9])
def test_fit_two_clusters(a):
    """Weights at ±a: both level sets fit α = a with no error; the zero level gains nothing."""
    w = clusters([-a, a], 3000, 0.0, 1)
    for kind in ("binary", "ternary"):
        alpha, err = fit_levels(w, kind)
        assert alpha == pytest.approx(a, rel=1e-6), kind
        assert err == pytest.approx(0.0, abs=1e-12), kind
    noisy = clusters([-a, a], 3000, 0.02 * a, 2)
    alpha, err = fit_levels(noisy, "binary")
    assert alpha == pytest.approx(a, rel=0.01)
    assert err == pytest.approx((0.02 * a) ** 2, rel=0.15)  # the noise variance
    assert abs(zero_gain(noisy)) < 0.02


@pytest.mark.parametrize("a", [0.05, 0.3, 0.9])
def test_fit_three_clusters(a):
    """Weights at {-a, 0, a}: ternary fits α = a with ~no error, binary cannot (α = 2a/3,
    error 2a²/9), so the zero gain is near 1."""
    w = clusters([-a, 0.0, a], 3000, 0.0, 3)
    alpha, err = fit_levels(w, "ternary")
    assert alpha == pytest.approx(a, rel=1e-6) and err == pytest.approx(0.0, abs=1e-12)
    alpha_b, err_b = fit_levels(w, "binary")
    assert alpha_b == pytest.approx(2 * a / 3, rel=1e-6)
    assert err_b == pytest.approx(2 * a * a / 9, rel=1e-6)
    assert zero_gain(w) == pytest.approx(1.0, abs=1e-9)
    noisy = clusters([-a, 0.0, a], 3000, 0.02 * a, 4)
    alpha, err = fit_levels(noisy, "ternary")
    assert alpha == pytest.approx(a, rel=0.01) and err < 1e-3 * a * a
    assert zero_gain(noisy) > 0.98


def test_zero_gain_grows_with_the_share_of_zeros():
    """Clusters at ±0.4 with noise 0.05 and a share p of weights at 0: G grows with p up to 1/2
    (the binary error grows with p·(1 − p), the ternary one stays the noise)."""
    gains = []
    for p in (0.0, 0.02, 0.1, 0.3, 0.5):
        z = round(100 * p)
        centres = [-0.4] * (50 - z // 2) + [0.0] * z + [0.4] * (50 - z + z // 2)
        gains.append(zero_gain(clusters(centres, 4000, 0.05, z)))
    assert all(0 <= g <= 1 for g in gains), gains
    assert gains == sorted(gains) and gains[0] < 0.05 and gains[-1] > 0.9, gains


def test_fit_levels_edge_cases():
    assert fit_levels(torch.zeros(5), "binary") == (0.0, 0.0)
    assert fit_levels(torch.zeros(5), "ternary") == (0.0, 0.0)
    assert zero_gain(torch.zeros(5)) == 0.0
    w = torch.tensor([[-0.5, 0.5], [0.5, -0.5]])  # any shape; flattened
    assert fit_levels(w, "binary") == (0.5, 0.0)
    with pytest.raises(ValueError, match="fit_levels: unknown kind 'quaternary'"):
        fit_levels(w, "quaternary")


# -- level_regularizer -----------------------------------------------------------------------------

# Off the kinks: no weight at 0 (|w| has gradient 0 there) or at α/2 = 0.2 (a tie of the two
# ternary distances, where torch.minimum splits the gradient).
W = [-0.9, -0.3, -0.1, 0.05, 0.19, 0.22, 0.35, 0.8]


def test_level_regularizer_values():
    w, alpha = torch.tensor(W, dtype=torch.float64), 0.4
    binary = np.mean([(abs(x) - alpha) ** 2 for x in W])
    ternary = np.mean([min(x * x, (abs(x) - alpha) ** 2) for x in W])
    assert float(level_regularizer(w, alpha, "binary")) == pytest.approx(binary, rel=1e-12)
    assert float(level_regularizer(w, alpha, "ternary")) == pytest.approx(ternary, rel=1e-12)
    assert ternary < binary
    on_levels = torch.tensor([-alpha, alpha, alpha], dtype=torch.float64)
    assert float(level_regularizer(on_levels, alpha, "binary")) == 0.0
    assert float(level_regularizer(torch.cat([on_levels, torch.zeros(2, dtype=torch.float64)]),
                                   alpha, "ternary")) == 0.0
    with pytest.raises(ValueError, match="level_regularizer: unknown kind 'x'"):
        level_regularizer(w, alpha, "x")


@pytest.mark.parametrize("kind", ["binary", "ternary"])
def test_level_regularizer_gradients(kind):
    """d/dw pulls each weight to its nearest level; d/dα moves α toward the non-zero weights."""
    w = torch.tensor(W, dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    level_regularizer(w, alpha, kind).backward()
    n, a = len(W), 0.4
    gw, ga = [], 0.0
    for x in W:
        if kind == "ternary" and x * x < (abs(x) - a) ** 2:  # nearest level is 0
            gw.append(2 * x / n)
        else:  # nearest level is sign(x)·α
            gw.append(2 * (abs(x) - a) * math.copysign(1, x) / n)
            ga += -2 * (abs(x) - a) / n
    assert torch.allclose(w.grad, torch.tensor(gw, dtype=torch.float64)), (w.grad, gw)
    assert float(alpha.grad) == pytest.approx(ga, rel=1e-12)


# -- SQConfig --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"initial": "adaptive"}, r"SQConfig.initial: expected 'binary' or 'ternary', got "
                              r"'adaptive'"),
    ({"warmup": 0.7, "freeze": 0.6}, r"expected 0 <= warmup <= freeze <= 1, got warmup=0.7, "
                                     r"freeze=0.6"),
    ({"warmup": -0.1}, r"warmup=-0.1"),
    ({"freeze": 1.5}, r"freeze=1.5"),
    ({"bit_budget": 0.9}, r"SQConfig.bit_budget: expected >= 1 bit per weight or None, got 0.9"),
    ({"bit_budget": float("nan")}, r"SQConfig.bit_budget: .* got nan"),
    ({"method": "knapsack"}, r"SQConfig.method: expected one of 'regularizer', 'rule', got "
                             r"'knapsack'"),
    ({"cost": -0.1}, r"SQConfig.cost: expected a finite number >= 0, got -0.1"),
    ({"cost": float("inf")}, r"SQConfig.cost: .* got inf"),
    ({"gate_init": float("nan")}, r"SQConfig.gate_init: expected a finite number, got nan"),
])
def test_config_rejects(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SQConfig(**kwargs)


def test_config_regularizer_weight_ramps_linearly():
    cfg = SQConfig(lambda_start=0.1, lambda_end=0.5)
    assert cfg.regularizer_weight(0, 100) == pytest.approx(0.1)
    assert cfg.regularizer_weight(25, 100) == pytest.approx(0.2)
    assert cfg.regularizer_weight(100, 100) == pytest.approx(0.5)
    assert cfg.regularizer_weight(150, 100) == pytest.approx(0.5)  # clamped after the end
    SQConfig(bit_budget=None, warmup=0.0, freeze=0.0)  # the edges are allowed
    SQConfig(bit_budget=1.0, warmup=1.0, freeze=1.0)


def test_default_method_is_the_rule():
    """The rule stays the default (docs/methods.md says why); digits-sq uses it."""
    from qnnfab.model.presets import get_preset
    assert SQConfig().method == "rule" and SQConfig().cost == 0.01
    assert get_preset("digits-sq").sq.method == "rule"


# -- SQController ----------------------------------------------------------------------------------

def make_layers(sizes, kinds="adaptive"):
    """QuantLinear layers of ``sizes`` = [(in, out), ...], each of ``kinds`` (one or a list)."""
    kinds = [kinds] * len(sizes) if isinstance(kinds, str) else list(kinds)
    torch.manual_seed(0)
    return [QuantLinear(i, o, k) for (i, o), k in zip(sizes, kinds, strict=True)]


@pytest.fixture
def gains(monkeypatch):
    """Set each layer's zero gain by hand: ``gains[layer] = G`` (looked up by its weight)."""
    table = {}
    monkeypatch.setattr(sq, "zero_gain", lambda w: table[id(w)])

    class Gains:
        def __setitem__(self, lin, g):
            table[id(lin.weight)] = g

        def set(self, linears, values):
            for lin, g in zip(linears, values, strict=True):
                self[lin] = g
    return Gains()


def reference_choice(sizes_n, kinds, gains, rho, budget):
    """Independent brute force: the ternary subset of adaptive layers with G >= rho maximizing
    Σ n·G with Σ n·bits / Σ n <= budget."""
    total = sum(sizes_n)
    fixed_bits = sum(n * numerics.weight_code_bits(k) for n, k in zip(sizes_n, kinds)
                     if k != "adaptive")
    cand = [i for i, k in enumerate(kinds) if k == "adaptive" and gains[i] >= rho]
    best, best_value = (), -1.0
    for r in range(len(cand) + 1):
        for subset in itertools.combinations(cand, r):
            bits = fixed_bits + sum(sizes_n[i] * (2 if i in subset else 1)
                                    for i, k in enumerate(kinds) if k == "adaptive")
            value = sum(sizes_n[i] * gains[i] for i in subset)
            if bits <= budget * total + 1e-9 and value > best_value + 1e-12:
                best, best_value = subset, value
    return ["ternary" if i in best else ("binary" if k == "adaptive" else k)
            for i, k in enumerate(kinds)]


def decide(linears, cfg, epochs=10):
    """Run the controller with patience 1 and no warmup: it decides after epoch 1."""
    ctl = SQController(linears, cfg, epochs)
    ctl.end_epoch(1)
    assert ctl.decided_at == 1
    return [lin.kind for lin in linears]


def test_knapsack_beats_greedy(gains):
    """Greedy by G would take the 70-weight layer (value 63) and then nothing fits; the best
    within the budget is the two 40-weight layers (value 64)."""
    linears = make_layers([(7, 10), (4, 10), (4, 10), (1, 10)],
                          ["adaptive", "adaptive", "adaptive", "binary"])
    gains.set(linears, [0.9, 0.8, 0.8, 0.99])
    # 160 weights, budget 1.5: 80 extra bits for ternary layers
    cfg = Rule(rho=0.3, bit_budget=1.5, warmup=0, patience=1)
    assert decide(linears, cfg) == ["binary", "ternary", "ternary", "binary"]


def test_rho_and_no_budget(gains):
    linears = make_layers([(3, 4), (5, 4), (2, 4)])
    gains.set(linears, [0.29, 0.3, 0.95])
    assert decide(linears, Rule(rho=0.3, bit_budget=None, warmup=0, patience=1,
                                    initial="binary")) == ["binary", "ternary", "ternary"]
    linears = make_layers([(3, 4), (5, 4), (2, 4)])
    gains.set(linears, [0.29, 0.3, 0.95])
    assert decide(linears, Rule(rho=0.96, bit_budget=None, warmup=0,
                                    patience=1)) == ["binary"] * 3


def test_fixed_layers_count_toward_the_budget(gains):
    """A fixed ternary layer uses up budget; a fixed layer never changes."""
    linears = make_layers([(10, 10), (5, 10), (5, 10)], ["ternary", "adaptive", "adaptive"])
    gains.set(linears, [0.0, 0.9, 0.8])
    # 200 weights, 100 already ternary: 1.5 bits/weight is used up by it
    assert decide(linears, Rule(bit_budget=1.5, warmup=0, patience=1)) == \
        ["ternary", "binary", "binary"]
    linears = make_layers([(10, 10), (5, 10), (5, 10)], ["ternary", "adaptive", "adaptive"])
    gains.set(linears, [0.0, 0.9, 0.8])
    assert decide(linears, Rule(bit_budget=1.75, warmup=0, patience=1)) == \
        ["ternary", "ternary", "binary"]
    # fixed layers over budget on their own: every adaptive layer binary, nothing raised
    linears = make_layers([(10, 10), (5, 10)], ["ternary", "adaptive"])
    gains.set(linears, [0.0, 0.9])
    assert decide(linears, Rule(bit_budget=1.2, warmup=0, patience=1)) == \
        ["ternary", "binary"]


@pytest.mark.parametrize("seed", range(12))
def test_knapsack_matches_brute_force(gains, seed):
    rng = np.random.default_rng(seed)
    n_layers = int(rng.integers(2, 8))
    sizes = [(int(rng.integers(1, 9)), int(rng.integers(1, 9))) for _ in range(n_layers)]
    kinds = ["adaptive"] + list(rng.choice(["adaptive"] * 4 + ["binary", "ternary"],
                                           n_layers - 1))
    g = rng.uniform(0, 1, n_layers).round(3).tolist()
    rho, budget = float(rng.uniform(0, 0.6)), float(rng.uniform(1.0, 2.0))
    linears = make_layers(sizes, kinds)
    gains.set(linears, g)
    cfg = Rule(rho=rho, bit_budget=budget, warmup=0, patience=1)
    got = decide(linears, cfg)
    want = reference_choice([i * o for i, o in sizes], kinds, g, rho, budget)
    assert got == want, f"seed {seed}: sizes {sizes}, kinds {kinds}, gains {g}, rho {rho:.3f}, " \
                        f"budget {budget:.3f}: expected {want}, got {got}"
    n = [i * o for i, o in sizes]
    bits = sum(w * numerics.weight_code_bits(k) for w, k in zip(n, got)) / sum(n)
    fixed_only = all(k == "binary" for k, kind in zip(got, kinds) if kind == "adaptive")
    assert bits <= budget + 1e-9 or fixed_only, (bits, budget)


def test_many_layers_greedy_by_gain(gains):
    """Beyond 12 candidates the choice is greedy by G: with equal sizes, the highest gains."""
    linears = make_layers([(2, 5)] * 14)
    g = [0.31 + 0.04 * ((7 * i) % 14) for i in range(14)]  # distinct, all >= rho
    gains.set(linears, g)
    # 140 weights, budget 1.3: 42 extra bits, 4 ten-weight layers fit
    got = decide(linears, Rule(rho=0.3, bit_budget=1.3, warmup=0, patience=1))
    top = sorted(range(14), key=lambda i: -g[i])[:4]
    assert [i for i, k in enumerate(got) if k == "ternary"] == sorted(top)


def test_bits_per_weight():
    linears = make_layers([(3, 4), (5, 4), (2, 5)], ["binary", "ternary", "adaptive"])
    ctl = SQController(linears, Rule(initial="binary"), 10)
    assert ctl.bits_per_weight() == pytest.approx((12 + 2 * 20 + 10) / 42)
    assert ctl.bits_per_weight(["ternary"] * 3) == pytest.approx(2.0)
    assert ctl.bits_per_weight(["binary", "binary", "ternary"]) == pytest.approx(52 / 42)
    linears[2].set_kind("ternary")
    assert ctl.bits_per_weight() == pytest.approx((12 + 40 + 20) / 42)


def test_initial_depth_and_inactive_controller(gains):
    linears = make_layers([(3, 4), (5, 4)], ["adaptive", "binary"])
    SQController(linears, Rule(initial="ternary"), 10)
    assert [lin.kind for lin in linears] == ["ternary", "binary"]
    SQController(linears, Rule(initial="binary"), 10)
    assert [lin.kind for lin in linears] == ["binary", "binary"]
    fixed = make_layers([(3, 4), (5, 4)], ["ternary", "binary"])
    gains.set(fixed, [0.9, 0.9])
    ctl = SQController(fixed, Rule(warmup=0, patience=1), 4)
    assert not ctl.active and ctl.settled
    for e in range(1, 5):
        assert ctl.end_epoch(e) == []
    assert ctl.decided_at is None and len(ctl.history) == 4
    assert [lin.kind for lin in fixed] == ["ternary", "binary"]


class Schedule:
    """Gains per epoch: ``values[e - 1]`` is the list of G after epoch ``e``."""

    def __init__(self, gains, linears, values):
        self.gains, self.linears, self.values = gains, linears, values

    def run(self, ctl, epochs):
        out = []
        for e in range(1, epochs + 1):
            self.gains.set(self.linears, self.values[min(e, len(self.values)) - 1])
            out.append((ctl.end_epoch(e), ctl.decided_at, [lin.kind for lin in self.linears]))
        return out


def test_patience_decides_once_then_stays(gains):
    linears = make_layers([(4, 4), (4, 4), (4, 4)])
    # layer 1 binary from epoch 1 on, layer 2's wish flips at epoch 2; then gains all change
    values = [[0.9, 0.1, 0.9], [0.9, 0.1, 0.1], [0.9, 0.1, 0.1], [0.9, 0.1, 0.1],
              [0.1, 0.9, 0.9], [0.1, 0.9, 0.9], [0.1, 0.9, 0.9], [0.1, 0.9, 0.9]]
    ctl = SQController(linears, Rule(bit_budget=None, warmup=0, freeze=1, patience=3), 8)
    assert ctl.freeze_epoch == 8 and not ctl.settled
    log = Schedule(gains, linears, values).run(ctl, 8)
    # epochs 1-3: the wish changed at epoch 2, so the streak restarts; nothing changes yet
    for e in (1, 2, 3):
        assert log[e - 1] == ([], None, ["ternary"] * 3), (e, log[e - 1])
    # epoch 4: the same wish three epochs in a row (2, 3, 4): switch layers 1 and 2
    assert log[3] == ([1, 2], 4, ["ternary", "binary", "binary"])
    assert ctl.settled
    # afterwards the gains ask for the opposite, but the decision stands
    for e in range(5, 9):
        assert log[e - 1] == ([], 4, ["ternary", "binary", "binary"]), (e, log[e - 1])
    # history: one entry per epoch, the depth after that epoch's decision, G rounded
    assert [h["epoch"] for h in ctl.history] == list(range(1, 9))
    assert [h["depth"] for h in ctl.history] == [k for _, _, k in log]
    assert [h["gain"] for h in ctl.history] == [values[e] for e in range(8)]
    bpw = [(2 * 16 * d.count("ternary") + 16 * d.count("binary")) / 48
           for d in (h["depth"] for h in ctl.history)]
    assert [h["bits_per_weight"] for h in ctl.history] == [round(b, 4) for b in bpw]
    assert set(ctl.history[0]) == {"epoch", "depth", "gain", "bits_per_weight"}


def test_warmup_and_freeze(gains):
    linears = make_layers([(4, 4), (4, 4)])
    values = [[0.1, 0.9], [0.9, 0.1], [0.1, 0.9], [0.9, 0.1], [0.1, 0.9], [0.1, 0.9]]
    # rule runs from epoch 0.2·10 = 2; the wish flips every epoch, so patience is never met:
    # freeze 0.5·10 = epoch 5 forces the decision with that epoch's wish
    ctl = SQController(linears, Rule(bit_budget=None, warmup=0.2, freeze=0.5,
                                         patience=2), 10)
    assert ctl.freeze_epoch == 5
    log = Schedule(gains, linears, values).run(ctl, 6)
    assert [d for _, d, _ in log] == [None, None, None, None, 5, 5]
    assert log[4][0] == [0] and log[4][2] == ["binary", "ternary"]
    # with patience 1 the rule decides at the first epoch after warmup, not before
    linears = make_layers([(4, 4), (4, 4)])
    ctl = SQController(linears, Rule(bit_budget=None, warmup=0.3, patience=1), 10)
    log = Schedule(gains, linears, [[0.1, 0.9]]).run(ctl, 4)
    assert [d for _, d, _ in log] == [None, None, 3, 3]
    assert log[1][2] == ["ternary", "ternary"] and log[2][2] == ["binary", "ternary"]


def test_real_gains_drive_the_decision():
    """No monkeypatching: weights in three clusters become ternary, in two clusters binary."""
    linears = make_layers([(20, 30), (20, 30)])
    with torch.no_grad():
        linears[0].weight.copy_(clusters([-0.4, 0.4], 600, 0.02, 5).reshape(30, 20))
        linears[1].weight.copy_(clusters([-0.4, 0.0, 0.4], 600, 0.02, 6).reshape(30, 20))
    ctl = SQController(linears, Rule(bit_budget=1.5, warmup=0, patience=1), 4)
    assert ctl.end_epoch(1) == [0]
    assert [lin.kind for lin in linears] == ["binary", "ternary"]
    g = ctl.history[0]["gain"]
    assert g[0] < 0.05 and g[1] > 0.95, g
    # α was re-fitted to the new levels of the switched layer
    alpha, _ = fit_levels(linears[0].weight, "binary")
    assert float(linears[0].alpha.detach()) == pytest.approx(alpha, rel=1e-5)


def test_regularizer_sums_layers():
    linears = make_layers([(3, 4), (5, 4)], ["binary", "ternary"])
    cfg = SQConfig(lambda_start=0.5, lambda_end=1.5)
    ctl = SQController(linears, cfg, 3)
    want = sum(float(level_regularizer(lin.weight, lin.alpha, lin.kind).detach())
               for lin in linears)
    assert float(ctl.regularizer(5, 10).detach()) == pytest.approx(1.0 * want, rel=1e-6)
    r = ctl.regularizer(0, 10)
    r.backward()
    assert all(lin.weight.grad is not None and lin.log_alpha.grad is not None
               for lin in linears)


# -- the regularizer method: depth gates -----------------------------------------------------------

def test_gated_regularizer_mixes_the_two_penalties():
    """``(1 − p)·R_b + p·R_t``: the ends are the two penalties, ``∂/∂p = R_t − R_b <= 0``."""
    w = torch.tensor(W, dtype=torch.float64)
    rb, rt = (float(level_regularizer(w, 0.4, k)) for k in ("binary", "ternary"))
    for p in (0.0, 0.3, 1.0):
        got = float(gated_regularizer(w, 0.4, torch.tensor(p, dtype=torch.float64)))
        assert got == pytest.approx((1 - p) * rb + p * rt, rel=1e-12), p
    p = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    gated_regularizer(w, 0.4, p).backward()
    assert float(p.grad) == pytest.approx(rt - rb, rel=1e-12) and float(p.grad) < 0


def regularizer_layers(sizes, cfg, epochs=10, kinds="adaptive"):
    linears = make_layers(sizes, kinds)
    return linears, SQController(linears, cfg, epochs)


def test_gated_forward_and_gate_gradient():
    """While the gates are live the forward pass is ``(1 − p)·binary + p·ternary`` (weights below
    the threshold count ``±(1 − p)``), and the task loss reaches the gate:
    ``∂L/∂s = σ'(s)·Σ g·(ternary − binary)``."""
    (lin,), ctl = regularizer_layers([(6, 4)], Reg(gate_init=0.4))
    assert lin.soft_depth and ctl.active and not ctl.settled
    with torch.no_grad():
        lin.weight.copy_(torch.linspace(-0.9, 0.85, 24).reshape(4, 6))
        lin.log_alpha.fill_(math.log(0.5))
    p = 1 / (1 + math.exp(-0.4))
    w = lin.weight.detach()
    b = torch.where(w >= 0, 1.0, -1.0)
    t = torch.where(w.abs() > 0.25, b, torch.zeros_like(w))
    assert torch.allclose(lin.weight_values(), b + p * (t - b))
    assert lin.weight_values().abs().unique().tolist() == pytest.approx([1 - p, 1.0])
    torch.manual_seed(3)
    x, g = torch.randn(5, 6), torch.randn(5, 4)
    (lin(x) * g).sum().backward()
    dvalues = g.t() @ x                                     # ∂L/∂(weight values)
    want = float((dvalues * (t - b)).sum()) * p * (1 - p)   # through p = σ(s)
    assert float(lin.depth_logit.grad) == pytest.approx(want, rel=1e-5)
    assert lin.weight.grad is not None and torch.count_nonzero(lin.weight.grad) > 0
    # the same layer as a plain ternary one (gates off): no gradient reaches the gate
    lin.soft_depth = False
    lin.depth_logit.grad = None
    (lin(x) * g).sum().backward()
    assert lin.depth_logit.grad is None


def test_the_rule_method_leaves_the_gate_alone():
    (lin,), ctl = regularizer_layers([(6, 4)], Rule())
    assert not lin.soft_depth
    torch.manual_seed(0)
    (lin(torch.randn(3, 6)).sum() + ctl.regularizer(0, 10)).backward()
    assert lin.depth_logit.grad is None


def descend(linears, ctl, steps=200, lr=0.05):
    """Plain gradient descent on the Smart Quantization terms alone (no task loss)."""
    params = [lin.depth_logit for lin in linears if lin.adaptive]
    opt = torch.optim.SGD(params, lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        ctl.regularizer(100, 100).backward()
        opt.step()
    return [float(lin.depth_gate().detach()) for lin in linears]


def test_memory_cost_pushes_toward_binary():
    """Without the task loss: with no cost the level penalty alone favours ternary (``R_t <= R_b``);
    a cost pushes every gate toward binary, the larger layer (more bits to save) faster; the
    gradient of the cost on a layer's gate is ``μ·n_l/N·σ'(s)``."""
    sizes = [(20, 30), (5, 6)]                              # 600 and 30 weights
    linears, ctl = regularizer_layers(sizes, Reg(cost=0.0, lambda_end=1.0))
    assert all(p > 0.5 for p in descend(linears, ctl)), "no cost: the gates should grow"
    linears, ctl = regularizer_layers(sizes, Reg(cost=1.0, lambda_end=0.0))
    ctl.regularizer(100, 100).backward()
    for lin in linears:
        want = 1.0 * lin.weight.numel() / 630 * 0.25        # σ'(0) = 1/4
        assert float(lin.depth_logit.grad) == pytest.approx(want, rel=1e-6)
    for lin in linears:
        lin.depth_logit.grad = None
    gates = descend(linears, ctl, steps=50)
    assert gates[0] < gates[1] < 0.5, gates
    # cost and level penalty together: a large enough cost wins
    linears, ctl = regularizer_layers(sizes, Reg(cost=1.0, lambda_end=1.0))
    assert all(p < 0.5 for p in descend(linears, ctl)), "the cost should win"


def test_read_off_rounds_the_gates_at_the_freeze_epoch():
    """Before the read-off the history shows the depths the gates would give and the gates;
    at ``freeze`` the layers take those depths (ternary where ``p >= 1/2``), α is re-fitted,
    the gates stop; fixed layers keep their kind and have no gate."""
    sizes = [(20, 30), (20, 30), (4, 5)]
    linears, ctl = regularizer_layers(sizes, Reg(freeze=0.5), epochs=6,
                                      kinds=["adaptive", "adaptive", "ternary"])
    assert ctl.freeze_epoch == 3
    with torch.no_grad():
        linears[0].weight.copy_(clusters([-0.4, 0.4], 600, 0.02, 5).reshape(30, 20))
        linears[1].weight.copy_(clusters([-0.4, 0.0, 0.4], 600, 0.02, 6).reshape(30, 20))
    logits = [[2.0, -1.0], [-0.5, 0.2], [-0.3, 1.5]]        # per epoch, layers 0 and 1
    for e, (s0, s1) in enumerate(logits, 1):
        with torch.no_grad():
            linears[0].depth_logit.fill_(s0)
            linears[1].depth_logit.fill_(s1)
        changed = ctl.end_epoch(e)
        assert ctl.settled == (e == 3), e
    # the read-off took epoch 3's gates: layer 0 binary (p < 1/2), layer 1 ternary
    assert [lin.kind for lin in linears] == ["binary", "ternary", "ternary"]
    assert changed == [0] and ctl.decided_at == 3
    assert not any(lin.soft_depth for lin in linears)
    assert not linears[0].depth_logit.requires_grad
    for lin in linears[:2]:
        alpha, _ = fit_levels(lin.weight, lin.kind)
        assert float(lin.alpha.detach()) == pytest.approx(alpha, rel=1e-5)
    h = ctl.history
    assert [x["depth"] for x in h] == [["ternary", "binary", "ternary"],
                                       ["binary", "ternary", "ternary"],
                                       ["binary", "ternary", "ternary"]]
    sig = lambda s: round(1 / (1 + math.exp(-s)), 4)  # noqa: E731
    assert [x["gate"] for x in h] == [[sig(a), sig(b), None] for a, b in logits]
    assert h[0]["bits_per_weight"] == pytest.approx(round((1200 + 600 + 40) / 1220, 4))
    # after the read-off the depths stay whatever the gates do
    with torch.no_grad():
        linears[0].depth_logit.fill_(5.0)
    assert ctl.end_epoch(4) == [] and linears[0].kind == "binary"
    assert ctl.history[-1]["depth"] == ["binary", "ternary", "ternary"]
    # the memory cost is gone with the live gates: only the level penalties remain
    want = sum(float(level_regularizer(lin.weight, lin.alpha, lin.kind).detach())
               for lin in linears)
    assert float(ctl.regularizer(10, 10).detach()) == pytest.approx(1e-2 * want, rel=1e-5)


def test_regularizer_terms_while_the_gates_are_live():
    sizes = [(3, 4), (5, 4)]
    linears, ctl = regularizer_layers(sizes, Reg(cost=0.2, gate_init=1.0,
                                                      lambda_start=0.5, lambda_end=0.5),
                                      kinds=["adaptive", "binary"])
    p = 1 / (1 + math.exp(-1.0))
    a = linears[0]
    with torch.no_grad():
        want = 0.5 * (float(gated_regularizer(a.weight, a.alpha, torch.tensor(p)))
                      + float(level_regularizer(linears[1].weight, linears[1].alpha, "binary"))) \
            + 0.2 * p * 12 / 32
        got = float(ctl.regularizer(3, 10))
    assert got == pytest.approx(want, rel=1e-5)


def short_sq(epochs=4, **config):
    from qnnfab.model.presets import get_preset
    return dataclasses.replace(get_preset("digits-sq"), epochs=epochs, sq=SQConfig(**config))


@pytest.mark.parametrize("config, depths", [
    ({"method": "regularizer", "cost": 20.0}, ["binary"] * 3),
    ({"method": "regularizer", "cost": 0.0, "gate_init": 6.0}, ["ternary"] * 3),
    ({"method": "regularizer", "cost": 0.005}, None),
    ({"method": "rule", "bit_budget": 1.5}, None),
])
def test_short_training_exports_the_chosen_depths(config, depths):
    """Four epochs of digits-sq (read-off/freeze at epoch round(0.6·4) = 2): the exported
    network's kinds are the depths read off the gates (or the rule's), recorded in
    meta["sq"]; the best epoch is one trained with them; float and integer agree."""
    from qnnfab.model.train import train
    r = train(short_sq(**config), seed=1, progress=False)
    meta = r.network.meta["sq"]
    kinds = [layer.weight_kind for layer in r.network.layers]
    assert kinds == meta["depth"] and meta["method"] == config["method"]
    assert r.agreement == 1.0 and r.best_epoch > 2 and meta["decided_at"] <= 2
    if depths is not None:
        assert kinds == depths
    if config["method"] == "regularizer":
        assert kinds == ["ternary" if g >= 0.5 else "binary" for g in meta["gate"]]
        assert meta["history"][1]["gate"] == meta["gate"]   # read off after epoch 2
        assert all("gate" in h for h in meta["history"])
    else:
        assert "gate" not in meta and meta["bits_per_weight"] <= 1.5
        assert all("gate" not in h for h in meta["history"])


def test_checkpoint_without_depth_gate_loads():
    """An adaptive layer saved before the gate existed loads with an undecided gate."""
    (lin,) = make_layers([(3, 4)])
    state = {k: v for k, v in lin.state_dict().items() if k != "depth_logit"}
    (other,) = make_layers([(3, 4)])
    with torch.no_grad():
        other.depth_logit.fill_(3.0)
    other.load_state_dict(state)
    assert float(other.depth_logit.detach()) == 0.0


# -- depth plot ------------------------------------------------------------------------------------

def test_depth_plot_is_svg_with_one_row_per_layer():
    history = [{"epoch": e, "depth": [("ternary" if (e + i) % 3 else "binary") for i in range(3)],
                "gain": [0.1 * e, 1.2, -0.1], "bits_per_weight": 1.5} for e in range(1, 6)]
    text = depth_plot_svg(history, names=["dense0 64x128", "dense1 128x128", "dense2 128x10"])
    root = ET.fromstring(text)
    assert root.tag == f"{SVG}svg"
    rows = root.findall(f"{SVG}polyline")
    assert len(rows) == 3
    rects = root.findall(f"{SVG}rect")
    assert len(rects) == 3 * len(history)
    labels = [t.text for t in root.findall(f"{SVG}text")]
    for name in ("dense0 64x128", "dense1 128x128", "dense2 128x10"):
        assert name in labels
    # the bands of a row are coloured by that layer's depth, epoch by epoch
    fills = [r.get("fill") for r in rects]
    dark, light = "#3b6fb6", "#cfdcef"
    want = [dark if h["depth"][i] == "ternary" else light for i in range(3) for h in history]
    assert fills == want
    # G is clamped to [0, 1] inside the row: points lie within their row's band
    for i, line in enumerate(rows):
        ys = [float(p.split(",")[1]) for p in line.get("points").split()]
        band = [float(r.get("y")) for r in rects[i * len(history):(i + 1) * len(history)]]
        height = float(rects[0].get("height"))
        assert len(ys) == len(history)
        assert all(band[0] <= y <= band[0] + height for y in ys)


def test_depth_plot_draws_the_gates():
    history = [{"epoch": e, "depth": ["binary", "ternary"], "gain": [0.2, 0.8],
                "gate": [0.1 * e, None]} for e in range(1, 4)]
    root = ET.fromstring(depth_plot_svg(history))
    gates = [p for p in root.findall(f"{SVG}polyline") if p.get("class") == "gate"]
    assert len(gates) == 1 and len(gates[0].get("points").split()) == 3
    assert "dashed: depth gate p" in "".join(t.text for t in root.findall(f"{SVG}text"))


def test_depth_plot_default_names_and_errors():
    history = [{"epoch": 1, "depth": ["binary", "ternary"], "gain": [0.2, 0.8]}]
    root = ET.fromstring(depth_plot_svg(history))
    labels = [t.text for t in root.findall(f"{SVG}text")]
    assert "layer 0" in labels and "layer 1" in labels
    assert len(root.findall(f"{SVG}polyline")) == 2
    with pytest.raises(ValueError, match="depth_plot_svg: empty history"):
        depth_plot_svg([])
