"""Quantized CNNs: the torch convolution against a numpy loop, export to conv/pool IR layers
(float == golden, layer by layer), the digits-cnn preset end to end, and checkpoints."""

import dataclasses

import numpy as np
import pytest
import torch

from qnnfab import ir
from qnnfab.spec import golden
from qnnfab.model.conv import QuantCNN, QuantConv2d, QuantConvBlock
from qnnfab.model.export import export, flatten_permutation
from qnnfab.model.presets import ConvSpec, Preset, get_preset, preset_from_dict, preset_to_dict
from qnnfab.model.train import TrainResult, load_checkpoint, predict, save_checkpoint, train

from .test_export import randomize_bn


def conv_reference(x, w, padding, pad):
    """Naive loops: x (B, C, H, W), w (O, C, k, k) numpy; padded positions hold ``pad``."""
    b, c, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = np.full((b, c, h + 2 * padding, wd + 2 * padding), pad, dtype=np.int64)
    xp[:, :, padding:padding + h, padding:padding + wd] = x
    ho, wo = h + 2 * padding - k + 1, wd + 2 * padding - k + 1
    out = np.zeros((b, o, ho, wo), dtype=np.int64)
    for y in range(ho):
        for xx in range(wo):
            window = xp[:, :, y:y + k, xx:xx + k]  # (B, C, k, k)
            out[:, :, y, xx] = np.einsum("bcij,ocij->bo", window, w)
    return out


@pytest.mark.parametrize("kind", ["binary", "ternary"])
@pytest.mark.parametrize(("k", "padding"), [(3, 1), (3, 0), (1, 0), (5, 2), (5, 1)])
@pytest.mark.parametrize("pad", [0, -1])
def test_quant_conv_matches_loops(kind, k, padding, pad):
    torch.manual_seed(k * 10 + padding)
    conv = QuantConv2d(3, 5, k, padding, kind)
    rng = np.random.default_rng(k + padding)
    x = rng.integers(-1, 16, size=(4, 3, 7, 6))
    got = conv(torch.as_tensor(x, dtype=torch.float32), pad).detach().numpy()
    w = conv.kernel_values().detach().numpy().astype(np.int64)
    assert set(np.unique(w)) <= ({-1, 1} if kind == "binary" else {-1, 0, 1})
    # kernel layout: the latent weight row is the window in (c, ky, kx) order
    assert np.array_equal(w.reshape(5, -1), conv.weight_values().detach().numpy())
    want = conv_reference(x, w, padding, pad)
    assert got.shape == want.shape and np.array_equal(got.astype(np.int64), want)
    assert np.array_equal(got, np.round(got)), "accumulators must be exact integers"


def test_conv_rejects():
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        QuantConv2d(1, 1, 2, 0)
    with pytest.raises(ValueError, match="padding must be 0..1"):
        QuantConv2d(1, 1, 3, 2)
    with pytest.raises(ValueError, match=r"expected input \(batch, 2, H, W\)"):
        QuantConv2d(2, 1)(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="not divisible by the pool size 2"):
        QuantCNN((5, 5, 1), [ConvSpec(4, pool=2, padding=1)], (), 3, input_bits=2)
    with pytest.raises(ValueError, match="weight_kinds: expected one value or 2, got 3"):
        QuantCNN((4, 4, 1), [ConvSpec(4)], (), 3, input_bits=2, weight_kinds=("binary",) * 3)


def test_one_bit_inputs_pad_with_minus_one():
    """A 1-bit block's successor sees padded positions as -1 (code 0), a k-bit one as 0."""
    one = QuantConvBlock(1, 1, in_bits=1, weight_kind="binary", padding=1)
    many = QuantConvBlock(1, 1, in_bits=3, weight_kind="binary", padding=1)
    with torch.no_grad():
        one.conv.weight.fill_(1.0)
        many.conv.weight.fill_(1.0)
    x = torch.ones(1, 1, 3, 3)
    # corner window: 4 image values of +1, 5 padded ones
    with torch.no_grad():
        assert float(one.accumulate(x)[0, 0, 0, 0]) == 4 - 5
        assert float(many.accumulate(x)[0, 0, 0, 0]) == 4


# -- export of random CNNs -------------------------------------------------------------------------

def random_cnn(seed, shape, convs, hidden, kinds, bits, input_bits=5, n=200):
    """An untrained QuantCNN with random clips and batch-norm statistics (eval mode) and the
    random input codes they were set from."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = QuantCNN(shape, convs, hidden, 7, input_bits=input_bits, weight_kinds=kinds,
                     act_bits=bits).eval()
    codes = rng.integers(0, 1 << input_bits, size=(n, shape[0] * shape[1] * shape[2]))
    x, step = model.image(torch.as_tensor(codes, dtype=torch.float32)), None
    with torch.no_grad():
        for block in model.convs:
            if block.act_bits > 1:
                block.clip.fill_(float(rng.uniform(0.5, 4.0)))
            acc = block.accumulate(x)
            z = acc if step is None else acc * step
            randomize_bn(block.bn, z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]), rng)
            x, step = block(x, step)
        x = x.flatten(1)
        for block in model.hidden:
            if block.act_bits > 1:
                block.clip.fill_(float(rng.uniform(0.5, 4.0)))
            acc = block.accumulate(x)
            randomize_bn(block.bn, acc if step is None else acc * step, rng)
            x, step = block(x, step)
    return model, codes


CNNS = [  # (input shape, convs, hidden, weight kinds, act bits)
    ((8, 8, 1), [ConvSpec(6), ConvSpec(8)], (), ("ternary", "ternary", "ternary"), (2, 2)),
    ((8, 8, 1), [ConvSpec(5), ConvSpec(6, pool=0, padding=0)], (12,),
     ("binary", "ternary", "binary", "ternary"), (1, 3, 2)),
    ((6, 6, 2), [ConvSpec(4, pool=0), ConvSpec(5, pool=3, padding=1)], (),
     ("ternary", "binary", "binary"), (3, 1)),
    ((7, 5, 1), [ConvSpec(3, pool=0, kernel_size=5, padding=2), ConvSpec(4, pool=0)], (9,),
     ("binary", "binary", "ternary", "binary"), (1, 1, 1)),
]


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("case", range(len(CNNS)))
def test_cnn_export_matches_float_model_layer_by_layer(case, seed):
    shape, convs, hidden, kinds, bits = CNNS[case]
    model, codes = random_cnn(seed + 10 * case, shape, convs, hidden, kinds, bits)
    net = export(model, meta={"seed": seed})
    assert isinstance(net.layers[0], ir.ConvLayer) and net.input_shape == shape
    n_pools = sum(s.pool > 1 for s in convs)
    assert len(net.layers) == len(convs) + n_pools + len(hidden) + 1
    assert [layer.weight_kind for layer in net.layers
            if not isinstance(layer, ir.PoolLayer)] == list(kinds)
    acts, scores = model.trace(torch.as_tensor(codes, dtype=torch.float32))
    trace = golden.forward(net, codes)
    assert len(acts) == len(trace.acts) - 1
    for i, act in enumerate(acts):
        want, got = act.numpy().astype(np.int64), trace.acts[i + 1]
        assert want.shape == got.shape, f"layer {i}: shape {want.shape} vs {got.shape}"
        bad = np.argwhere(want != got)
        assert bad.size == 0, (f"case {case} seed {seed}: layer {i} ({net.layers[i].kind}) "
                               f"sample {bad[0, 0]} output {bad[0, 1]}: float "
                               f"{want[tuple(bad[0])]}, golden {got[tuple(bad[0])]}")
        levels = {int(v) for v in np.unique(got)}
        assert len(levels) > 1, f"case {case}: layer {i} outputs one code only (weak test)"
    assert np.array_equal(scores.numpy().astype(np.int64), trace.scores)
    _, pred = predict(model, codes)
    assert np.array_equal(pred, trace.classes)
    again = ir.from_bytes(ir.to_bytes(net))
    assert np.array_equal(golden.forward(again, codes).scores, trace.scores)


def test_flatten_permutation_moves_columns():
    """IR column (y, x, c) is torch column c·H·W + y·W + x."""
    c, h, w = 3, 2, 4
    perm = flatten_permutation(c, h, w)
    for y in range(h):
        for x in range(w):
            for ch in range(c):
                assert perm[(y * w + x) * c + ch] == ch * h * w + y * w + x
    model, _ = random_cnn(3, (4, 4, 1), [ConvSpec(3)], (), "binary", 2)
    net = export(model, meta={})
    dense = net.layers[-1]
    torch_codes = (model.head.linear.weight.detach().numpy() >= 0).astype(np.int64)
    assert model.flat_shape == (3, 2, 2)
    want = np.empty_like(torch_codes)
    for y in range(2):
        for x in range(2):
            for ch in range(3):
                want[:, (y * 2 + x) * 3 + ch] = torch_codes[:, ch * 4 + y * 2 + x]
    assert np.array_equal(dense.weights, want)


def test_export_network_fields():
    model, _ = random_cnn(1, (8, 8, 1), [ConvSpec(4), ConvSpec(6, padding=0, pool=0)], (5,),
                          "ternary", (2, 1, 2))
    net = export(model, meta={"x": 1}, classes=list("abcdefg"))
    conv0, pool0, conv1, dense0, out = net.layers
    assert (conv0.in_shape, conv0.out_shape, conv0.padding) == ((8, 8, 1), (8, 8, 4), 1)
    assert (pool0.in_shape, pool0.out_shape, pool0.bits) == ((8, 8, 4), (4, 4, 4), 2)
    assert (conv1.in_shape, conv1.out_shape, conv1.in_bits) == ((4, 4, 4), (2, 2, 6), 2)
    assert conv0.weights.shape == (4, 1, 3, 3) and conv0.thresholds.shape == (4, 3)
    assert conv1.thresholds.shape == (6, 1) and dense0.in_features == 24
    assert out.is_output and net.classes == list("abcdefg") and net.meta == {"x": 1}
    w = model.convs[0].conv.kernel_values().detach()
    levels = np.array([0, 1, -1])
    assert np.array_equal(levels[conv0.weights], w.numpy())


# -- the preset, end to end ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def short_run():
    """digits-cnn cut to three epochs."""
    return train(dataclasses.replace(get_preset("digits-cnn"), epochs=3), seed=1,
                 progress=False)


def test_preset_trains_and_float_equals_integer(short_run):
    r = short_run
    ds, net = r.dataset, r.network
    assert isinstance(r, TrainResult) and r.preset.name == "digits-cnn" and r.seed == 1
    assert net.summary().startswith("8x8x1x5b -> conv3 8x8x")
    kinds = {layer.kind for layer in net.layers}
    assert kinds == {"conv", "maxpool", "dense"}
    assert net.weight_bits <= 50_000, f"{net.weight_bits} weight bits"
    trace = golden.forward(net, ds.x_test)
    _, float_pred = predict(r.model, ds.x_test)
    disagree = np.flatnonzero(float_pred != trace.classes)
    assert disagree.size == 0, f"float != golden on test images {disagree[:10].tolist()}"
    assert r.agreement == 1.0
    assert r.integer_accuracy == np.mean(trace.classes == ds.y_test)
    assert r.integer_accuracy > 0.8
    assert net.meta["preset"] == "digits-cnn" and net.meta["accuracy"]["agreement"] == 1.0
    # the layer codes too, not just the classes
    acts, _ = r.model.trace(torch.as_tensor(ds.x_test, dtype=torch.float32))
    for i, act in enumerate(acts):
        assert np.array_equal(act.numpy().astype(np.int64), trace.acts[i + 1]), f"layer {i}"


def test_checkpoint_round_trip(short_run, tmp_path):
    import hashlib
    r = short_run
    path = tmp_path / "net.pt"
    digest = save_checkpoint(path, r)
    assert digest == hashlib.sha256(ir.to_bytes(r.network)).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.pt"]  # no temporary left
    ck = load_checkpoint(path)
    assert (ck.preset, ck.seed, ck.data, ck.split_seed) == (r.preset, 1, "digits", 0)
    assert ck.ir_sha256 == digest and ck.matches(r.network)
    other = r.network.replace(meta={**r.network.meta, "seed": 99})
    assert not ck.matches(other)
    ds = ck.load_dataset()
    model = ck.build_model(ds)
    a, _ = predict(model, ds.x_test)
    b, _ = predict(r.model, ds.x_test)
    assert torch.equal(a, b)
    assert ir.to_bytes(export(model, meta=r.network.meta, classes=r.network.classes)) == \
        ir.to_bytes(r.network)


def test_checkpoint_rejects(tmp_path, short_run):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a qnnfab checkpoint"):
        load_checkpoint(bad)
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a qnnfab checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(TypeError, match="TrainResult"):
        save_checkpoint(tmp_path / "x.pt", short_run.network)


def test_preset_fields_round_trip():
    p = get_preset("digits-cnn")
    assert preset_from_dict(preset_to_dict(p)) == p
    q = Preset(name="t", model="cnn", conv=(ConvSpec(4, pool=0, padding=0),), hidden=(8,),
               weights=("binary", "ternary", "binary"), act_bits=(1, 2), sq=None,
               input_shape=(8, 8, 1))
    assert preset_from_dict(preset_to_dict(q)) == q
    with pytest.raises(ValueError, match="a cnn preset needs conv blocks"):
        Preset(name="t", model="cnn")
    with pytest.raises(ValueError, match="unknown model family"):
        Preset(name="t", model="rnn")


@pytest.mark.slow
def test_digits_cnn_reaches_target():
    r = train("digits-cnn", seed=0, progress=False)
    assert r.integer_accuracy >= 0.975, f"integer accuracy {r.integer_accuracy:.4f} < 0.975"
    assert r.agreement == 1.0
    assert r.seconds < 120, f"training took {r.seconds:.1f} s"
