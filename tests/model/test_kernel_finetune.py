"""Fine-tuning of clustered conv kernels: the rebuilt model computes the clustered network,
the result's conv weights decode from its kernel codebooks (a shared table stays shared), float
== golden on every test image, and validation accuracy does not drop on a tiny run."""

import dataclasses

import numpy as np
import pytest
import torch

from qnnfab import ir, numerics
from qnnfab.spec import golden
from qnnfab.model.kernel_finetune import finetune_clustered
from qnnfab.model.presets import get_preset
from qnnfab.model.train import load_checkpoint, predict, save_checkpoint, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """digits-cnn cut to three epochs, and its checkpoint file."""
    r = train(dataclasses.replace(get_preset("digits-cnn"), epochs=3), seed=0, progress=False)
    path = tmp_path_factory.mktemp("ck") / "net.pt"
    save_checkpoint(path, r)
    return r, path


def cluster(kernel_sets, levels, k_size, iters=5):
    """A small kernel codebook by hand (numpy): start from the ``k_size`` most frequent kernels
    up to sign, then a few signed k-means steps (each kernel takes the nearest (L2) entry or
    its negation; an entry becomes its members' signed mean rounded to the nearest level).
    ``kernel_sets``: a list of code arrays (out, in, k, k); returns the table codes (K, k, k)
    and, per set, (index, sign)."""
    levels = np.asarray(levels)
    k = kernel_sets[0].shape[-1]
    values = [levels[codes].reshape(-1, k * k) for codes in kernel_sets]
    flat = np.concatenate(values).astype(np.float64)
    first = np.array([row[np.flatnonzero(row)[0]] if row.any() else 1 for row in flat])
    uniq, counts = np.unique(flat * first[:, None], axis=0, return_counts=True)
    table = uniq[np.argsort(-counts, kind="stable")[:k_size]]

    def assign(rows):
        d_pos = ((rows[:, None, :] - table[None]) ** 2).sum(-1)
        d_neg = ((rows[:, None, :] + table[None]) ** 2).sum(-1)
        neg = d_neg.min(1) < d_pos.min(1)
        return np.where(neg, d_neg.argmin(1), d_pos.argmin(1)), np.where(neg, -1, 1)

    for _ in range(iters):
        index, sign = assign(flat)
        for j in range(len(table)):
            members = flat[index == j] * sign[index == j, None]
            if len(members):
                mean = members.mean(0)
                table[j] = levels[np.abs(mean[:, None] - levels[None, :]).argmin(1)]
    code_of = {int(v): c for c, v in enumerate(levels)}
    table_codes = np.vectorize(code_of.get)(table.astype(np.int64)).reshape(-1, k, k)
    out = []
    for codes, rows in zip(kernel_sets, values):
        index, sign = assign(rows.astype(np.float64))
        out.append((index.reshape(codes.shape[:2]).astype(np.int64),
                    sign.reshape(codes.shape[:2]).astype(np.int64)))
    return table_codes.astype(np.int64), out


def clustered_network(net, k_size, shared):
    """``net`` with a kernel codebook on every conv layer (thresholds unchanged)."""
    convs = [i for i, layer in enumerate(net.layers) if isinstance(layer, ir.ConvLayer)]
    layers = list(net.layers)
    groups = [convs] if shared else [[i] for i in convs]
    for group in groups:
        levels = net.layers[group[0]].weight_levels
        table, assign = cluster([net.layers[i].weights for i in group], levels, k_size)
        for i, (index, sign) in zip(group, assign):
            layers[i] = dataclasses.replace(
                net.layers[i], weights=None,
                kernel_codebook=ir.KernelCodebook(index=index, kernels=table, sign=sign))
    return net.replace(layers=layers).validate()


def accuracy(net, x, y):
    return float(np.mean(golden.forward(net, x).classes == y))


def check_result(net, info, clustered, ds):
    """What every fine-tuned network must satisfy."""
    net.validate()
    convs = [layer for layer in net.layers if isinstance(layer, ir.ConvLayer)]
    before = [layer for layer in clustered.layers if isinstance(layer, ir.ConvLayer)]
    for i, (layer, old) in enumerate(zip(convs, before)):
        kc = layer.kernel_codebook
        assert kc is not None, f"conv {i} lost its kernel codebook"
        assert np.array_equal(layer.weights, kc.decode(layer.weight_levels)), f"conv {i}"
        assert np.array_equal(kc.index, old.kernel_codebook.index), f"conv {i} index changed"
        assert np.array_equal(kc.sign, old.kernel_codebook.sign), f"conv {i} sign changed"
        assert kc.kernels.shape == old.kernel_codebook.kernels.shape
    # independent float/integer check on every test image
    model = info["model"]
    _, float_pred = predict(model, ds.x_test)
    int_pred = golden.forward(net, ds.x_test).classes
    disagree = np.flatnonzero(float_pred != int_pred)
    assert disagree.size == 0, f"float != golden on test images {disagree[:10].tolist()}"
    assert info["agreement"] == 1.0
    assert info["val_before"] == accuracy(clustered, ds.x_val, ds.y_val)
    assert info["val_after"] == accuracy(net, ds.x_val, ds.y_val)
    assert info["test_after"] == accuracy(net, ds.x_test, ds.y_test)
    again = ir.from_bytes(ir.to_bytes(net))
    assert np.array_equal(golden.forward(again, ds.x_test).scores,  # file round trip
                          golden.forward(net, ds.x_test).scores)


def test_rebuilt_model_computes_the_clustered_kernels(trained):
    """Before any training the torch kernels are sign · table[index] of the clustered net."""
    from qnnfab.model.kernel_finetune import _attach_tables, _conv_pairs
    r, path = trained
    clustered = clustered_network(r.network, 6, shared=False)
    ck = load_checkpoint(path)
    model = ck.build_model(r.dataset)
    tables = _attach_tables(_conv_pairs(model, clustered))
    assert [(t.rep.shape[0], len(convs)) for t, convs in tables] == [(6, 1), (6, 1)]
    convs = [layer for layer in clustered.layers if isinstance(layer, ir.ConvLayer)]
    for block, layer in zip(model.convs, convs):
        want = np.asarray(layer.weight_levels)[layer.weights]
        assert np.array_equal(block.conv.kernel_values().detach().numpy(), want)


@pytest.mark.parametrize("shared", [False, True])
def test_finetune_recovers_and_exports(trained, shared):
    r, path = trained
    ds = r.dataset
    clustered = clustered_network(r.network, 4, shared=shared)
    # clustering to 4 kernels with stale thresholds costs accuracy
    assert accuracy(clustered, ds.x_val, ds.y_val) < accuracy(r.network, ds.x_val, ds.y_val)
    seen = []
    net, info = finetune_clustered(path, clustered, epochs=3, progress=seen.append)
    assert [h["epoch"] for h in seen] == [1, 2, 3] and info["history"] == seen
    check_result(net, info, clustered, ds)
    assert info["val_after"] >= info["val_before"], (
        f"fine-tuning lowered validation accuracy {info['val_before']:.4f} -> "
        f"{info['val_after']:.4f}")
    assert net.meta["kernel_finetune"]["val_after"] == info["val_after"]
    assert net.meta["preset"] == "digits-cnn"
    tables = [layer.kernel_codebook.kernels for layer in net.layers
              if isinstance(layer, ir.ConvLayer)]
    if shared:
        assert info["tables"] == [4]
        assert tables[0] is tables[1], "a shared table must stay one array"
    else:
        assert info["tables"] == [4, 4]
    # weight memory shrinks: indices and signs instead of kernels
    assert net.weight_bits < r.network.weight_bits


def test_finetune_is_deterministic_and_keeps_global_state(trained):
    r, path = trained
    clustered = clustered_network(r.network, 4, shared=True)
    rng_state, threads = torch.random.get_rng_state(), torch.get_num_threads()
    a, _ = finetune_clustered(load_checkpoint(path), clustered, epochs=1)
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    assert torch.get_num_threads() == threads
    b, _ = finetune_clustered(path, clustered, epochs=1)

    def strip(net):
        meta = {k: v for k, v in net.meta.items() if k not in ("kernel_finetune",)}
        return ir.to_bytes(net.replace(meta=meta))
    assert strip(a) == strip(b)


def test_binary_table_quantizer():
    """Binary tables: sign at unit scale, sign(0) = +1; ternary: |r| > 0.5."""
    from qnnfab.model.kernel_finetune import KernelTable
    t = KernelTable(np.zeros((1, 1, 3), dtype=np.int64), "binary")
    with torch.no_grad():
        t.rep.copy_(torch.tensor([[[-0.2, 0.0, 0.7]]]))
    assert t.values().tolist() == [[[-1.0, 1.0, 1.0]]]
    assert t.codes().tolist() == [[[0, 1, 1]]]
    t = KernelTable(np.zeros((1, 1, 4), dtype=np.int64), "ternary")
    with torch.no_grad():
        t.rep.copy_(torch.tensor([[[-0.6, 0.5, 0.51, -0.5]]]))
    assert t.values().tolist() == [[[-1.0, 0.0, 1.0, 0.0]]]
    levels = numerics.WEIGHT_LEVELS["ternary"]
    assert [levels[c] for c in t.codes()[0, 0]] == [-1, 0, 1, 0]


def test_finetune_rejects(trained):
    r, path = trained
    with pytest.raises(ValueError, match="no conv layer has a kernel codebook"):
        finetune_clustered(path, r.network, epochs=1)
    with pytest.raises(TypeError, match="clustered must be a qnnfab.ir.Network"):
        finetune_clustered(path, None, epochs=1)
    clustered = clustered_network(r.network, 4, shared=False)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        finetune_clustered(path, clustered, epochs=0)
    dense = clustered.layers[-1]
    flipped = dataclasses.replace(dense, weights=np.where(dense.weights == 1, 2, dense.weights))
    with pytest.raises(ValueError, match=r"layers\[4\] \(dense\) weights differ from the "
                                         r"checkpoint's"):
        finetune_clustered(path, clustered.replace(layers=[*clustered.layers[:-1], flipped]),
                           epochs=1)
    other = dataclasses.replace(clustered.layers[0], padding=0, height=10, width=10)
    with pytest.raises(ValueError, match="clustered: 100 inputs, the checkpoint's model has 64"):
        finetune_clustered(path, clustered.replace(
            layers=[other, *clustered.layers[1:]], input_features=100), epochs=1)
