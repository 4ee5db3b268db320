"""Fine-tuning of a CNN whose conv kernels were clustered into a table of representatives.

The clustering (elsewhere) gives each conv layer an ``ir.KernelCodebook``: kernel ``(o, c)`` is
``sign[o, c] · kernels[index[o, c]]``. :func:`finetune_clustered` rebuilds the trained torch
model from its checkpoint and trains it again with those assignments fixed:

* each table of representatives becomes a trainable latent tensor ``rep`` ``(K, k, k)`` in
  *normalized units* (the layer's ``α`` is 1), initialised from the table's codes (the level
  values ``±1`` / ``0``), so that a table shared by several layers (a network-wide codebook)
  stays one tensor;
* a clustered conv's kernels are ``α_l · sign · Q(rep[index])`` with ``Q`` the layer kind's
  quantizer at unit scale (ternary: ``±1`` where ``|r| > 0.5``, else 0; binary: ``sign``,
  ``sign(0) = +1``) and its straight-through gradient. As in
  :class:`~qnnfab.model.layers.QuantLinear`, the forward pass uses the integer levels and the
  batch-norm after the layer absorbs ``α_l``, so the exported accumulators stay integers;
* everything else trains too (batch-norm, activation clips, the dense layers, any conv layer
  without a kernel codebook), with the preset's optimizer settings at a lower peak learning
  rate (:data:`FINETUNE_LR_FACTOR`); ``rep`` learns at that rate divided by the mean ``α`` of
  the layers sharing it (the latent weights' step, in normalized units) and is clipped to
  ``[-1, 1]`` after each step, where its gradient passes;
* the best validation epoch is exported with its kernel codebooks: ``kernels`` are the
  fine-tuned representatives' codes (one array for a shared table), ``index`` and ``sign`` as
  given; batch-norm and activation fold into new thresholds as in
  :func:`qnnfab.model.export.export`.

Layers whose kernel tables are the same array, or equal arrays of the same weight kind (a
table shared in a file is stored once per layer), share one latent table.
"""

import time

import numpy as np
import torch
from torch import nn

from qnnfab import ir, numerics
from qnnfab.spec import golden

from .conv import QuantCNN
from .export import export
from .quantizers import binarize_weight, ternarize_weight, weight_codes

__all__ = ["KernelTable", "ClusteredKernels", "finetune_clustered", "finetune_attached",
           "FINETUNE_LR_FACTOR"]

#: Peak learning rate of fine-tuning, as a fraction of the preset's. Measured on digits-cnn
#: (seeds 0-2, 10 epochs, `cluster_network` with signs): 0.3 was better on validation for
#: per-layer tables (K=16: 97.96 % vs 97.22 % at 1.0), 1.0 for a network-wide K=32 table
#: (96.67 % vs 92.22 %); 0.3 is kept, ``lr`` overrides it.
FINETUNE_LR_FACTOR = 0.3


class KernelTable(nn.Module):
    """Trainable representative kernels in normalized units.

    Parameters
    ----------
    codes : int array (K, k, k)
        Weight codes of ``weight_kind`` (the initial representatives).
    weight_kind : str
        ``"binary"`` or ``"ternary"``.

    Members
    -------
    rep : Parameter (K, k, k)
        The latent representatives, initialised to the codes' level values.
    """

    def __init__(self, codes, weight_kind):
        super().__init__()
        if weight_kind not in ("binary", "ternary"):
            raise ValueError(f"kernel tables are binary or ternary, not {weight_kind!r}")
        self.weight_kind = weight_kind
        levels = torch.tensor(numerics.WEIGHT_LEVELS[weight_kind], dtype=torch.float32)
        codes = torch.as_tensor(np.asarray(codes, dtype=np.int64))
        self.rep = nn.Parameter(levels[codes].clone())

    def values(self):
        """``Q(rep)``: the ``±1`` / ``0`` kernels (straight-through gradient)."""
        if self.weight_kind == "ternary":
            return ternarize_weight(self.rep, 0.5)
        return binarize_weight(self.rep)

    def codes(self):
        """The IR weight codes (K, k, k) of :meth:`values`, int64 numpy."""
        with torch.no_grad():
            return weight_codes(self.values(), self.weight_kind)

    @torch.no_grad()
    def clip_(self):
        self.rep.clamp_(-1, 1)


class ClusteredKernels:
    """The kernels of one conv layer drawn from a :class:`KernelTable`: a callable returning
    ``sign · table.values()[index]`` ``(C_out, C_in, k, k)`` (for
    :meth:`~qnnfab.model.conv.QuantConv2d.set_kernel_source`)."""

    def __init__(self, table, index, sign=None):
        self.table = table
        self.index = np.asarray(index, dtype=np.int64)
        self.sign = None if sign is None else np.asarray(sign, dtype=np.int64)
        self._index = torch.as_tensor(self.index)
        self._sign = None if sign is None else \
            torch.as_tensor(self.sign, dtype=torch.float32)[:, :, None, None]

    def __call__(self):
        values = self.table.values()[self._index]
        return values if self._sign is None else values * self._sign

    def kernel_codebook(self):
        """This layer's ``ir.KernelCodebook`` with the table's current codes."""
        return ir.KernelCodebook(index=self.index.copy(), kernels=self.table.codes(),
                                 sign=None if self.sign is None else self.sign.copy())


def _conv_pairs(model, network):
    """``[(block, ir.ConvLayer)]``, checked to describe the same layers."""
    convs = [layer for layer in network.layers if isinstance(layer, ir.ConvLayer)]
    if len(convs) != len(model.convs):
        raise ValueError(f"clustered: {len(convs)} conv layers, the checkpoint's model has "
                         f"{len(model.convs)}")
    for i, (block, layer) in enumerate(zip(model.convs, convs)):
        conv = block.conv
        want = (conv.out_channels, conv.in_channels, conv.kernel_size, conv.padding, conv.kind)
        got = (layer.out_channels, layer.in_channels, layer.kernel_size, layer.padding,
               layer.weight_kind)
        if want != got:
            raise ValueError(f"clustered: conv layer {i} is (out, in, k, padding, kind) {got}, "
                             f"the checkpoint's is {want}")
    return list(zip(model.convs, convs))


def _check_origin(model, clustered):
    """ValueError unless ``clustered`` is the checkpoint model's network up to kernel
    codebooks (and thresholds, which clustering may leave stale): same layers, same weights
    outside the clustered convs."""
    original = export(model, meta={})
    if len(original.layers) != len(clustered.layers):
        raise ValueError(f"clustered: {len(clustered.layers)} layers, the checkpoint's network "
                         f"has {len(original.layers)}")
    for i, (a, b) in enumerate(zip(original.layers, clustered.layers)):
        if type(a) is not type(b):
            raise ValueError(f"clustered: layers[{i}] is {b.kind}, the checkpoint's is {a.kind}")
        if isinstance(b, ir.PoolLayer) or getattr(b, "kernel_codebook", None) is not None:
            continue
        if a.weights.shape != b.weights.shape or not np.array_equal(a.weights, b.weights):
            raise ValueError(f"clustered: layers[{i}] ({b.kind}) weights differ from the "
                             f"checkpoint's; was the network clustered from this checkpoint?")


def _attach_tables(pairs):
    """Give every clustered conv a :class:`ClusteredKernels` source; returns
    ``[(table, [convs drawing on it])]``."""
    tables = []  # (kernels array, table)
    users = {}  # id(table) -> the convs drawing on it
    for i, (block, layer) in enumerate(pairs):
        kc = layer.kernel_codebook
        if kc is None:
            continue
        if layer.weight_kind not in ("binary", "ternary"):
            raise ValueError(f"clustered: conv layer {i} has {layer.weight_kind} weights; "
                             f"kernel fine-tuning handles binary and ternary layers")
        table = None
        for kernels, t in tables:
            if kernels is kc.kernels or (kernels.shape == kc.kernels.shape
                                         and np.array_equal(kernels, kc.kernels)):
                if t.weight_kind != layer.weight_kind:
                    raise ValueError(f"clustered: conv layer {i} ({layer.weight_kind}) shares "
                                     f"a kernel table with a {t.weight_kind} layer")
                table = t
                break
        if table is None:
            table = KernelTable(kc.kernels, layer.weight_kind)
            tables.append((kc.kernels, table))
        block.conv.set_kernel_source(ClusteredKernels(table, kc.index, kc.sign))
        users.setdefault(id(table), []).append(block.conv)
    return [(t, users[id(t)]) for _, t in tables]


class _Holder(nn.Module):
    """The model and the tables in one state dict (what the best epoch keeps)."""

    def __init__(self, model, tables):
        super().__init__()
        self.model = model
        self.tables = nn.ModuleList(tables)


def _accuracy(network, x, y):
    return float(np.mean(golden.classify(network, x) == y))


def finetune_clustered(checkpoint, clustered, *, epochs, data=None, progress=None, lr=None,
                       table_lr=None, seed=None):
    """Fine-tune a network whose conv layers carry kernel codebooks; see the module docstring.

    Parameters
    ----------
    checkpoint : path or :class:`qnnfab.model.train.Checkpoint`
        The trained CNN (:func:`qnnfab.model.train.save_checkpoint`).
    clustered : ir.Network
        That network with ``kernel_codebook`` on some or all conv layers (assignments fixed).
    epochs : int
    data : str or None
        A data set name instead of the checkpoint's.
    progress : bool, callable or None
        A tqdm bar on stderr (true), a function taking each epoch's history entry, or nothing.
    lr : float or None
        Peak learning rate; default the preset's times :data:`FINETUNE_LR_FACTOR`.
    table_lr : float or None
        Peak learning rate of the representatives; default ``lr / ᾱ``, ``ᾱ`` the mean trained
        ``α`` of the layers sharing the table: the step the latent weights took in the
        layer's own units, expressed in normalized units.
    seed : int or None
        Data order and dropout; default the checkpoint's seed.

    Returns
    -------
    (ir.Network, dict)
        The best-validation epoch's network (validated; conv weights decode from its kernel
        codebooks) and ``info``: ``epochs``, ``best_epoch``, ``history``, ``lr``, ``seconds``,
        ``tables`` (K of each distinct table), ``val_before`` / ``val_after`` (integer
        validation accuracy of ``clustered`` and of the result), ``test_before`` /
        ``test_after``, ``float_test`` and ``agreement`` (float vs integer predictions on the
        test split); ``model``, the fine-tuned torch model (eval mode). All but ``history``
        and ``model`` are also stored in ``network.meta["kernel_finetune"]``.
    """
    from .train import Checkpoint, _epochs, load_checkpoint

    started = time.monotonic()
    ck = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    if not isinstance(clustered, ir.Network):
        raise TypeError(f"clustered must be a qnnfab.ir.Network, not {clustered!r}")
    clustered.validate()
    if not any(isinstance(layer, ir.ConvLayer) and layer.kernel_codebook is not None
               for layer in clustered.layers):
        raise ValueError("clustered: no conv layer has a kernel codebook")
    n_epochs = _epochs(epochs, ck.preset)
    seed = ck.seed if seed is None else int(seed)
    p = ck.preset
    lr = p.lr * FINETUNE_LR_FACTOR if lr is None else float(lr)
    if not lr > 0:
        raise ValueError(f"lr must be positive, not {lr}")

    ds = ck.load_dataset(data)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = ck.build_model(ds)
            if not isinstance(model, QuantCNN):
                raise ValueError(f"checkpoint: preset {p.name!r} is not a CNN")
            if clustered.input_features != model.input_features:
                raise ValueError(f"clustered: {clustered.input_features} inputs, the "
                                 f"checkpoint's model has {model.input_features}")
            pairs = _conv_pairs(model, clustered)
            _check_origin(model, clustered)
            attached = _attach_tables(pairs)
    finally:
        torch.set_num_threads(threads)
    return finetune_attached(model, attached, ds, p, clustered, epochs=n_epochs, lr=lr,
                             table_lr=table_lr, seed=seed, progress=progress,
                             started=started)


def finetune_attached(model, attached, ds, preset, clustered, *, epochs, lr, table_lr=None,
                      seed=0, progress=None, started=None):
    """Fine-tune ``model`` (a :class:`~qnnfab.model.conv.QuantCNN` whose clustered convs draw
    their kernels from :class:`KernelTable` s, ``attached`` = ``[(table, [convs])]``) on ``ds``
    with ``preset``'s optimizer settings at peak rate ``lr``; ``clustered`` is the network
    before fine-tuning (its accuracies are the ``*_before`` entries). What
    :func:`finetune_clustered` does after rebuilding the model from the checkpoint; also the
    fine-tuning of :mod:`qnnfab.model.float_kernel_clustering`. Returns ``(network, info)``
    as :func:`finetune_clustered`."""
    from .train import _optimize

    started = time.monotonic() if started is None else started
    if not lr > 0:
        raise ValueError(f"lr must be positive, not {lr}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            tables = [t for t, _ in attached]
            holder = _Holder(model, tables)
            table_lrs = [lr / float(np.mean([float(c.alpha.detach()) for c in convs]))
                         if table_lr is None else float(table_lr) for _, convs in attached]
            groups = [{"params": list(model.parameters())}]
            groups += [{"params": [t.rep], "lr": tl} for t, tl in zip(tables, table_lrs)]

            def clip_tables():
                for t in tables:
                    t.clip_()

            history, best_epoch = _optimize(
                model, ds, preset, groups, seed=seed, epochs=epochs,
                progress=progress, desc=f"finetune {preset.name}", lr=lr,
                constrain=clip_tables, holder=holder)
        meta = dict(clustered.meta)
        network = export(model, meta=meta, classes=list(clustered.classes))
        with torch.no_grad():
            float_pred = model(torch.as_tensor(ds.x_test, dtype=torch.float32)).argmax(1).numpy()
    finally:
        torch.set_num_threads(threads)
    int_pred = golden.classify(network, ds.x_test)
    info = {"epochs": epochs, "best_epoch": best_epoch, "lr": lr, "table_lr": table_lrs,
            "tables": [int(t.rep.shape[0]) for t in tables],
            "val_before": _accuracy(clustered, ds.x_val, ds.y_val),
            "val_after": _accuracy(network, ds.x_val, ds.y_val),
            "test_before": _accuracy(clustered, ds.x_test, ds.y_test),
            "test_after": float(np.mean(int_pred == ds.y_test)),
            "float_test": float(np.mean(float_pred == ds.y_test)),
            "agreement": float(np.mean(float_pred == int_pred))}
    info["seconds"] = round(time.monotonic() - started, 3)
    network.meta["kernel_finetune"] = {k: v for k, v in info.items()}
    network.meta["accuracy"] = {"float": info["float_test"], "integer": info["test_after"],
                                "agreement": info["agreement"], "split": "test",
                                "n": int(len(ds.y_test))}
    info["history"] = history
    info["model"] = model
    return network.validate(), info
