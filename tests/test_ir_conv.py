"""The IR's conv, max-pool and kernel-codebook layers: round trips and clear errors."""

import io
import json
import zipfile

import numpy as np
import pytest

from qnnfab import ir, random_net


def cnn(**kw):
    args = dict(height=6, width=6, channels=[1, 4, 4], input_bits=2, pool=(1,))
    args.update(kw)
    return random_net.random_cnn(np.random.default_rng(0), **args)


@pytest.mark.parametrize("kw", [{}, {"kernels": 3}, {"kernels": 2, "sign": True},
                                {"weight_kind": "codebook", "codebook": np.arange(-4, 4)}])
def test_round_trip(kw, tmp_path):
    net = cnn(**kw)
    path = tmp_path / "n.qnn"
    ir.save(net, path)
    back = ir.load(path)
    assert back.summary() == net.summary()
    assert ir.to_bytes(back) == ir.to_bytes(net)
    for a, b in zip(net.layers, back.layers):
        if isinstance(a, ir.ConvLayer):
            assert np.array_equal(a.weights, b.weights)
    assert back.input_shape == (6, 6, 1)


def test_kernel_codebook_file_stores_indices_not_weights():
    net = cnn(kernels=3)
    names = zipfile.ZipFile(io.BytesIO(ir.to_bytes(net))).namelist()
    assert "layers/0/kernel_index.npy" in names and "layers/0/weights.npy" not in names


def test_weight_bits_count_indices_and_table():
    net = cnn(kernels=3, sign=True)
    conv = net.layers[1]  # 4 x 4 kernels, ternary (2-bit codes)
    assert conv.weight_bits == 16 * (2 + 1) + 3 * 9 * 2
    plain = cnn().layers[1]
    assert plain.weight_bits == 16 * 9 * 2


def edit(net, i, **changes):
    layer = net.layers[i]
    for k, v in changes.items():
        setattr(layer, k, v)
    return net


@pytest.mark.parametrize("change,message", [
    (lambda n: edit(n, 0, kernel_size=2), "layers[0].kernel_size: expected an odd size"),
    (lambda n: edit(n, 0, padding=2), "layers[0].padding: expected <= 1"),
    (lambda n: edit(n, 2, height=5), "layers[2].height: 5 is not divisible by the pool size 2"),
    (lambda n: edit(n, 1, in_channels=3), "layers[1].weights: expected shape (4, 3, 3, 3)"),
    (lambda n: edit(n, 0, thresholds=None), "layers[0].thresholds: missing"),
    (lambda n: edit(n, 2, bits=1), "layers[2].bits: expected 2"),
    (lambda n: n.replace(input_features=35), "network input has 35"),
    (lambda n: n.replace(layers=n.layers[:3] + [
        random_net.random_dense(np.random.default_rng(1), in_features=36, out_features=36,
                                in_bits=2, out_bits=2),
        ir.PoolLayer(channels=4, height=3, width=3, size=3, bits=2), n.layers[3]]),
     "layers[4].kind: maxpool layers must come before the dense layers (got one after dense)"),
    (lambda n: n.replace(layers=n.layers[:2]), "the last layer must emit raw scores"),
    (lambda n: edit(n, 3, in_features=32, weights=np.zeros((4, 32), np.int64)),
     "layers[3].in_features: expected 36 (the previous layer's outputs, a 3x3x4 image"),
])
def test_errors_name_the_field(change, message):
    with pytest.raises(ir.IRError) as info:
        change(cnn()).validate()
    assert message in str(info.value)


def test_kernel_codebook_errors():
    net = cnn(kernels=3)
    kc = net.layers[1].kernel_codebook
    kc.index[1, 2] = 3
    with pytest.raises(ir.IRError, match=r"layers\[1\].index: values must lie in 0..2, got 3 "
                                         r"at index \(1, 2\)"):
        net.validate()
    kc.index[1, 2] = 0
    net.layers[1].weights = net.layers[1].weights.copy()
    net.layers[1].weights[2, 0, 1, 1] = (net.layers[1].weights[2, 0, 1, 1] + 1) % 3
    with pytest.raises(ir.IRError, match=r"layers\[1\].weights: kernel \(2, 0\) differs"):
        net.validate()


def test_sign_needs_negatable_levels():
    with pytest.raises(ir.IRError, match=r"layers\[0\].sign: kernels negated by a sign use "
                                         r"level \d, whose negation is not in the layer's "
                                         r"codebook"):
        cnn(weight_kind="codebook", codebook=np.array([-3, -1, 0, 1, 2, 3, 4, 5]), kernels=2,
            sign=True)


def test_file_missing_kernel_table_is_named(tmp_path):
    data = ir.to_bytes(cnn(kernels=2))
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name in src.namelist():
            if name == "header.json":
                header = json.loads(src.read(name))
                del header["layers"][0]["arrays"]["kernel_table"]
                zf.writestr(name, json.dumps(header))
            else:
                zf.writestr(name, src.read(name))
    with pytest.raises(ir.IRError, match=r"x.qnn: layers\[0\].kernel_table: missing array"):
        ir.from_bytes(out.getvalue(), source="x.qnn")
