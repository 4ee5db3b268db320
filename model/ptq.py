"""Post-training quantization: a float network's weights become per-layer codebooks.

:func:`quantize` takes a float network (``qnnfab train --preset digits-mlp``, layers of kind
``float_dense``), rebuilds its float model, and gives every layer a codebook of ``2**bits``
levels found by one of :data:`METHODS`:

* ``ga`` — variable-size bins whose boundaries a genetic algorithm optimizes
  (:func:`qnnfab.model.ga.ga_search`), levels at the bin centroids; fitness = accuracy of the
  quantized network on the *validation* split (never the test split);
* ``kmeans`` (Lloyd), ``fixed`` (fixed point: a power-of-two step), ``uniform`` (the same grid
  with the best real step), ``minifloat``, ``pow2`` (sign and power-of-two magnitude) —
  :mod:`qnnfab.model.codebooks`, no search.

Each layer's levels become signed integers of at most ``level_bits`` bits times one shared
power-of-two scale (:func:`qnnfab.model.codebooks.to_integer_levels`), so the hardware
multiplies small integers; the scale, like the activation steps, folds into the integer
thresholds at export (:func:`qnnfab.model.export.export`). The quantized float model and the
exported integer network agree exactly (the export is the same bisection as for training
presets), so the fitness is computed with the quantized torch model on the validation split —
the integer model's accuracy, without exporting every candidate — and the result is checked
with the golden model on the test split.
"""

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from qnnfab import ir, numerics
from qnnfab.spec import golden

from . import codebooks
from .data import load_dataset
from .export import export
from .layers import QuantMLP

__all__ = ["METHODS", "PTQResult", "model_from_float", "apply_codebooks", "quantize",
           "fitness_chunk", "DEFAULT_LEVEL_BITS"]

#: Quantization methods, the name ``qnnfab quantize --method`` takes.
METHODS = ("ga", "kmeans", "fixed", "uniform", "minifloat", "pow2")

#: Bits of each integer codebook level (signed).
DEFAULT_LEVEL_BITS = 8

#: Weight of the validation cross-entropy in the GA fitness: a tie-breaker, kept below the
#: accuracy step of one validation image (``fitness = acc - TIE_WEIGHT · min(CE, 1)``).
TIE_WEIGHT = 0.002


@dataclass
class PTQResult:
    """What :func:`quantize` produced.

    ``network`` the integer IR; ``val_accuracy`` and ``test_accuracy`` of the integer model
    (``test_accuracy`` from the golden model); ``agreement`` of the quantized float model and
    the golden model on the test split; ``history`` the GA's per-generation fitness (empty for
    the other methods); ``seconds`` wall time.
    """
    network: object
    val_accuracy: float
    test_accuracy: float
    agreement: float
    history: list = field(default_factory=list)
    seconds: float = 0.0


def model_from_float(network):
    """The float :class:`~qnnfab.model.layers.QuantMLP` (eval mode) of a float IR network."""
    if not isinstance(network, ir.Network):
        raise TypeError(f"network must be a qnnfab.ir.Network, not {network!r}")
    if not all(isinstance(layer, ir.FloatDenseLayer) for layer in network.layers):
        raise ValueError("quantize needs a float network (from a float preset such as "
                         "digits-mlp: `qnnfab train --preset digits-mlp --out FLOAT.qnn`); "
                         "this one's weights are already quantized")
    layers = network.layers
    features = [network.input_features] + [layer.out_features for layer in layers]
    model = QuantMLP(features, input_bits=network.input_bits, weight_kinds="float",
                     act_bits=[layer.act_bits for layer in layers[:-1]])
    with torch.no_grad():
        for block, layer in zip(model.hidden, layers[:-1]):
            block.linear.weight.copy_(torch.from_numpy(layer.weights))
            block.bn.running_mean.copy_(torch.from_numpy(layer.bn_mean))
            block.bn.running_var.copy_(torch.from_numpy(layer.bn_var))
            block.bn.weight.copy_(torch.from_numpy(layer.bn_weight))
            block.bn.bias.copy_(torch.from_numpy(layer.bn_bias))
            block.bn.eps = layer.bn_eps
            if layer.act_bits > 1:
                block.clip.fill_(layer.clip)
        model.head.linear.weight.copy_(torch.from_numpy(layers[-1].weights))
        model.head.log_scale.fill_(float(network.meta.get("output_log_scale", 0.0)))
    return model.eval()


def float_weights(model):
    """The float weights of every layer, numpy float64."""
    return [lin.weight.detach().numpy().astype(np.float64) for lin in model.quant_linears()]


def apply_codebooks(model, books, *, level_bits=DEFAULT_LEVEL_BITS):
    """Quantize every layer of ``model`` (float weights) with its :class:`Codebook`."""
    for lin, w, book in zip(model.quant_linears(), float_weights(model), books):
        levels, scale = codebooks.to_integer_levels(book.levels, level_bits)
        lin.set_codebook(codebooks.assign(w, book), levels, scale)
    return model


@torch.no_grad()
def _scores(model, x, y):
    """``(accuracy, cross-entropy)`` of ``model`` on tensors ``x``, ``y``."""
    logits = model(x)
    acc = float((logits.argmax(1) == y).double().mean())
    return acc, float(nn.functional.cross_entropy(logits, y))


def _fitness(model, x_val, y_val, individuals, level_bits):
    """The GA fitness of each individual (per-layer codebooks) on the validation split:
    ``accuracy - TIE_WEIGHT · min(CE, 1)`` of ``model`` quantized with it."""
    out = np.empty(len(individuals))
    for k, books in enumerate(individuals):
        apply_codebooks(model, books, level_bits=level_bits)
        acc, ce = _scores(model, x_val, y_val)
        out[k] = acc - TIE_WEIGHT * min(ce, 1.0)
    return out


def fitness_chunk(shared, individuals):
    """One executor job of the GA (:func:`quantize` with ``workers``/``scheduler``): the
    fitness of ``individuals``; ``shared`` is ``(float network, x_val, y_val, level_bits)``.
    The worker process keeps one torch thread (as :func:`quantize` does around the serial
    search), so every executor sums in the same order and scores the same."""
    network, x_val, y_val, level_bits = shared
    torch.set_num_threads(1)
    model = model_from_float(network)
    return _fitness(model, torch.as_tensor(x_val, dtype=torch.float32), torch.as_tensor(y_val),
                    individuals, level_bits).tolist()


def _ga_executor(workers, scheduler, executor):
    """``(executor or None, owned)``: where the GA scores its population."""
    if executor is not None:
        return executor, False
    if scheduler is None and workers in (None, 0, 1):
        return None, False
    from qnnfab.sweep_executor import make_executor
    return make_executor(workers=workers, scheduler=scheduler), True


def quantize(network, method="ga", bits=3, *, seed=0, level_bits=DEFAULT_LEVEL_BITS,
             population=24, generations=30, progress=True, workers=None, scheduler=None,
             executor=None):
    """Quantize the weights of float ``network`` with ``method`` to ``bits``-bit codebooks.

    ``workers`` / ``scheduler`` (``qnnfab quantize --workers N`` / ``--scheduler ADDRESS``):
    the GA scores each generation's population on N local processes or on a Dask cluster
    (:mod:`qnnfab.sweep_executor`), in slices, one per worker; None (or 0, 1 workers): in
    this process. ``executor``: an :class:`~qnnfab.sweep_executor.Executor` to use instead
    (not closed here). The result is the same on every executor for a seed.

    Returns a :class:`PTQResult`; its network is validated, with ``meta["quantized"]``
    recording the method, bits, level bits, seed, validation accuracy and (GA) the fitness
    history. Deterministic for a seed.
    """
    started = time.monotonic()
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or \
            not 1 <= bits <= ir.MAX_CODEBOOK_BITS:
        raise ValueError(f"bits must be 1..{ir.MAX_CODEBOOK_BITS}, not {bits!r}")
    if isinstance(level_bits, bool) or not isinstance(level_bits, (int, np.integer)) or \
            not 2 <= level_bits <= ir.MAX_LEVEL_BITS:
        raise ValueError(f"level bits must be 2..{ir.MAX_LEVEL_BITS}, not {level_bits!r}")
    if executor is not None and (workers is not None or scheduler is not None):
        raise ValueError("quantize: give executor, or workers/scheduler, not both")
    model = model_from_float(network)
    data = network.meta.get("data") or {}
    if not data.get("name"):
        raise ValueError("the float network records no data set (meta.data): the validation "
                         "split the GA needs is unknown")
    ds = load_dataset(data["name"], seed=data.get("split_seed", 0))
    x_val = torch.as_tensor(ds.x_val, dtype=torch.float32)
    y_val = torch.as_tensor(ds.y_val)
    weights = float_weights(model)
    history = []

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if method == "ga":
            from .ga import ga_search

            ex, owned = _ga_executor(workers, scheduler, executor)
            if ex is None or ex.workers < 2:
                def fitness(individuals):
                    return _fitness(model, x_val, y_val, individuals, level_bits)
            else:
                shared = (network, np.asarray(ds.x_val), np.asarray(ds.y_val), level_bits)

                def fitness(individuals):
                    return np.asarray(ex.map_chunks(fitness_chunk, individuals,
                                                    shared=shared))

            bar = _progress_bar(progress, generations)
            try:
                result = ga_search(weights, bits, fitness, seed=seed, population=population,
                                   generations=generations,
                                   progress=None if bar is None else bar.update)
            finally:
                if bar is not None:
                    bar.close()
                if owned:
                    ex.close()
            books = result.best
            history = [dict(h) for h in result.history]
        else:
            fn = codebooks.METHODS[method]
            books = [fn(w, bits) for w in weights]
        apply_codebooks(model, books, level_bits=level_bits)
        _check_exact(model, network)
        val_acc, _ = _scores(model, x_val, y_val)
        float_pred = model(torch.as_tensor(ds.x_test, dtype=torch.float32)).argmax(1).numpy()
    finally:
        torch.set_num_threads(threads)

    meta = {k: v for k, v in network.meta.items() if k not in ("accuracy", "output_log_scale")}
    meta["float_network"] = {"accuracy": network.meta.get("accuracy"),
                             "preset": network.meta.get("preset")}
    meta["quantized"] = {"method": method, "bits": int(bits), "level_bits": int(level_bits),
                         "seed": int(seed), "val_accuracy": val_acc,
                         "seconds": round(time.monotonic() - started, 3)}
    if history:
        meta["quantized"]["history"] = history
        meta["quantized"]["ga"] = {"population": int(population),
                                   "generations": int(generations)}
    qnet = export(model, meta=meta, classes=list(network.classes))
    int_pred = golden.classify(qnet, ds.x_test)
    test_acc = float(np.mean(int_pred == ds.y_test))
    agreement = float(np.mean(int_pred == float_pred))
    qnet.meta["accuracy"] = {"float": float(np.mean(float_pred == ds.y_test)),
                             "integer": test_acc, "agreement": agreement, "split": "test",
                             "n": int(len(ds.y_test))}
    qnet.validate()
    return PTQResult(network=qnet, val_accuracy=val_acc, test_accuracy=test_acc,
                     agreement=agreement, history=history,
                     seconds=time.monotonic() - started)


def _check_exact(model, network):
    """The float model sums integer products in float32: exact only below ``2**24``."""
    in_bits = network.input_bits
    for i, (lin, layer) in enumerate(zip(model.quant_linears(), network.layers)):
        bound = numerics.acc_bound(lin.in_features, in_bits, lin.levels)
        if bound >= 1 << 24:
            raise ValueError(f"layers[{i}]: accumulators reach {bound:,}, beyond float32's exact "
                             f"integers (2**24): use fewer --level-bits")
        in_bits = layer.act_bits


class _Bar:
    def __init__(self, generations):
        from qnnfab.progress import progress_bar
        self._bar = progress_bar(generations, "GA", unit="gen")

    def update(self, generation, best, mean):
        self._bar.set_postfix(best=f"{best:.4f}", mean=f"{mean:.4f}")
        self._bar.update(1)

    def close(self):
        self._bar.close()


def _progress_bar(progress, generations):
    return _Bar(generations) if progress else None

