"""Post-training weight quantization of a float CNN (Nogami et al.), torch only.

:func:`qnnfab.model.ptq.quantize` quantizes float *dense* networks (preset ``digits-mlp``) whose
activations are already 2-bit codes, down to an integer network the hardware runs. The paper
("Optimizing Weight Value Quantization for CNN Inference", Nogami et al.) instead takes a
trained float CNN and quantizes its weights at inference time. This module does that at the
model level, with no export and no hardware path:

* :class:`FloatCNN` — a plain float CNN in torch, the ``c16,p2,c32,p2,d10`` shape of preset
  ``digits-cnn``: per conv block ``Conv2d(3×3, padding 1, bias) → ReLU → MaxPool2d(2)``, then
  flatten (``(c, y, x)``) and one dense layer (bias) to the classes. Inputs are the data set's
  integer codes divided by ``2**input_bits - 1``. No batch norm, no dropout: every weight is
  in a conv or dense layer. (The package's conv presets allow float weights for MLPs only, and
  :func:`qnnfab.model.float_kernel_clustering.train_float_cnn` keeps the preset's 2-bit
  activations and batch norm, so neither gives the float-activation network the paper starts
  from.) :func:`train_float_cnn` trains it with Adam and cross-entropy.
* **Activations**, :data:`ACTIVATIONS`: ``"float"`` — ReLU outputs stay float (the unquantized
  network); ``"int8"`` — each block's output (after ReLU and pooling) becomes an unsigned
  8-bit code times a per-block step, ``step = max / 255``, the maximum over
  :data:`CALIBRATION_IMAGES` training images (:func:`calibrate`), measured block by block on
  the network being evaluated (so after its weights are quantized, as in post-training
  quantization; the first block's codes feed the second's calibration). The input stays as
  the data set's integer codes in both.
* **Weights**, :func:`quantize_cnn`: every conv and dense layer gets its own codebook of
  ``2**bits`` levels by one of :data:`METHODS` — ``"float"`` (no quantization: the reference
  row), or a method of :data:`qnnfab.model.ptq.METHODS` (``fixed``, ``uniform``, ``minifloat``,
  ``pow2``, ``kmeans`` from :mod:`qnnfab.model.codebooks`; ``ga`` from
  :func:`qnnfab.model.ga.ga_search` with the fitness of :func:`qnnfab.model.ptq.quantize`,
  ``accuracy − TIE_WEIGHT·min(CE, 1)`` of the quantized network on the *validation* split, or
  its first ``fitness_images`` images; never the test split). Biases stay float (the paper
  quantizes weights; in hardware a bias folds into the accumulator or threshold at higher
  precision). Levels stay float (no ``level_bits`` rounding, unlike ``ptq.quantize``).
* **"The found format resembles fixed point"**: :func:`fixed_point_distance` measures how far a
  codebook's levels are from the best fixed-point grid of the same number of levels (below).

Fixed-point distance
--------------------
For ``L = 2**k`` levels ``l_i`` and a step ``s > 0``, the fixed-point grid is the ``k``-bit
two's-complement grid ``s·j``, ``j ∈ {-L/2, …, L/2 - 1}`` (or its mirror
``j ∈ {-L/2 + 1, …, L/2}``; the sign of a layer's weights is arbitrary), and ``q_s(l)`` the
nearest grid point. The distance is

    ``d = RMS_i(l_i − q_s*(l_i)) / s*``,  ``s* = argmin_s RMS_i(l_i − q_s(l_i))``

over both orientations: the root-mean-square distance of the levels to the fixed-point grid
that fits them best, in units of that grid's step. The grid's scale is free (a per-layer
scale costs nothing, and ``fixed_codebook`` also picks it per layer), so ``d = 0`` exactly when
the levels lie on a uniform grid through 0 — the levels of ``fixed`` and ``uniform`` — and
levels whose remainders are spread at random give about ``1/√12 ≈ 0.29``; at most ``0.5``
unless the grid's ends clip.

To see which format the levels resemble *most*, :func:`format_distances` fits the fixed-point,
minifloat and power-of-two grids of the same width (each with its best scale) and gives each RMS
distance in units of the levels' mean spacing ``(max - min) / (2**k - 1)``, one scale for all
three.
"""

import copy
import math
import operator
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import codebooks, ptq

__all__ = ["METHODS", "ACTIVATIONS", "CALIBRATION_IMAGES", "FloatCNN", "train_float_cnn",
           "image_shape", "layer_weights", "set_layer_weights", "quantized_weights",
           "calibrate", "evaluate", "fixed_point_distance", "format_units", "format_distances",
           "CNNQuantResult", "quantize_cnn"]

#: Weight methods: the float reference, then the codebook methods of :mod:`qnnfab.model.ptq`.
METHODS = ("float",) + tuple(ptq.METHODS)

#: Activation variants: float ReLU outputs, or unsigned 8-bit codes.
ACTIVATIONS = ("float", "int8")

#: Training images (a fixed random choice) on which :func:`calibrate` sets the 8-bit steps.
CALIBRATION_IMAGES = 512

#: Images per forward pass in :func:`evaluate` (bounds the memory of the conv outputs).
BATCH = 1000


def image_shape(ds):
    """``(H, W, C)`` of a data set's inputs: its ``input_shape``, or a square one-channel image
    (digits: 8×8)."""
    if ds.input_shape is not None:
        return tuple(int(v) for v in ds.input_shape)
    side = math.isqrt(ds.n_features)
    if side * side != ds.n_features:
        raise ValueError(f"{ds.name}: {ds.n_features} features are not a square image and the "
                         f"data set gives no input_shape")
    return (side, side, 1)


class FloatCNN(nn.Module):
    """A float CNN: conv blocks ``Conv2d(k×k, padding k//2) → ReLU → MaxPool2d(2)`` and a dense
    output layer (module docstring).

    Parameters
    ----------
    input_shape : tuple
        ``(H, W, C)``; inputs are ``(N, H·W·C)`` integer codes flattened ``(y, x, c)``.
    n_classes : int
    input_bits : int
        Bits of the input codes; inputs are divided by ``2**input_bits - 1``.
    channels : tuple of int
        Output channels of each conv block.
    kernel_size : int
        Odd.

    Members
    -------
    act_bits : int or None
        None: float activations; ``8``: each block's output is quantized to unsigned codes
        with the steps :attr:`act_steps` (set by :func:`calibrate`).
    """

    def __init__(self, input_shape, n_classes, *, input_bits, channels=(16, 32),
                 kernel_size=3):
        super().__init__()
        h, w, c = (operator.index(v) for v in input_shape)
        k = operator.index(kernel_size)
        if k < 1 or k % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, not {kernel_size!r}")
        self.input_shape = (h, w, c)
        self.in_scale = float((1 << operator.index(input_bits)) - 1)
        self.convs = nn.ModuleList()
        for ch in channels:
            self.convs.append(nn.Conv2d(c, operator.index(ch), k, padding=k // 2))
            c, h, w = operator.index(ch), h // 2, w // 2
        if h < 1 or w < 1:
            raise ValueError(f"input {input_shape} is too small for {len(channels)} 2×2 pools")
        self.head = nn.Linear(c * h * w, operator.index(n_classes))
        self.act_bits = None
        self.register_buffer("act_steps", torch.ones(len(self.convs)))

    def layers(self):
        """The weight layers in order: the convs, then the head."""
        return [*self.convs, self.head]

    def forward(self, x, *, calibrating=False):
        h, w, c = self.input_shape
        x = torch.as_tensor(x).float().reshape(-1, h, w, c).permute(0, 3, 1, 2) / self.in_scale
        for i, conv in enumerate(self.convs):
            x = F.max_pool2d(F.relu(conv(x)), 2)
            if self.act_bits is not None:
                top = (1 << self.act_bits) - 1
                if calibrating:
                    peak = float(x.max())
                    self.act_steps[i] = peak / top if peak > 0 else 1.0
                step = self.act_steps[i]
                x = torch.clamp(torch.round(x / step), 0, top) * step
        return self.head(x.flatten(1))


def _check_act(act):
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation variant {act!r}; known: {', '.join(ACTIVATIONS)}")
    return None if act == "float" else 8


def train_float_cnn(ds, *, seed=0, epochs=30, batch_size=32, lr=1e-3, channels=(16, 32),
                    progress=None):
    """Train a :class:`FloatCNN` on ``ds``'s training split (Adam, cross-entropy, constant
    ``lr``, shuffled by ``seed``); deterministic for a seed in one torch thread. ``progress``:
    ``progress(epoch, loss)`` after each epoch. Returns the model in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = FloatCNN(image_shape(ds), ds.n_classes, input_bits=ds.input_bits, channels=channels)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x = torch.as_tensor(ds.x_train, dtype=torch.float32)
    y = torch.as_tensor(ds.y_train)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        total = 0.0
        for start in range(0, len(y), batch_size):
            idx = order[start:start + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        if progress is not None:
            progress(epoch, total / len(y))
    return model.eval()


def layer_weights(model):
    """Each weight layer's weights (float64 numpy, the layer's shape)."""
    return [layer.weight.detach().numpy().astype(np.float64) for layer in model.layers()]


@torch.no_grad()
def set_layer_weights(model, weights):
    """Copy ``weights`` (one array per layer of ``model.layers()``) into ``model``."""
    for layer, w in zip(model.layers(), weights, strict=True):
        layer.weight.copy_(torch.as_tensor(np.asarray(w).reshape(layer.weight.shape)))


def quantized_weights(weights, books):
    """``weights`` (per layer) replaced by their codebook levels."""
    return [codebooks.dequantize(codebooks.assign(w, book), book)
            for w, book in zip(weights, books, strict=True)]


def _calibration_x(ds, n=CALIBRATION_IMAGES):
    """A fixed random choice of ``n`` training images (seed 0), the calibration set."""
    n = min(n, len(ds.x_train))
    idx = np.sort(np.random.default_rng(0).choice(len(ds.x_train), n, replace=False))
    return torch.as_tensor(ds.x_train[idx], dtype=torch.float32)


@torch.no_grad()
def calibrate(model, x_calib):
    """Set ``model.act_steps`` (``act_bits`` set) from the block outputs on ``x_calib``:
    ``step = max / (2**act_bits - 1)``, block by block on the quantized activations."""
    if model.act_bits is not None:
        model(x_calib, calibrating=True)
    return model


@torch.no_grad()
def evaluate(model, x, y):
    """``(accuracy, mean cross-entropy)`` of ``model`` on codes ``x`` and labels ``y``."""
    x = torch.as_tensor(x, dtype=torch.float32)
    y = torch.as_tensor(y)
    correct, ce = 0, 0.0
    for start in range(0, len(y), BATCH):
        logits = model(x[start:start + BATCH])
        yy = y[start:start + BATCH]
        correct += int((logits.argmax(1) == yy).sum())
        ce += float(F.cross_entropy(logits, yy, reduction="sum"))
    return correct / len(y), ce / len(y)


def _nearest(unit, x):
    """The value of sorted ``unit`` nearest to each element of ``x`` (ties: the lower)."""
    i = np.clip(np.searchsorted(unit, x), 1, unit.size - 1)
    lo, hi = unit[i - 1], unit[i]
    return np.where(x - lo <= hi - x, lo, hi)


def _fit_scaled(lv, unit):
    """``(rms, s)``: the scale ``s > 0`` for which the grid ``s·unit`` fits the levels ``lv``
    best (each level to its nearest grid value), and that RMS distance. Lloyd-like: from many
    starting scales, assign each level its nearest unit value, then the least-squares scale for
    those values; the best fit is kept."""
    top = float(np.abs(lv).max())
    s = top / float(np.abs(unit).max()) * np.geomspace(0.125, 8, 193)
    for _ in range(30):
        u = _nearest(unit, lv[None, :] / s[:, None])
        uu = (u * u).sum(axis=1)
        s_new = np.where(uu > 0, (u * lv[None, :]).sum(axis=1) / np.where(uu > 0, uu, 1), s)
        s = np.where(s_new > 0, s_new, s)
    u = _nearest(unit, lv[None, :] / s[:, None])
    err = np.sqrt(np.mean((lv[None, :] - s[:, None] * u) ** 2, axis=1))
    i = int(np.argmin(err))
    return float(err[i]), float(s[i])


def _levels(levels, where):
    lv = np.sort(np.asarray(levels, dtype=np.float64).ravel())
    n = lv.size
    if n < 2 or n & (n - 1):
        raise ValueError(f"{where}: expected 2**k levels, got {n}")
    return lv


def fixed_point_distance(levels):
    """``(d, step)``: the RMS distance of ``levels`` (``2**k`` of them) to the best fixed-point
    grid of ``2**k`` levels, in units of that grid's ``step`` (module docstring). ``d = 0`` for
    levels on such a grid; all-zero levels give ``(0.0, 1.0)``."""
    lv = _levels(levels, "fixed_point_distance")
    if not np.abs(lv).max() > 0:
        return 0.0, 1.0
    half = lv.size // 2
    unit = np.arange(-half, half, dtype=np.float64)
    fits = [_fit_scaled(lv, unit), _fit_scaled(lv, -unit[::-1])]
    err, step = min(fits)
    return err / step, step


def format_units(bits):
    """``{format: unscaled values}``, ascending, of the ``bits``-bit formats a codebook's levels
    are compared with in :func:`format_distances`: ``fixed`` (two's complement ``-2**(k-1) ..
    2**(k-1) - 1``), ``minifloat`` (:func:`~qnnfab.model.codebooks.minifloat_values`) and
    ``pow2`` (``{0, 0, ±2**-j}``, as :func:`~qnnfab.model.codebooks.pow2_codebook`)."""
    k = codebooks.check_bits(bits, where="format_units: bits")
    half = 1 << (k - 1)
    if k == 1:
        pow2 = np.array([-1.0, 1.0])
    else:
        mags = np.ldexp(1.0, -np.arange(half - 1))
        pow2 = np.sort(np.concatenate([-mags, [0.0, 0.0], mags]))
    return {"fixed": np.arange(-half, half, dtype=np.float64),
            "minifloat": codebooks.minifloat_values(k), "pow2": pow2}


def format_distances(levels):
    """``{format: distance}``: for each format of :func:`format_units`, the RMS distance of
    ``levels`` to that format's grid with its best scale (either sign orientation), in units of
    the levels' mean spacing ``(max - min) / (2**k - 1)``, so the formats compare on one scale:
    the smallest is the format the levels resemble most."""
    lv = _levels(levels, "format_distances")
    spacing = (lv[-1] - lv[0]) / (lv.size - 1)
    out = {}
    for name, unit in format_units(lv.size.bit_length() - 1).items():
        if spacing <= 0:
            out[name] = 0.0
            continue
        err = min(_fit_scaled(lv, unit)[0], _fit_scaled(lv, -unit[::-1])[0])
        out[name] = err / spacing
    return out


@dataclass
class CNNQuantResult:
    """What :func:`quantize_cnn` produced.

    ``model`` the quantized copy (activations as asked, calibrated); ``books`` one
    :class:`~qnnfab.model.codebooks.Codebook` per layer (None for ``"float"``); accuracies on
    the validation and test splits; ``distances`` the :func:`fixed_point_distance` of each
    layer's levels (empty for ``"float"``); ``distinct`` the number of distinct weight values
    per layer; ``history`` the GA's per-generation fitness; ``seconds`` wall time.
    """
    method: str
    bits: int
    act: str
    model: object
    books: object
    val_accuracy: float
    test_accuracy: float
    distances: list = field(default_factory=list)
    distinct: list = field(default_factory=list)
    history: list = field(default_factory=list)
    seconds: float = 0.0


def quantize_cnn(model, ds, method="ga", bits=3, *, act="float", seed=0, population=24,
                 generations=30, fitness_images=None, calibration_images=CALIBRATION_IMAGES,
                 progress=None):
    """Quantize the weights of float ``model`` (a :class:`FloatCNN`, left unchanged) with
    ``method`` to per-layer ``bits``-bit codebooks, activations ``act``; module docstring.

    ``ds`` the data set (the split the model was trained on): the GA's fitness uses its
    validation split (the first ``fitness_images`` images, None: all), ``int8`` calibration
    its training split, and only the final report its test split. ``population`` /
    ``generations`` / ``seed``: :func:`~qnnfab.model.ga.ga_search`'s. ``progress``: passed to
    ``ga_search``. Deterministic for a seed in one torch thread.
    """
    started = time.monotonic()
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    bits = codebooks.check_bits(bits, where="quantize_cnn: bits")
    work = copy.deepcopy(model).eval()
    work.act_bits = _check_act(act)
    x_calib = _calibration_x(ds, calibration_images)
    x_val, y_val = ds.x_val, ds.y_val
    if fitness_images is not None:
        x_val, y_val = x_val[:fitness_images], y_val[:fitness_images]
    weights = layer_weights(model)
    books, history = None, []
    if method == "ga":
        from .ga import ga_search

        def fitness(individuals):
            out = np.empty(len(individuals))
            for k, individual in enumerate(individuals):
                set_layer_weights(work, quantized_weights(weights, individual))
                calibrate(work, x_calib)
                acc, ce = evaluate(work, x_val, y_val)
                out[k] = acc - ptq.TIE_WEIGHT * min(ce, 1.0)
            return out

        result = ga_search(weights, bits, fitness, seed=seed, population=population,
                           generations=generations, progress=progress)
        books, history = result.best, [dict(h) for h in result.history]
    elif method != "float":
        books = [codebooks.METHODS[method](w, bits) for w in weights]
    if books is not None:
        set_layer_weights(work, quantized_weights(weights, books))
    calibrate(work, x_calib)
    val_acc, _ = evaluate(work, ds.x_val, ds.y_val)
    test_acc, _ = evaluate(work, ds.x_test, ds.y_test)
    return CNNQuantResult(
        method=method, bits=bits, act=act, model=work, books=books, val_accuracy=val_acc,
        test_accuracy=test_acc,
        distances=[] if books is None else [fixed_point_distance(b.levels)[0] for b in books],
        distinct=[int(np.unique(w).size) for w in layer_weights(work)], history=history,
        seconds=time.monotonic() - started)
