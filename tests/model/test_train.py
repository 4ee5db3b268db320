"""Training: determinism for a seed, presets, metadata, progress, and the accuracy target."""

import dataclasses

import numpy as np
import pytest
import torch

from qnnfab import ir
from qnnfab.model import presets
from qnnfab.model.presets import Preset
from qnnfab.model.train import train

TINY = Preset(name="test-tiny", hidden=(32, 32), epochs=2, batch_size=128)


def same_network(a, b):
    for i, (la, lb) in enumerate(zip(a.layers, b.layers, strict=True)):
        assert np.array_equal(la.weights, lb.weights), f"layer {i} weights differ"
        if not la.is_output:
            assert np.array_equal(la.thresholds, lb.thresholds), f"layer {i} thresholds differ"
            assert np.array_equal(la.threshold_sign, lb.threshold_sign), f"layer {i} signs differ"


def ir_bytes(network):
    """The IR file bytes (no wall time in them: equal for two runs of the same seed)."""
    return ir.to_bytes(network)


def test_same_seed_same_network():
    threads = torch.get_num_threads()
    rng_state = torch.random.get_rng_state()
    a = train(TINY, seed=3, progress=False)
    assert torch.get_num_threads() == threads, "train must restore the thread count"
    assert torch.equal(torch.random.get_rng_state(), rng_state), "train must keep the global RNG"
    b = train(TINY, seed=3, progress=False)
    same_network(a.network, b.network)
    assert ir_bytes(a.network) == ir_bytes(b.network)
    assert a.history == b.history
    assert (a.float_accuracy, a.integer_accuracy, a.agreement) == \
        (b.float_accuracy, b.integer_accuracy, b.agreement)
    c = train(TINY, seed=4, progress=False)
    assert any(not np.array_equal(la.weights, lc.weights)
               for la, lc in zip(a.network.layers, c.network.layers))


def test_result_and_meta():
    r = train(TINY, seed=0, progress=False, epochs=1)
    assert len(r.history) == 1 and set(r.history[0]) >= {"epoch", "lr", "loss", "val_accuracy"}
    net = r.network
    assert net.summary() == "64x5b -> 32x1b(binary) -> 32x1b(binary) -> 10(binary)"
    assert net.classes == [str(c) for c in range(10)]
    meta = net.meta
    assert meta["preset"] == "test-tiny" and meta["seed"] == 0 and meta["epochs"] == 1
    assert meta["data"] == {"name": "digits", "split_seed": 0}
    assert meta["accuracy"]["float"] == r.float_accuracy
    assert meta["accuracy"]["integer"] == r.integer_accuracy
    assert meta["accuracy"]["agreement"] == r.agreement
    assert "train_seconds" not in meta  # no wall time: the same seed gives the same file
    assert r.seconds > 0
    again = ir.from_bytes(ir.to_bytes(net))
    assert again.meta == meta


def test_progress_goes_to_stderr(capsys):
    train(TINY, seed=0, progress=True, epochs=1)
    out, err = capsys.readouterr()
    assert out == "" and "test-tiny" in err
    train(TINY, seed=0, progress=False, epochs=1)
    assert capsys.readouterr() == ("", "")


def test_unknown_preset_lists_known():
    with pytest.raises(ValueError, match=r"unknown preset 'nope'; known: .*digits-bnn"):
        train("nope")
    with pytest.raises(ValueError, match="unknown preset"):
        presets.get_preset(None)


@pytest.mark.parametrize("epochs", [0, -1, 1.5, True])
def test_bad_epochs(epochs):
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        train(TINY, epochs=epochs, progress=False)


@pytest.mark.parametrize("seed", [-1, "0"])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        train(TINY, seed=seed, progress=False)


def test_preset_registry():
    p = presets.get_preset("digits-bnn")
    assert presets.PRESETS["digits-bnn"] is p
    assert p.hidden == (256, 256) and p.dataset == "digits"
    with pytest.raises(ValueError, match="already registered"):
        presets.register(Preset(name="digits-bnn"))
    with pytest.raises(ValueError, match="must be positive"):
        Preset(name="bad", epochs=0)


def short(name, epochs=4):
    """A registered preset cut to a few epochs (the name stays, so meta["preset"] is checked)."""
    return dataclasses.replace(presets.get_preset(name), epochs=epochs)


@pytest.mark.parametrize("name", ["digits-tnn", "digits-sq"])
def test_short_ternary_and_sq_runs(name):
    """Four epochs: the exported kinds are right, float and integer predict identically, and a
    second run with the same seed gives the same IR file."""
    p = short(name)
    a = train(p, seed=2, progress=False)
    net, meta = a.network, a.network.meta
    assert len(a.history) == p.epochs and meta["epochs"] == p.epochs
    assert a.agreement == 1.0, f"{name}: float/integer agreement {a.agreement}"
    kinds = [layer.weight_kind for layer in net.layers]
    assert [layer.in_bits for layer in net.layers] == [5, 2, 2]
    sq_meta = meta["sq"]
    assert kinds == sq_meta["depth"]
    assert len(sq_meta["history"]) == p.epochs
    total = sum(layer.macs for layer in net.layers)
    assert sq_meta["bits_per_weight"] == pytest.approx(net.weight_bits / total, rel=1e-12)
    if name == "digits-tnn":
        assert kinds == ["ternary"] * 3 and sq_meta["adaptive"] == [False] * 3
        assert sq_meta["bits_per_weight"] == 2.0
    else:
        assert sq_meta["adaptive"] == [True] * 3 and sq_meta["method"] == p.sq.method
        if p.sq.method == "rule":
            assert sq_meta["bits_per_weight"] <= p.sq.bit_budget
        else:  # the depths read off the gates
            assert kinds == ["ternary" if g >= 0.5 else "binary" for g in sq_meta["gate"]]
        # the depths are decided by the freeze epoch (round(0.6·4) = 2) and the best epoch is
        # one trained after that, with the depths it is exported with
        assert a.best_epoch > 2 and meta["best_epoch"] == a.best_epoch
        assert all(h["depth"] == kinds for h in sq_meta["history"][1:])
        assert [h["depth"] for h in a.history[1:]] == [kinds] * (p.epochs - 1)
    b = train(p, seed=2, progress=False)
    assert ir_bytes(a.network) == ir_bytes(b.network), f"{name}: seed 2 twice, different IR"
    assert a.history == b.history


def test_sq_single_epoch():
    """One epoch of Smart Quantization: the depths are decided after epoch 1 (freeze epoch
    max(1, round(0.6)) = 1), so no epoch is trained after the decision; training must still
    return a network exported with the depths it reports."""
    r = train(short("digits-sq", epochs=1), seed=0, progress=False)
    net = r.network
    assert [layer.weight_kind for layer in net.layers] == net.meta["sq"]["depth"]
    assert r.agreement == 1.0 and len(r.history) == 1


@pytest.mark.slow
def test_default_preset_reaches_target():
    r = train("digits-bnn", seed=0, progress=False)
    assert r.integer_accuracy >= 0.95, f"integer accuracy {r.integer_accuracy:.4f} < 0.95"
    assert r.agreement >= 0.99, f"float/integer agreement {r.agreement:.4f} < 0.99"
    assert r.seconds < 120, f"training took {r.seconds:.1f} s"


# -- the weight kind in the state dict ---------------------------------------------------------

def _kind_state(name):
    return torch.tensor(list(name.encode("ascii")), dtype=torch.uint8)


def test_state_dict_keeps_the_kind_by_name():
    """A layer's kind is saved by name (``_extra_state``), so an adaptive layer's depth and the
    training loop's best-epoch restore survive a state-dict round trip."""
    from qnnfab.model.layers import QuantMLP
    torch.manual_seed(0)
    a = QuantMLP([6, 5, 3], input_bits=2, weight_kinds="adaptive")
    a.hidden[0].linear.set_kind("ternary")
    state = a.state_dict()
    assert "hidden.0.linear.ternary" not in state
    assert bytes(state["hidden.0.linear._extra_state"].tolist()) == b"ternary"
    assert bytes(state["head.linear._extra_state"].tolist()) == b"binary"
    b = QuantMLP([6, 5, 3], input_bits=2, weight_kinds="adaptive")
    assert [lin.kind for lin in b.quant_linears()] == ["binary", "binary"]
    b.load_state_dict(state)
    assert [lin.kind for lin in b.quant_linears()] == ["ternary", "binary"]
    assert torch.equal(b.hidden[0].linear.weight_values(), a.hidden[0].linear.weight_values())


def test_old_checkpoint_ternary_flag_loads():
    """State dicts written when the kind was a ``ternary`` bool buffer still load (strictly)."""
    from qnnfab.model.layers import QuantMLP
    torch.manual_seed(0)
    a = QuantMLP([6, 5, 3], input_bits=2, weight_kinds=["adaptive", "binary"])
    old = {}
    for key, value in a.state_dict().items():
        if key.endswith("._extra_state"):
            old[key.replace("_extra_state", "ternary")] = torch.tensor(key.startswith("hidden"))
        else:
            old[key] = value
    a.load_state_dict(old)
    assert [lin.kind for lin in a.quant_linears()] == ["ternary", "binary"]
    f = QuantMLP([6, 5, 3], input_bits=2, weight_kinds="float")
    old = {k.replace("_extra_state", "ternary") if k.endswith("_extra_state") else k:
           torch.tensor(False) if k.endswith("_extra_state") else v
           for k, v in f.state_dict().items()}
    f.load_state_dict(old)
    assert [lin.kind for lin in f.quant_linears()] == ["float", "float"]


def test_state_dict_refuses_a_foreign_kind():
    from qnnfab.model.layers import QuantMLP
    f = QuantMLP([4, 3], input_bits=1, weight_kinds="float")
    state = f.state_dict()
    state["head.linear._extra_state"] = _kind_state("ternary")
    with pytest.raises(ValueError, match="weight kind 'ternary' does not fit this float layer"):
        f.load_state_dict(state)
