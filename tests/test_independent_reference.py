"""The golden model against an independent numpy reference (``tests/independent_reference.py``).

Two kinds of test:

* hand-computed tiny networks (the numbers worked out in comments) pin the reference, and the
  golden model, to the written definitions;
* hypothesis property tests run random networks from :mod:`qnnfab.random_net` (dense, CNN and
  mixed; binary, ternary and codebook weights; 1-bit and k-bit activations; kernel codebooks
  with and without signs; max-pool) on random and extreme inputs and require the two to agree
  layer by layer, accumulators and codes, then scores and classes.
"""

import numpy as np
from hypothesis import given, settings, strategies as st

from qnnfab import ir, random_net
from qnnfab.spec import golden

from .independent_reference import forward

WEIGHT_KINDS = ("binary", "ternary", "codebook")
SETTINGS = settings(max_examples=60, deadline=None)


# -- comparison ----------------------------------------------------------------------------------

def _layer_name(i, layer):
    return f"layer {i} ({layer.kind}{', ' + layer.weight_kind if layer.kind != 'maxpool' else ''})"


def assert_same(what, expected, got, codes):
    """Exact equality of two (batch, n) arrays; the message names the first mismatch."""
    if expected is None or got is None:
        assert expected is None and got is None, \
            f"{what}: expected (golden) {expected!r}, got (independent reference) {got!r}"
        return
    expected, got = np.asarray(expected), np.asarray(got)
    assert expected.shape == got.shape, \
        f"{what}: expected (golden) shape {expected.shape}, got (reference) shape {got.shape}"
    bad = np.argwhere(expected != got)
    if len(bad):
        row, idx = (int(v) for v in bad[0])
        raise AssertionError(
            f"{what}: input row {row}, index {idx}: expected (golden) {int(expected[row, idx])}, "
            f"got (independent reference) {int(got[row, idx])}; {len(bad)} mismatches in all; "
            f"input codes {np.asarray(codes)[row].tolist()}")


def assert_agrees(network, codes):
    """Golden and the reference agree on every layer's accumulators and codes."""
    trace = golden.forward(network, codes)
    classes, scores, layers = forward(network, codes)
    assert len(layers) == len(network.layers), \
        f"reference returned {len(layers)} layer results for {len(network.layers)} layers"
    last = len(network.layers) - 1
    for i, (layer, got) in enumerate(zip(network.layers, layers)):
        name = _layer_name(i, layer)
        assert_same(f"{name} accumulator", trace.accs[i], got.acc, codes)
        assert_same(f"{name} output codes", trace.acts[i + 1] if i < last else None, got.out,
                    codes)
    assert_same("scores", trace.scores, scores, codes)
    assert_same("classes", trace.classes[:, None], classes[:, None], codes)


def inputs_for(network, rng, n_random=6):
    """Random codes, then all-zero, all-max and both phases of alternating 0/max."""
    top = (1 << network.input_bits) - 1
    n = network.input_features
    alt = np.arange(n, dtype=np.int64) % 2
    extremes = np.stack([np.zeros(n, np.int64), np.full(n, top, np.int64), alt * top,
                         (1 - alt) * top])
    return np.concatenate([random_net.random_inputs(rng, network, n_random), extremes])


def symmetric_codebook(rng, bits):
    """``2**bits`` levels closed under negation (a kernel sign needs every negation)."""
    half = random_net.random_codebook(rng, bits=bits - 1)
    return np.concatenate([half, -half]).astype(np.int64)


# -- hand-computed cases ------------------------------------------------------------------------

def check_hand(network, codes, accs, outs, classes):
    """The reference, and golden, give the worked-out numbers; then they agree."""
    got_classes, got_scores, layers = forward(network, codes)
    trace = golden.forward(network, codes)
    for i, (want_acc, want_out) in enumerate(zip(accs, outs)):
        for who, acc, out in (("reference", layers[i].acc, layers[i].out),
                              ("golden", trace.accs[i],
                               trace.acts[i + 1] if i + 1 < len(trace.acts) else None)):
            if want_acc is None:
                assert acc is None, f"{who} layer {i}: expected no accumulator, got {acc}"
            else:
                assert np.array_equal(acc, want_acc), \
                    f"{who} layer {i} accumulator: expected {want_acc}, got {acc.tolist()}"
            if want_out is None:
                assert out is None, f"{who} layer {i}: expected no codes, got {out}"
            else:
                assert np.array_equal(out, want_out), \
                    f"{who} layer {i} codes: expected {want_out}, got {out.tolist()}"
    assert np.array_equal(got_scores, accs[-1]), f"reference scores: {got_scores.tolist()}"
    assert got_classes.tolist() == classes, \
        f"reference classes: expected {classes}, got {got_classes.tolist()}"
    assert trace.classes.tolist() == classes, \
        f"golden classes: expected {classes}, got {trace.classes.tolist()}"


def dense(weights, *, in_bits, kind, thresholds=None, sign=None, codebook=None):
    weights = np.array(weights, dtype=np.int64)
    return ir.DenseLayer(
        in_features=weights.shape[1], out_features=weights.shape[0], in_bits=in_bits,
        weight_kind=kind, weights=weights,
        thresholds=None if thresholds is None else np.array(thresholds, dtype=np.int64),
        threshold_sign=None if sign is None else np.array(sign, dtype=np.int64),
        codebook=None if codebook is None else np.array(codebook, dtype=np.int64))


def net(layers, features, bits):
    return ir.Network(input_features=features, input_bits=bits, layers=layers).validate()


def test_hand_binary_xnor_popcount():
    # ±1 inputs × binary weights. Weight codes [[1,1,0],[0,1,0]] = values [[+1,+1,-1],[-1,+1,-1]].
    # Input [1,0,1] = [+1,-1,+1]: acc0 = 1-1-1 = -1 (XNOR 101/110 -> 1 agreement: 2·1-3 = -1),
    #   acc1 = -1-1-1 = -3; class 0.
    # Input [0,1,0] = [-1,+1,-1]: acc0 = -1+1+1 = 1, acc1 = 1+1+1 = 3; class 1.
    network = net([dense([[1, 1, 0], [0, 1, 0]], in_bits=1, kind="binary")], 3, 1)
    check_hand(network, [[1, 0, 1], [0, 1, 0]], accs=[[[-1, -3], [1, 3]]], outs=[None],
               classes=[0, 1])


def test_hand_kbit_inputs_binary_weights():
    # 2-bit inputs [3,0,2] are the values 3, 0, 2. Weights [[+1,-1,-1],[-1,+1,+1]]:
    # acc0 = 3-0-2 = 1, acc1 = -3+0+2 = -1; class 0.
    network = net([dense([[1, 0, 0], [0, 1, 1]], in_bits=2, kind="binary")], 3, 2)
    check_hand(network, [[3, 0, 2]], accs=[[[1, -1]]], outs=[None], classes=[0])


def test_hand_ternary_multithreshold_sign_and_codebook_tie():
    # Layer 0: 2-bit inputs, ternary codes [[1,2],[2,0]] = values [[+1,-1],[-1,0]], 3 thresholds
    # (2-bit outputs): row 0 [0,2,5] sign +1, row 1 [-4,3,4] sign -1.
    # Input [3,1]: acc = [3-1, -3] = [2,-3]. Row 0: 2>=0, 2>=2, not 2>=5 -> code 2.
    #   Row 1: sign·acc = 3: 3>=-4, 3>=3, not 3>=4 -> code 2.
    # Input [0,3]: acc = [-3, 0]. Row 0: -3 is below every threshold -> 0. Row 1: 0>=-4 only -> 1.
    # Layer 1 (output): codebook [-3,5], codes [[1,0],[0,1]] = values [[5,-3],[-3,5]].
    #   Codes [2,2]: scores [10-6, -6+10] = [4,4], a tie -> class 0 (the first index).
    #   Codes [0,1]: scores [-3, 5] -> class 1.
    network = net([dense([[1, 2], [2, 0]], in_bits=2, kind="ternary",
                         thresholds=[[0, 2, 5], [-4, 3, 4]], sign=[1, -1]),
                   dense([[1, 0], [0, 1]], in_bits=2, kind="codebook", codebook=[-3, 5])], 2, 2)
    check_hand(network, [[3, 1], [0, 3]], accs=[[[2, -3], [-3, 0]], [[4, 4], [-3, 5]]],
               outs=[[[2, 2], [0, 1]], None], classes=[0, 1])


def test_hand_one_bit_hidden_read_as_pm1():
    # Layer 0: ±1 inputs [1,1] = [+1,+1], binary values [[+1,+1],[+1,-1]]: acc = [2, 0].
    #   One threshold each, T = 1: row 0 sign +1: 2>=1 -> 1; row 1 sign -1: -0>=1 false -> 0.
    # Layer 1 reads codes [1,0] as [+1,-1]; ternary codes [[1,1],[2,1]] = [[+1,+1],[-1,+1]]:
    #   scores [1-1, -1-1] = [0,-2] -> class 0.
    network = net([dense([[1, 1], [1, 0]], in_bits=1, kind="binary", thresholds=[[1], [1]],
                         sign=[1, -1]),
                   dense([[1, 1], [2, 1]], in_bits=1, kind="ternary")], 2, 1)
    check_hand(network, [[1, 1]], accs=[[[2, 0]], [[0, -2]]], outs=[[[1, 0]], None],
               classes=[0])


def test_hand_conv_one_bit_padding_is_minus_one():
    # A 2x2x1 image of 1-bit codes [[1,0],[0,0]] = values [[+1,-1],[-1,-1]]; a 3x3 binary kernel,
    # padding 1, centre +1 and the 8 others -1. Every window holds the whole image (sum -2) and
    # 5 padded positions, each code 0 = value -1 (sum -5): window sum -7, so
    # acc = centre - (window sum - centre) = 2·centre + 7: (0,0) -> 9, the others -> 5.
    # (Were padding value 0, acc would be 2·centre + 2 = [4,0,0,0].) Threshold 6, sign +1 ->
    # codes [1,0,0,0], i.e. [+1,-1,-1,-1] for the output layer, binary codes [[1,1,1,1],
    # [1,0,0,0]] = [[+1,+1,+1,+1],[+1,-1,-1,-1]]: scores [1-1-1-1, 1+1+1+1] = [-2, 4] -> class 1.
    kernel = np.zeros((1, 1, 3, 3), dtype=np.int64)
    kernel[0, 0, 1, 1] = 1
    conv = ir.ConvLayer(in_channels=1, out_channels=1, height=2, width=2, kernel_size=3,
                        padding=1, in_bits=1, weight_kind="binary", weights=kernel,
                        thresholds=np.array([[6]]), threshold_sign=np.array([1]))
    network = net([conv, dense([[1, 1, 1, 1], [1, 0, 0, 0]], in_bits=1, kind="binary")], 4, 1)
    check_hand(network, [[1, 0, 0, 0]], accs=[[[9, 5, 5, 5]], [[-2, 4]]],
               outs=[[[1, 0, 0, 0]], None], classes=[1])


def test_hand_kernel_codebook_with_sign():
    # A 1x2x1 image of 2-bit codes [2,3]; ternary, 3x3, padding 1 (k-bit padding = value 0).
    # One representative kernel: middle row codes [1,0,2] = values [+1,0,-1] (left neighbour
    # minus right neighbour), other rows 0. Both output channels use it; channel 1 has sign -1.
    # Channel 0: x=0: pad(0) - 3 = -3; x=1: 2 - pad(0) = 2. Channel 1: the negations, 3 and -2.
    # (y, x, o) order: acc = [-3, 3, 2, -2]. Threshold 0, sign +1: codes [0,1,1,0].
    # Output layer: ±1 values [-1,+1,+1,-1]; binary codes [[0,1,1,0],[1,1,1,1]] =
    # [[-1,+1,+1,-1],[+1,+1,+1,+1]]: scores [1+1+1+1, -1+1+1-1] = [4, 0] -> class 0.
    table = np.zeros((1, 3, 3), dtype=np.int64)
    table[0, 1] = [1, 0, 2]
    kc = ir.KernelCodebook(index=np.zeros((2, 1), dtype=np.int64), kernels=table,
                           sign=np.array([[1], [-1]]))
    conv = ir.ConvLayer(in_channels=1, out_channels=2, height=1, width=2, kernel_size=3,
                        padding=1, in_bits=2, weight_kind="ternary", weights=None,
                        thresholds=np.array([[0], [0]]), threshold_sign=np.array([1, 1]),
                        kernel_codebook=kc)
    network = net([conv, dense([[0, 1, 1, 0], [1, 1, 1, 1]], in_bits=1, kind="binary")], 2, 2)
    check_hand(network, [[2, 3]], accs=[[[-3, 3, 2, -2]], [[4, 0]]], outs=[[[0, 1, 1, 0]], None],
               classes=[0])


def test_hand_maxpool():
    # A 2x2x2 image of 2-bit codes, flat (y, x, c): (0,0)=[1,0] (0,1)=[3,1] (1,0)=[2,2]
    # (1,1)=[0,1]. Pool 2: channel 0 max(1,3,2,0) = 3, channel 1 max(0,1,2,1) = 2 -> [3,2].
    # Output: ternary [[1,2],[0,1]] = [[+1,-1],[0,+1]]: scores [3-2, 2] = [1,2] -> class 1.
    pool = ir.PoolLayer(channels=2, height=2, width=2, size=2, bits=2)
    network = net([pool, dense([[1, 2], [0, 1]], in_bits=2, kind="ternary")], 8, 2)
    check_hand(network, [[1, 0, 3, 1, 2, 2, 0, 1]], accs=[None, [[1, 2]]],
               outs=[[[3, 2]], None], classes=[1])


def test_hand_maxpool_one_bit_is_or():
    # 1-bit 2x2x1 images [0,0,1,0] (OR = 1 = +1) and [0,0,0,0] (0 = -1); output binary codes
    # [[1],[0]] = [[+1],[-1]]: scores [1,-1] -> class 0 and [-1,1] -> class 1.
    pool = ir.PoolLayer(channels=1, height=2, width=2, size=2, bits=1)
    network = net([pool, dense([[1], [0]], in_bits=1, kind="binary")], 4, 1)
    check_hand(network, [[0, 0, 1, 0], [0, 0, 0, 0]], accs=[None, [[1, -1], [-1, 1]]],
               outs=[[[1], [0]], None], classes=[0, 1])


# -- property tests over random networks ----------------------------------------------------------

@st.composite
def dense_specs(draw):
    n_layers = draw(st.integers(1, 4))
    return dict(
        seed=draw(st.integers(0, 2 ** 32 - 1)),
        features=draw(st.lists(st.integers(1, 20), min_size=n_layers + 1,
                               max_size=n_layers + 1)),
        input_bits=draw(st.integers(1, 8)),
        hidden_bits=draw(st.lists(st.integers(1, 4), min_size=n_layers - 1,
                                  max_size=n_layers - 1)),
        weight_kind=draw(st.lists(st.sampled_from(WEIGHT_KINDS), min_size=n_layers,
                                  max_size=n_layers)),
    )


@SETTINGS
@given(dense_specs())
def test_dense_networks_agree(spec):
    rng = np.random.default_rng(spec["seed"])
    network = random_net.random_network(
        rng, features=spec["features"], input_bits=spec["input_bits"],
        hidden_bits=spec["hidden_bits"], weight_kind=spec["weight_kind"])
    assert_agrees(network, inputs_for(network, rng))


def _conv_geometry(draw, h, w):
    """A kernel size and padding that fit an h x w image, and the output size."""
    k = draw(st.sampled_from((1, 3, 5)))
    p = draw(st.integers(0, k // 2))
    if h + 2 * p - k + 1 < 1 or w + 2 * p - k + 1 < 1:
        p = k // 2  # "same" padding always fits
    return k, p, h + 2 * p - k + 1, w + 2 * p - k + 1


def _draw_pools(draw, h, w, n_conv, k, p):
    """Which convs random_cnn follows with a 2x2 pool; None when a conv does not fit."""
    pool = []
    for i in range(n_conv):
        h, w = h + 2 * p - k + 1, w + 2 * p - k + 1
        if h < 1 or w < 1:
            return None
        if h % 2 == 0 and w % 2 == 0 and draw(st.booleans()):
            pool.append(i)
            h, w = h // 2, w // 2
    return tuple(pool)


@st.composite
def cnn_specs(draw):
    h, w = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    channels = draw(st.lists(st.integers(1, 3), min_size=2, max_size=3))
    k = draw(st.sampled_from((1, 3, 5)))  # one kernel size and padding for every conv
    p = draw(st.integers(0, k // 2))
    pool = _draw_pools(draw, h, w, len(channels) - 1, k, p)
    if pool is None:
        p = k // 2  # "same" padding always fits
        pool = _draw_pools(draw, h, w, len(channels) - 1, k, p)
    kernels = draw(st.one_of(st.none(), st.integers(1, 5)))
    return dict(seed=draw(st.integers(0, 2 ** 32 - 1)), height=h, width=w, channels=channels,
                input_bits=draw(st.integers(1, 5)), hidden_bits=draw(st.integers(1, 3)),
                kernel_size=k, padding=p, pool=pool,
                weight_kind=draw(st.sampled_from(WEIGHT_KINDS)),
                dense=draw(st.lists(st.integers(1, 10), max_size=2)),
                n_outputs=draw(st.integers(1, 6)), kernels=kernels,
                sign=kernels is not None and draw(st.booleans()),
                codebook_bits=draw(st.integers(1, 3)))


def layer_codebook(rng, kind, bits, sign):
    """A codebook for a ``kind`` layer (None unless codebook; symmetric when signed)."""
    if kind != "codebook":
        return None
    return symmetric_codebook(rng, bits) if sign else random_net.random_codebook(rng, bits=bits)


@SETTINGS
@given(cnn_specs())
def test_random_cnns_agree(spec):
    spec = dict(spec)
    rng = np.random.default_rng(spec.pop("seed"))
    codebook = layer_codebook(rng, spec["weight_kind"], spec.pop("codebook_bits"), spec["sign"])
    network = random_net.random_cnn(rng, codebook=codebook, **spec)
    assert_agrees(network, inputs_for(network, rng))


@st.composite
def mixed_specs(draw):
    """Conv layers each with its own kind, kernel, padding, kernel codebook and sign; max-pools
    of size 2..4 where they divide the image (also as the first layer); then dense layers of any
    kind, the last one the output layer."""
    h0, w0 = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    h, w = h0, w0
    spatial = []

    def maybe_pool():
        nonlocal h, w
        sizes = [s for s in (2, 3, 4) if h % s == 0 and w % s == 0]
        if sizes and draw(st.booleans()):
            s = draw(st.sampled_from(sizes))
            spatial.append(dict(kind="pool", size=s))
            h, w = h // s, w // s

    maybe_pool()
    for _ in range(draw(st.integers(0, 2))):
        k, p, h, w = _conv_geometry(draw, h, w)
        kernels = draw(st.one_of(st.none(), st.integers(1, 4)))
        spatial.append(dict(
            kind="conv", kernel_size=k, padding=p, out_channels=draw(st.integers(1, 3)),
            out_bits=draw(st.integers(1, 3)), weight_kind=draw(st.sampled_from(WEIGHT_KINDS)),
            kernels=kernels, sign=kernels is not None and draw(st.booleans()),
            codebook_bits=draw(st.integers(1, 3))))
        maybe_pool()
    dense_layers = [dict(width=draw(st.integers(1, 10)), out_bits=draw(st.integers(1, 3)),
                         weight_kind=draw(st.sampled_from(WEIGHT_KINDS)),
                         codebook_bits=draw(st.integers(1, 4)))
                    for _ in range(draw(st.integers(1, 3)))]
    return dict(seed=draw(st.integers(0, 2 ** 32 - 1)), height=h0, width=w0,
                in_channels=draw(st.integers(1, 3)), input_bits=draw(st.integers(1, 4)),
                spatial=spatial, dense=dense_layers)


def build_mixed(spec):
    rng = np.random.default_rng(spec["seed"])
    h, w, c, bits = spec["height"], spec["width"], spec["in_channels"], spec["input_bits"]
    layers = []
    for s in spec["spatial"]:
        if s["kind"] == "pool":
            layers.append(ir.PoolLayer(channels=c, height=h, width=w, size=s["size"], bits=bits))
            h, w = h // s["size"], w // s["size"]
            continue
        conv = random_net.random_conv(
            rng, in_channels=c, out_channels=s["out_channels"], height=h, width=w,
            in_bits=bits, out_bits=s["out_bits"], kernel_size=s["kernel_size"],
            padding=s["padding"], weight_kind=s["weight_kind"],
            codebook=layer_codebook(rng, s["weight_kind"], s["codebook_bits"], s["sign"]),
            kernels=s["kernels"], sign=s["sign"])
        layers.append(conv)
        h, w, c, bits = conv.out_height, conv.out_width, conv.out_channels, conv.out_bits
    features = h * w * c
    for i, d in enumerate(spec["dense"]):
        layer = random_net.random_dense(
            rng, in_features=features, out_features=d["width"], in_bits=bits,
            out_bits=d["out_bits"], weight_kind=d["weight_kind"],
            codebook=layer_codebook(rng, d["weight_kind"], d["codebook_bits"], False),
            output=i == len(spec["dense"]) - 1)
        layers.append(layer)
        features, bits = d["width"], layer.out_bits
    return rng, ir.Network(input_features=spec["height"] * spec["width"] * spec["in_channels"],
                           input_bits=spec["input_bits"], layers=layers).validate()


@SETTINGS
@given(mixed_specs())
def test_mixed_networks_agree(spec):
    rng, network = build_mixed(spec)
    assert_agrees(network, inputs_for(network, rng))
