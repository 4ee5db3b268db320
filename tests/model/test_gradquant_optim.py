"""The study axes of gradient quantization: which gradients are quantized (``targets``) and the
optimizer that applies them (``train(optimizer=...)``), threaded through ``train()`` and
recorded in the exported network's meta."""

import math

import numpy as np
import pytest
import torch

from qnnfab.model import gradquant
from qnnfab.model.gradquant import quantize_gradients
from qnnfab.model.layers import QuantMLP
from qnnfab.model.presets import Preset
from qnnfab.model.train import OPTIMIZERS, check_optimizer, train

TINY = Preset(name="test-gq-optim", hidden=(32, 32), weights="ternary", act_bits=2, epochs=2,
              batch_size=128, lr=1e-2)


def small_model():
    torch.manual_seed(0)
    return QuantMLP([12, 16, 16, 5], input_bits=3, weight_kinds="ternary", act_bits=2)


def backward(model):
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.integers(0, 8, (24, 12)), dtype=torch.float32)
    y = torch.tensor(rng.integers(0, 5, 24))
    model.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), y).backward()


@pytest.mark.parametrize("targets, error, weight", [("error", True, False),
                                                    (("weight",), False, True),
                                                    (("weight", "error"), True, True)])
def test_targets_install_only_their_hooks(targets, error, weight):
    model = small_model()
    with quantize_gradients(model, "stochastic", 3, targets=targets) as handle:
        for i, lin in enumerate(model.quant_linears()):
            assert bool(lin._forward_hooks) == error, f"layer {i}: error hook"
            assert ("weight_values" in lin.__dict__) == weight, f"layer {i}: weight patch"
        backward(model)
        n = len(model.quant_linears())
        assert handle.calls == {t: n for t, on in (("error", error), ("weight", weight)) if on}
        assert handle.targets == tuple(t for t, on in (("error", error), ("weight", weight))
                                       if on)
    assert not any(lin._forward_hooks or "weight_values" in lin.__dict__
                   for lin in model.quant_linears())


def spy_handles(monkeypatch):
    """Record the handle of every quantize_gradients call train() makes."""
    handles, real = [], gradquant.quantize_gradients

    def spy(*args, **kwargs):
        handles.append(real(*args, **kwargs))
        return handles[-1]

    monkeypatch.setattr(gradquant, "quantize_gradients", spy)
    return handles


@pytest.mark.parametrize("target", ["error", "weight"])
def test_train_quantizes_only_the_target(monkeypatch, target):
    handles = spy_handles(monkeypatch)
    r = train(TINY, seed=1, progress=False, epochs=1, grad_quant=("uniform", 4, target))
    assert len(handles) == 1 and handles[0].targets == (target,)
    assert set(handles[0].calls) == {target} and handles[0].calls[target] > 0
    assert not handles[0].active, "train() left the hooks on"
    assert r.network.meta["grad_quant"] == {"method": "uniform", "bits": 4, "targets": [target]}
    assert "optimizer" not in r.network.meta


class Recorder:
    """Subclasses of torch's optimizers that record how they were made."""

    def __init__(self, monkeypatch):
        self.made = []
        for name in ("SGD", "Adam"):
            base = getattr(torch.optim, name)
            made = self.made

            class Spy(base):
                def __init__(self, params, *args, _name=name, **kwargs):
                    made.append((_name, kwargs))
                    super().__init__(params, *args, **kwargs)

            monkeypatch.setattr(torch.optim, name, Spy)


@pytest.mark.parametrize("name, momentum", [("sgd", 0.0), ("momentum", 0.9)])
def test_sgd_override_uses_torch_sgd(monkeypatch, name, momentum):
    rec = Recorder(monkeypatch)
    spec = {"name": name, "lr": 0.25, "schedule": "constant"}
    r = train(TINY, seed=0, progress=False, epochs=2, optimizer=spec,
              grad_quant=("terngrad", None, "weight"))
    assert rec.made == [("SGD", {"lr": 0.25, "momentum": momentum, "weight_decay": 0.0})]
    assert [h["lr"] for h in r.history] == [0.25, 0.25], "constant schedule"
    assert r.network.meta["optimizer"] == {"name": name, "lr": 0.25, "momentum": momentum,
                                           "schedule": "constant"}
    assert r.network.meta["grad_quant"]["targets"] == ["weight"]
    # The same optimizer with the cosine schedule decays.
    c = train(TINY, seed=0, progress=False, epochs=2, optimizer={"name": name, "lr": 0.25})
    assert rec.made[-1][0] == "SGD" and c.history[1]["lr"] < c.history[0]["lr"] <= 0.25
    assert c.network.meta["optimizer"]["schedule"] == "cosine"


def test_default_and_explicit_adam_are_the_presets(monkeypatch):
    rec = Recorder(monkeypatch)
    plain = train(TINY, seed=2, progress=False, epochs=1)
    adam = train(TINY, seed=2, progress=False, epochs=1, optimizer="adam")
    assert [n for n, _ in rec.made] == ["Adam", "Adam"]
    assert "optimizer" not in plain.network.meta
    assert adam.network.meta["optimizer"] == {"name": "adam", "lr": TINY.lr, "momentum": None,
                                              "schedule": "cosine"}
    assert plain.history == adam.history, "optimizer='adam' is not the preset's training"


def test_check_optimizer_fills_in_and_round_trips():
    assert check_optimizer(None, TINY) is None
    spec = check_optimizer("momentum", TINY)
    assert spec == {"name": "momentum", "lr": TINY.lr, "momentum": 0.9, "schedule": "cosine"}
    assert check_optimizer(spec, TINY) == spec            # meta["optimizer"] is accepted back
    assert check_optimizer({"name": "sgd", "lr": 2}, TINY)["lr"] == 2.0
    assert set(OPTIMIZERS) == {"adam", "sgd", "momentum"}


@pytest.mark.parametrize("bad, message", [
    ("rmsprop", "optimizer name: expected one of adam, sgd, momentum, not 'rmsprop'"),
    ({"lr": 0.1}, "optimizer name: expected one of"),
    ({"name": "sgd", "lr": 0}, "optimizer lr must be a positive number, not 0"),
    ({"name": "sgd", "lr": -1.0}, "optimizer lr must be a positive number"),
    ({"name": "sgd", "lr": math.inf}, "optimizer lr must be a positive number"),
    ({"name": "sgd", "lr": True}, "optimizer lr must be a positive number, not True"),
    ({"name": "sgd", "lr": "0.1"}, "optimizer lr must be a positive number"),
    ({"name": "sgd", "schedule": "step"}, "optimizer schedule: expected one of cosine, "
                                          "constant, not 'step'"),
    ({"name": "sgd", "beta": 0.5}, r"optimizer: unknown field\(s\) beta"),
    ({"name": "sgd", "momentum": 0.9}, "optimizer momentum: sgd has momentum 0.0"),
    (3, "optimizer must be None, a name or a dict, not 3"),
])
def test_bad_optimizer(bad, message):
    with pytest.raises(ValueError, match=message):
        check_optimizer(bad, TINY)
    with pytest.raises(ValueError, match=message):        # before any training
        train(TINY, progress=False, optimizer=bad, data="no-such-data-set")


def test_bad_targets_name_the_field():
    with pytest.raises(ValueError, match="targets: expected some of error, weight, got 'bias'"):
        train(TINY, progress=False, grad_quant=("uniform", 4, "bias"), data="no-such-data-set")
    with pytest.raises(ValueError, match="targets: expected some of error, weight"):
        quantize_gradients(small_model(), "uniform", 4, targets=())
    with pytest.raises(ValueError, match="targets: expected some of error, weight"):
        quantize_gradients(small_model(), "uniform", 4, targets=("error", "error"))
