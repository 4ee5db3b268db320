"""Post-training quantization: a float network (``digits-mlp``) exported as float, rebuilt, and
quantized to per-layer integer codebooks that the golden model runs bit-exactly."""

import copy

import numpy as np
import pytest
import torch

from qnnfab import ir
from qnnfab.model import codebooks, ptq
from qnnfab.spec import golden
from qnnfab.model.data import load_dataset
from qnnfab.model.export import export, export_float
from qnnfab.model.train import predict, train


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Small matrices: torch's thread pool only costs time here (and xdist runs two workers)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def float_run(one_torch_thread):
    """``digits-mlp`` trained briefly, once for the module."""
    return train("digits-mlp", epochs=3, progress=False)


@pytest.fixture(scope="module")
def float_net(float_run):
    """The float network as written to and read back from a file."""
    return ir.from_bytes(ir.to_bytes(float_run.network))


def test_float_preset_exports_a_float_network(float_run, float_net):
    net = float_run.network
    assert net.is_float and all(type(layer) is ir.FloatDenseLayer for layer in net.layers)
    assert float_run.integer_accuracy is None and float_run.agreement is None
    assert set(net.meta["accuracy"]) == {"float", "split", "n"}
    assert net.meta["accuracy"]["float"] == float_run.float_accuracy > 0.8
    assert net.meta["data"]["name"] and "output_log_scale" in net.meta
    assert [layer.act_bits for layer in net.layers] == [2, 2, 0]
    assert [layer.in_bits for layer in net.layers] == [net.input_bits, 2, 2]
    with pytest.raises(ir.IRError, match="the integer golden model needs quantized weights"):
        golden.forward(net, float_run.dataset.x_test[:1])
    with pytest.raises(ValueError, match=r"layers\[0\]: float weights cannot be exported as "
                                         r"integers"):
        export(float_run.model, meta={})


def test_model_from_float_reproduces_the_float_model(float_run, float_net):
    """export_float -> file -> model_from_float: the same logits, bit for bit."""
    x = float_run.dataset.x_test
    want_logits, want = predict(float_run.model, x)
    model = ptq.model_from_float(float_net)
    assert not model.training
    got_logits, got = predict(model, x)
    assert np.array_equal(got, want)
    assert torch.equal(got_logits, want_logits)
    assert float(np.mean(got == float_run.dataset.y_test)) == float_run.float_accuracy
    # and exporting the rebuilt model gives the same file back
    again = export_float(model, meta=dict(float_net.meta), classes=float_net.classes)
    assert ir.to_bytes(again) == ir.to_bytes(float_net)


def _torch_quantized(float_net, method, bits, level_bits):
    """The float model with the baseline ``method``'s codebooks applied (independently of
    :func:`ptq.quantize`), and those codebooks."""
    model = ptq.model_from_float(float_net)
    books = [codebooks.METHODS[method](layer.weights.astype(np.float64), bits)
             for layer in float_net.layers]
    return ptq.apply_codebooks(model, books, level_bits=level_bits), books


BASELINES = [(m, b, 8) for m in ptq.METHODS if m != "ga" for b in (2, 3)] + \
    [("pow2", 3, 4), ("kmeans", 2, 5)]


@pytest.mark.parametrize("method,bits,level_bits", BASELINES)
def test_baseline_quantize(float_net, method, bits, level_bits):
    result = ptq.quantize(float_net, method, bits, level_bits=level_bits, progress=False)
    qnet = result.network
    where = f"{method} {bits}-bit, level bits {level_bits}"
    assert [layer.weight_kind for layer in qnet.layers] == ["codebook"] * 3, where
    assert [layer.thresholds.shape[1] for layer in qnet.layers[:-1]] == [3, 3], where
    top = (1 << (level_bits - 1)) - 1
    for i, layer in enumerate(qnet.layers):
        levels = layer.codebook.tolist()
        assert len(levels) == 1 << bits, (where, i)
        assert all(-top <= v <= top for v in levels), f"{where}: layer {i} levels {levels}"
        if method == "pow2":
            assert all(v == 0 or abs(v) & (abs(v) - 1) == 0 for v in levels), \
                f"{where}: layer {i} levels {levels} are not 0 or ±2**e"
    assert qnet.weight_bits == qnet.macs * bits, where

    # The IR is the quantized torch model: same indices and integer levels, same predictions.
    model, books = _torch_quantized(float_net, method, bits, level_bits)
    for i, (layer, lin, book, fl) in enumerate(zip(qnet.layers, model.quant_linears(), books,
                                                   float_net.layers)):
        assert np.array_equal(layer.weights, codebooks.assign(fl.weights, book)), (where, i)
        assert np.array_equal(layer.codebook, lin.code_levels.numpy().astype(np.int64)), \
            (where, i)
    ds_meta = float_net.meta["data"]
    ds = load_dataset(ds_meta["name"], seed=ds_meta["split_seed"])
    _, torch_pred = predict(model, ds.x_test)
    int_pred = golden.forward(qnet, ds.x_test).classes
    bad = np.flatnonzero(torch_pred != int_pred)
    assert bad.size == 0, f"{where}: {bad.size} test images differ, first {bad[:5].tolist()}"
    assert result.agreement == 1.0
    assert result.test_accuracy == float(np.mean(int_pred == ds.y_test))
    assert qnet.meta["accuracy"]["integer"] == result.test_accuracy
    assert qnet.meta["accuracy"]["agreement"] == 1.0
    _, val_pred = predict(model, ds.x_val)
    # (the validation accuracy is computed in float32 by torch: equal to 1e-6)
    assert result.val_accuracy == pytest.approx(float(np.mean(val_pred == ds.y_val)), abs=1e-6)
    q = qnet.meta["quantized"]
    assert (q["method"], q["bits"], q["level_bits"], q["seed"]) == (method, bits, level_bits, 0)
    assert q["val_accuracy"] == result.val_accuracy and "history" not in q and not result.history
    assert qnet.meta["float_network"]["accuracy"] == float_net.meta["accuracy"]
    assert qnet.meta["data"] == float_net.meta["data"] and qnet.classes == float_net.classes
    assert result.test_accuracy > 0.8, where  # a working network, not noise


def _without_seconds(network):
    net = network.replace(meta=copy.deepcopy(network.meta))
    del net.meta["quantized"]["seconds"]
    return ir.to_bytes(net)


def test_quantize_is_deterministic(float_net):
    a = ptq.quantize(float_net, "kmeans", 3, progress=False).network
    b = ptq.quantize(float_net, "kmeans", 3, progress=False).network
    assert _without_seconds(a) == _without_seconds(b)
    assert "seconds" in a.meta["quantized"], "the check above removed something that is there"


def test_ga_tiny_budget(float_net):
    """The GA path: history recorded, fitness measured on the validation split, deterministic."""
    runs = [ptq.quantize(float_net, "ga", 2, population=6, generations=2, seed=5,
                         progress=False) for _ in range(2)]
    result, qnet = runs[0], runs[0].network
    assert _without_seconds(qnet) == _without_seconds(runs[1].network)
    assert [h["generation"] for h in result.history] == [0, 1]
    for h in result.history:
        assert h["min"] <= h["mean"] <= h["best"], h
    q = qnet.meta["quantized"]
    assert q["history"] == result.history
    assert q["ga"] == {"population": 6, "generations": 2}
    assert (q["method"], q["bits"], q["seed"]) == ("ga", 2, 5)
    # fitness = validation accuracy - TIE_WEIGHT·min(CE, 1) of the best individual, kept
    best = max(h["best"] for h in result.history)
    assert 0 <= result.val_accuracy - best <= ptq.TIE_WEIGHT + 1e-9, (result.val_accuracy, best)
    assert result.agreement == 1.0
    assert all(len(layer.codebook) == 4 for layer in qnet.layers)
    assert qnet.weight_bits == 2 * qnet.macs


@pytest.mark.parametrize("kwargs,error,message", [
    ({"method": "median"}, ValueError,
     r"unknown method 'median'; known: " + ", ".join(ptq.METHODS)),
    ({"bits": 0}, ValueError, r"bits must be 1\.\.8, not 0"),
    ({"bits": 9}, ValueError, r"bits must be 1\.\.8, not 9"),
    ({"bits": 2.0}, ValueError, r"bits must be 1\.\.8, not 2\.0"),
    ({"bits": True}, ValueError, r"bits must be 1\.\.8, not True"),
    ({"level_bits": 1}, ValueError, r"level bits must be 2\.\.16, not 1"),
    ({"level_bits": 17}, ValueError, r"level bits must be 2\.\.16, not 17"),
])
def test_quantize_rejects_bad_arguments(float_net, kwargs, error, message):
    args = {"method": "kmeans", "bits": 2, **kwargs}
    with pytest.raises(error, match=message):
        ptq.quantize(float_net, args.pop("method"), args.pop("bits"), progress=False, **args)


def test_quantize_rejects_a_quantized_network(float_net):
    qnet = ptq.quantize(float_net, "fixed", 2, progress=False).network
    with pytest.raises(ValueError, match=r"quantize needs a float network .* this one's weights "
                                         r"are already quantized"):
        ptq.quantize(qnet, "fixed", 2, progress=False)
    with pytest.raises(TypeError, match="network must be a qnnfab.ir.Network"):
        ptq.model_from_float("float.qnn")


def test_quantize_needs_the_data_set(float_net):
    meta = {k: v for k, v in float_net.meta.items() if k != "data"}
    with pytest.raises(ValueError, match=r"records no data set \(meta\.data\)"):
        ptq.quantize(float_net.replace(meta=meta), "kmeans", 2, progress=False)
