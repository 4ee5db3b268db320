"""QONNX import: tiny Brevitas models exported both ways (dynamo and TorchScript), imported, and
checked against qonnx's own executor, the Brevitas model itself, the IR file form and the
Amaranth simulation; every refusal names its node in one line."""

import warnings

import numpy as np
import pytest

# qonnx, onnx and brevitas come with the test extra (`pip install -e ".[test]"`, `make test`):
# a missing one fails the collection with its ImportError, it does not skip.
import onnx  # noqa: E402, F401
import qonnx  # noqa: E402, F401
import torch  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # brevitas's own import-time deprecations
    import brevitas.nn as qnn
    from brevitas.export import export_qonnx
    from brevitas.inject.enum import QuantType

from qnnfab import ir  # noqa: E402
from qnnfab.model.qonnx_check import check_against_qonnx, check_codes  # noqa: E402
from qnnfab.model.qonnx_import import (  # noqa: E402
    QonnxImportError, import_qonnx, input_codes, output_scores, raw_inputs)
from qnnfab.spec import golden  # noqa: E402

DYNAMO = [pytest.param(True, id="dynamo"), pytest.param(False, id="torchscript")]


def binary_act():
    return qnn.QuantIdentity(bit_width=1, quant_type=QuantType.BINARY, scaling_impl_type="const",
                             min_val=-1.0, max_val=1.0, return_quant_tensor=True)


def binary_tanh():
    return qnn.QuantHardTanh(bit_width=1, quant_type=QuantType.BINARY, min_val=-1.0,
                             max_val=1.0, scaling_impl_type="const", return_quant_tensor=True)


def binary_linear(i, o):
    from brevitas.quant import SignedBinaryWeightPerTensorConst
    return qnn.QuantLinear(i, o, bias=False, weight_quant=SignedBinaryWeightPerTensorConst)


def randomize_bn(model, seed=1):
    """Trained-looking batch-norms (with the defaults every threshold sits on acc = 0, where
    the executor's float sums decide the sign by rounding noise)."""
    g = torch.Generator().manual_seed(seed)
    for bn in model.modules():
        if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
            bn.running_mean.uniform_(-2, 2, generator=g)
            bn.running_var.uniform_(0.5, 2, generator=g)
            bn.weight.data.uniform_(-1, 1, generator=g)
            bn.bias.data.uniform_(-1, 1, generator=g)
    return model.eval()


class Seq(torch.nn.Sequential):
    pass


def mlp_binary():
    """4-bit input, binary weights, ±1 activations, ternary head."""
    return randomize_bn(Seq(qnn.QuantIdentity(bit_width=4, signed=False, return_quant_tensor=True),
               binary_linear(16, 12), torch.nn.BatchNorm1d(12), binary_act(),
               qnn.QuantLinear(12, 4, bias=False, weight_bit_width=2, weight_narrow_range=True)))


def mlp_kbit():
    """k-bit codebook weights, QuantReLU 3-bit and QuantHardTanh ±1 activations, a bias."""
    return randomize_bn(Seq(qnn.QuantIdentity(bit_width=5, signed=False, return_quant_tensor=True),
               qnn.QuantLinear(20, 10, bias=True, weight_bit_width=3),
               torch.nn.BatchNorm1d(10), qnn.QuantReLU(bit_width=3, return_quant_tensor=True),
               qnn.QuantLinear(10, 8, bias=False, weight_bit_width=2, weight_narrow_range=True),
               torch.nn.BatchNorm1d(8), binary_tanh(), binary_linear(8, 5)))


def cnn():
    """Conv (ternary, padding 1) → BN → QuantReLU 2-bit → MaxPool → Flatten → dense."""
    return randomize_bn(Seq(qnn.QuantIdentity(bit_width=4, signed=False, return_quant_tensor=True),
               qnn.QuantConv2d(2, 4, 3, padding=1, bias=False, weight_bit_width=2,
                               weight_narrow_range=True),
               torch.nn.BatchNorm2d(4), qnn.QuantReLU(bit_width=2, return_quant_tensor=True),
               torch.nn.MaxPool2d(2), torch.nn.Flatten(),
               qnn.QuantLinear(64, 6, bias=False, weight_bit_width=3), torch.nn.BatchNorm1d(6),
               binary_act(), binary_linear(6, 3)))


def cnn_pool_before_act():
    """Binary input; conv without padding, its MaxPool before the quantizer (positive BN)."""
    model = Seq(qnn.QuantIdentity(bit_width=1, quant_type=QuantType.BINARY,
                                  scaling_impl_type="const", min_val=-1.0, max_val=1.0,
                                  return_quant_tensor=True),
                qnn.QuantConv2d(1, 3, 3, padding=0, bias=True, weight_bit_width=1,
                                weight_quant=__import__("brevitas.quant", fromlist=["x"])
                                .SignedBinaryWeightPerTensorConst),
                torch.nn.BatchNorm2d(3), torch.nn.MaxPool2d(2),
                qnn.QuantReLU(bit_width=2, return_quant_tensor=True), torch.nn.Flatten(),
                binary_linear(27, 4))
    randomize_bn(model)
    model[2].weight.data.abs_()
    return model


MODELS = {"mlp_binary": (mlp_binary, (16,)), "mlp_kbit": (mlp_kbit, (20,)),
          "cnn": (cnn, (2, 8, 8)), "cnn_pool_before_act": (cnn_pool_before_act, (1, 8, 8))}


def export(model, shape, path, dynamo):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(model, torch.rand(1, *shape), str(path), dynamo=dynamo)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``{(name, dynamo): (model, path)}``, exported once per module."""
    torch.manual_seed(0)
    out = {}
    folder = tmp_path_factory.mktemp("qonnx")
    for name, (make, shape) in MODELS.items():
        model = make()
        for dynamo in (True, False):
            out[name, dynamo] = model, export(model, shape, folder / f"{name}_{dynamo}.onnx",
                                              dynamo)
    return out


@pytest.mark.parametrize("dynamo", DYNAMO)
@pytest.mark.parametrize("name", list(MODELS))
def test_classes_agree_with_qonnx_executor(exported, name, dynamo):
    model, path = exported[name, dynamo]
    net = import_qonnx(path)
    codes, source = check_codes(net, 300, seed=4)
    check = check_against_qonnx(net, path, codes, input_source=source)
    assert check.ok, f"seed 4: {check.line()}"
    assert check.max_deviation_steps < 1e-3, check.line()
    assert "300/300" in check.line()


@pytest.mark.parametrize("name", list(MODELS))
def test_golden_matches_brevitas(exported, name):
    """The Brevitas model's own output is ``scale·acc + offset`` of the golden accumulators."""
    model, path = exported[name, True]
    net = import_qonnx(path)
    rng = np.random.default_rng(5)
    shape = MODELS[name][1]
    x = rng.uniform(-0.2, 1.2, size=(64, *shape)).astype(np.float32)
    codes = input_codes(net, x)
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    out = (out.value if hasattr(out, "value") else out).numpy()
    trace = golden.forward(net, codes)
    np.testing.assert_allclose(out, output_scores(net, trace.scores), rtol=0, atol=1e-4)
    assert np.array_equal(np.argmax(out, axis=1), trace.classes)


def test_kinds_and_layout(exported):
    net = import_qonnx(exported["mlp_kbit", False][1])
    assert [layer.weight_kind for layer in net.layers] == ["codebook", "ternary", "binary"]
    assert net.layers[0].codebook.tolist() == [-4, -3, -2, -1, 0, 1, 2, 3]
    assert [layer.out_bits for layer in net.layers[:2]] == [3, 1]
    cnn_net = import_qonnx(exported["cnn", True][1])
    assert [layer.kind for layer in cnn_net.layers] == ["conv", "maxpool", "dense", "dense"]
    assert cnn_net.input_shape == (8, 8, 2)
    q = cnn_net.meta["input_quant"]
    assert (q["bits"], q["signed"], q["zero_point"]) == (4, False, 0)
    assert cnn_net.meta["input_layout"] == {"shape": [2, 8, 8], "order": "(y, x, c)"}
    pooled = import_qonnx(exported["cnn_pool_before_act", True][1])
    assert [layer.kind for layer in pooled.layers] == ["conv", "maxpool", "dense"]


def test_ambiguous_thresholds_are_counted(exported, tmp_path):
    """Default batch-norms put ±1 thresholds exactly on acc = 0, where the executor's float sums
    decide by rounding noise: counted and named in the check line."""
    assert import_qonnx(exported["cnn", True][1]).meta["ambiguous_thresholds"] == 0
    torch.manual_seed(0)
    path = export(cnn().apply(lambda m: m.reset_parameters()
                              if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d)
                              else None).eval(), (2, 8, 8), tmp_path / "plain.onnx", True)
    net = import_qonnx(path)
    assert net.meta["ambiguous_thresholds"] > 0
    check = check_against_qonnx(net, path, check_codes(net, 5)[0])
    assert "thresholds lie within float rounding" in check.line()


def test_input_codes_round_trip(exported):
    net = import_qonnx(exported["cnn", True][1])
    codes = check_codes(net, 10, seed=1)[0]
    assert np.array_equal(input_codes(net, raw_inputs(net, codes)), codes)


def test_ir_round_trip(exported, tmp_path):
    for name in MODELS:
        net = import_qonnx(exported[name, False][1])
        ir.save(net, tmp_path / f"{name}.qnn")
        back = ir.load(tmp_path / f"{name}.qnn")
        assert back.summary() == net.summary() and back.meta == net.meta
        codes = check_codes(net, 20)[0]
        assert np.array_equal(golden.forward(back, codes).scores,
                              golden.forward(net, codes).scores)


def test_check_with_data_set(tmp_path):
    """``--data digits``: 8x8 pixels 0..16 as 5-bit codes into a 64-input network."""
    torch.manual_seed(2)
    model = randomize_bn(Seq(qnn.QuantIdentity(bit_width=5, signed=False,
                                               return_quant_tensor=True),
                             binary_linear(64, 16), torch.nn.BatchNorm1d(16), binary_act(),
                             binary_linear(16, 10)))
    path = export(model, (64,), tmp_path / "digits.onnx", True)
    net = import_qonnx(path)
    codes, source = check_codes(net, 50, data="digits")
    assert source == "digits test split" and codes.max() <= 16
    assert check_against_qonnx(net, path, codes, input_source=source).ok


# -- refusals ----------------------------------------------------------------------------------

def refusal(model, shape, tmp_path, dynamo=True):
    path = export(randomize_bn(model), shape, tmp_path / "bad.onnx", dynamo)
    with pytest.raises(QonnxImportError) as info:
        import_qonnx(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("node '"), msg
    return msg


class Sigmoid(torch.nn.Module):
    def forward(self, x):
        return torch.sigmoid(x)


@pytest.mark.parametrize("dynamo", DYNAMO)
def test_refuses_unsupported_op(tmp_path, dynamo):
    msg = refusal(Seq(qnn.QuantIdentity(bit_width=4, signed=False, return_quant_tensor=False),
                      binary_linear(8, 6), Sigmoid(), binary_act(), binary_linear(6, 3)),
                  (8,), tmp_path, dynamo)
    assert "(Sigmoid): unsupported operation; supported: " in msg


def test_refuses_float_weights(tmp_path):
    msg = refusal(Seq(qnn.QuantIdentity(bit_width=4, signed=False), torch.nn.Linear(8, 3,
                                                                                    bias=False)),
                  (8,), tmp_path)
    assert "(Gemm)" in msg and "not quantized" in msg


def test_refuses_non_integer_weight_quantizer(tmp_path):
    """A 10-bit weight quantizer has no IR codebook (≤ 8 bits)."""
    msg = refusal(Seq(qnn.QuantIdentity(bit_width=4, signed=False),
                      qnn.QuantLinear(8, 3, bias=False, weight_bit_width=10)), (8,), tmp_path)
    assert "(Quant)" in msg and "bit width [10.0]" in msg


def test_refuses_conv_stride(tmp_path):
    msg = refusal(Seq(qnn.QuantIdentity(bit_width=4, signed=False),
                      qnn.QuantConv2d(1, 2, 3, stride=2, bias=False, weight_bit_width=2,
                                      weight_narrow_range=True),
                      qnn.QuantReLU(bit_width=2), torch.nn.Flatten(), binary_linear(18, 3)),
                  (1, 7, 7), tmp_path)
    assert "(Conv)" in msg and "strides [2, 2]" in msg and "stride 1" in msg


def test_refuses_output_bias(tmp_path):
    msg = refusal(Seq(qnn.QuantIdentity(bit_width=4, signed=False),
                      qnn.QuantLinear(8, 3, bias=True, weight_bit_width=2,
                                      weight_narrow_range=True)), (8,), tmp_path)
    assert "(Gemm)" in msg and "bias" in msg


def test_refuses_signed_activation(tmp_path):
    msg = refusal(Seq(qnn.QuantIdentity(bit_width=4, signed=False), binary_linear(8, 6),
                      qnn.QuantIdentity(bit_width=3, signed=True), binary_linear(6, 3)),
                  (8,), tmp_path)
    assert "(Quant)" in msg and "signed 3-bit activations" in msg


def test_refuses_padded_binary_conv(tmp_path):
    msg = refusal(Seq(binary_act(),
                      qnn.QuantConv2d(1, 2, 3, padding=1, bias=False, weight_bit_width=2,
                                      weight_narrow_range=True),
                      binary_act(), torch.nn.Flatten(), binary_linear(32, 3)),
                  (1, 4, 4), tmp_path)
    assert "(Conv)" in msg and "padding" in msg


def test_refuses_pool_before_decreasing_activation(tmp_path):
    model = cnn_pool_before_act()
    model[2].weight.data[1] = -0.5
    path = export(model, (1, 8, 8), tmp_path / "neg.onnx", False)
    with pytest.raises(QonnxImportError, match=r"^node '.*' \(MaxPool\): .*channel 1"):
        import_qonnx(path)


def test_refuses_missing_file(tmp_path):
    with pytest.raises(QonnxImportError, match="no such file"):
        import_qonnx(tmp_path / "nope.onnx")


# -- hardware ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mlp_binary", "cnn"])
def test_imported_network_in_amaranth(exported, name):
    from qnnfab.sim.runner import compare, simulate
    net = import_qonnx(exported[name, True][1])
    codes = check_codes(net, 3, seed=6)[0]
    result = simulate(net, codes, simulator="amaranth")
    comparison = compare(net, codes, result)
    assert comparison.ok, comparison


def test_a_tie_broken_the_other_way_is_counted_as_a_tie(exported, monkeypatch):
    """Where the golden model's top integer scores tie, the executor's float sums may pick the
    other class: counted in ``ties`` (and ``ok_up_to_ties``), not as agreement; a class with
    a lower score is a real disagreement."""
    from qnnfab.model import qonnx_check
    net = import_qonnx(exported["mlp_binary", False][1])
    codes = check_codes(net, 40)[0]
    trace = golden.forward(net, codes)
    # Input 0: a tie, made and broken the other way; input 1: a plain disagreement.
    top = int(trace.classes[0])
    other = (top + 1) % trace.scores.shape[1]
    trace.scores[0, other] = trace.scores[0, top]
    fake = output_scores(net, trace.scores).astype(np.float64)
    fake[0, other] += 1e-9
    wrong = int(np.argmin(trace.scores[1]))
    fake[1, wrong] = fake[1].max() + 1.0
    monkeypatch.setattr(qonnx_check, "execute_qonnx", lambda model, x, batch=256: fake)
    monkeypatch.setattr(qonnx_check.golden, "forward", lambda network, c: trace)
    check = check_against_qonnx(net, exported["mlp_binary", False][1], codes)
    assert (check.agree, check.ties) == (38, 1)
    assert not check.ok and not check.ok_up_to_ties
    assert "1 more are exact ties" in check.line()
