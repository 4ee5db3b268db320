"""Kernel clustering: k-means against scikit-learn (same start: same labels and centres;
k-means++: about the same inertia), point weights as copies, signed k-means (monotone inertia,
planted ± prototypes), cluster_network on random CNNs (exactness when K covers the distinct
kernels, decoded weights, nearest representatives, rounding, memory statistics checked against
the IR's own weight_bits, golden forward), its errors, and the sweep plot."""

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from sklearn.cluster import KMeans

from qnnfab import ir, numerics, random_net
from qnnfab.spec import golden
from qnnfab.model.kernel_clustering import (cluster_network, kmeans, round_to_levels,
                                            signed_kmeans, sweep, sweep_plot_svg)

SVG = "{http://www.w3.org/2000/svg}"


def blobs(rng, k=6, n=80, d=9, spread=3.0):
    centres = rng.normal(0, spread, (k, d))
    return np.concatenate([rng.normal(c, 1.0, (n, d)) for c in centres])


# -- k-means -------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_kmeans_matches_sklearn_from_the_same_start(seed):
    rng = np.random.default_rng(seed)
    x = blobs(rng)
    k = 5 + seed
    c0 = x[rng.choice(len(x), k, replace=False)]
    ours = kmeans(x, k, init=c0)
    sk = KMeans(n_clusters=k, init=c0, n_init=1, algorithm="lloyd").fit(x)
    assert np.array_equal(ours.labels, sk.labels_)
    assert np.allclose(ours.centers, sk.cluster_centers_)
    assert ours.inertia == pytest.approx(sk.inertia_, rel=1e-9)
    # The inertia is what it says: the squared distances to the assigned centres.
    assert ours.inertia == pytest.approx(((x - ours.centers[ours.labels]) ** 2).sum())


def test_kmeans_point_weights_count_as_copies():
    rng = np.random.default_rng(5)
    distinct = blobs(rng, k=4, n=10, d=4)  # continuous: no distance ties
    counts = rng.integers(1, 6, len(distinct))
    copies = np.repeat(distinct, counts, axis=0)
    c0 = distinct[:4]
    weighted = kmeans(distinct, 4, init=c0, weights=counts)
    plain = kmeans(copies, 4, init=c0)
    sk = KMeans(n_clusters=4, init=c0, n_init=1, algorithm="lloyd").fit(
        distinct, sample_weight=counts)
    assert np.allclose(weighted.centers, plain.centers)
    assert np.array_equal(np.repeat(weighted.labels, counts), plain.labels)
    assert weighted.inertia == pytest.approx(plain.inertia)
    assert np.allclose(weighted.centers, sk.cluster_centers_)
    assert weighted.inertia == pytest.approx(sk.inertia_)


def test_kmeans_plusplus_close_to_sklearn_and_deterministic():
    ratios = []
    for seed in range(4):
        x = blobs(np.random.default_rng(10 + seed), k=8, n=60)
        ours = kmeans(x, 8, seed=seed)
        sk = KMeans(n_clusters=8, random_state=seed, n_init=4).fit(x)
        ratios.append(ours.inertia / sk.inertia_)
        again = kmeans(x, 8, seed=seed)
        assert np.array_equal(ours.centers, again.centers)
        assert np.array_equal(ours.labels, again.labels)
    assert max(ratios) < 1.03, ratios


def test_kmeans_every_cluster_used_when_k_equals_points():
    x = np.random.default_rng(0).normal(size=(7, 3))
    r = kmeans(x, 7, seed=1)
    assert sorted(r.labels.tolist()) == list(range(7))
    assert r.inertia == pytest.approx(0.0, abs=1e-12)


def test_kmeans_argument_errors():
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match="k must be 1..5 .* got 6"):
        kmeans(x, 6)
    with pytest.raises(ValueError, match=r"init must hold k = 2 centres .* got \(3, 2\)"):
        kmeans(x, 2, init=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="expected one weight per point"):
        kmeans(x, 2, weights=[1, 2])
    with pytest.raises(ValueError, match="must be finite and > 0"):
        kmeans(x, 2, weights=[1, 1, 0, 1, 1])
    with pytest.raises(ValueError, match="2-D array"):
        kmeans(np.zeros(5), 2)
    with pytest.raises(TypeError, match="k must be an integer"):
        kmeans(x, 2.5)


# -- signed k-means ------------------------------------------------------------------------------

def signed_inertia(x, centers, labels, signs):
    return float(((x - signs[:, None] * centers[labels]) ** 2).sum())


def test_signed_kmeans_inertia_never_increases():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 9))
    c0 = x[:6]
    inertias = []
    for it in range(1, 16):
        r = signed_kmeans(x, 6, init=c0, max_iter=it, tol=0)
        # the assignment is the best (centre, sign) for each point
        d = np.stack([((x[:, None, :] - s * r.centers[None]) ** 2).sum(-1) for s in (1, -1)])
        assert r.inertia == pytest.approx(d.min(axis=(0, 2)).sum())
        assert r.inertia == pytest.approx(signed_inertia(x, r.centers, r.labels, r.signs))
        inertias.append(r.inertia)
    assert all(b <= a + 1e-9 for a, b in zip(inertias, inertias[1:])), inertias
    assert inertias[-1] < inertias[0]


def test_signed_kmeans_recovers_planted_prototypes():
    rng = np.random.default_rng(3)
    protos = rng.normal(0, 3, (4, 9))
    which = rng.integers(0, 4, 400)
    sign = rng.choice([-1, 1], 400)
    x = sign[:, None] * protos[which] + rng.normal(0, 0.1, (400, 9))
    r = signed_kmeans(x, 4, seed=0)
    # each found centre is ± one prototype, one to one
    match = np.array([[min(np.abs(c - p).max(), np.abs(c + p).max()) for p in protos]
                      for c in r.centers])
    assert sorted(match.argmin(1).tolist()) == [0, 1, 2, 3]
    assert match.min(1).max() < 0.1
    perm = match.argmin(1)
    assert np.array_equal(perm[r.labels], which)
    assert np.allclose(r.signs[:, None] * r.centers[r.labels], sign[:, None] * protos[which],
                       atol=0.5)
    # plain k-means cannot: +p and -p are far apart
    plain = kmeans(x, 4, seed=0)
    assert plain.inertia > 10 * r.inertia


# -- cluster_network ------------------------------------------------------------------------------

def cnn(seed, kind="ternary", **kw):
    rng = np.random.default_rng(seed)
    kw = {"height": 6, "width": 6, "channels": [2, 6, 8], "pool": (0,), "dense": (8,),
          "n_outputs": 4, **kw}
    return random_net.random_cnn(rng, weight_kind=kind, **kw)


def conv_values(net):
    return {i: np.asarray(layer.weight_levels)[layer.weights]
            for i, layer in enumerate(net.layers) if isinstance(layer, ir.ConvLayer)}


def plant(net, seed, n_protos, *, flip=0.0, negate=False):
    """Overwrite every conv layer's kernels with copies of ``n_protos`` shared random kernels
    (``flip``: share of codes replaced at random; ``negate``: random kernels negated)."""
    rng = np.random.default_rng(seed)
    layers = [layer for layer in net.layers if isinstance(layer, ir.ConvLayer)]
    n_codes, k = len(layers[0].weight_levels), layers[0].kernel_size
    protos = rng.integers(0, n_codes, (n_protos, k, k))
    neg = np.array(numerics.negated_codes(layers[0].weight_levels))
    for layer in layers:
        w = protos[rng.integers(0, n_protos, (layer.out_channels, layer.in_channels))]
        if flip:
            w = np.where(rng.random(w.shape) < flip, rng.integers(0, n_codes, w.shape), w)
        if negate:
            w = np.where(rng.random(w.shape[:2])[:, :, None, None] < 0.5, neg[w], w)
        layer.weights = w
    net.validate()
    return protos


def check_clustered(before, after, stats, kernels, *, per_layer, sign):
    """Everything cluster_network promises, checked from the two networks alone."""
    assert after.validate() is after
    assert after.meta["clustering"] == stats
    json.dumps(after.meta)
    old, new = conv_values(before), conv_values(after)
    groups = [[i] for i in old] if per_layer else [list(old)]
    assert [p["layer"] for p in stats["layers"]] == list(old)
    for i, (a, b) in enumerate(zip(before.layers, after.layers)):
        if i not in old:
            assert b is a
            continue
        kc = b.kernel_codebook
        assert kc is not None and (kc.sign is not None) == sign
        assert np.array_equal(kc.decode(b.weight_levels), b.weights)
        assert b.thresholds is a.thresholds and b.threshold_sign is a.threshold_sign
        assert b.codebook is a.codebook and b.weight_kind == a.weight_kind
    sq_total, idx_bits, table_bits = 0.0, 0, 0
    for group in groups:
        layer0 = after.layers[group[0]]
        k, levels = layer0.kernel_size, layer0.weight_levels
        table = np.asarray(levels)[layer0.kernel_codebook.kernels].reshape(-1, k * k)
        n_kernels = sum(old[i].shape[0] * old[i].shape[1] for i in group)
        assert 1 <= len(table) <= min(kernels, n_kernels)
        # no duplicate representatives (nor negations of each other with a sign)
        rows = {tuple(t) for t in table}
        if sign:
            rows |= {tuple(-t) for t in table if t.any()}
            assert len(rows) == len(table) + sum(t.any() for t in table)
        else:
            assert len(rows) == len(table)
        used = set()
        for i in group:
            assert np.array_equal(after.layers[i].kernel_codebook.kernels,
                                  layer0.kernel_codebook.kernels)
            x = old[i].reshape(-1, k * k).astype(float)
            y = new[i].reshape(-1, k * k).astype(float)
            cands = [table] + ([-table] if sign else [])
            d = np.stack([((x[:, None] - c[None]) ** 2).sum(-1) for c in cands]).min(0)
            # every kernel got its nearest representative
            assert np.allclose(((x - y) ** 2).sum(-1), d.min(1))
            sq_total += float(((x - y) ** 2).sum())
            used |= set(after.layers[i].kernel_codebook.index.ravel().tolist())
            idx_bits += len(x) * ((len(table) - 1).bit_length() + sign)
        assert used == set(range(len(table)))  # no unused entries
        table_bits += table.size * max(1, (len(levels) - 1).bit_length())
    t = stats["total"]
    n_total = sum(v.shape[0] * v.shape[1] for v in old.values())
    k_total = sum(len(after.layers[g[0]].kernel_codebook.kernels) for g in groups)
    n_weights = sum(v.size for v in old.values())
    assert t["kernels"] == n_total and t["K"] == k_total
    assert t["reduction"] == pytest.approx(1 - k_total / n_total)
    assert t["bits_before"] == sum(before.layers[i].weight_bits for i in old)
    assert t["bits_after"] == idx_bits + table_bits
    if per_layer:
        assert t["bits_after"] == sum(after.layers[i].weight_bits for i in old)
    assert t["ratio"] == pytest.approx(t["bits_before"] / t["bits_after"])
    assert t["mse"] == pytest.approx(sq_total / n_weights)
    assert t["kernel_error"] == pytest.approx(sq_total / n_total)
    assert t["distinct"] == (sum(len(np.unique(v.reshape(-1, v.shape[2] ** 2), axis=0))
                                 for v in old.values()) if per_layer else
                             len(np.unique(np.concatenate(
                                 [v.reshape(-1, v.shape[2] ** 2) for v in old.values()]),
                                 axis=0)))
    # the golden model runs the clustered network
    x = random_net.random_inputs(np.random.default_rng(0), after, 4)
    assert golden.forward(after, x).scores.shape == (4, after.n_outputs)


@pytest.mark.parametrize("kind", ["binary", "ternary"])
@pytest.mark.parametrize("per_layer", [False, True])
@pytest.mark.parametrize("sign", [False, True])
def test_cluster_network_invariants(kind, per_layer, sign):
    net = cnn(1, kind)
    for kernels in (1, 3, 10):
        out, stats = cluster_network(net, kernels, per_layer=per_layer, sign=sign, seed=2)
        check_clustered(net, out, stats, kernels, per_layer=per_layer, sign=sign)


def test_cluster_network_codebook_levels_per_layer():
    net = cnn(4, "codebook")
    out, stats = cluster_network(net, 5, per_layer=True, sign=False)
    check_clustered(net, out, stats, 5, per_layer=True, sign=False)
    # representatives use the layer's own levels
    for layer in out.layers:
        if isinstance(layer, ir.ConvLayer):
            assert layer.kernel_codebook.kernels.max() < len(layer.codebook)


@pytest.mark.parametrize("per_layer", [False, True])
@pytest.mark.parametrize("sign", [False, True])
def test_enough_kernels_change_nothing(per_layer, sign):
    net = cnn(2, "ternary")
    distinct = sum(len(np.unique(v.reshape(-1, 9), axis=0)) for v in conv_values(net).values())
    ref = golden.forward(net, random_net.random_inputs(np.random.default_rng(1), net, 16))
    for kernels in (1000, distinct):
        out, stats = cluster_network(net, kernels, per_layer=per_layer, sign=sign)
        check_clustered(net, out, stats, kernels, per_layer=per_layer, sign=sign)
        for a, b in zip(net.layers, out.layers):
            assert np.array_equal(getattr(a, "weights", None), getattr(b, "weights", None))
        assert stats["total"]["mse"] == 0
        if not sign:
            assert stats["total"]["K"] == stats["total"]["distinct"]
        got = golden.forward(out, ref.acts[0])
        assert np.array_equal(got.scores, ref.scores)


def test_planted_kernels_are_recovered_network_wide():
    net = cnn(3, "ternary", channels=[3, 8, 8])
    protos = plant(net, 7, 5)
    values = np.asarray(net.layers[0].weight_levels)[protos].reshape(5, 9)
    out, stats = cluster_network(net, 5, per_layer=False, sign=False)
    assert stats["total"]["K"] == 5 and stats["total"]["mse"] == 0
    table = np.asarray(out.layers[0].weight_levels)[out.layers[0].kernel_codebook.kernels]
    assert {tuple(t) for t in table.reshape(5, 9)} == {tuple(v) for v in values}
    # with some codes disturbed, 5 representatives still find the prototypes
    net = cnn(3, "ternary", channels=[3, 8, 8])
    protos = plant(net, 7, 5, flip=0.05)
    values = np.asarray(net.layers[0].weight_levels)[protos].reshape(5, 9)
    out, stats = cluster_network(net, 5, per_layer=False, sign=False)
    check_clustered(net, out, stats, 5, per_layer=False, sign=False)
    table = np.asarray(out.layers[0].weight_levels)[out.layers[0].kernel_codebook.kernels]
    assert {tuple(t) for t in table.reshape(-1, 9)} == {tuple(v) for v in values}


def test_sign_shares_an_entry_between_a_kernel_and_its_negation():
    net = cnn(5, "ternary", channels=[3, 8, 8])
    plant(net, 9, 4, negate=True)
    out, stats = cluster_network(net, 4, per_layer=False, sign=True)
    check_clustered(net, out, stats, 4, per_layer=False, sign=True)
    assert stats["total"]["mse"] == 0 and stats["total"]["K"] <= 4
    for a, b in zip(net.layers, out.layers):
        assert np.array_equal(getattr(a, "weights", None), getattr(b, "weights", None))
    # without signs 4 entries cannot hold 4 kernels and their negations
    assert cluster_network(net, 4, per_layer=False, sign=False)[1]["total"]["mse"] > 0


def test_round_to_levels_ties_toward_smaller_magnitude():
    assert round_to_levels([0.5, -0.5, 1.5, -1.5, 0.49, 0.51], (0, 1, -1)).tolist() == \
        [0, 0, 1, -1, 0, 1]
    assert round_to_levels([0.0, 0.3, -0.3, 7.0], (-1, 1)).tolist() == [1, 1, -1, 1]
    levels = (-6, -2, 2, 6, 3, 3)  # a codebook with a repeated level
    assert round_to_levels([0.0, 4.0, -4.0, 4.5, 2.5, -9.0], levels).tolist() == \
        [2, 3, -2, 3, 2, -6]


def test_per_layer_k_is_capped_by_the_layer():
    net = cnn(6, "ternary", channels=[1, 3, 4])  # 3 and 12 kernels
    out, stats = cluster_network(net, 8, per_layer=True, sign=False)
    assert [p["kernels"] for p in stats["layers"]] == [3, 12]
    assert stats["layers"][0]["K"] <= 3 and stats["layers"][1]["K"] <= 8
    check_clustered(net, out, stats, 8, per_layer=True, sign=False)


def two_conv_net(seed, *, k2=3, kind2="ternary", codebook2=None):
    rng = np.random.default_rng(seed)
    c1 = random_net.random_conv(rng, in_channels=1, out_channels=4, height=6, width=6,
                                in_bits=2, out_bits=2, kernel_size=3, padding=1,
                                weight_kind="ternary")
    c2 = random_net.random_conv(rng, in_channels=4, out_channels=4, height=6, width=6,
                                in_bits=2, out_bits=1, kernel_size=k2, padding=k2 // 2,
                                weight_kind=kind2, codebook=codebook2)
    d = random_net.random_dense(rng, in_features=6 * 6 * 4, out_features=3, in_bits=1,
                                output=True)
    return ir.Network(input_features=36, input_bits=2, layers=[c1, c2, d]).validate()


def test_defaults_are_per_layer_with_signs():
    """The setting that keeps most accuracy on digits-cnn (bench-cluster), as `qnnfab cluster`."""
    net = cnn(1, "ternary")
    out, stats = cluster_network(net, 3)
    assert stats["per_layer"] and stats["sign"]
    ref, _ = cluster_network(net, 3, per_layer=True, sign=True)
    assert ir.to_bytes(out) == ir.to_bytes(ref)


def test_cluster_network_errors():
    with pytest.raises(ir.IRError, match="equal kernel sizes.*3x3.*5x5.*per_layer=True"):
        cluster_network(two_conv_net(0, k2=5), 4, per_layer=False)
    with pytest.raises(ir.IRError, match=r"equal weight levels.*\[0, 1, -1\].*\[-1, 1\]"):
        cluster_network(two_conv_net(0, kind2="binary"), 4, per_layer=False)
    # per layer, both work
    for net in (two_conv_net(0, k2=5), two_conv_net(0, kind2="binary")):
        out, stats = cluster_network(net, 4, per_layer=True, sign=False)
        check_clustered(net, out, stats, 4, per_layer=True, sign=False)
    dense = random_net.random_network(np.random.default_rng(0), features=[8, 4, 2])
    with pytest.raises(ir.IRError, match="no conv layers"):
        cluster_network(dense, 4)
    with pytest.raises(ValueError, match="kernels must be >= 1, got 0"):
        cluster_network(two_conv_net(0), 0)
    with pytest.raises(TypeError, match="kernels must be an integer"):
        cluster_network(two_conv_net(0), 2.0)
    asym = two_conv_net(0, kind2="codebook", codebook2=np.array([1, 2, 3, 4]))
    with pytest.raises(ir.IRError, match=r"sign=True needs levels.*layers\[1\].*\[1, 2, 3, 4\]"):
        cluster_network(asym, 4, per_layer=True, sign=True)


def test_clustered_network_survives_a_file_round_trip():
    net = cnn(8, "ternary")
    out, stats = cluster_network(net, 3, per_layer=False, sign=True)
    back = ir.from_bytes(ir.to_bytes(out))
    assert back.meta["clustering"] == json.loads(json.dumps(stats))
    for a, b in zip(out.layers, back.layers):
        if isinstance(a, ir.ConvLayer):
            assert np.array_equal(a.weights, b.weights)
            assert np.array_equal(a.kernel_codebook.index, b.kernel_codebook.index)


# -- sweep and plot -------------------------------------------------------------------------------

def test_sweep_and_plot():
    net = cnn(9, "ternary")
    x = random_net.random_inputs(np.random.default_rng(2), net, 32)
    ref = golden.forward(net, x).classes

    def agreement(n):
        return float(np.mean(golden.forward(n, x).classes == ref))

    rows = sweep(net, [1, 4, 16, 1000], agreement, sign=False)
    assert rows[0]["K"] is None and rows[0]["accuracy"] == 1.0
    assert [r["K"] for r in rows[1:]] == [1, 4, 16, 1000]
    assert rows[-1]["accuracy"] == 1.0 and rows[-1]["mse"] == 0  # K covers every kernel
    reds = [r["reduction"] for r in rows[1:]]
    assert reds == sorted(reds, reverse=True)
    text = sweep_plot_svg(rows, title="digits <cnn> & K")
    root = ET.fromstring(text)
    assert len(root.findall(f"{SVG}circle")) == 4
    assert len(root.findall(f"{SVG}line[@class='baseline']")) == 1
    assert "digits <cnn> & K" in "".join(root.itertext())
    # no baseline row: no line; an explicit baseline draws one
    root = ET.fromstring(sweep_plot_svg(rows[1:2]))
    assert not root.findall(f"{SVG}line") and len(root.findall(f"{SVG}circle")) == 1
    assert ET.fromstring(sweep_plot_svg(rows[1:], baseline=0.9)).findall(f"{SVG}line")
    with pytest.raises(ValueError, match="no clustered rows"):
        sweep_plot_svg(rows[:1])
    with pytest.raises(ValueError, match="expected rows with K, reduction and accuracy"):
        sweep_plot_svg([{"K": 3}])
