"""Quantization-aware training of a preset, export to the IR, and the integer check.

:func:`train` builds the preset's model, trains it with Adam and a cosine learning-rate decay
(``optimizer``: or SGD, with or without momentum, or a constant rate; latent weights clipped to
``[-1, 1]`` after each step), keeps the epoch with the best validation accuracy, exports it
(:func:`qnnfab.model.export.export`) and runs the integer golden model
(:func:`qnnfab.spec.golden.forward`) on the held-out test split.

Deterministic for a seed: the global torch RNG is forked (and so left as it was), data order
comes from a seeded generator, and torch runs on one thread inside :func:`train` (the previous
thread count is restored).
"""

import copy
import dataclasses
import hashlib
import io
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from qnnfab import ir
from qnnfab.spec import golden

from .conv import QuantCNN
from .data import load_dataset
from .export import export, export_float
from .layers import QuantMLP
from .presets import get_preset, preset_from_dict, preset_to_dict
from .sq import SQController

__all__ = ["TrainResult", "train", "build_model", "input_shape", "predict", "Checkpoint",
           "save_checkpoint", "load_checkpoint", "CHECKPOINT_FORMAT", "OPTIMIZERS", "SCHEDULES",
           "check_optimizer"]

#: What :func:`save_checkpoint` writes in its ``format`` field.
CHECKPOINT_FORMAT = "qnnfab-checkpoint"
CHECKPOINT_VERSION = 1

#: What ``train(optimizer=...)`` takes: name -> momentum of ``torch.optim.SGD`` (None: Adam).
OPTIMIZERS = {"adam": None, "sgd": 0.0, "momentum": 0.9}
#: Learning-rate schedules: the presets' cosine decay (to ``lr * lr_min_factor``) or constant.
SCHEDULES = ("cosine", "constant")


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
    preset : qnnfab.model.presets.Preset
    seed : int
        What :func:`save_checkpoint` records besides the weights.
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
    preset: object = None
    seed: int = None


def input_shape(preset, dataset):
    """``(H, W, C)`` of a cnn preset's input images: the preset's ``input_shape``, else the data
    set's (``Dataset.input_shape``), else a square one-channel image of its features."""
    shape = preset.input_shape
    if shape is None:
        shape = getattr(dataset, "input_shape", None)
    if shape is not None:
        h, w, c = shape
        if h * w * c != dataset.n_features:
            raise ValueError(f"preset {preset.name!r}: input_shape {tuple(shape)} holds "
                             f"{h * w * c} values, the data set has {dataset.n_features} "
                             f"features")
        return (h, w, c)
    side = math.isqrt(dataset.n_features)
    if side * side != dataset.n_features:
        raise ValueError(f"preset {preset.name!r}: {dataset.n_features} input features are not "
                         f"a square image; give the preset an input_shape (H, W, C)")
    return (side, side, 1)


def build_model(preset, dataset):
    """The untrained float model of ``preset`` for ``dataset``."""
    preset = get_preset(preset)
    if preset.outputs is not None and preset.outputs != dataset.n_classes:
        raise ValueError(f"preset {preset.name!r}: the output layer d{preset.outputs} has "
                         f"{preset.outputs} outputs, the data set {dataset.name!r} has "
                         f"{dataset.n_classes} classes (end --arch with d{dataset.n_classes})")
    if preset.model == "cnn":
        if preset.outputs is not None:
            preset.arch.shapes(input_shape(preset, dataset))  # errors name the --arch token
        return QuantCNN(input_shape(preset, dataset), preset.conv, preset.hidden,
                        dataset.n_classes, input_bits=dataset.input_bits,
                        weight_kinds=preset.weights, act_bits=preset.act_bits,
                        dropout=preset.dropout)
    if preset.model != "mlp":
        raise ValueError(f"preset {preset.name!r}: unknown model family {preset.model!r}; "
                         f"known: mlp, cnn")
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


def check_optimizer(optimizer, preset):
    """``train(optimizer=...)`` checked and filled in from ``preset``: None stays None (the
    preset's Adam and cosine decay); a name of :data:`OPTIMIZERS` or a dict with ``name`` and
    optionally ``lr`` (default ``preset.lr``) and ``schedule`` (one of :data:`SCHEDULES`,
    default ``"cosine"``) becomes ``{"name", "lr", "momentum", "schedule"}`` (what
    ``meta["optimizer"]`` records, accepted back: its ``momentum`` must be the name's).
    ValueError naming the bad field."""
    if optimizer is None:
        return None
    spec = {"name": optimizer} if isinstance(optimizer, str) else optimizer
    if not isinstance(spec, dict):
        raise ValueError(f"optimizer must be None, a name or a dict, not {optimizer!r}")
    extra = set(spec) - {"name", "lr", "schedule", "momentum"}
    if extra:
        raise ValueError(f"optimizer: unknown field(s) {', '.join(sorted(map(str, extra)))}; "
                         f"known: name, lr, schedule, momentum")
    name = spec.get("name")
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer name: expected one of {', '.join(OPTIMIZERS)}, "
                         f"not {name!r}")
    if spec.get("momentum", OPTIMIZERS[name]) != OPTIMIZERS[name]:
        raise ValueError(f"optimizer momentum: {name} has momentum {OPTIMIZERS[name]}, "
                         f"not {spec['momentum']!r}")
    lr = spec.get("lr", preset.lr)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf:
        raise ValueError(f"optimizer lr must be a positive number, not {lr!r}")
    schedule = spec.get("schedule", "cosine")
    if schedule not in SCHEDULES:
        raise ValueError(f"optimizer schedule: expected one of {', '.join(SCHEDULES)}, "
                         f"not {schedule!r}")
    return {"name": name, "lr": float(lr), "momentum": OPTIMIZERS[name], "schedule": schedule}


def train(preset="digits-bnn", *, seed=0, progress=True, epochs=None, data=None,
          grad_quant=None, optimizer=None):
    """Train ``preset`` (a name in :data:`qnnfab.model.presets.PRESETS`, or a
    :class:`~qnnfab.model.presets.Preset`) from ``seed``.

    ``epochs`` overrides the preset's epoch count, ``data`` its data set (a name for
    :func:`qnnfab.model.data.load_dataset`, e.g. ``"mnist:DIR"``). ``grad_quant``: None, or
    ``(method, bits)`` or ``(method, bits, targets)`` to quantize the gradients while training
    (:func:`qnnfab.model.gradquant.quantize_gradients`, seeded with ``seed``; targets default
    to both; recorded in ``meta["grad_quant"]``). ``optimizer`` replaces the preset's Adam:
    ``"sgd"``, ``"momentum"`` (SGD, momentum 0.9), ``"adam"`` or a dict with ``name``, ``lr``
    and ``schedule`` (:func:`check_optimizer`; recorded in ``meta["optimizer"]``). Progress
    (one tqdm bar, one step per epoch) goes to stderr unless ``progress`` is false. Returns a
    :class:`TrainResult`.
    """
    from .gradquant import check_grad_quant

    started = time.monotonic()
    p = get_preset(preset)
    n_epochs = _epochs(epochs, p)
    grad_quant = check_grad_quant(grad_quant)
    optimizer = check_optimizer(optimizer, p)
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
                                                         progress=progress,
                                                         grad_quant=grad_quant,
                                                         optimizer=optimizer)
    finally:
        torch.set_num_threads(threads)

    model.eval()
    _, float_pred = predict(model, ds.x_test)
    # No wall time in the file: the same preset, data and seed give a byte-identical .qnn
    # (TrainResult.seconds has the time).
    meta = {"preset": p.name, "seed": seed,
            "data": {"name": ds.name, "split_seed": ds.seed},
            "epochs": n_epochs, "best_epoch": best_epoch, "torch": torch.__version__}
    if sq_record is not None:
        meta["sq"] = sq_record
    if grad_quant is not None:
        meta["grad_quant"] = {"method": grad_quant[0], "bits": grad_quant[1],
                              "targets": list(grad_quant[2])}
    if optimizer is not None:
        meta["optimizer"] = dict(optimizer)
    if all(lin.kind == "float" for lin in model.quant_linears()):
        # Float weights: no integer model yet (``qnnfab quantize`` makes one).
        network = export_float(model, meta=meta, classes=list(ds.classes))
        float_acc = float(np.mean(float_pred == ds.y_test))
        int_acc = agreement = None
        network.meta["accuracy"] = {"float": float_acc, "split": "test",
                                    "n": int(len(ds.y_test))}
    else:
        network = export(model, meta=meta, classes=list(ds.classes))
        int_pred = golden.classify(network, ds.x_test)
        float_acc = float(np.mean(float_pred == ds.y_test))
        int_acc = float(np.mean(int_pred == ds.y_test))
        agreement = float(np.mean(float_pred == int_pred))
        network.meta["accuracy"] = {"float": float_acc, "integer": int_acc,
                                    "agreement": agreement, "split": "test",
                                    "n": int(len(ds.y_test))}
    network.validate()
    return TrainResult(network=network, float_accuracy=float_acc, integer_accuracy=int_acc,
                       agreement=agreement, history=history, model=model, dataset=ds,
                       seconds=time.monotonic() - started, best_epoch=best_epoch, preset=p,
                       seed=seed)


def _fit(p, ds, *, seed, epochs, progress, grad_quant=None, optimizer=None):
    from .gradquant import quantize_gradients

    model = build_model(p, ds)
    controller = SQController(model.quant_linears(), p.sq, epochs) if p.sq is not None else None
    hooks = None if grad_quant is None else \
        quantize_gradients(model, *grad_quant[:2], seed=seed, targets=grad_quant[2])
    try:
        history, best_epoch = _optimize(model, ds, p, model.parameters(), seed=seed,
                                        epochs=epochs, progress=progress,
                                        desc=f"train {p.name}", controller=controller,
                                        optimizer=optimizer)
    finally:
        if hooks is not None:
            hooks.remove()
    sq_record = None
    if controller is not None:
        sq_record = {"depth": [lin.kind for lin in model.quant_linears()],
                     "adaptive": [lin.adaptive for lin in model.quant_linears()],
                     "bits_per_weight": controller.bits_per_weight(),
                     "method": p.sq.method, "decided_at": controller.decided_at,
                     "config": dataclasses.asdict(p.sq), "history": controller.history}
        if p.sq.method == "regularizer" and controller.active:
            # the gates when the depths were read off (they stop there)
            sq_record["gate"] = [None if g is None else round(g, 4)
                                 for g in controller.gates()]
    return model, history, best_epoch, sq_record


def _optimize(model, ds, p, params, *, seed, epochs, progress, desc, lr=None, controller=None,
              constrain=None, holder=None, optimizer=None):
    """Train ``model`` (its ``params``) on ``ds`` for ``epochs`` with preset ``p``'s optimizer
    settings (``lr`` overrides its peak learning rate; ``optimizer``, a
    :func:`check_optimizer` dict, replaces them): Adam, cosine decay, the model's
    ``constrain_()`` (and ``constrain()`` if given) after each step. Loads the best validation
    epoch's weights into ``model`` (eval mode; ``holder``'s state dict, when given, is what is
    kept and restored, e.g. a module holding the model and further trained tensors) and returns
    ``(history, best_epoch)``.
    ``progress``: a bool (a tqdm bar on stderr) or a callable taking each epoch's history
    entry."""
    from qnnfab.progress import iterate

    lr = p.lr if lr is None else lr
    if optimizer is not None:
        lr = optimizer["lr"]
    x = torch.as_tensor(ds.x_train, dtype=torch.float32)
    y = torch.as_tensor(ds.y_train)
    n = len(y)
    steps_per_epoch = math.ceil(n / p.batch_size)
    total = max(1, epochs * steps_per_epoch)
    if optimizer is None or optimizer["name"] == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=p.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=optimizer["momentum"],
                              weight_decay=p.weight_decay)
    constant = optimizer is not None and optimizer["schedule"] == "constant"
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 1.0 if constant else p.lr_min_factor + (1 - p.lr_min_factor)
        * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=p.label_smoothing)
    gen = torch.Generator().manual_seed(seed)

    holder = model if holder is None else holder
    history, best, best_key, best_epoch = [], None, None, 0
    step = 0
    callback = progress if callable(progress) else None
    for epoch, bar in iterate(range(1, epochs + 1), epochs, desc, unit="epoch",
                              enabled=callback is None and bool(progress)):
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
            if constrain is not None:
                constrain()
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
            best_key, best, best_epoch = key, copy.deepcopy(holder.state_dict()), epoch
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", val=f"{val_acc:.3f}")
        if callback is not None:
            callback(dict(history[-1]))
    if best is None:  # the depths were decided at the last epoch: keep that model
        best, best_epoch = copy.deepcopy(holder.state_dict()), epochs
    holder.load_state_dict(best)
    model.eval()
    return history, best_epoch


# -- checkpoints -----------------------------------------------------------------------------------

@dataclass
class Checkpoint:
    """A trained float model as :func:`save_checkpoint` wrote it.

    Attributes
    ----------
    preset : qnnfab.model.presets.Preset
        The preset it was trained from (stored field by field, so unregistered presets load).
    seed : int
    data : str
        The data set's name (:func:`qnnfab.model.data.load_dataset` loads it again).
    split_seed : int
    ir_sha256 : str
        sha256 (hex) of the exported network's file bytes, ``ir.to_bytes(network)``.
    state_dict : dict
        The model's weights (the selected epoch's).
    """
    preset: object
    seed: int
    data: str
    split_seed: int
    ir_sha256: str
    state_dict: dict

    def load_dataset(self, data=None):
        """The data set it was trained on (or ``data``, a name), split as it was."""
        return load_dataset(self.data if data is None else data, seed=self.split_seed)

    def build_model(self, dataset):
        """The float model with the checkpoint's weights, eval mode."""
        from .layers import QuantLinear
        model = build_model(self.preset, dataset)
        for name, module in model.named_modules():
            if isinstance(module, QuantLinear) and f"{name}.code_levels" in self.state_dict:
                for buf in ("code_indices", "code_levels", "code_scale"):
                    setattr(module, buf, self.state_dict[f"{name}.{buf}"].clone())
        model.load_state_dict(self.state_dict)
        return model.eval()

    def matches(self, network):
        """True when ``network``'s file bytes are the ones this checkpoint was saved with."""
        return hashlib.sha256(ir.to_bytes(network)).hexdigest() == self.ir_sha256


def save_checkpoint(path, result):
    """Write the float model of a :class:`TrainResult` to ``path`` (atomically).

    ``torch.save`` of a dict: ``format``, ``version``, ``preset`` (name), ``preset_fields``,
    ``seed``, ``data`` (``{"name", "split_seed"}``), ``ir_sha256`` (of
    ``ir.to_bytes(result.network)``) and ``state_dict``. Returns that sha256 (hex)."""
    if not isinstance(result, TrainResult):
        raise TypeError(f"result must be a TrainResult from train(), not {result!r}")
    if result.model is None or result.preset is None or result.dataset is None \
            or result.seed is None:
        raise ValueError("result: a checkpoint needs the model, preset, seed and data set "
                         "that train() records; this result lacks some")
    digest = hashlib.sha256(ir.to_bytes(result.network)).hexdigest()
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
               "preset": result.preset.name, "preset_fields": preset_to_dict(result.preset),
               "seed": int(result.seed),
               "data": {"name": result.dataset.name, "split_seed": int(result.dataset.seed)},
               "ir_sha256": digest,
               "state_dict": {k: v.detach().cpu().clone()
                              for k, v in result.model.state_dict().items()}}
    buf = io.BytesIO()
    torch.save(payload, buf)
    ir.atomic_write_bytes(path, buf.getvalue())
    return digest


def load_checkpoint(path):
    """The :class:`Checkpoint` in ``path`` (written by :func:`save_checkpoint`); ValueError
    naming what is wrong with a file that is not one."""
    path = os.fspath(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 -- torch raises many kinds for a bad file
        raise ValueError(f"{path}: not a qnnfab checkpoint ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a qnnfab checkpoint (format field "
                         f"{payload.get('format') if isinstance(payload, dict) else None!r})")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {payload.get('version')!r}, this qnnfab "
                         f"reads version {CHECKPOINT_VERSION}")
    try:
        preset = preset_from_dict(payload["preset_fields"])
        return Checkpoint(preset=preset, seed=int(payload["seed"]),
                          data=str(payload["data"]["name"]),
                          split_seed=int(payload["data"]["split_seed"]),
                          ir_sha256=str(payload["ir_sha256"]),
                          state_dict=dict(payload["state_dict"]))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: checkpoint field missing or malformed ({exc})") from None
