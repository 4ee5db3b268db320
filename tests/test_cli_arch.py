"""``qnnfab train --arch/--weights/--act-bits/--input-shape`` and the ``--data`` file forms, end to
end: the trained network has the layers asked for, its hardware is bit-exact, presets are an
arch plus options, and every mistake is one line naming what is wrong."""

import numpy as np
import pytest

from qnnfab import cli, ir
from qnnfab.model.presets import CUSTOM, customize, get_preset
from qnnfab.model.train import train


def _train(tmp_path, *args):
    out = tmp_path / "n.qnn"
    code = cli.main(["train", *args, "--epochs", "1", "--quiet", "--out", str(out)])
    return code, out


def _kinds(net):
    return [type(layer).__name__ + ":" + str(getattr(layer, "weight_kind", "-"))
            for layer in net.layers]


def test_arch_cnn_on_digits_then_simulate(tmp_path, capsys):
    code, out = _train(tmp_path, "--arch", "c4,p2,d10", "--weights", "ternary,binary",
                       "--act-bits", "2")
    assert code == 0, capsys.readouterr().err
    net = ir.load(out)
    assert _kinds(net) == ["ConvLayer:ternary", "PoolLayer:none", "DenseLayer:binary"]
    assert net.layers[0].thresholds.shape == (4, 3) and net.layers[2].in_bits == 2
    assert net.meta["preset"] == "custom(arch=c4,p2,d10, weights=ternary,binary, act_bits=2)"
    capsys.readouterr()
    assert cli.main(["sim", str(out), "--vectors", "2", "--quiet"]) == 0
    assert "2/2 vectors bit-exact" in capsys.readouterr().out


def test_arch_mlp_per_layer_bits(tmp_path, capsys):
    code, out = _train(tmp_path, "--arch", "d24,d16,d10", "--weights", "ternary",
                       "--act-bits", "3,1")
    assert code == 0, capsys.readouterr().err
    net = ir.load(out)
    assert [layer.out_features for layer in net.layers] == [24, 16, 10]
    assert [layer.in_bits for layer in net.layers] == [5, 3, 1]
    assert {layer.weight_kind for layer in net.layers} == {"ternary"}


def test_arch_alone_defaults():
    p = customize(arch="d32,d10")
    assert (p.hidden, p.outputs, p.weights, p.act_bits, p.sq) == ((32,), 10, "binary", 1, None)
    assert (p.epochs, p.lr, p.label_smoothing) == (CUSTOM.epochs, CUSTOM.lr, 0.1)
    t = customize(arch="c8k5,p2,d10", weights="adaptive")
    assert t.act_bits == 2 and t.sq is not None and t.model == "cnn"
    assert t.conv[0].kernel_size == 5 and t.conv[0].padding == 2 and t.conv[0].pool == 2


def test_preset_options_with_new_arch():
    p = customize("digits-tnn", arch="d16,d10")
    base = get_preset("digits-tnn")
    assert p.name == "digits-tnn(arch=d16,d10)"
    assert (p.weights, p.act_bits, p.sq, p.lr) == (base.weights, base.act_bits, base.sq, base.lr)
    assert customize("digits-tnn") is base
    w = customize("digits-cnn", weights="binary")
    assert w.name == "digits-cnn(weights=binary)" and w.conv == get_preset("digits-cnn").conv


@pytest.mark.parametrize("name,arch", [("digits-bnn", "d256,d256,d10"),
                                       ("digits-tnn", "d128,d128,d10"),
                                       ("digits-cnn", "c16,p2,c32,p2,d10")])
def test_presets_are_archs(name, arch):
    assert str(get_preset(name).arch) == arch


def test_arch_equals_its_preset_bit_for_bit():
    """``--arch d256,d256,d10 --weights binary`` is digits-bnn but for the name."""
    a = train("digits-bnn", epochs=1, seed=4, progress=False).network
    b = train(customize(arch="d256,d256,d10", weights="binary"), epochs=1, seed=4,
              progress=False).network
    for la, lb in zip(a.layers, b.layers):
        assert np.array_equal(la.weights, lb.weights)
        assert (la.thresholds is None and lb.thresholds is None) or \
            np.array_equal(la.thresholds, lb.thresholds)
    assert b.meta["preset"] == "custom(arch=d256,d256,d10, weights=binary, act_bits=1)"


def test_npz_images_give_the_input_shape(tmp_path, capsys):
    rng = np.random.default_rng(7)
    path = tmp_path / "img.npz"
    np.savez(path, x_train=rng.random((90, 6, 6, 2)), y_train=np.arange(90) % 3,
             x_test=rng.random((9, 6, 6, 2)), y_test=np.arange(9) % 3)
    code, out = _train(tmp_path, "--arch", "c4,p2,d3", "--data", f"npz:{path},bits=3")
    assert code == 0, capsys.readouterr().err
    net = ir.load(out)
    assert net.input_bits == 3 and net.input_shape == (6, 6, 2)
    assert net.meta["data"]["name"] == f"npz:{path},bits=3"
    capsys.readouterr()
    assert cli.main(["sim", str(out), "--vectors", "2", "--quiet"]) == 0
    assert "2/2 vectors bit-exact" in capsys.readouterr().out


def test_csv_with_input_shape(tmp_path, capsys):
    rng = np.random.default_rng(8)
    rows = [f"{i % 2}," + ",".join(map(str, rng.integers(0, 4, 12))) for i in range(60)]
    path = tmp_path / "d.csv"
    path.write_text("\n".join(rows) + "\n")
    code, out = _train(tmp_path, "--arch", "c2k3,d2", "--input-shape", "2x3x2", "--data",
                       f"csv:{path}")
    assert code == 0, capsys.readouterr().err
    net = ir.load(out)
    assert net.input_shape == (2, 3, 2) and net.input_bits == 2


@pytest.mark.parametrize("args,message", [
    (["--arch", "c4,q2,d10"], "--arch 'c4,q2,d10': layer 2 of 3: 'q2': expected cN[kK][pP]"),
    (["--arch", "d32,d5"], "preset 'custom(arch=d32,d5, weights=binary, act_bits=1)': the output "
                           "layer d5 has 5 outputs, the data set 'digits' has 10 classes (end "
                           "--arch with d10)"),
    (["--arch", "c4,p3,d10"], "--arch c4,p3,d10: p3 after c4: the 8x8x4 output of c4 is not "
                              "divisible by the pool size 3"),
    (["--arch", "d32,d10", "--weights", "binary,ternary,binary"],
     "--weights 'binary,ternary,binary': 3 values; expected one for every layer or 2, one per "
     "layer (d32, d10)"),
    (["--arch", "d32,d10", "--act-bits", "9"], "--act-bits '9': '9': expected 1..8 bits"),
    (["--arch", "c4,p2,d10", "--weights", "float"], "float weights are for MLPs"),
    (["--arch", "c4,d10", "--input-shape", "4x4x2"], "input_shape (4, 4, 2) holds 32 values, the "
                                                     "data set has 64 features"),
    (["--arch", "c4,d10", "--input-shape", "8by8"], "--input-shape '8by8': expected HxWxC"),
    (["--preset", "digits-tnn", "--weights", "ternary,binary"],
     "--weights 'ternary,binary': 2 values; expected one for every layer or 3"),
    (["--data", "npz:/nonexistent/x.npz"], "npz: /nonexistent/x.npz does not exist"),
])
def test_errors_are_one_line(tmp_path, capsys, args, message):
    code, out = _train(tmp_path, *args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("qnnfab: error: ") and "\n" not in err, err
    assert message in err, err
    assert not out.exists()
