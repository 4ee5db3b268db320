"""Export: batch-norm + activation (sign or k-bit codes) folded into integer thresholds, exactly as
the float model decides."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from qnnfab import ir, numerics, random_net
from qnnfab.spec import golden
from qnnfab.model.export import export, export_float, fold_bn_sign, fold_dense
from qnnfab.model.layers import BinaryMLP, QuantDense, QuantMLP, batchnorm_eval
from qnnfab.model.presets import Preset
from qnnfab.model.train import train

IN_FEATURES, IN_BITS = 4, 5
BOUND = numerics.acc_bound(IN_FEATURES, IN_BITS, "binary")  # 124


def make_bn(rows, eps=0.0):
    """A BatchNorm1d from rows of (mean, var, gamma, beta)."""
    bn = torch.nn.BatchNorm1d(len(rows), eps=eps)
    mean, var, gamma, beta = (torch.tensor(c, dtype=torch.float32) for c in zip(*rows))
    with torch.no_grad():
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.weight.copy_(gamma)
        bn.bias.copy_(beta)
    return bn.eval()


# (mean, var, gamma, beta) -> (threshold, sign); var 4 so sigma = 2 exactly.
HAND_CASES = [
    ((10.0, 4.0, 2.0, 1.0), (9, 1)),              # acc >= ceil(10 - 1*2/2) = 9
    ((7.25, 4.0, 1.0, 0.0), (8, 1)),              # acc >= ceil(7.25)
    ((7.0, 4.0, 1.0, 0.0), (7, 1)),               # bn(7) = 0 -> sign(0) = +1
    ((-3.5, 4.0, 0.5, 0.0), (-3, 1)),
    ((10.0, 4.0, -1.0, 1.0), (-12, -1)),          # -(acc-10)/2 + 1 >= 0 <=> -acc >= -12
    ((7.0, 4.0, -1.0, 0.0), (-7, -1)),            # bn(7) = -0.0 >= 0 -> on at the edge
    ((7.25, 4.0, -3.0, 0.0), (-7, -1)),           # acc <= 7.25 <=> -acc >= -7
    ((0.0, 4.0, 0.0, 0.5), (-BOUND, 1)),          # gamma = 0, beta >= 0: always 1
    ((0.0, 4.0, 0.0, 0.0), (-BOUND, 1)),          # gamma = 0, beta = 0: sign(0) = +1
    ((0.0, 4.0, 0.0, -0.5), (BOUND + 1, 1)),      # gamma = 0, beta < 0: never
    ((1000.0, 4.0, 1.0, 0.0), (BOUND + 1, 1)),    # clamped: never reached
    ((-1000.0, 4.0, 1.0, 0.0), (-BOUND, 1)),      # clamped: always
    ((-1000.0, 4.0, -1.0, 0.0), (BOUND + 1, -1)),  # acc <= -1000: never
    ((1000.0, 4.0, -1.0, 0.0), (-BOUND, -1)),     # acc <= 1000: always
    ((float(BOUND), 4.0, 1.0, 0.0), (BOUND, 1)),  # exactly at the top of the range
]


def exhaustive(bn, bound):
    """on[a, j] = [batchnorm_eval(a) >= 0] for every integer a in -bound..bound."""
    acc = torch.arange(-bound, bound + 1, dtype=torch.float32)[:, None].expand(-1, bn.num_features)
    return (batchnorm_eval(acc.contiguous(), bn) >= 0).numpy()


def folded(thr, sign, bound):
    a = np.arange(-bound, bound + 1)[:, None]
    return sign[None, :] * a >= thr[:, 0][None, :]


def test_hand_made_cases():
    bn = make_bn([row for row, _ in HAND_CASES])
    thr, sign = fold_bn_sign(bn, in_features=IN_FEATURES, in_bits=IN_BITS)
    assert thr.dtype == np.int64 and sign.dtype == np.int64 and thr.shape == (len(HAND_CASES), 1)
    for j, (row, want) in enumerate(HAND_CASES):
        assert (int(thr[j, 0]), int(sign[j])) == want, f"case {j} {row}: expected {want}, got " \
                                                        f"{(int(thr[j, 0]), int(sign[j]))}"
    assert np.array_equal(folded(thr, sign, BOUND), exhaustive(bn, BOUND))


def test_formula_where_not_near_an_integer():
    """Away from rounding trouble the result is the textbook ceil(μ − β·σ/γ) (flipped for γ<0)."""
    rng = np.random.default_rng(5)
    rows = [(float(rng.uniform(-60, 60)), float(rng.uniform(0.5, 9)), float(g),
             float(rng.uniform(-2, 2))) for g in rng.choice([-1, 1], 64) * rng.uniform(0.2, 3, 64)]
    bn = make_bn(rows, eps=1e-5)
    thr, sign = fold_bn_sign(bn, in_features=IN_FEATURES, in_bits=IN_BITS)
    checked = 0
    for j, (mu, var, g, b) in enumerate(rows):
        edge = Fraction(mu) - Fraction(b) * Fraction(math.sqrt(var + 1e-5)) / Fraction(g)
        if abs(edge - round(edge)) < 1e-3:
            continue
        want = (math.ceil(edge), 1) if g > 0 else (-math.floor(edge), -1)
        assert (int(thr[j, 0]), int(sign[j])) == want, (j, rows[j], float(edge))
        checked += 1
    assert checked > 50


@pytest.mark.parametrize("seed", range(3))
def test_thresholds_exact_at_rounding_boundaries(seed):
    """Boundaries placed within a few ulps of integers: every accumulator must still agree."""
    rng = np.random.default_rng(seed)
    n = 256
    k = rng.integers(-100, 100, n).astype(np.float32)
    ulps = rng.integers(-3, 4, n)
    mean = k.copy()
    for j, u in enumerate(ulps):  # step |u| ulps away from the integer, up or down
        for _ in range(abs(int(u))):
            mean[j] = np.nextafter(mean[j], np.float32(math.copysign(np.inf, u)))
    rows = list(zip(mean.tolist(), rng.uniform(0.1, 50, n).tolist(),
                    (rng.choice([-1.0, 1.0, 0.0], n, p=[0.45, 0.45, 0.1])
                     * rng.uniform(0.01, 4, n)).tolist(),
                    (rng.choice([0.0, 1.0], n) * rng.normal(0, 1e-6, n)).tolist()))
    bn = make_bn(rows, eps=1e-5)
    thr, sign = fold_bn_sign(bn, in_features=IN_FEATURES, in_bits=IN_BITS)
    lo, hi = numerics.threshold_bounds(IN_FEATURES, IN_BITS, "binary")
    assert thr.min() >= lo and thr.max() <= hi
    want, got = exhaustive(bn, BOUND), folded(thr, sign, BOUND)
    bad = np.argwhere(want != got)
    assert bad.size == 0, (f"seed {seed}: acc {int(bad[0, 0]) - BOUND}, neuron {bad[0, 1]} "
                           f"{rows[bad[0, 1]]}: float says {want[tuple(bad[0])]}, thresholds "
                           f"{got[tuple(bad[0])]}")


def random_model(seed, features=(64, 48, 32, 10), input_bits=5):
    """An untrained BinaryMLP with random batch-norm statistics (incl. negative and zero γ)."""
    torch.manual_seed(seed)
    model = BinaryMLP(list(features), input_bits=input_bits)
    rng = np.random.default_rng(seed)
    for block in model.hidden:
        n, fan = block.bn.num_features, block.linear.in_features
        scale = fan ** 0.5 * (8 if block is model.hidden[0] else 1)
        gamma = rng.choice([-1.0, 1.0, 0.0], n, p=[0.4, 0.5, 0.1]) * rng.uniform(0.1, 2, n)
        with torch.no_grad():
            block.bn.running_mean.copy_(torch.tensor(rng.normal(0, scale, n)))
            block.bn.running_var.copy_(torch.tensor(rng.uniform(0.1, 2, n) * scale ** 2))
            block.bn.weight.copy_(torch.tensor(gamma))
            block.bn.bias.copy_(torch.tensor(rng.normal(0, 0.5, n)))
    return model.eval()


@pytest.mark.parametrize("seed", range(3))
def test_export_matches_float_model_layer_by_layer(seed):
    model = random_model(seed)
    net = export(model, meta={"seed": seed})
    assert [layer.in_bits for layer in net.layers] == [5, 1, 1] and net.layers[-1].is_output
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 32, size=(300, 64))
    acts, scores = model.trace(torch.as_tensor(codes, dtype=torch.float32))
    trace = golden.forward(net, codes)
    for i, act in enumerate(acts):
        want = (act.numpy() > 0).astype(np.int64)
        got = trace.acts[i + 1]
        bad = np.argwhere(want != got)
        assert bad.size == 0, (f"seed {seed}: layer {i} sample {bad[0, 0]} output {bad[0, 1]}: "
                               f"float {want[tuple(bad[0])]}, golden {got[tuple(bad[0])]}")
    assert np.array_equal(scores.numpy().astype(np.int64), trace.scores)
    assert np.array_equal(model(torch.as_tensor(codes, dtype=torch.float32)).argmax(1).numpy(),
                          trace.classes)


def test_export_network_fields():
    model = random_model(7, features=(6, 5, 3))
    net = export(model, meta={"preset": "x"}, classes=["a", "b", "c"])
    assert net.input_features == 6 and net.input_bits == 5 and net.classes == ["a", "b", "c"]
    assert net.meta == {"preset": "x"}
    first, last = net.layers
    assert first.in_bits == 5 and last.in_bits == 1 and last.is_output
    assert first.weights.dtype == np.int64 and first.weights.shape == (5, 6)
    w = model.hidden[0].linear.weight.detach().numpy()
    assert np.array_equal(first.weights, (w >= 0).astype(np.int64))
    assert first.thresholds.shape == (5, 1) and set(first.threshold_sign.tolist()) <= {-1, 1}
    assert ir.from_bytes(ir.to_bytes(net)).summary() == net.summary()


def test_export_rejects():
    with pytest.raises(TypeError, match="BinaryMLP"):
        export(torch.nn.Linear(2, 2), meta={})
    model = random_model(1, features=(6, 5, 3))
    with pytest.raises(TypeError, match="meta must be a dict"):
        export(model, meta=None)
    with torch.no_grad():
        model.hidden[0].bn.bias[2] = float("nan")
    with pytest.raises(ValueError, match=r"layers\[0\]: batch-norm bias\[2\] is nan"):
        export(model, meta={})


def test_trained_model_float_and_golden_agree():
    preset = Preset(name="test-small", hidden=(64, 64), epochs=4)
    result = train(preset, seed=0, progress=False)
    ds = result.dataset
    trace = golden.forward(result.network, ds.x_test)
    with torch.no_grad():
        logits = result.model(torch.as_tensor(ds.x_test, dtype=torch.float32))
    float_pred = logits.argmax(1).numpy()
    disagree = np.flatnonzero(float_pred != trace.classes)
    agreement = 1 - len(disagree) / len(float_pred)
    assert agreement == result.agreement
    first = [(int(i), int(float_pred[i]), int(trace.classes[i])) for i in disagree[:5]]
    assert agreement >= 0.99, f"agreement {agreement:.4f}; (index, float, golden): {first}"
    assert result.integer_accuracy > 0.8


# -- mixed weight kinds and k-bit activations ------------------------------------------------------

def randomize_bn(bn, z, rng):
    """Running statistics near those of the pre-batch-norm values ``z`` (batch, out), γ random
    with negative and zero entries, β random: codes spread over every level."""
    n = bn.num_features
    mean, std = z.mean(0).numpy(), z.std(0).numpy() + 1e-3
    gamma = rng.choice([-1.0, 1.0, 0.0], n, p=[0.4, 0.5, 0.1]) * rng.uniform(0.3, 2.5, n)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor(mean + rng.normal(0, 0.5, n) * std))
        bn.running_var.copy_(torch.tensor((std * rng.uniform(0.5, 2, n)) ** 2))
        bn.weight.copy_(torch.tensor(gamma))
        bn.bias.copy_(torch.tensor(rng.normal(0, 1.0, n)))


def random_quant_model(seed, features, kinds, act_bits, input_bits=5, n=400):
    """An untrained QuantMLP with random clips and batch-norm statistics (set layer by layer from
    the previous layers' outputs on random inputs), eval mode; also returns those inputs."""
    torch.manual_seed(seed)
    model = QuantMLP(list(features), input_bits=input_bits, weight_kinds=kinds,
                     act_bits=act_bits).eval()
    rng = np.random.default_rng(seed)
    x = torch.as_tensor(rng.integers(0, 1 << input_bits, size=(n, features[0])),
                        dtype=torch.float32)
    step = None
    with torch.no_grad():
        for block in model.hidden:
            if block.act_bits > 1:
                block.clip.fill_(float(rng.uniform(0.5, 4.0)))
            acc = block.accumulate(x)
            randomize_bn(block.bn, acc if step is None else acc * step, rng)
            x, step = block(x, step)
    return model, rng


MIXED = [  # (features, weight kinds per layer, act_bits per hidden layer)
    ((64, 48, 40, 32, 10), ("ternary", "binary", "ternary", "binary"), (2, 1, 3)),
    ((64, 40, 36, 24, 10), ("binary", "ternary", "ternary", "ternary"), (3, 2, 1)),
    ((64, 32, 24, 10), ("ternary", "ternary", "binary"), (1, 2)),
    ((64, 32, 24, 10), ("adaptive", "adaptive", "adaptive"), (2, 2)),
]


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("case", range(len(MIXED)))
def test_mixed_export_matches_float_model_layer_by_layer(case, seed):
    features, kinds, bits = MIXED[case]
    model, rng = random_quant_model(seed + 10 * case, features, kinds, bits)
    adaptive = [lin for lin in model.quant_linears() if lin.adaptive]
    for i, lin in enumerate(adaptive):  # adaptive layers export the kind they have now
        lin.set_kind(("binary", "ternary")[(i + seed) % 2])
    want_kinds = [lin.kind for lin in model.quant_linears()]
    net = export(model, meta={"seed": seed})
    where = f"case {case} seed {seed}"
    assert [layer.weight_kind for layer in net.layers] == want_kinds
    assert [layer.in_bits for layer in net.layers] == [5, *bits]
    assert [layer.n_thresholds for layer in net.layers[:-1]] == [(1 << b) - 1 for b in bits]

    codes = rng.integers(0, 32, size=(300, features[0]))
    acts, scores = model.trace(torch.as_tensor(codes, dtype=torch.float32))
    trace = golden.forward(net, codes)
    for i, act in enumerate(acts):
        want, got = act.numpy(), trace.acts[i + 1]
        levels = (1 << bits[i]) - 1
        assert want.min() >= 0 and want.max() <= levels
        # the test means something only if the codes are spread over every level
        assert set(np.unique(want).tolist()) == set(range(levels + 1)), (where, i)
        bad = np.argwhere(want != got)
        assert bad.size == 0, (f"{where}: layer {i} sample {bad[0, 0]} output {bad[0, 1]}: "
                               f"float {want[tuple(bad[0])]}, golden {got[tuple(bad[0])]}")
    assert np.array_equal(scores.numpy().astype(np.int64), trace.scores), where
    assert np.array_equal(model(torch.as_tensor(codes, dtype=torch.float32)).argmax(1).numpy(),
                          trace.classes), where


@pytest.mark.parametrize("case", range(len(MIXED)))
def test_mixed_export_thresholds_and_weights(case):
    features, kinds, bits = MIXED[case]
    model, _ = random_quant_model(100 + case, features, kinds, bits)
    net = export(model, meta={})
    for i, (layer, lin) in enumerate(zip(net.layers, model.quant_linears(), strict=True)):
        where = f"case {case} layer {i}"
        assert layer.weights.dtype == np.int64
        values = lin.weight_values().detach().numpy()
        levels = np.asarray(numerics.WEIGHT_LEVELS[layer.weight_kind])
        assert np.array_equal(levels[layer.weights], values), where
        if layer.weight_kind == "ternary":
            assert set(np.unique(layer.weights).tolist()) == {0, 1, 2}, where
            assert np.array_equal(layer.weights == 0, values == 0), where
        else:
            assert set(np.unique(layer.weights).tolist()) == {0, 1}, where
        if layer.is_output:
            continue
        thr = layer.thresholds
        assert thr.dtype == np.int64 and thr.shape == (layer.out_features, (1 << bits[i]) - 1)
        assert np.all(np.diff(thr, axis=1) >= 0), f"{where}: thresholds not ascending"
        lo, hi = numerics.threshold_bounds(layer.in_features, layer.in_bits, layer.weight_kind)
        assert thr.min() >= lo and thr.max() <= hi, (where, thr.min(), thr.max(), lo, hi)
        gamma = model.hidden[i].bn.weight.detach().numpy()
        assert np.array_equal(layer.threshold_sign, np.where(gamma < 0, -1, 1)), where


def test_adaptive_layer_exports_its_current_kind():
    model, _ = random_quant_model(3, (16, 12, 10), "adaptive", 2)
    for kind in ("binary", "ternary", "binary"):
        for lin in model.quant_linears():
            lin.set_kind(kind)
        net = export(model, meta={})
        assert [layer.weight_kind for layer in net.layers] == [kind, kind]
        for layer, lin in zip(net.layers, model.quant_linears()):
            levels = np.asarray(numerics.WEIGHT_LEVELS[kind])
            assert np.array_equal(levels[layer.weights], lin.weight_values().detach().numpy())


def kbit_block(rng, in_features, out_features, kind, act_bits, clip, hand_rows=()):
    """A QuantDense in eval mode with random batch-norm rows, then ``hand_rows`` of (mean, var,
    gamma, beta) appended at the end."""
    block = QuantDense(in_features, out_features + len(hand_rows), weight_kind=kind,
                       act_bits=act_bits).eval()
    n = block.bn.num_features
    gamma = rng.choice([-1.0, 1.0, 0.0], n, p=[0.4, 0.5, 0.1]) * rng.uniform(0.1, 3, n)
    rows = np.stack([rng.normal(0, 6, n), rng.uniform(0.1, 40, n), gamma,
                     rng.normal(0, 1, n)], axis=1)
    if hand_rows:
        rows[-len(hand_rows):] = np.asarray(hand_rows)
    with torch.no_grad():
        block.bn.eps = 0.0
        block.bn.running_mean.copy_(torch.tensor(rows[:, 0]))
        block.bn.running_var.copy_(torch.tensor(rows[:, 1]))
        block.bn.weight.copy_(torch.tensor(rows[:, 2]))
        block.bn.bias.copy_(torch.tensor(rows[:, 3]))
        if act_bits > 1:
            block.clip.fill_(clip)
    return block


# Rows whose code boundaries fall on exact half steps of integer accumulators (var 4: σ = 2).
# With clip = 3, 2 bits (L/clip = 1) and input step 0.5: y = (acc·0.5 − μ)/2·γ + β.
HALF_STEP_ROWS = [
    (0.0, 4.0, 2.0, 0.0),    # y = acc/2: acc = 1, 3, 5 are the half steps 0.5, 1.5, 2.5
    (0.5, 4.0, 2.0, 0.0),    # y = (acc − 1)/2
    (0.0, 4.0, -2.0, 0.0),   # y = −acc/2: flipped, −acc >= 1, 3, 5
    (0.0, 4.0, 0.0, 1.5),    # γ = 0, β on a half step: constant code 2
    (0.0, 4.0, 0.0, -1.0),   # γ = 0, β < 0: constant code 0
    (0.0, 4.0, 0.0, 9.0),    # γ = 0, β above clip: constant code 3
]


@pytest.mark.parametrize("kind, act_bits, in_bits, clip, in_step", [
    ("ternary", 2, 2, 3.0, 0.5),
    ("binary", 2, 2, 3.0, 0.5),
    ("ternary", 3, 5, 2.7, None),
    ("binary", 3, 1, 1.3, None),
    ("ternary", 4, 3, 0.9, 0.3),
])
def test_kbit_thresholds_exhaustive(kind, act_bits, in_bits, clip, in_step):
    """For every integer acc in ±acc_bound: Σ_j [sign·acc >= T_j] == the float code of
    QuantDense.post(acc)."""
    rng = np.random.default_rng(act_bits * 100 + in_bits)
    fan_in = 24
    hand = HALF_STEP_ROWS if (clip, act_bits, in_step) == (3.0, 2, 0.5) else ()
    block = kbit_block(rng, fan_in, 40, kind, act_bits, clip, hand)
    step = None if in_step is None else torch.tensor(in_step)
    thr, sign = fold_dense(block, step, in_bits=in_bits)
    bound = numerics.acc_bound(fan_in, in_bits, kind)
    acc = np.arange(-bound, bound + 1)
    got = (sign[None, :, None] * acc[:, None, None] >= thr[None, :, :]).sum(axis=2)
    with torch.no_grad():
        a = torch.as_tensor(acc, dtype=torch.float32)[:, None].expand(-1, len(sign))
        want = block.post(a.contiguous(), step).numpy().astype(np.int64)
    levels = (1 << act_bits) - 1
    assert set(np.unique(want).tolist()) == set(range(levels + 1))
    bad = np.argwhere(want != got)
    assert bad.size == 0, (f"acc {acc[bad[0, 0]]}, output {bad[0, 1]}: float code "
                           f"{want[tuple(bad[0])]}, thresholds {thr[bad[0, 1]].tolist()} sign "
                           f"{sign[bad[0, 1]]} give {got[tuple(bad[0])]}")
    assert np.all(np.diff(thr, axis=1) >= 0)
    lo, hi = numerics.threshold_bounds(fan_in, in_bits, kind)
    assert thr.min() >= lo and thr.max() <= hi
    if hand:  # the hand rows, worked out on paper (round half up at 0.5, 1.5, 2.5)
        n = len(hand)
        assert thr[-n:].tolist() == [[1, 3, 5], [2, 4, 6], [1, 3, 5],
                                     [-bound, -bound, bound + 1],
                                     [bound + 1] * 3, [-bound] * 3]
        assert sign[-n:].tolist() == [1, 1, -1, 1, 1, 1]


# -- codebook weights (post-training quantization) -------------------------------------------------

@pytest.mark.parametrize("act_bits, in_bits, clip, in_step, scale", [
    (2, 2, 3.0, 0.5, 0.037),
    (3, 5, 2.7, None, 1 / 3),
    (1, 5, None, None, 0.25),
    (1, 2, None, 0.4, 0.0123),
])
def test_codebook_thresholds_exhaustive(act_bits, in_bits, clip, in_step, scale):
    """A codebook layer's accumulator is scaled by input step × weight scale before
    batch-norm: for every integer acc in ±acc_bound(levels) the thresholds give the float code."""
    rng = np.random.default_rng(act_bits * 10 + in_bits)
    fan_in = 24
    block = kbit_block(rng, fan_in, 40, "float", act_bits, clip)
    levels = np.array([-13, -6, -2, 0, 1, 3, 7, 15])
    block.linear.set_codebook(rng.integers(0, 8, size=(40, fan_in)), levels, scale)
    assert block.linear.kind == "codebook" and block.linear.levels == tuple(levels.tolist())
    step = None if in_step is None else torch.tensor(in_step)
    thr, sign = fold_dense(block, step, in_bits=in_bits)
    bound = numerics.acc_bound(fan_in, in_bits, levels)
    acc = np.arange(-bound, bound + 1)
    got = (sign[None, :, None] * acc[:, None, None] >= thr[None, :, :]).sum(axis=2)
    with torch.no_grad():
        a = torch.as_tensor(acc, dtype=torch.float32)[:, None].expand(-1, len(sign))
        want = block.output_codes(block.post(a.contiguous(), step)).numpy()
    assert set(np.unique(want).tolist()) == set(range(1 << act_bits))
    bad = np.argwhere(want != got)
    assert bad.size == 0, (f"acc {acc[bad[0, 0]]}, output {bad[0, 1]}: float code "
                           f"{want[tuple(bad[0])]}, thresholds {thr[bad[0, 1]].tolist()} sign "
                           f"{sign[bad[0, 1]]} give {got[tuple(bad[0])]}")
    lo, hi = numerics.threshold_bounds(fan_in, in_bits, levels)
    assert thr.min() >= lo and thr.max() <= hi
    # the scale matters: without it (or with another) some thresholds would differ
    block.linear.set_codebook(block.linear.code_indices, levels, scale * 1.5)
    assert not np.array_equal(fold_dense(block, step, in_bits=in_bits)[0], thr)


def random_codebook_model(seed, features, act_bits, cb_bits, level_bits, input_bits=5, n=400):
    """An untrained QuantMLP whose float layers were given random codebooks and scales, batch-norm
    statistics set layer by layer from the previous layers' outputs; eval mode."""
    torch.manual_seed(seed)
    model = QuantMLP(list(features), input_bits=input_bits, weight_kinds="float",
                     act_bits=act_bits).eval()
    rng = np.random.default_rng(seed)
    for lin in model.quant_linears():
        levels = random_net.random_codebook(rng, cb_bits, level_bits)
        indices = rng.integers(0, len(levels), size=tuple(lin.weight.shape))
        lin.set_codebook(indices, levels, float(rng.uniform(0.005, 0.3)))
    x = torch.as_tensor(rng.integers(0, 1 << input_bits, size=(n, features[0])),
                        dtype=torch.float32)
    step = None
    with torch.no_grad():
        for block in model.hidden:
            if block.act_bits > 1:
                block.clip.fill_(float(rng.uniform(0.5, 4.0)))
            acc = block.accumulate(x) * block.linear.w_scale
            randomize_bn(block.bn, acc if step is None else acc * step, rng)
            x, step = block(x, step)
    return model, rng


CODEBOOK_MODELS = [  # features, act_bits per hidden layer, codebook bits, level bits
    ((64, 40, 24, 10), (2, 1), 3, 8),
    ((64, 32, 24, 10), (3, 2), 2, 5),
]


@pytest.mark.parametrize("case", range(len(CODEBOOK_MODELS)))
def test_codebook_export_matches_float_model_layer_by_layer(case):
    features, bits, cb_bits, level_bits = CODEBOOK_MODELS[case]
    model, rng = random_codebook_model(case, features, bits, cb_bits, level_bits)
    net = export(model, meta={"case": case})
    assert [layer.weight_kind for layer in net.layers] == ["codebook"] * (len(features) - 1)
    for i, (layer, lin) in enumerate(zip(net.layers, model.quant_linears(), strict=True)):
        assert np.array_equal(layer.weights, lin.code_indices.numpy()), i
        assert layer.codebook.dtype == np.int64 and \
            layer.codebook.tolist() == list(lin.levels), i
    codes = rng.integers(0, 32, size=(300, features[0]))
    acts, scores = model.trace(torch.as_tensor(codes, dtype=torch.float32))
    trace = golden.forward(net, codes)
    for i, act in enumerate(acts):
        want, got = act.numpy(), trace.acts[i + 1]
        assert set(np.unique(want).tolist()) == set(range(1 << bits[i])), (case, i)
        bad = np.argwhere(want != got)
        assert bad.size == 0, (f"case {case}: layer {i} sample {bad[0, 0]} output {bad[0, 1]}: "
                               f"float {want[tuple(bad[0])]}, golden {got[tuple(bad[0])]}")
    assert np.array_equal(scores.numpy().astype(np.int64), trace.scores), case
    assert np.array_equal(model(torch.as_tensor(codes, dtype=torch.float32)).argmax(1).numpy(),
                          trace.classes), case


def test_export_float_rejects_quantized_layers():
    model = random_model(1, features=(6, 5, 3))
    with pytest.raises(ValueError, match=r"export_float needs float weights in every layer, got "
                                         r"\['binary', 'binary'\]"):
        export_float(model, meta={})
