"""Training: determinism for a seed, presets, metadata, progress, and the accuracy target."""

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


def test_same_seed_same_network():
    threads = torch.get_num_threads()
    rng_state = torch.random.get_rng_state()
    a = train(TINY, seed=3, progress=False)
    assert torch.get_num_threads() == threads, "train must restore the thread count"
    assert torch.equal(torch.random.get_rng_state(), rng_state), "train must keep the global RNG"
    b = train(TINY, seed=3, progress=False)
    same_network(a.network, b.network)
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
    assert meta["train_seconds"] > 0
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


@pytest.mark.slow
def test_default_preset_reaches_target():
    r = train("digits-bnn", seed=0, progress=False)
    assert r.integer_accuracy >= 0.95, f"integer accuracy {r.integer_accuracy:.4f} < 0.95"
    assert r.agreement >= 0.99, f"float/integer agreement {r.agreement:.4f} < 0.99"
    assert r.seconds < 120, f"training took {r.seconds:.1f} s"
