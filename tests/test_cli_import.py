"""``qnnfab import MODEL.onnx --out FILE.qnn``: the check line, the file, one-line refusals."""

import warnings

import numpy as np
import pytest

# qonnx and brevitas come with the test extra (`pip install -e ".[test]"`, `make test`): a
# missing one fails the collection with its ImportError, it does not skip.
import qonnx  # noqa: E402, F401
import torch  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # brevitas's own import-time deprecations
    import brevitas.nn as qnn
    from brevitas.export import export_qonnx
    from brevitas.inject.enum import QuantType
    from brevitas.quant import SignedBinaryWeightPerTensorConst

from qnnfab import cli, ir  # noqa: E402


def export(model, shape, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(model.eval(), torch.rand(1, *shape), str(path))
    return path


def binary_mlp(n_in):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        qnn.QuantIdentity(bit_width=5, signed=False, return_quant_tensor=True),
        qnn.QuantLinear(n_in, 16, bias=False, weight_quant=SignedBinaryWeightPerTensorConst),
        torch.nn.BatchNorm1d(16),
        qnn.QuantIdentity(bit_width=1, quant_type=QuantType.BINARY, scaling_impl_type="const",
                          min_val=-1.0, max_val=1.0, return_quant_tensor=True),
        qnn.QuantLinear(16, 10, bias=False, weight_bit_width=2, weight_narrow_range=True))
    bn = model[2]
    g = torch.Generator().manual_seed(1)
    bn.running_mean.uniform_(-3, 3, generator=g)
    bn.bias.data.uniform_(-1, 1, generator=g)
    return model


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    return export(binary_mlp(64), (64,), tmp_path_factory.mktemp("cli") / "mlp.onnx")


def test_import_prints_the_check_and_writes_the_file(onnx_file, tmp_path, capsys):
    out = tmp_path / "mlp.qnn"
    assert cli.main(["import", str(onnx_file), "--out", str(out), "--check-vectors", "40"]) == 0
    text = capsys.readouterr().out
    assert "qonnx executor vs qnnfab golden on 40 inputs (random codes, seed 0): classes agree " \
           "on 40/40" in text
    assert "largest score deviation" in text and f"wrote {out}" in text
    net = ir.load(out)
    assert net.meta["input_quant"]["bits"] == 5 and net.input_features == 64


def test_import_checks_on_a_data_set(onnx_file, tmp_path, capsys):
    out = tmp_path / "mlp.qnn"
    assert cli.main(["import", str(onnx_file), "--out", str(out), "--check-vectors", "30",
                     "--data", "digits", "--quiet"]) == 0
    assert "on 30 inputs (digits test split): classes agree on 30/30" in capsys.readouterr().out


def test_import_refusal_is_one_line(tmp_path, capsys):
    model = torch.nn.Sequential(qnn.QuantIdentity(bit_width=4, signed=False),
                                torch.nn.Linear(8, 3, bias=False))
    path = export(model, (8,), tmp_path / "float.onnx")
    out = tmp_path / "float.qnn"
    assert cli.main(["import", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("qnnfab: error: node '")
    assert "(Gemm)" in err and "not quantized" in err
    assert not out.exists()


def test_import_bad_data_set_is_one_line(onnx_file, tmp_path, capsys):
    """digits images have 64 features; a 20-input network cannot take them."""
    path = export(binary_mlp(20), (20,), tmp_path / "mlp20.onnx")
    assert cli.main(["import", str(path), "--out", str(tmp_path / "x.qnn"),
                     "--data", "digits"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "64 features, the network takes 20" in err


@pytest.mark.parametrize("argv, message", [
    (["--check-vectors", "-1"], "--check-vectors: expected >= 0"),
    (["--out", "/nonexistent-folder/x.qnn"], "does not exist"),
])
def test_import_bad_options(onnx_file, tmp_path, capsys, argv, message):
    base = ["import", str(onnx_file)] + ([] if "--out" in argv else
                                         ["--out", str(tmp_path / "x.qnn")])
    assert cli.main(base + argv) == 2
    assert message in capsys.readouterr().err


def test_import_missing_file(tmp_path, capsys):
    assert cli.main(["import", str(tmp_path / "nope.onnx"), "--out",
                     str(tmp_path / "x.qnn")]) == 2
    assert "nope.onnx: no such file" in capsys.readouterr().err


def test_raw_inputs_give_the_codes(onnx_file):
    from qnnfab.model.qonnx_import import import_qonnx, input_codes, raw_inputs
    net = import_qonnx(onnx_file)
    codes = np.arange(64)[None, :] % 32
    assert np.array_equal(input_codes(net, raw_inputs(net, codes)), codes)
