"""Kernel clustering of a float-trained CNN, as Matsui et al. do it, then quantization.

"A Study of Kernel Clustering for Reducing Memory Footprint of CNN" clusters the *float* 2D
kernels of a trained network and lets the network use the representatives.
:func:`qnnfab.model.kernel_clustering.cluster_network` clusters kernels that quantization-aware
training already made ternary; this module is the paper's order of things:

1. :func:`train_float_cnn` trains a preset's CNN with float weights (its activations stay
   quantized, as in the preset; a float CNN has no IR of its own, so the torch model is the
   result);
2. :func:`cluster_float_cnn` normalizes each conv layer's float kernels by the layer's ternary
   scale ``c_l`` (the best fit of ``{-c, 0, +c}`` to its weights, so layers of different
   magnitude can share one table), runs k-means (:func:`~qnnfab.model.kernel_clustering.kmeans`,
   or :func:`~qnnfab.model.kernel_clustering.signed_kmeans` with ``sign``) over the flattened
   ``k·k`` kernels, per layer or network-wide, and only then quantizes: the float
   representatives become ternary kernels ``α_t·T`` (``α_t`` the ternary scale fitted to the
   table's values, each entry weighted by its cluster's size), duplicates merge, every kernel
   takes its nearest quantized representative (and best sign), unused entries are dropped;
3. every other weight layer is quantized post-training to ternary (its own fitted scale), and
   each layer's scale folds into the batch-norm after it (``running_mean/c``,
   ``running_var/c²``, ``eps/c²``: the same function of the integer accumulator) or into the
   output layer's ``log_scale``; the result is a ternary :class:`~qnnfab.model.conv.QuantCNN`
   whose clustered convs draw their kernels from
   :class:`~qnnfab.model.kernel_finetune.KernelTable` s, exported to an IR network with a
   :class:`qnnfab.ir.KernelCodebook` per clustered conv. Nothing is trained in this step: its
   accuracy is the accuracy *as clustered*;
4. :func:`finetune_float_clustered` then fine-tunes it exactly as
   :func:`~qnnfab.model.kernel_finetune.finetune_clustered` fine-tunes the integer path
   (assignments fixed, representatives and everything else trained).

``kernels=None`` skips the clustering: every conv kernel is ternarized on its own (the
float network quantized post-training, the reference the clustered rows are compared with).
``bits=k`` quantizes to ``k``-bit k-means codebooks instead of ternary weights (as clustered
only). :func:`cluster_float_unquantized` is the paper's own setting, nothing quantized: the
float model with its kernels replaced by the float representatives (no IR; a reference).
"""

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from qnnfab import ir, numerics
from qnnfab.spec import golden

from .conv import QuantCNN
from .export import export
from .kernel_clustering import _finish_table, _to_codes, kmeans, signed_kmeans
from .kernel_finetune import FINETUNE_LR_FACTOR, ClusteredKernels, KernelTable, \
    finetune_attached

__all__ = ["FloatCNN", "FloatClustering", "FixedKernels", "train_float_cnn", "ternary_scale",
           "cluster_float_cnn", "cluster_float_unquantized", "finetune_float_clustered"]

#: The weight kind the float network is quantized to.
TARGET_KIND = "ternary"


@dataclass
class FloatCNN:
    """A CNN trained with float weights (:func:`train_float_cnn`).

    ``model`` the torch model (eval mode, the best validation epoch), ``dataset``, ``preset``
    (the preset whose shape and optimizer settings were used), ``seed``, ``float_accuracy``
    (test split), ``history``, ``best_epoch``, ``seconds``."""
    model: object
    dataset: object
    preset: object
    seed: int
    float_accuracy: float
    history: list = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0


@dataclass
class FloatClustering:
    """What :func:`cluster_float_cnn` produced.

    ``network`` the exported integer IR (ternary; clustered convs carry a kernel codebook);
    ``model`` the ternary torch model that computes it (clustered convs draw from ``tables``);
    ``attached`` ``[(KernelTable, [convs drawing on it])]``; ``stats`` as
    :func:`~qnnfab.model.kernel_clustering.cluster_network`'s (``mse`` and ``kernel_error``
    in the layers' normalized units: weights divided by ``c_l``); ``test_accuracy`` of the
    golden model on the test split; ``agreement`` of the torch model and the golden model
    there (1.0: the export is exact); ``source`` the :class:`FloatCNN`."""
    network: object
    model: object
    attached: list
    stats: dict
    test_accuracy: float
    agreement: float
    source: object = None


def _check_kernels(kernels):
    if kernels is None:
        return None
    if isinstance(kernels, bool) or not isinstance(kernels, (int, np.integer)) or kernels < 1:
        raise ValueError(f"kernels must be a positive integer or None, not {kernels!r}")
    return int(kernels)


def _build(preset, dataset, weight_kinds):
    from .train import input_shape
    return QuantCNN(input_shape(preset, dataset), preset.conv, preset.hidden,
                    dataset.n_classes, input_bits=dataset.input_bits,
                    weight_kinds=weight_kinds, act_bits=preset.act_bits,
                    dropout=preset.dropout)


def train_float_cnn(preset="digits-cnn", *, seed=0, epochs=None, data=None, progress=False):
    """Train ``preset``'s CNN (its layers, activations and optimizer settings) with float
    weights in every layer. Deterministic for a seed, as :func:`qnnfab.model.train.train`.
    Returns a :class:`FloatCNN`."""
    from .data import load_dataset
    from .presets import get_preset
    from .train import _epochs, _optimize, predict

    started = time.monotonic()
    p = get_preset(preset)
    if p.model != "cnn":
        raise ValueError(f"preset {p.name!r} is a {p.model}, not a CNN")
    n_epochs = _epochs(epochs, p)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
    ds = load_dataset(p.dataset if data is None else data, seed=p.split_seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            model = _build(p, ds, "float")
            history, best_epoch = _optimize(model, ds, p, model.parameters(), seed=int(seed),
                                            epochs=n_epochs, progress=progress,
                                            desc=f"train {p.name} (float weights)")
    finally:
        torch.set_num_threads(threads)
    _, pred = predict(model, ds.x_test)
    return FloatCNN(model=model, dataset=ds, preset=p, seed=int(seed),
                    float_accuracy=float(np.mean(pred == ds.y_test)), history=history,
                    best_epoch=best_epoch, seconds=time.monotonic() - started)


def ternary_scale(values, weights=None, iters=50):
    """The ``α`` of the levels ``{-α, 0, +α}`` (threshold ``α/2``) that fits ``values`` best:
    Lloyd iterations on ``|values|`` (each value weighted by ``weights``, same shape, when
    given), started from ``1.5·mean|v|`` as :func:`qnnfab.model.sq.fit_levels`. Returns a
    float > 0 (1.0 for all-zero values)."""
    a = np.abs(np.asarray(values, dtype=np.float64)).ravel()
    w = np.ones_like(a) if weights is None else \
        np.broadcast_to(np.asarray(weights, dtype=np.float64), np.shape(values)).ravel()
    if not np.any(a > 0):
        return 1.0
    alpha = 1.5 * float((w * a).sum() / w.sum())
    for _ in range(iters):
        nz = a > alpha / 2
        if not nz.any():
            break
        new = float((w[nz] * a[nz]).sum() / w[nz].sum())
        if new == alpha:
            break
        alpha = new
    return alpha


def _ternarize(values, alpha):
    """``T`` in ``{-1, 0, 1}``: the sign where ``|v| > α/2``."""
    v = np.asarray(values, dtype=np.float64)
    return (np.sign(v) * (np.abs(v) > alpha / 2)).astype(np.int64)


@torch.no_grad()
def _rescale_bn(bn, c):
    """The accumulator feeding ``bn`` becomes ``acc / c``: the same output in eval mode."""
    bn.running_mean.div_(c)
    bn.running_var.div_(c * c)
    bn.eps = bn.eps / (c * c)


def _quantized_model(source, preset, dataset):
    """The ternary twin of the float model: same parameters (latent weights divided by
    their largest magnitude, so they lie in [-1, 1] where the straight-through estimator
    passes gradient), ``α`` fitted; returns it and each weight layer's float value of one
    level, ``c = max|w|·α``."""
    model = _build(preset, dataset, TARGET_KIND)
    own = model.state_dict()
    state = {k: (own[k] if k.endswith("_extra_state") else v.clone())
             for k, v in source.state_dict().items()}
    model.load_state_dict(state)
    scales = []
    with torch.no_grad():
        for lin in model.quant_linears():
            top = float(lin.weight.abs().max()) or 1.0
            lin.weight.div_(top)
            lin.fit_alpha_()
            scales.append(top * float(lin.alpha))
    return model.eval(), scales


def cluster_float_cnn(source, kernels, *, per_layer=True, sign=True, seed=0, n_init=4,
                      bits=None, level_bits=8):
    """Cluster the float conv kernels of ``source`` (a :class:`FloatCNN`) into at most
    ``kernels`` representatives per conv layer (``per_layer``) or for the network, then
    quantize; see the module docstring. ``kernels=None``: no clustering (every kernel
    ternarized on its own). ``sign``: kernel = ±representative. ``seed``, ``n_init``: the
    k-means++ initialisation.

    ``bits``: None quantizes to ternary; ``k`` (1..8) to ``k``-bit codebooks instead
    (:func:`_codebook_model`): each table's representatives take ``2**k`` levels found by 1-D
    k-means over the table's values (each value weighted by its cluster's size; with
    ``sign`` symmetric: ``±`` the ``2**(k-1)`` magnitudes k-means finds in ``|values|``), every
    other layer a ``k``-bit k-means codebook of its own weights
    (:func:`qnnfab.model.codebooks.kmeans_codebook`), levels as signed ``level_bits``-bit
    integers times a power-of-two scale (:func:`qnnfab.model.codebooks.to_integer_levels`).
    Such a table is not fine-tuned (:class:`~qnnfab.model.kernel_finetune.KernelTable` holds
    binary and ternary kernels). Returns a :class:`FloatClustering`."""
    if not isinstance(source, FloatCNN):
        raise TypeError(f"source must be a FloatCNN from train_float_cnn, not {source!r}")
    kernels = _check_kernels(kernels)
    if bits is not None:
        return _codebook_model(source, kernels, per_layer=per_layer, sign=sign, seed=seed,
                               n_init=n_init, bits=bits, level_bits=level_bits)
    ds, preset = source.dataset, source.preset
    fmodel = source.model
    model, scales = _quantized_model(fmodel, preset, ds)
    convs = [block.conv for block in model.convs]
    n_conv = len(convs)
    ks = {conv.kernel_size for conv in convs}
    if kernels is not None and not per_layer and len(ks) > 1:
        raise ValueError(f"cluster_float_cnn: one kernel table for the network needs equal "
                         f"kernel sizes, got {sorted(ks)}; use per_layer=True")
    layer_scale = []  # c_l: the float value of one ternary level fitted to the whole layer
    points = []       # the layer's kernels (n, k·k) in units of c_l
    for block in fmodel.convs:
        w = block.conv.weight.detach().numpy().astype(np.float64)
        c = ternary_scale(w)
        layer_scale.append(c)
        points.append(w.reshape(-1, block.conv.kernel_size ** 2) / c)

    bn_scale = list(scales)
    per, attached = [], []
    levels = numerics.WEIGHT_LEVELS[TARGET_KIND]
    code_bits = numerics.weight_code_bits(levels)
    total_sq = 0.0
    if kernels is not None:
        groups = [[i] for i in range(n_conv)] if per_layer else [list(range(n_conv))]
        for group in groups:
            x = np.concatenate([points[i] for i in group])
            k_group = min(kernels, len(x))
            run = (signed_kmeans if sign else kmeans)(x, k_group, seed=seed, n_init=n_init)
            centers = run.centers
            # each representative weighted by its cluster's size
            counts = np.bincount(run.labels, minlength=len(centers)).astype(np.float64)
            keep = counts > 0
            alpha = ternary_scale(centers[keep], counts[keep][:, None])
            quantized = alpha * _ternarize(centers, alpha)
            table_values, index, signs = _finish_table(quantized, x, sign)
            t = np.rint(table_values / alpha).astype(np.int64)
            kk = convs[group[0]].kernel_size
            table = KernelTable(_to_codes(t, levels, kk), TARGET_KIND)
            users, start = [], 0
            for i in group:
                conv = convs[i]
                n = len(points[i])
                idx, sgn = index[start:start + n], signs[start:start + n]
                start += n
                shape = (conv.out_channels, conv.in_channels)
                conv.set_kernel_source(ClusteredKernels(
                    table, idx.reshape(shape), sgn.reshape(shape) if sign else None))
                users.append(conv)
                bn_scale[i] = layer_scale[i] * alpha
                approx = alpha * t[idx] * sgn[:, None]
                sq = float(((points[i] - approx) ** 2).sum())
                total_sq += sq
                per.append(_layer_stats(i, kk, n, len(t) if per_layer else len(np.unique(idx)),
                                        len(t), code_bits, sign, per_layer, sq,
                                        layer_scale[i], alpha))
            attached.append((table, users))
    with torch.no_grad():
        for i, block in enumerate(model.convs):
            _rescale_bn(block.bn, bn_scale[i])
        for j, block in enumerate(model.hidden):
            _rescale_bn(block.bn, bn_scale[n_conv + j])
        model.head.log_scale.add_(float(np.log(bn_scale[-1])))

    stats = None
    if kernels is not None:
        stats = _total_stats(per, [int(t.rep.shape[0]) for t, _ in attached], kernels,
                             per_layer, sign, seed, code_bits, convs[0].kernel_size, total_sq,
                             None)
    quantized = {"method": "ternary (post-training)",
                 "kernels": "float clustering" if kernels is not None else "each on its own"}
    return _finish(source, model, attached, stats, quantized)


def _finish(source, model, attached, stats, quantized):
    """Export ``model``, measure it, wrap it in a :class:`FloatClustering`."""
    from .train import predict
    ds, preset = source.dataset, source.preset
    meta = {"preset": preset.name, "seed": source.seed,
            "data": {"name": ds.name, "split_seed": ds.seed},
            "float_network": {"accuracy": source.float_accuracy, "weights": "float"},
            "quantized": quantized}
    if stats is not None:
        meta["clustering"] = stats
    network = export(model, meta=meta, classes=list(ds.classes))
    _, pred = predict(model, ds.x_test)
    gold = golden.classify(network, ds.x_test)
    acc = float(np.mean(gold == ds.y_test))
    network.meta["accuracy"] = {"float": source.float_accuracy, "integer": acc,
                                "split": "test", "n": int(len(ds.y_test))}
    return FloatClustering(network=network.validate(), model=model, attached=attached,
                           stats=stats, test_accuracy=acc,
                           agreement=float(np.mean(pred == gold)), source=source)


def _layer_stats(i, kk, n, k_used, table_entries, code_bits, sign, per_layer, sq, scale,
                 alpha=None):
    """One conv layer's entry of the clustering statistics."""
    index_bits = (table_entries - 1).bit_length()  # as ir.KernelCodebook.index_bits
    bits_before = n * kk * kk * code_bits
    bits_after = n * (index_bits + int(sign)) + \
        (table_entries * kk * kk * code_bits if per_layer else 0)
    entry = {"layer": i, "name": f"conv{i}", "kernel_size": kk, "kernels": n, "K": k_used,
             "reduction": 1 - k_used / n, "bits_before": bits_before, "bits_after": bits_after,
             "ratio": bits_before / bits_after if bits_after else None,
             "mse": sq / (n * kk * kk), "kernel_error": sq / n, "scale": scale}
    if alpha is not None:
        entry["table_alpha"] = alpha
    return entry


def _total_stats(per, tables, kernels, per_layer, sign, seed, code_bits, kk, total_sq, bits):
    k_total = sum(tables)
    n_total = sum(p["kernels"] for p in per)
    before = sum(p["bits_before"] for p in per)
    after = sum(p["bits_after"] for p in per)
    if not per_layer:
        after += k_total * kk * kk * code_bits
    n_weights = sum(p["kernels"] * p["kernel_size"] ** 2 for p in per)
    return {"kernels_requested": kernels, "per_layer": bool(per_layer), "sign": bool(sign),
            "seed": int(seed), "source": "float", "bits": bits, "layers": per,
            "total": {"kernels": n_total, "K": k_total, "reduction": 1 - k_total / n_total,
                      "bits_before": before, "bits_after": after, "ratio": before / after,
                      "mse": total_sq / n_weights, "kernel_error": total_sq / n_total}}


class FixedKernels:
    """The kernels of one conv layer drawn from a fixed (not trained) codebook table: a callable
    returning the level values ``(C_out, C_in, k, k)`` of ``kernel_codebook.decode(levels)``,
    and :meth:`kernel_codebook` for the export."""

    def __init__(self, kernel_codebook, levels):
        self._kc = kernel_codebook
        codes = kernel_codebook.decode(tuple(int(v) for v in levels))
        self._values = torch.as_tensor(np.asarray(levels)[codes], dtype=torch.float32)

    def __call__(self):
        return self._values

    def kernel_codebook(self):
        return self._kc


def _integer_codebook(float_levels, level_bits):
    """``(int levels, scale)``, ``2**k`` integer levels of the float ones."""
    from .codebooks import to_integer_levels
    return to_integer_levels(np.sort(np.asarray(float_levels, dtype=np.float64)), level_bits)


def _table_levels(values, counts, bits, sign):
    """``2**bits`` float levels for a table's ``values`` (K, d) whose entries stand for
    ``counts`` kernels: weighted 1-D k-means (each entry repeated by its count, rounded up);
    symmetric with ``sign``."""
    from .codebooks import kmeans_codebook
    reps = np.maximum(1, np.rint(counts)).astype(np.int64)
    flat = np.repeat(values, reps, axis=0).ravel()
    if sign:
        if bits == 1:
            m = np.array([np.abs(flat).mean()])
        else:
            m = kmeans_codebook(np.concatenate([np.abs(flat), -np.abs(flat)]), bits).levels
            m = np.abs(m[len(m) // 2:])
        return np.concatenate([-m[::-1], m])
    return kmeans_codebook(flat, bits).levels


def _codebook_model(source, kernels, *, per_layer, sign, seed, n_init, bits, level_bits):
    """:func:`cluster_float_cnn` with ``k``-bit codebooks instead of ternary weights."""
    from .codebooks import assign, check_bits, codebook_from_levels, kmeans_codebook
    bits = check_bits(bits, where="cluster_float_cnn: bits")
    if bits > 8:
        raise ValueError(f"cluster_float_cnn: bits must be 1..8, not {bits}")
    ds, preset = source.dataset, source.preset
    fmodel = source.model
    model = _build(preset, ds, "float")
    model.load_state_dict(fmodel.state_dict())
    model.eval()
    lins = model.quant_linears()
    convs = [block.conv for block in model.convs]
    n_conv = len(convs)
    if kernels is not None and not per_layer and \
            len({conv.kernel_size for conv in convs}) > 1:
        raise ValueError("cluster_float_cnn: one kernel table for the network needs equal "
                         "kernel sizes; use per_layer=True")
    scale = [ternary_scale(lin.weight.detach().numpy()) for lin in lins]
    points = [conv.weight.detach().numpy().astype(np.float64)
              .reshape(-1, conv.kernel_size ** 2) / scale[i] for i, conv in enumerate(convs)]
    clustered, per, tables, total_sq = set(), [], [], 0.0
    if kernels is not None:
        groups = [[i] for i in range(n_conv)] if per_layer else [list(range(n_conv))]
        for group in groups:
            x = np.concatenate([points[i] for i in group])
            run = (signed_kmeans if sign else kmeans)(x, min(kernels, len(x)), seed=seed,
                                                      n_init=n_init)
            counts = np.bincount(run.labels, minlength=len(run.centers)).astype(np.float64)
            keep = counts > 0
            float_levels = _table_levels(run.centers[keep], counts[keep], bits, sign)
            levels, step = _integer_codebook(float_levels, level_bits)
            book = codebook_from_levels(levels * step)
            table_values, index, signs = _finish_table(
                book.levels[assign(run.centers, book)], x, sign)
            kk = convs[group[0]].kernel_size
            codes = assign(table_values, book).reshape(-1, kk, kk)
            tables.append(len(codes))
            code_bits = numerics.weight_code_bits(tuple(int(v) for v in levels))
            start = 0
            for i in group:
                conv, n = convs[i], len(points[i])
                shape = (conv.out_channels, conv.in_channels)
                idx, sgn = index[start:start + n], signs[start:start + n]
                start += n
                kc = ir.KernelCodebook(index=idx.reshape(shape).astype(np.int64),
                                       kernels=codes.astype(np.int64),
                                       sign=sgn.reshape(shape).astype(np.int64) if sign
                                       else None)
                fixed = FixedKernels(kc, levels)
                conv.set_codebook(kc.decode(tuple(int(v) for v in levels))
                                  .reshape(conv.out_channels, -1), levels, step)
                conv.set_kernel_source(fixed)
                approx = table_values[idx] * sgn[:, None]
                sq = float(((points[i] - approx) ** 2).sum())
                total_sq += sq
                clustered.add(i)
                per.append(_layer_stats(i, kk, n, len(codes) if per_layer
                                        else len(np.unique(idx)), len(codes), code_bits,
                                        sign, per_layer, sq, scale[i]))
    for i, lin in enumerate(lins):
        if i in clustered:
            continue
        w = lin.weight.detach().numpy().astype(np.float64) / scale[i]
        book = kmeans_codebook(w, bits)
        levels, step = _integer_codebook(book.levels, level_bits)
        lin.set_codebook(assign(w, codebook_from_levels(levels * step)), levels, step)
    with torch.no_grad():
        for i, block in enumerate([*model.convs, *model.hidden]):
            _rescale_bn(block.bn, scale[i])
        model.head.log_scale.add_(float(np.log(scale[-1])))
    stats = None
    if kernels is not None:
        code_bits = numerics.weight_code_bits(convs[0].levels)
        stats = _total_stats(per, tables, kernels, per_layer, sign, seed, code_bits,
                             convs[0].kernel_size, total_sq, bits)
    quantized = {"method": f"{bits}-bit k-means codebooks (post-training)",
                 "level_bits": int(level_bits),
                 "kernels": "float clustering" if kernels is not None else "each on its own"}
    return _finish(source, model, [], stats, quantized)


def cluster_float_unquantized(source, kernels, *, per_layer=True, sign=True, seed=0,
                              n_init=4):
    """The paper's own setting, no quantization: every conv kernel of ``source`` (a
    :class:`FloatCNN`) replaced by its float representative (times its sign), clustered as
    :func:`cluster_float_cnn` clusters (kernels divided by their layer's scale ``c_l``, k-means
    per layer or shared, representatives scaled back by ``c_l``); every other weight stays
    float. Not a network the hardware runs (no IR): the reference that separates the cost of
    clustering from the cost of quantizing. Returns ``(model, test_accuracy, stats)``, ``stats``
    with ``K`` (representatives in all tables), ``kernels`` and ``reduction``."""
    import copy

    from .train import predict

    if not isinstance(source, FloatCNN):
        raise TypeError(f"source must be a FloatCNN from train_float_cnn, not {source!r}")
    kernels = _check_kernels(kernels)
    if kernels is None:
        raise ValueError("cluster_float_unquantized: kernels must be a positive integer")
    model = copy.deepcopy(source.model).eval()
    convs = [block.conv for block in model.convs]
    if not per_layer and len({conv.kernel_size for conv in convs}) > 1:
        raise ValueError("cluster_float_unquantized: one kernel table for the network needs "
                         "equal kernel sizes; use per_layer=True")
    scale = [ternary_scale(conv.weight.detach().numpy()) for conv in convs]
    points = [conv.weight.detach().numpy().astype(np.float64)
              .reshape(-1, conv.kernel_size ** 2) / c for conv, c in zip(convs, scale)]
    groups = [[i] for i in range(len(convs))] if per_layer else [list(range(len(convs)))]
    k_total = 0
    for group in groups:
        x = np.concatenate([points[i] for i in group])
        run = (signed_kmeans if sign else kmeans)(x, min(kernels, len(x)), seed=seed,
                                                  n_init=n_init)
        k_total += len(np.unique(run.labels))
        approx = run.centers[run.labels] * run.signs[:, None] if sign else \
            run.centers[run.labels]
        start = 0
        with torch.no_grad():
            for i in group:
                n = len(points[i])
                conv = convs[i]
                conv.weight.copy_(torch.as_tensor(approx[start:start + n] * scale[i],
                                                  dtype=torch.float32)
                                  .reshape(conv.weight.shape))
                start += n
    n_total = sum(len(p) for p in points)
    ds = source.dataset
    _, pred = predict(model, ds.x_test)
    return model, float(np.mean(pred == ds.y_test)), \
        {"K": k_total, "kernels": n_total, "reduction": 1 - k_total / n_total,
         "per_layer": bool(per_layer), "sign": bool(sign), "seed": int(seed)}


def finetune_float_clustered(clustering, *, epochs, lr=None, table_lr=None, seed=None,
                             progress=None):
    """Fine-tune the result of :func:`cluster_float_cnn` (a copy of its model; assignments
    fixed): :func:`~qnnfab.model.kernel_finetune.finetune_attached` with the preset's
    optimizer settings at :data:`~qnnfab.model.kernel_finetune.FINETUNE_LR_FACTOR` times its
    peak learning rate. Returns ``(network, info)`` as
    :func:`~qnnfab.model.kernel_finetune.finetune_clustered`."""
    import copy

    from .train import _epochs

    if not isinstance(clustering, FloatClustering):
        raise TypeError(f"clustering must be a FloatClustering, not {clustering!r}")
    if clustering.stats is not None and clustering.stats.get("bits") is not None:
        raise ValueError(f"clustering: {clustering.stats['bits']}-bit codebook tables are not "
                         f"fine-tuned (KernelTable holds binary and ternary kernels)")
    if not clustering.attached:
        raise ValueError("clustering: no conv layer was clustered (kernels=None)")
    src = clustering.source
    p = src.preset
    n_epochs = _epochs(epochs, p)
    lr = p.lr * FINETUNE_LR_FACTOR if lr is None else float(lr)
    # deep-copy the model with its tables (the kernel sources are not submodules)
    model = copy.deepcopy(clustering.model)
    attached = []
    for table, users in clustering.attached:
        new = copy.deepcopy(table)
        convs = []
        for conv in users:
            mine = _find(model, clustering.model, conv)
            old = conv.kernel_source
            mine.set_kernel_source(ClusteredKernels(new, old.index, old.sign))
            convs.append(mine)
        attached.append((new, convs))
    network, info = finetune_attached(
        model, attached, src.dataset, p, clustering.network, epochs=n_epochs, lr=lr,
        table_lr=table_lr, seed=src.seed if seed is None else int(seed), progress=progress)
    if clustering.stats is not None:
        network.meta["clustering"] = clustering.stats
    return network, info


def _find(copied, original, conv):
    """The module of ``copied`` at ``conv``'s place in ``original``."""
    names = {id(m): name for name, m in original.named_modules()}
    return copied.get_submodule(names[id(conv)])
