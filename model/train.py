"""Quantization-aware training of a preset, export to the IR, and the integer check.

:func:`train` builds the preset's model, trains it with Adam and a cosine learning-rate decay
(latent weights clipped to ``[-1, 1]`` after each step), keeps the epoch with the best
validation accuracy, exports it (:func:`qnnfab.model.export.export`) and runs the integer golden
model (:func:`qnnfab.model.golden.forward`) on the held-out test split.

Deterministic for a seed: the global torch RNG is forked (and so left as it was), data order
comes from a seeded generator, and torch runs on one thread inside :func:`train` (the previous
thread count is restored).
"""

import copy
import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from . import golden
from .data import load_dataset
from .export import export, export_float
from .layers import QuantMLP
from .presets import get_preset
from .sq import SQController

__all__ = ["TrainResult", "train", "build_model", "predict"]


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes
    ----------
    network : qnnfab.ir.Network
        The exported, validated network (``meta`` records preset, seed, data, accuracies, time).
    float_accuracy, integer_accuracy : float
        Test-split accuracy of the float model (eval mode) and of the integer golden model
        (None for a float-weight preset, which exports a float network to quantize later).
    agreement : float
        Fraction of test images where the float and the integer predictions are the same
        (None for a float-weight preset).
    history : list of dict
        Per epoch: ``epoch``, ``lr``, ``loss``, ``train_accuracy``, ``val_accuracy``.
    model : torch.nn.Module
        The float model (the selected epoch's weights, eval mode).
    dataset : qnnfab.model.data.Dataset
    seconds : float
        Wall time of the whole call (training, export, integer check).
    best_epoch : int
    """
    network: object
    float_accuracy: float
    integer_accuracy: float
    agreement: float
    history: list = field(default_factory=list)
    model: object = None
    dataset: object = None
    seconds: float = 0.0
    best_epoch: int = 0


def build_model(preset, dataset):
    """The untrained float model of ``preset`` for ``dataset``."""
    if preset.model != "mlp":
        raise ValueError(f"preset {preset.name!r}: unknown model family {preset.model!r}; "
                         f"known: mlp")
    return QuantMLP([dataset.n_features, *preset.hidden, dataset.n_classes],
                    input_bits=dataset.input_bits, weight_kinds=preset.weights,
                    act_bits=preset.act_bits, dropout=preset.dropout)


@torch.no_grad()
def predict(model, x):
    """``(logits, classes)`` of ``model`` in eval mode on integer codes ``x`` (numpy or tensor)."""
    was_training = model.training
    model.eval()
    try:
        logits = model(torch.as_tensor(np.asarray(x), dtype=torch.float32))
    finally:
        model.train(was_training)
    return logits, logits.argmax(dim=1).numpy()


def _epochs(value, preset):
    if value is None:
        return preset.epochs
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"epochs must be a positive integer, not {value!r}")
    return int(value)


def train(preset="digits-bnn", *, seed=0, progress=True, epochs=None, data=None):
    """Train ``preset`` (a name in :data:`qnnfab.model.presets.PRESETS`, or a
    :class:`~qnnfab.model.presets.Preset`) from ``seed``.

    ``epochs`` overrides the preset's epoch count, ``data`` its data set (a name for
    :func:`qnnfab.model.data.load_dataset`, e.g. ``"mnist:DIR"``). Progress (one tqdm bar, one
    step per epoch) goes to stderr unless ``progress`` is false. Returns a :class:`TrainResult`.
    """
    started = time.monotonic()
    p = get_preset(preset)
    n_epochs = _epochs(epochs, p)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
    seed = int(seed)
    ds = load_dataset(p.dataset if data is None else data, seed=p.split_seed)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model, history, best_epoch, sq_record = _fit(p, ds, seed=seed, epochs=n_epochs,
                                                         progress=progress)
    finally:
        torch.set_num_threads(threads)

    model.eval()
    _, float_pred = predict(model, ds.x_test)
    train_seconds = time.monotonic() - started
    meta = {"preset": p.name, "seed": seed,
            "data": {"name": ds.name, "split_seed": ds.seed},
            "epochs": n_epochs, "best_epoch": best_epoch,
            "train_seconds": round(train_seconds, 3), "torch": torch.__version__}
    if sq_record is not None:
        meta["sq"] = sq_record
    if all(lin.kind == "float" for lin in model.quant_linears()):
        # Float weights: no integer model yet (``qnnfab quantize`` makes one).
        network = export_float(model, meta=meta, classes=list(ds.classes))
        float_acc = float(np.mean(float_pred == ds.y_test))
        int_acc = agreement = None
        network.meta["accuracy"] = {"float": float_acc, "split": "test",
                                    "n": int(len(ds.y_test))}
    else:
        network = export(model, meta=meta, classes=list(ds.classes))
        int_pred = golden.forward(network, ds.x_test).classes
        float_acc = float(np.mean(float_pred == ds.y_test))
        int_acc = float(np.mean(int_pred == ds.y_test))
        agreement = float(np.mean(float_pred == int_pred))
        network.meta["accuracy"] = {"float": float_acc, "integer": int_acc,
                                    "agreement": agreement, "split": "test",
                                    "n": int(len(ds.y_test))}
    network.validate()
    return TrainResult(network=network, float_accuracy=float_acc, integer_accuracy=int_acc,
                       agreement=agreement, history=history, model=model, dataset=ds,
                       seconds=time.monotonic() - started, best_epoch=best_epoch)


def _fit(p, ds, *, seed, epochs, progress):
    from tqdm import tqdm

    model = build_model(p, ds)
    controller = SQController(model.quant_linears(), p.sq, epochs) if p.sq is not None else None
    x = torch.as_tensor(ds.x_train, dtype=torch.float32)
    y = torch.as_tensor(ds.y_train)
    n = len(y)
    steps_per_epoch = math.ceil(n / p.batch_size)
    total = max(1, epochs * steps_per_epoch)
    opt = torch.optim.Adam(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: p.lr_min_factor + (1 - p.lr_min_factor)
        * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=p.label_smoothing)
    gen = torch.Generator().manual_seed(seed)

    history, best, best_key, best_epoch = [], None, None, 0
    step = 0
    bar = tqdm(range(1, epochs + 1), desc=f"train {p.name}", unit="epoch", file=sys.stderr,
               disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        order = torch.randperm(n, generator=gen)
        loss_sum, correct, seen = 0.0, 0, 0
        for start in range(0, n, p.batch_size):
            idx = order[start:start + p.batch_size]
            if len(idx) < 2:  # batch-norm needs two samples
                continue
            logits = model(x[idx])
            loss = loss_fn(logits, y[idx])
            objective = loss if controller is None else \
                loss + controller.regularizer(step, total)
            opt.zero_grad(set_to_none=True)
            objective.backward()
            opt.step()
            sched.step()
            step += 1
            model.constrain_()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y[idx]).sum())
            seen += len(idx)
        val_logits, val_pred = predict(model, ds.x_val)
        val_acc = float(np.mean(val_pred == ds.y_val))
        val_loss = float(loss_fn(val_logits, torch.as_tensor(ds.y_val)))
        history.append({"epoch": epoch, "lr": opt.param_groups[0]["lr"],
                        "loss": loss_sum / max(1, seen), "train_accuracy": correct / max(1, seen),
                        "val_accuracy": val_acc, "val_loss": val_loss})
        # With adaptive layers, only epochs trained after the depths were decided count.
        candidate = controller is None or controller.settled
        if controller is not None:
            controller.end_epoch(epoch)
            history[-1]["depth"] = controller.history[-1]["depth"]
        key = (val_acc, -val_loss)
        if candidate and (best_key is None or key >= best_key):
            best_key, best, best_epoch = key, copy.deepcopy(model.state_dict()), epoch
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", val=f"{val_acc:.3f}")
    bar.close()
    if best is None:  # the depths were decided at the last epoch: keep that model
        best, best_epoch = copy.deepcopy(model.state_dict()), epochs
    model.load_state_dict(best)
    model.eval()
    sq_record = None
    if controller is not None:
        sq_record = {"depth": [lin.kind for lin in model.quant_linears()],
                     "adaptive": [lin.adaptive for lin in model.quant_linears()],
                     "bits_per_weight": controller.bits_per_weight(),
                     "config": dataclasses.asdict(p.sq), "history": controller.history}
    return model, history, best_epoch, sq_record
