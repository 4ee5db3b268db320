"""Float-kernel clustering (Matsui et al.'s order: cluster float kernels, then quantize): planted
kernel patterns are recovered (with and without signs, per layer and shared), the exported
network's golden model computes exactly what the ternary torch model with the representatives
computes, the conv weights decode to ``±representative``, nothing is trained before the
as-clustered accuracy, the batch-norm fold keeps the float model's function, fine-tuning, errors.
"""

import numpy as np
import pytest
import torch

from qnnfab import ir, numerics
from qnnfab.spec import golden
from qnnfab.model import float_kernel_clustering as fkc
from qnnfab.model.data import load_dataset
from qnnfab.model.float_kernel_clustering import (FloatCNN, cluster_float_cnn,
                                                  cluster_float_unquantized,
                                                  finetune_float_clustered, ternary_scale,
                                                  train_float_cnn)
from qnnfab.model.presets import get_preset

TERNARY = np.asarray(numerics.WEIGHT_LEVELS["ternary"])


@pytest.fixture(scope="module")
def digits():
    p = get_preset("digits-cnn")
    return p, load_dataset(p.dataset, seed=p.split_seed)


def planted(digits, seed, patterns, sign):
    """A float digits-cnn whose kernels are copies of ``patterns`` (per conv layer: (K, 3, 3)
    floats), each times a random sign when ``sign``, and times a per-layer scale; returns the
    FloatCNN and, per layer, the (pattern index, sign) of every kernel."""
    p, ds = digits
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = fkc._build(p, ds, "float").eval()
    truth = []
    with torch.no_grad():
        for block, pats in zip(model.convs, patterns):
            conv = block.conv
            n = conv.out_channels * conv.in_channels
            which = np.concatenate([np.arange(len(pats)), rng.integers(0, len(pats),
                                                                       n - len(pats))])
            rng.shuffle(which)
            sgn = rng.choice([-1, 1], n) if sign else np.ones(n, dtype=np.int64)
            scale = rng.uniform(0.05, 0.5)
            w = scale * pats[which] * sgn[:, None, None]
            conv.weight.copy_(torch.as_tensor(w.reshape(conv.out_channels, -1),
                                              dtype=torch.float32))
            truth.append((which, sgn))
    return FloatCNN(model=model, dataset=ds, preset=p, seed=seed, float_accuracy=0.0), truth


def random_patterns(rng, k, sign):
    """``k`` distinct ternary 3x3 patterns (distinct up to sign when ``sign``), non-zero, with
    magnitudes jittered around 1 (so the float kernels are not ternary themselves)."""
    out, seen = [], set()
    while len(out) < k:
        t = rng.choice([-1, 0, 1], 9, p=[0.35, 0.3, 0.35])
        if not t.any():
            continue
        canon = tuple(t * (np.sign(t[np.flatnonzero(t)[0]]) if sign else 1))
        if canon in seen:
            continue
        seen.add(canon)
        out.append(t)
    t = np.asarray(out, dtype=np.float64)
    return (t * rng.uniform(0.85, 1.15, t.shape)).reshape(k, 3, 3), t.reshape(k, 3, 3)


def kernel_values(layer):
    """The weight values (out, in, 3, 3) of an IR conv layer."""
    return np.asarray(layer.weight_levels)[layer.weights]


@pytest.mark.parametrize("sign", [False, True])
@pytest.mark.parametrize("per_layer", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_planted_patterns_are_recovered(digits, sign, per_layer, seed):
    rng = np.random.default_rng(100 + seed)
    k = 6
    floats, ternary = random_patterns(rng, k, sign)
    if per_layer:
        floats2, ternary2 = random_patterns(rng, k, sign)
        pats, terns = [floats, floats2], [ternary, ternary2]
    else:
        pats, terns = [floats, floats], [ternary, ternary]
    src, truth = planted(digits, seed, pats, sign)
    res = cluster_float_cnn(src, k, per_layer=per_layer, sign=sign, seed=seed)
    convs = [layer for layer in res.network.layers if isinstance(layer, ir.ConvLayer)]
    for i, (layer, (which, sgn), tern) in enumerate(zip(convs, truth, terns)):
        kc = layer.kernel_codebook
        assert kc is not None, f"conv {i}: no kernel codebook"
        assert kc.size == k, f"conv {i}: table of {kc.size}, planted {k} (seed {seed})"
        assert (kc.sign is not None) == sign
        # every kernel decodes to its pattern's ternary version (times its sign)
        want = tern[which] * sgn[:, None, None]
        got = kernel_values(layer).reshape(-1, 3, 3)
        bad = np.flatnonzero(np.any(got != want, axis=(1, 2)))
        assert not len(bad), (f"conv {i} kernel {bad[0]}: expected {want[bad[0]].tolist()}, "
                              f"got {got[bad[0]].tolist()} (seed {seed})")
        # one table entry per pattern: the assignment is the planted partition
        index = kc.index.reshape(-1)
        for j in range(k):
            assert len(np.unique(index[which == j])) == 1, f"conv {i} pattern {j} split"
        assert len(np.unique(index)) == k
    assert res.stats["total"]["K"] == (2 * k if per_layer else k)
    assert res.agreement == 1.0


def test_golden_equals_the_torch_model_with_the_representatives(digits):
    rng = np.random.default_rng(7)
    pats = [random_patterns(rng, 5, True)[0], random_patterns(rng, 9, True)[0]]
    src, _ = planted(digits, 3, pats, True)
    # perturb the kernels so that clustering has work to do (not exact copies)
    with torch.no_grad():
        for block in src.model.convs:
            w = block.conv.weight
            w.add_(0.3 * w.abs().mean() * torch.randn(w.shape,
                                                       generator=torch.Generator().manual_seed(3)))
    res = cluster_float_cnn(src, 4, per_layer=True, sign=True, seed=0)
    ds = src.dataset
    x = torch.as_tensor(ds.x_test, dtype=torch.float32)
    codes, head = res.model.trace(x)
    trace = golden.forward(res.network, ds.x_test)
    assert len(codes) == len(trace.acts) - 1
    for i, (mine, gold) in enumerate(zip(codes, trace.acts[1:])):
        mine = mine.numpy().astype(np.int64)
        bad = np.argwhere(mine != gold)
        assert not len(bad), (f"layer {i} at {tuple(bad[0])}: torch {mine[tuple(bad[0])]}, "
                              f"golden {gold[tuple(bad[0])]}")
    assert np.array_equal(head.numpy().astype(np.int64), trace.scores)
    # the conv weights are ±representative: the table's kernels, indexed and signed
    for block, layer in zip(res.model.convs, [la for la in res.network.layers
                                              if isinstance(la, ir.ConvLayer)]):
        source = block.conv.kernel_source
        table = TERNARY[source.table.codes()]
        want = table[source.index] * source.sign[:, :, None, None]
        assert np.array_equal(kernel_values(layer), want)
        assert np.array_equal(kernel_values(layer),
                              block.conv.kernel_values().detach().numpy())


def test_as_clustered_trains_nothing(digits, monkeypatch):
    """No optimizer step and no batch-norm statistics from data: the float network's
    parameters only rescaled."""
    def refuse(*args, **kwargs):
        raise AssertionError("an optimizer step during clustering")
    monkeypatch.setattr(torch.optim.Optimizer, "zero_grad", refuse)
    monkeypatch.setattr(torch.optim.Adam, "step", refuse)
    monkeypatch.setattr("qnnfab.model.train._optimize", refuse)
    rng = np.random.default_rng(1)
    src, _ = planted(digits, 1, [random_patterns(rng, 4, True)[0]] * 2, True)
    with torch.no_grad():
        for block in src.model.convs:
            block.bn.running_mean.uniform_(-1, 1)
            block.bn.running_var.uniform_(0.5, 2)
    before = {k: v.clone() for k, v in src.model.state_dict().items()}
    res = cluster_float_cnn(src, 3, per_layer=True, sign=True)
    after = src.model.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), f"{k}: the float model changed"
    for i, (fb, qb) in enumerate(zip(src.model.convs, res.model.convs)):
        c = res.stats["layers"][i]["scale"] * res.stats["layers"][i]["table_alpha"]
        assert torch.allclose(qb.bn.running_mean * c, fb.bn.running_mean, rtol=1e-5)
        assert torch.allclose(qb.bn.running_var * c * c, fb.bn.running_var, rtol=1e-5)
        assert qb.bn.weight.equal(fb.bn.weight) and qb.bn.bias.equal(fb.bn.bias)


def test_unclustered_fold_keeps_the_function_of_ternary_weights(digits):
    """kernels=None: every layer ternarized on its own; the batch-norm fold makes the ternary
    model compute what the float model computes with its weights replaced by c·T."""
    p, ds = digits
    src, _ = planted(digits, 2, [random_patterns(np.random.default_rng(2), 6, True)[0]] * 2,
                     True)
    res = cluster_float_cnn(src, None)
    assert res.stats is None and res.attached == []
    assert all(getattr(la, "kernel_codebook", None) is None for la in res.network.layers)
    ref = fkc._build(p, ds, "float").eval()
    ref.load_state_dict(src.model.state_dict())
    with torch.no_grad():
        for lin_q, lin_r, lin_f in zip(res.model.quant_linears(), ref.quant_linears(),
                                       src.model.quant_linears()):
            top = float(lin_f.weight.abs().max())
            lin_r.weight.copy_(lin_q.weight_values() * top * lin_q.alpha)
        x = res.model.image(torch.as_tensor(ds.x_test[:50], dtype=torch.float32))
        step = None
        for i, (qb, rb) in enumerate(zip(res.model.convs, ref.convs)):
            # the same input codes: the normalized accumulators agree (before rounding)
            s = 1.0 if step is None else step
            want = rb.normalize(rb.accumulate(x) * s)
            got = qb.normalize(qb.accumulate(x) * s)
            assert torch.allclose(got, want, rtol=1e-4, atol=1e-4), f"conv {i}"
            x, step = qb(x, step)
    assert res.agreement == 1.0


def test_trained_then_finetuned():
    src = train_float_cnn("digits-cnn", seed=0, epochs=2)
    assert src.model.convs[0].conv.kind == "float" and 0 <= src.float_accuracy <= 1
    res = cluster_float_cnn(src, 8, per_layer=True, sign=True)
    assert res.agreement == 1.0
    assert res.stats["source"] == "float" and res.stats["total"]["kernels"] == 16 + 16 * 32
    before = {k: v.clone() for k, v in res.model.state_dict().items()}
    tables = [t.rep.detach().clone() for t, _ in res.attached]
    net, info = finetune_float_clustered(res, epochs=1)
    # the clustering result is untouched (fine-tuning works on a copy)
    for k, v in before.items():
        assert torch.equal(v, res.model.state_dict()[k]), k
    for t, (table, _) in zip(tables, res.attached):
        assert torch.equal(t, table.rep)
    assert info["test_before"] == pytest.approx(res.test_accuracy)
    assert info["agreement"] == 1.0
    assert net.meta["clustering"] == res.stats
    for layer in net.layers:
        if isinstance(layer, ir.ConvLayer):
            kc = layer.kernel_codebook
            assert kc is not None and kc.size <= 8
            assert np.array_equal(layer.weights, kc.decode(layer.weight_levels))


@pytest.mark.parametrize("sign", [False, True])
def test_codebook_levels(digits, sign):
    """bits=4: planted patterns recovered as one table entry each, conv weights = ±entries,
    every layer a 4-bit codebook of integer levels, golden == torch layer by layer."""
    rng = np.random.default_rng(11)
    k = 5
    pats = [random_patterns(rng, k, sign)[0], random_patterns(rng, k, sign)[0]]
    src, truth = planted(digits, 4, pats, sign)
    res = cluster_float_cnn(src, k, per_layer=True, sign=sign, bits=4)
    assert res.attached == [] and res.stats["bits"] == 4
    convs = [la for la in res.network.layers if isinstance(la, ir.ConvLayer)]
    for i, (layer, (which, sgn)) in enumerate(zip(convs, truth)):
        assert layer.weight_kind == "codebook" and len(layer.codebook) == 16
        kc = layer.kernel_codebook
        assert kc.size == k and (kc.sign is not None) == sign
        index = kc.index.reshape(-1)
        for j in range(k):
            assert len(np.unique(index[which == j])) == 1, f"conv {i} pattern {j} split"
        # every kernel is its entry's levels, times its sign
        values = np.asarray(layer.codebook)[layer.weights].reshape(-1, 9)
        entry = np.asarray(layer.codebook)[kc.kernels].reshape(-1, 9)[index]
        s = kc.sign.reshape(-1) if sign else np.ones(len(index), dtype=np.int64)
        assert np.array_equal(values, entry * s[:, None])
        # and its sign pattern is the planted kernel's (the levels keep the signs)
        planted_w = pats[i][which] * sgn[:, None, None]
        big = np.abs(planted_w.reshape(-1, 9)) > 0.5
        assert np.array_equal(np.sign(values)[big], np.sign(planted_w.reshape(-1, 9))[big])
    assert res.network.layers[-1].weight_kind == "codebook"
    codes, head = res.model.trace(torch.as_tensor(src.dataset.x_test, dtype=torch.float32))
    trace = golden.forward(res.network, src.dataset.x_test)
    for i, (mine, gold) in enumerate(zip(codes, trace.acts[1:])):
        assert np.array_equal(mine.numpy().astype(np.int64), gold), f"layer {i}"
    assert np.array_equal(head.numpy().astype(np.int64), trace.scores)
    with pytest.raises(ValueError, match="4-bit codebook tables are not fine-tuned"):
        finetune_float_clustered(res, epochs=1)


@pytest.mark.parametrize("sign", [False, True])
def test_unquantized_representatives(digits, sign):
    """The paper's setting: exact copies of K float patterns come back unchanged (the kernels
    are their own representatives), with fewer K each kernel is ± a table entry; the source
    model is not touched."""
    rng = np.random.default_rng(21)
    k = 4
    pats = [random_patterns(rng, k, sign)[0], random_patterns(rng, k, sign)[0]]
    src, _ = planted(digits, 5, pats, sign)
    before = [b.conv.weight.detach().clone() for b in src.model.convs]
    model, acc, stats = cluster_float_unquantized(src, k, per_layer=True, sign=sign)
    assert stats["K"] == 2 * k and 0 <= acc <= 1
    for b, w in zip(model.convs, before):
        assert torch.allclose(b.conv.weight, w, rtol=1e-5, atol=1e-7)
    for b, w in zip(src.model.convs, before):
        assert torch.equal(b.conv.weight, w)
    model, _, stats = cluster_float_unquantized(src, 2, per_layer=False, sign=sign)
    assert stats["K"] == 2 and stats["kernels"] == 16 + 16 * 32
    rows = np.concatenate([b.conv.weight.detach().numpy().reshape(-1, 9)
                           for b in model.convs]).astype(np.float64)
    assert len(np.unique(np.round(rows / np.abs(rows).max(1, keepdims=True), 5), axis=0)) \
        <= 2 * (2 if sign else 1)


def test_ternary_scale():
    assert ternary_scale([0.0, 0.7, -0.7, 0.0, 0.7]) == pytest.approx(0.7)
    assert ternary_scale(np.zeros(4)) == 1.0
    # weights count like copies
    v = np.array([1.0, 0.2])
    assert ternary_scale(v, [3, 1]) == pytest.approx(ternary_scale([1.0, 1.0, 1.0, 0.2]))


def test_errors(digits):
    rng = np.random.default_rng(0)
    src, _ = planted(digits, 0, [random_patterns(rng, 3, False)[0]] * 2, False)
    with pytest.raises(ValueError, match="kernels must be a positive integer or None, not 0"):
        cluster_float_cnn(src, 0)
    with pytest.raises(ValueError, match="not True"):
        cluster_float_cnn(src, True)
    with pytest.raises(TypeError, match="FloatCNN from train_float_cnn"):
        cluster_float_cnn(src.model, 4)
    with pytest.raises(ValueError, match="no conv layer was clustered"):
        finetune_float_clustered(cluster_float_cnn(src, None), epochs=1)
    with pytest.raises(ValueError, match="is a mlp, not a CNN"):
        train_float_cnn("digits-mlp", epochs=1)
