"""The network IR: the contract between ``qnnfab.model`` (which writes it) and ``qnnfab.rtl``.

Plain dataclasses and numpy arrays; no torch, no Amaranth.

A ``.qnn`` file is a zip archive holding ``header.json`` (format name, format version, the
network's structure and metadata) and one ``.npy`` file per array (``layers/<i>/<name>.npy``,
read back with ``allow_pickle=False``). It is written to a temporary file and renamed into
place, so a reader never sees half a file.

Layer kinds are looked up in :data:`LAYER_KINDS` by the ``kind`` field of each layer's header
entry; a new kind (conv, pool, ...) registers itself there and old files keep loading. Weight
kinds come from the registry :data:`qnnfab.kinds.WEIGHT_KINDS` (levels, code bits; a *table*
kind such as ``codebook`` stores its levels in the layer's ``codebook`` array);
:data:`WEIGHT_KINDS` lists their names.

Numerics: see :mod:`qnnfab.numerics` and ``../shared/DESIGN.md``. A hidden dense layer computes
``acc = Σ a_i·w_i`` and emits ``Σ_t [sign·acc >= T_t]`` (an unsigned code of ``out_bits`` bits;
one threshold gives one bit read as ±1 by the next layer). The last layer has no thresholds: it
emits its accumulators ("scores") and their argmax (the first index on ties).
"""

import dataclasses
import io
import json
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from . import kinds, numerics

__all__ = [
    "FORMAT", "FORMAT_VERSION", "WEIGHT_KINDS", "LAYER_KINDS",
    "IRError", "DenseLayer", "FloatDenseLayer", "ConvLayer", "PoolLayer", "KernelCodebook",
    "SPATIAL_KINDS", "Network", "save", "load", "atomic_write_bytes",
]

FORMAT = "qnnfab-ir"
FORMAT_VERSION = 1
#: Names of the weight kinds of the registry :data:`qnnfab.kinds.WEIGHT_KINDS` (binary, ternary,
#: codebook: k-bit indices into the layer's own table of ``2**k`` signed integer levels).
WEIGHT_KINDS = tuple(kinds.WEIGHT_KINDS)
MAX_ACTIVATION_BITS = 8
#: Index bits of a codebook (``2**1 .. 2**MAX_CODEBOOK_BITS`` levels).
MAX_CODEBOOK_BITS = 8
#: Codebook levels are signed integers of at most this many bits.
MAX_LEVEL_BITS = 16

#: Allowed code range (inclusive) of each fixed weight kind's stored weights.
WEIGHT_CODE_RANGE = {name: kind.code_range() for name, kind in kinds.WEIGHT_KINDS.items()
                     if not kind.table}


class IRError(ValueError):
    """A network IR, in memory or in a file, is not valid. The message names the field."""


def _check_int(where, value, *, lo=None, hi=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise IRError(f"{where}: expected an integer, got {value!r}")
    value = int(value)
    if lo is not None and value < lo:
        raise IRError(f"{where}: expected >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise IRError(f"{where}: expected <= {hi}, got {value}")
    return value


def _check_array(where, array, *, shape, lo, hi):
    if not isinstance(array, np.ndarray):
        raise IRError(f"{where}: expected a numpy array, got {type(array).__name__}")
    if not np.issubdtype(array.dtype, np.integer):
        raise IRError(f"{where}: expected an integer array, got dtype {array.dtype}"
                      + (" (NaN/inf or fractional values cannot be stored)"
                         if np.issubdtype(array.dtype, np.floating) else ""))
    if array.shape != tuple(shape):
        raise IRError(f"{where}: expected shape {tuple(shape)}, got {array.shape}")
    if array.size:
        amin, amax = int(array.min()), int(array.max())
        if amin < lo or amax > hi:
            bad = np.argwhere((array < lo) | (array > hi))[0]
            raise IRError(f"{where}: values must lie in {lo}..{hi}, got {int(array[tuple(bad)])} "
                          f"at index {tuple(int(i) for i in bad)}")


def _check_fields(where, header, arrays, *, required, optional):
    """A layer's header has every ``required`` field and nothing unknown, and a weights array."""
    for key in required:
        if key not in header:
            raise IRError(f"{where}.{key}: missing")
    unknown = set(header) - {"kind", "name", *required, *optional}
    if unknown:
        raise IRError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    if "weights" not in arrays:
        raise IRError(f"{where}.weights: missing array")


@dataclass(eq=False)
class DenseLayer:
    """A fully connected layer.

    Attributes
    ----------
    in_features, out_features : int
    in_bits : int
        Bits of each input activation code (1: ±1, >1: unsigned).
    weight_kind : str
        One of :data:`WEIGHT_KINDS`.
    weights : ndarray, shape (out_features, in_features), integer codes of the weight kind
        (binary: 0 ↦ -1, 1 ↦ +1; ternary: 0 ↦ 0, 1 ↦ +1, 2 ↦ -1; codebook: an index into
        ``codebook``).
    thresholds : ndarray, shape (out_features, T), ascending per row; or None for the output layer.
    threshold_sign : ndarray, shape (out_features,), +1 or -1; the accumulator is multiplied by it
        before the comparison (-1 where batch-norm's scale was negative). None with no thresholds.
    name : str
    codebook : ndarray, shape (2**k,), signed integer levels (codebook weights only, else None).
    """
    kind: ClassVar[str] = "dense"

    in_features: int
    out_features: int
    in_bits: int
    weight_kind: str
    weights: np.ndarray
    thresholds: "np.ndarray | None" = None
    threshold_sign: "np.ndarray | None" = None
    name: str = ""
    codebook: "np.ndarray | None" = None

    @property
    def weight_levels(self):
        """The value of each weight code, a tuple of ints (the codebook for codebook layers)."""
        kind = kinds.weight_kind(self.weight_kind)
        if kind.table:
            return kind.levels_of(self.codebook)
        return kind.levels

    @property
    def in_size(self):
        """Codes in one input vector (``in_features``)."""
        return self.in_features

    @property
    def out_size(self):
        return self.out_features

    @property
    def is_output(self):
        """True for a layer that emits raw accumulators (no thresholds)."""
        return self.thresholds is None

    @property
    def n_thresholds(self):
        return 0 if self.thresholds is None else int(self.thresholds.shape[1])

    @property
    def out_bits(self):
        """Bits of each output code; the accumulator width for the output layer."""
        if self.is_output:
            return self.acc_width
        return max(1, self.n_thresholds.bit_length())

    @property
    def acc_width(self):
        return numerics.acc_width(self.in_features, self.in_bits, self.weight_levels)

    @property
    def threshold_width(self):
        return numerics.threshold_width(self.in_features, self.in_bits, self.weight_levels)

    @property
    def macs(self):
        return self.in_features * self.out_features

    @property
    def n_weights(self):
        return self.in_features * self.out_features

    @property
    def weight_bits(self):
        """Bits of weight memory the layer needs."""
        return self.macs * numerics.weight_code_bits(self.weight_levels)

    def validate(self, where="layer"):
        _check_int(f"{where}.in_features", self.in_features, lo=1)
        _check_int(f"{where}.out_features", self.out_features, lo=1)
        _check_int(f"{where}.in_bits", self.in_bits, lo=1, hi=MAX_ACTIVATION_BITS)
        if self.weight_kind not in WEIGHT_KINDS:
            raise IRError(f"{where}.weight_kind: expected one of {', '.join(WEIGHT_KINDS)}, "
                          f"got {self.weight_kind!r}")
        if kinds.WEIGHT_KINDS[self.weight_kind].table:
            self._validate_codebook(where)
            lo, hi = 0, len(self.codebook) - 1
        else:
            if self.codebook is not None:
                raise IRError(f"{where}.codebook: expected none for {self.weight_kind} weights")
            lo, hi = WEIGHT_CODE_RANGE[self.weight_kind]
        _check_array(f"{where}.weights", self.weights,
                     shape=(self.out_features, self.in_features), lo=lo, hi=hi)
        if self.thresholds is None:
            if self.threshold_sign is not None:
                raise IRError(f"{where}.threshold_sign: expected none for a layer without "
                              f"thresholds")
            return
        if not isinstance(self.thresholds, np.ndarray) or self.thresholds.ndim != 2:
            raise IRError(f"{where}.thresholds: expected a 2-D array (out_features, T), got "
                          f"{getattr(self.thresholds, 'shape', self.thresholds)!r}")
        n_thr = self.thresholds.shape[1]
        if not 1 <= n_thr <= (1 << MAX_ACTIVATION_BITS) - 1:
            raise IRError(f"{where}.thresholds: expected 1..{(1 << MAX_ACTIVATION_BITS) - 1} "
                          f"thresholds per output, got {n_thr}")
        tlo, thi = numerics.threshold_bounds(self.in_features, self.in_bits, self.weight_levels)
        _check_array(f"{where}.thresholds", self.thresholds,
                     shape=(self.out_features, n_thr), lo=tlo, hi=thi)
        if n_thr > 1 and np.any(np.diff(self.thresholds.astype(np.int64), axis=1) < 0):
            row = int(np.argwhere(np.diff(self.thresholds.astype(np.int64), axis=1) < 0)[0, 0])
            raise IRError(f"{where}.thresholds: row {row} is not ascending: "
                          f"{self.thresholds[row].tolist()}")
        if self.threshold_sign is None:
            raise IRError(f"{where}.threshold_sign: expected an array of ±1 beside thresholds")
        _check_array(f"{where}.threshold_sign", self.threshold_sign,
                     shape=(self.out_features,), lo=-1, hi=1)
        if np.any(self.threshold_sign == 0):
            raise IRError(f"{where}.threshold_sign: values must be +1 or -1, got 0 at index "
                          f"{int(np.argwhere(self.threshold_sign == 0)[0, 0])}")

    def _validate_codebook(self, where):
        cb = self.codebook
        if cb is None:
            raise IRError(f"{where}.codebook: missing (codebook weights need their levels)")
        if not isinstance(cb, np.ndarray) or cb.ndim != 1:
            raise IRError(f"{where}.codebook: expected a 1-D array of levels, got "
                          f"{getattr(cb, 'shape', cb)!r}")
        n = len(cb)
        if n < 2 or n > (1 << MAX_CODEBOOK_BITS) or n & (n - 1):
            raise IRError(f"{where}.codebook: expected 2**k levels (k = 1..{MAX_CODEBOOK_BITS}), "
                          f"got {n}")
        bound = (1 << (MAX_LEVEL_BITS - 1)) - 1
        _check_array(f"{where}.codebook", cb, shape=(n,), lo=-bound, hi=bound)

    # -- file form -------------------------------------------------------------------------------
    def header(self):
        return {"kind": self.kind, "name": self.name, "in_features": int(self.in_features),
                "out_features": int(self.out_features), "in_bits": int(self.in_bits),
                "weight_kind": self.weight_kind}

    def arrays(self):
        out = {"weights": self.weights}
        if self.codebook is not None:
            out["codebook"] = self.codebook
        if self.thresholds is not None:
            out["thresholds"] = self.thresholds
            out["threshold_sign"] = self.threshold_sign
        return out

    @classmethod
    def from_file(cls, where, header, arrays):
        _check_fields(where, header, arrays, required=("in_features", "out_features", "in_bits",
                                                        "weight_kind"), optional=())
        return cls(in_features=header["in_features"], out_features=header["out_features"],
                   in_bits=header["in_bits"], weight_kind=header["weight_kind"],
                   weights=arrays["weights"], thresholds=arrays.get("thresholds"),
                   threshold_sign=arrays.get("threshold_sign"), name=header.get("name", ""),
                   codebook=arrays.get("codebook"))


def _check_float_array(where, array, shape):
    if not isinstance(array, np.ndarray):
        raise IRError(f"{where}: expected a numpy array, got {type(array).__name__}")
    if array.dtype != np.float32:
        raise IRError(f"{where}: expected float32, got dtype {array.dtype}")
    if array.shape != tuple(shape):
        raise IRError(f"{where}: expected shape {tuple(shape)}, got {array.shape}")
    bad = ~np.isfinite(array)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise IRError(f"{where}: values must be finite, got {array[idx]} at index {idx}")


@dataclass(eq=False)
class FloatDenseLayer:
    """A fully connected layer whose weights are not quantized yet (float32): what
    ``qnnfab train --preset digits-mlp`` writes and ``qnnfab quantize`` reads. No hardware and
    no golden model run it; quantize it first.

    A hidden layer computes ``y = bn(acc · step_in)`` with ``acc = x @ weights.T`` (``x`` the
    integer input codes, ``step_in`` the previous layer's ``clip / (2**act_bits - 1)``, 1 for
    the network's input and for ±1 activations) and emits ``act_bits``-bit codes
    ``floor(min(relu(y), clip)·L/clip + 0.5)`` (``act_bits == 1``: ``y >= 0``, read as ±1).
    The output layer (no batch-norm) emits ``acc``.

    Attributes
    ----------
    in_features, out_features, in_bits : int
    weights : float32 (out_features, in_features)
    bn_mean, bn_var, bn_weight, bn_bias : float32 (out_features,), or None for the output layer
    bn_eps : float
    act_bits : int, bits of the outputs (hidden layers; 0 for the output layer)
    clip : float, the activation clip (``act_bits >= 2``), else None
    name : str
    """
    kind: ClassVar[str] = "float_dense"
    weight_kind: ClassVar[str] = "float"
    BN_FIELDS: ClassVar[tuple] = ("bn_mean", "bn_var", "bn_weight", "bn_bias")

    in_features: int
    out_features: int
    in_bits: int
    weights: np.ndarray
    bn_mean: "np.ndarray | None" = None
    bn_var: "np.ndarray | None" = None
    bn_weight: "np.ndarray | None" = None
    bn_bias: "np.ndarray | None" = None
    bn_eps: float = 1e-5
    act_bits: int = 0
    clip: "float | None" = None
    name: str = ""

    @property
    def in_size(self):
        """Codes in one input vector (``in_features``)."""
        return self.in_features

    @property
    def out_size(self):
        return self.out_features

    @property
    def is_output(self):
        return self.bn_mean is None

    @property
    def out_bits(self):
        return self.act_bits

    @property
    def macs(self):
        return self.in_features * self.out_features

    @property
    def n_weights(self):
        return self.in_features * self.out_features

    @property
    def weight_bits(self):
        return self.macs * 32

    def validate(self, where="layer"):
        _check_int(f"{where}.in_features", self.in_features, lo=1)
        _check_int(f"{where}.out_features", self.out_features, lo=1)
        _check_int(f"{where}.in_bits", self.in_bits, lo=1, hi=MAX_ACTIVATION_BITS)
        _check_float_array(f"{where}.weights", self.weights,
                           (self.out_features, self.in_features))
        present = [getattr(self, f) is not None for f in self.BN_FIELDS]
        if any(present) and not all(present):
            missing = [f for f, p in zip(self.BN_FIELDS, present) if not p]
            raise IRError(f"{where}.{missing[0]}: missing (a hidden layer needs all of "
                          f"{', '.join(self.BN_FIELDS)})")
        if self.is_output:
            if self.act_bits != 0:
                raise IRError(f"{where}.bn_mean: missing: a layer with {self.act_bits}-bit "
                              f"activations needs batch-norm ({', '.join(self.BN_FIELDS)})")
            if self.clip is not None:
                raise IRError(f"{where}.clip: expected none for a layer without activation "
                              f"(act_bits 0), got {self.clip}")
            return
        for f in self.BN_FIELDS:
            _check_float_array(f"{where}.{f}", getattr(self, f), (self.out_features,))
        if np.any(self.bn_var < 0):
            raise IRError(f"{where}.bn_var: must be >= 0")
        if not (isinstance(self.bn_eps, float) and self.bn_eps > 0):
            raise IRError(f"{where}.bn_eps: expected a positive float, got {self.bn_eps!r}")
        _check_int(f"{where}.act_bits", self.act_bits, lo=1, hi=MAX_ACTIVATION_BITS)
        if self.act_bits > 1:
            if not (isinstance(self.clip, float) and np.isfinite(self.clip) and self.clip > 0):
                raise IRError(f"{where}.clip: expected a positive float for {self.act_bits}-bit "
                              f"activations, got {self.clip!r}")
        elif self.clip is not None:
            raise IRError(f"{where}.clip: expected none for 1-bit activations")

    def header(self):
        h = {"kind": self.kind, "name": self.name, "in_features": int(self.in_features),
             "out_features": int(self.out_features), "in_bits": int(self.in_bits),
             "act_bits": int(self.act_bits)}
        if not self.is_output:
            h["bn_eps"] = float(self.bn_eps)
        if self.clip is not None:
            h["clip"] = float(self.clip)
        return h

    def arrays(self):
        out = {"weights": self.weights}
        if not self.is_output:
            out.update({f: getattr(self, f) for f in self.BN_FIELDS})
        return out

    @classmethod
    def from_file(cls, where, header, arrays):
        _check_fields(where, header, arrays, required=("in_features", "out_features", "in_bits",
                                                        "act_bits"), optional=("bn_eps", "clip"))
        return cls(in_features=header["in_features"], out_features=header["out_features"],
                   in_bits=header["in_bits"], weights=arrays["weights"],
                   act_bits=header["act_bits"], bn_eps=header.get("bn_eps", 1e-5),
                   clip=header.get("clip"), name=header.get("name", ""),
                   **{f: arrays.get(f) for f in cls.BN_FIELDS})


@dataclass(eq=False)
class KernelCodebook:
    """The kernels of a conv layer as indices into a table of representative kernels.

    Attributes
    ----------
    index : ndarray (out_channels, in_channels) of ints ``0 .. K-1``
    kernels : ndarray (K, k, k) of weight codes of the layer's weight kind
    sign : ndarray (out_channels, in_channels) of +1 / -1, or None (no per-kernel sign)

    The layer's kernel ``(o, c)`` is ``kernels[index[o, c]]``, with every code replaced by the
    code of the negated level where ``sign[o, c] == -1``
    (:func:`qnnfab.numerics.negated_codes`).
    """
    index: np.ndarray
    kernels: np.ndarray
    sign: "np.ndarray | None" = None

    @property
    def size(self):
        """K, the number of representative kernels."""
        return int(self.kernels.shape[0])

    @property
    def index_bits(self):
        return (self.size - 1).bit_length()

    @property
    def slot_bits(self):
        """Bits stored per kernel: its index, and a sign bit with per-kernel signs."""
        return self.index_bits + (self.sign is not None)

    def decode(self, levels):
        """The weight codes (out, in, k, k) these indices (and signs) stand for."""
        codes = np.asarray(self.kernels, dtype=np.int64)[np.asarray(self.index, dtype=np.int64)]
        if self.sign is not None:
            neg = np.array([-1 if n is None else n for n in numerics.negated_codes(levels)],
                           dtype=np.int64)
            codes = np.where(np.asarray(self.sign)[:, :, None, None] < 0, neg[codes], codes)
        return codes

    def validate(self, where, layer):
        cout, cin, k = layer.out_channels, layer.in_channels, layer.kernel_size
        kernels = self.kernels
        if not isinstance(kernels, np.ndarray) or kernels.ndim != 3 or kernels.shape[0] < 1:
            raise IRError(f"{where}.kernels: expected an array (K, {k}, {k}) with K >= 1, got "
                          f"{getattr(kernels, 'shape', kernels)!r}")
        n_codes = len(layer.weight_levels)
        _check_array(f"{where}.kernels", kernels, shape=(kernels.shape[0], k, k),
                     lo=0, hi=n_codes - 1)
        _check_array(f"{where}.index", self.index, shape=(cout, cin), lo=0,
                     hi=kernels.shape[0] - 1)
        if self.sign is not None:
            _check_array(f"{where}.sign", self.sign, shape=(cout, cin), lo=-1, hi=1)
            if np.any(self.sign == 0):
                bad = tuple(int(i) for i in np.argwhere(self.sign == 0)[0])
                raise IRError(f"{where}.sign: values must be +1 or -1, got 0 at index {bad}")
            neg = numerics.negated_codes(layer.weight_levels)
            used = np.unique(kernels[self.index[self.sign < 0]]) if np.any(self.sign < 0) else []
            for code in used:
                if neg[int(code)] is None:
                    raise IRError(f"{where}.sign: kernels negated by a sign use level "
                                  f"{layer.weight_levels[int(code)]}, whose negation is not in "
                                  f"the layer's codebook")


def _spatial_size(shape):
    h, w, c = shape
    return h * w * c


@dataclass(eq=False)
class ConvLayer:
    """A 2D convolution (stride 1) followed by a multi-threshold activation.

    Images are flattened in ``(y, x, c)`` order (flat index ``(y*W + x)*C + c``). Output
    ``(y, x, o)`` is ``Σ_{c,ky,kx} a[y+ky-p, x+kx-p, c]·w[o, c, ky, kx]``, where a position
    outside the image holds activation *code* 0 (value 0 for k-bit activations, -1 for 1-bit
    ones), then ``Σ_t [sign_o·acc >= T_o,t]`` as in :class:`DenseLayer`.

    Attributes
    ----------
    in_channels, out_channels : int
    height, width : int, the input image's size
    kernel_size : int, odd, 1..7
    padding : int, 0..kernel_size // 2
    in_bits, weight_kind, codebook, thresholds, threshold_sign, name : as :class:`DenseLayer`
    weights : ndarray (out_channels, in_channels, k, k) of weight codes; may be None when
        ``kernel_codebook`` is given (then derived from it)
    kernel_codebook : :class:`KernelCodebook` or None

    A conv layer is never the output layer. :meth:`dense_view` is the matrix applied to each
    window: ``in_features = in_channels·k·k`` inputs in ``(c, ky, kx)`` order.
    """
    kind: ClassVar[str] = "conv"
    MAX_KERNEL: ClassVar[int] = 7

    in_channels: int
    out_channels: int
    height: int
    width: int
    kernel_size: int
    padding: int
    in_bits: int
    weight_kind: str
    weights: "np.ndarray | None"
    thresholds: "np.ndarray | None" = None
    threshold_sign: "np.ndarray | None" = None
    name: str = ""
    codebook: "np.ndarray | None" = None
    kernel_codebook: "KernelCodebook | None" = None

    def __post_init__(self):
        if self.weights is None and self.kernel_codebook is not None:
            try:
                self.weights = self.kernel_codebook.decode(self.weight_levels)
            except Exception:  # noqa: BLE001 -- validate() names the field that is wrong
                pass

    weight_levels = DenseLayer.weight_levels
    is_output = False
    n_thresholds = DenseLayer.n_thresholds

    @property
    def out_height(self):
        return self.height + 2 * self.padding - self.kernel_size + 1

    @property
    def out_width(self):
        return self.width + 2 * self.padding - self.kernel_size + 1

    @property
    def in_shape(self):
        return (self.height, self.width, self.in_channels)

    @property
    def out_shape(self):
        return (self.out_height, self.out_width, self.out_channels)

    @property
    def in_size(self):
        return _spatial_size(self.in_shape)

    @property
    def out_size(self):
        return _spatial_size(self.out_shape)

    @property
    def positions(self):
        """Output positions (windows) per image."""
        return self.out_height * self.out_width

    @property
    def in_features(self):
        """Fan-in of one output: ``in_channels·k·k``."""
        return self.in_channels * self.kernel_size ** 2

    @property
    def out_features(self):
        return self.out_channels

    # Never an output layer: the dense rules, on the fan-in of one window.
    out_bits = DenseLayer.out_bits
    acc_width = DenseLayer.acc_width
    threshold_width = DenseLayer.threshold_width

    @property
    def kernels(self):
        """Kernels (``out_channels·in_channels``)."""
        return self.out_channels * self.in_channels

    @property
    def macs(self):
        return self.positions * self.out_channels * self.in_features

    @property
    def n_weights(self):
        return self.out_channels * self.in_features

    @property
    def weight_bits(self):
        """Bits of weight memory: every kernel at the code width, or with a kernel codebook
        one index (and sign bit) per kernel plus the table of representatives."""
        code_bits = numerics.weight_code_bits(self.weight_levels)
        kc = self.kernel_codebook
        if kc is None:
            return self.kernels * self.kernel_size ** 2 * code_bits
        per_kernel = kc.slot_bits
        return self.kernels * per_kernel + kc.size * self.kernel_size ** 2 * code_bits

    def dense_view(self):
        """The :class:`DenseLayer` applied to each window (inputs in ``(c, ky, kx)`` order)."""
        return DenseLayer(
            in_features=self.in_features, out_features=self.out_channels, in_bits=self.in_bits,
            weight_kind=self.weight_kind,
            weights=np.asarray(self.weights).reshape(self.out_channels, self.in_features),
            thresholds=self.thresholds, threshold_sign=self.threshold_sign, name=self.name,
            codebook=self.codebook)

    def validate(self, where="layer"):
        for f in ("in_channels", "out_channels", "height", "width"):
            _check_int(f"{where}.{f}", getattr(self, f), lo=1)
        k = _check_int(f"{where}.kernel_size", self.kernel_size, lo=1, hi=self.MAX_KERNEL)
        if k % 2 == 0:
            raise IRError(f"{where}.kernel_size: expected an odd size, got {k}")
        _check_int(f"{where}.padding", self.padding, lo=0, hi=k // 2)
        if self.out_height < 1 or self.out_width < 1:
            raise IRError(f"{where}.kernel_size: a {k}x{k} kernel with padding {self.padding} "
                          f"does not fit a {self.height}x{self.width} image")
        if self.thresholds is None:
            raise IRError(f"{where}.thresholds: missing (a conv layer needs thresholds; the "
                          f"output layer must be dense)")
        if self.weight_kind not in WEIGHT_KINDS:
            raise IRError(f"{where}.weight_kind: expected one of {', '.join(WEIGHT_KINDS)}, "
                          f"got {self.weight_kind!r}")
        if kinds.WEIGHT_KINDS[self.weight_kind].table:
            DenseLayer._validate_codebook(self, where)
        if self.kernel_codebook is not None:
            if not isinstance(self.kernel_codebook, KernelCodebook):
                raise IRError(f"{where}.kernel_codebook: expected a KernelCodebook, got "
                              f"{type(self.kernel_codebook).__name__}")
            self.kernel_codebook.validate(where, self)
        w = self.weights
        shape = (self.out_channels, self.in_channels, k, k)
        if not isinstance(w, np.ndarray) or w.shape != shape:
            raise IRError(f"{where}.weights: expected shape {shape}, got "
                          f"{getattr(w, 'shape', type(w).__name__)}")
        self.dense_view().validate(where)
        if self.kernel_codebook is not None:
            decoded = self.kernel_codebook.decode(self.weight_levels)
            if not np.array_equal(decoded, w):
                o, c = (int(i) for i in np.argwhere((decoded != w).any(axis=(2, 3)))[0])
                raise IRError(f"{where}.weights: kernel ({o}, {c}) differs from its kernel "
                              f"codebook entry {int(self.kernel_codebook.index[o, c])}")

    def header(self):
        h = {"kind": self.kind, "name": self.name, "in_bits": int(self.in_bits),
             "weight_kind": self.weight_kind}
        for f in ("in_channels", "out_channels", "height", "width", "kernel_size", "padding"):
            h[f] = int(getattr(self, f))
        return h

    def arrays(self):
        out = {"thresholds": self.thresholds, "threshold_sign": self.threshold_sign}
        if self.codebook is not None:
            out["codebook"] = self.codebook
        kc = self.kernel_codebook
        if kc is None:
            out["weights"] = self.weights
        else:  # the weights follow from the kernel codebook
            out["kernel_index"] = kc.index
            out["kernel_table"] = kc.kernels
            if kc.sign is not None:
                out["kernel_sign"] = kc.sign
        return out

    @classmethod
    def from_file(cls, where, header, arrays):
        required = ("in_channels", "out_channels", "height", "width", "kernel_size", "padding",
                    "in_bits", "weight_kind")
        if "kernel_index" in arrays or "kernel_table" in arrays:
            for name in ("kernel_index", "kernel_table"):
                if name not in arrays:
                    raise IRError(f"{where}.{name}: missing array (a kernel codebook needs "
                                  f"kernel_index and kernel_table)")
            kc = KernelCodebook(index=arrays["kernel_index"], kernels=arrays["kernel_table"],
                                sign=arrays.get("kernel_sign"))
            arrays = {**arrays, "weights": None}
        else:
            kc = None
        _check_fields(where, header, arrays, required=required, optional=())
        kw = {f: header[f] for f in required}
        layer = cls(**kw, weights=arrays["weights"], thresholds=arrays.get("thresholds"),
                    threshold_sign=arrays.get("threshold_sign"), name=header.get("name", ""),
                    codebook=arrays.get("codebook"), kernel_codebook=kc)
        if kc is not None and layer.weights is None:
            kc.validate(where, layer)  # decode failed: say why
        return layer


@dataclass(eq=False)
class PoolLayer:
    """Max-pooling over ``size × size`` blocks (stride ``size``) of an image of codes.

    Attributes
    ----------
    channels, height, width : int, the input image (``height`` and ``width`` divisible by
        ``size``)
    size : int, 2..8
    bits : int, bits of the codes (in and out)
    name : str

    Output ``(y, x, c)`` is the largest code of the block (for 1-bit codes, their OR).
    """
    kind: ClassVar[str] = "maxpool"
    weight_kind: ClassVar[str] = "none"
    is_output: ClassVar[bool] = False

    channels: int
    height: int
    width: int
    size: int
    bits: int
    name: str = ""

    @property
    def in_bits(self):
        return self.bits

    @property
    def out_bits(self):
        return self.bits

    @property
    def in_shape(self):
        return (self.height, self.width, self.channels)

    @property
    def out_shape(self):
        return (self.height // self.size, self.width // self.size, self.channels)

    @property
    def in_size(self):
        return _spatial_size(self.in_shape)

    @property
    def out_size(self):
        return _spatial_size(self.out_shape)

    macs = 0
    n_weights = 0
    weight_bits = 0

    def validate(self, where="layer"):
        for f in ("channels", "height", "width"):
            _check_int(f"{where}.{f}", getattr(self, f), lo=1)
        size = _check_int(f"{where}.size", self.size, lo=2, hi=8)
        _check_int(f"{where}.bits", self.bits, lo=1, hi=MAX_ACTIVATION_BITS)
        for f in ("height", "width"):
            if getattr(self, f) % size:
                raise IRError(f"{where}.{f}: {getattr(self, f)} is not divisible by the pool "
                              f"size {size}")

    def header(self):
        return {"kind": self.kind, "name": self.name,
                **{f: int(getattr(self, f)) for f in ("channels", "height", "width", "size",
                                                      "bits")}}

    def arrays(self):
        return {}

    @classmethod
    def from_file(cls, where, header, arrays):
        required = ("channels", "height", "width", "size", "bits")
        for key in required:
            if key not in header:
                raise IRError(f"{where}.{key}: missing")
        unknown = set(header) - {"kind", "name", *required}
        if unknown:
            raise IRError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        if arrays:
            raise IRError(f"{where}: unexpected array(s) {', '.join(sorted(arrays))}")
        return cls(**{f: header[f] for f in required}, name=header.get("name", ""))


#: Layers working on images (``in_shape``/``out_shape``); they come before the dense layers.
SPATIAL_KINDS = (ConvLayer, PoolLayer)

#: Layer classes by the ``kind`` string stored in files.
LAYER_KINDS = {cls.kind: cls for cls in (DenseLayer, FloatDenseLayer, ConvLayer, PoolLayer)}


@dataclass(eq=False)
class Network:
    """A quantized network: its input format and its layers in order.

    Attributes
    ----------
    input_features : int
    input_bits : int
        Bits of each input code (the first layer's ``in_bits``).
    layers : list of layers
    classes : list of str, names of the outputs of the last layer (may be empty).
    meta : dict, JSON-serializable facts (preset, seed, accuracy, ...).
    """
    input_features: int
    input_bits: int
    layers: list
    classes: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def input_shape(self):
        """``(H, W, C)`` of the input image when the first layer is a conv or pool layer,
        else None (a plain vector)."""
        first = self.layers[0]
        return first.in_shape if isinstance(first, SPATIAL_KINDS) else None

    @property
    def spatial_layers(self):
        """The conv and pool layers (they come first)."""
        return [layer for layer in self.layers if isinstance(layer, SPATIAL_KINDS)]

    @property
    def n_outputs(self):
        return self.layers[-1].out_features

    @property
    def macs(self):
        return sum(layer.macs for layer in self.layers)

    @property
    def weight_bits(self):
        return sum(layer.weight_bits for layer in self.layers)

    @property
    def n_weights(self):
        """Weights (a conv kernel's taps counted once, not per position)."""
        return sum(layer.n_weights for layer in self.layers)

    @property
    def is_float(self):
        """True for a network whose weights are not quantized yet (float layers)."""
        return any(isinstance(layer, FloatDenseLayer) for layer in self.layers)

    def require_integer(self, what="this"):
        """Raise :class:`IRError` when the network has float weights: ``what`` needs integers."""
        if self.is_float:
            raise IRError(f"{what} needs quantized weights, and this network's weights are float "
                          f"(from a float preset): quantize it first, e.g. `qnnfab quantize "
                          f"FLOAT.qnn --method ga --bits 3 --out FILE.qnn`")

    def validate(self):
        """Raise :class:`IRError` naming the first field that is wrong; return self."""
        _check_int("input_features", self.input_features, lo=1)
        _check_int("input_bits", self.input_bits, lo=1, hi=MAX_ACTIVATION_BITS)
        if not isinstance(self.layers, list) or not self.layers:
            raise IRError("layers: expected at least one layer")
        features, bits = self.input_features, self.input_bits
        shape = None  # (H, W, C) after a spatial layer
        for i, layer in enumerate(self.layers):
            where = f"layers[{i}]"
            if type(layer) not in LAYER_KINDS.values():
                raise IRError(f"{where}: expected a layer object, got {type(layer).__name__}")
            if isinstance(layer, FloatDenseLayer) != isinstance(self.layers[0], FloatDenseLayer):
                raise IRError(f"{where}.kind: a network is either all float layers or all "
                              f"quantized ones; got {layer.kind} after {self.layers[0].kind}")
            layer.validate(where)
            spatial = isinstance(layer, SPATIAL_KINDS)
            if spatial:
                if i and not isinstance(self.layers[i - 1], SPATIAL_KINDS):
                    raise IRError(f"{where}.kind: {layer.kind} layers must come before the "
                                  f"dense layers (got one after {self.layers[i - 1].kind})")
                if shape is None and layer.in_size != features:
                    h, w, c = layer.in_shape
                    raise IRError(f"{where}: a {h}x{w}x{c} input image has {layer.in_size} "
                                  f"codes, but the network input has {features}")
                if shape is not None and layer.in_shape != shape:
                    raise IRError(f"{where}: expected an input image of {shape[0]}x{shape[1]}"
                                  f"x{shape[2]} (the previous layer's output), got "
                                  f"{'x'.join(map(str, layer.in_shape))}")
            elif layer.in_features != features:
                raise IRError(f"{where}.in_features: expected {features} (the previous "
                              f"layer's outputs"
                              + (f", a {shape[0]}x{shape[1]}x{shape[2]} image flattened"
                                 if shape is not None else "")
                              + f"), got {layer.in_features}")
            if layer.in_bits != bits:
                raise IRError(f"{where}.{'bits' if isinstance(layer, PoolLayer) else 'in_bits'}: "
                              f"expected {bits} (the previous layer's output bits), got "
                              f"{layer.in_bits}")
            last = i == len(self.layers) - 1
            act = "thresholds" if not isinstance(layer, FloatDenseLayer) else "bn_mean"
            if last and not layer.is_output:
                raise IRError(f"{where}.{act if not spatial else 'kind'}: the last layer must "
                              f"emit raw scores ({'a dense layer with ' if spatial else ''}no "
                              f"{'thresholds' if act == 'thresholds' else 'activation'})")
            if not last and layer.is_output:
                raise IRError(f"{where}.{act}: a hidden layer needs "
                              f"{'thresholds' if act == 'thresholds' else 'batch-norm'}")
            features, bits = layer.out_size, layer.out_bits
            shape = layer.out_shape if spatial else None
        if self.classes and len(self.classes) != self.n_outputs:
            raise IRError(f"classes: expected {self.n_outputs} names, got {len(self.classes)}")
        try:
            json.dumps(self.meta)
        except TypeError as exc:
            raise IRError(f"meta: must be JSON-serializable ({exc})") from None
        return self

    def summary(self):
        parts = [f"{self.input_features}x{self.input_bits}b"]
        first = self.layers[0]
        if isinstance(first, SPATIAL_KINDS):
            parts = ["x".join(map(str, first.in_shape)) + f"x{self.input_bits}b"]
        for layer in self.layers:
            if isinstance(layer, PoolLayer):
                parts.append(f"maxpool{layer.size}")
                continue
            if isinstance(layer, ConvLayer):
                size = "x".join(map(str, layer.out_shape))
                kc = layer.kernel_codebook
                kind = layer.weight_kind + (f", {kc.size} kernels" if kc is not None else "")
                parts.append(f"conv{layer.kernel_size} {size}x{layer.out_bits}b({kind})")
                continue
            parts.append(f"{layer.out_features}"
                         + ("" if layer.is_output else f"x{layer.out_bits}b")
                         + f"({layer.weight_kind})")
        return " -> ".join(parts)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def _npy_bytes(array):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def to_bytes(network):
    """The ``.qnn`` file contents of a (validated) network."""
    network.validate()
    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "input": {"features": int(network.input_features), "bits": int(network.input_bits)},
        "classes": list(network.classes), "meta": network.meta, "layers": [],
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i, layer in enumerate(network.layers):
            entry = layer.header()
            entry["arrays"] = {}
            for name, array in layer.arrays().items():
                member = f"layers/{i}/{name}.npy"
                entry["arrays"][name] = member
                info = zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, _npy_bytes(array))
            header["layers"].append(entry)
        info = zipfile.ZipInfo("header.json", date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, json.dumps(header, indent=1, sort_keys=True))
    return buf.getvalue()


def save(network, path):
    """Validate ``network`` and write it to ``path`` atomically."""
    atomic_write_bytes(path, to_bytes(network))


def from_bytes(data, source="<bytes>"):
    """Parse and validate the contents of a ``.qnn`` file; errors name ``source``."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        names = set(zf.namelist())
    except zipfile.BadZipFile:
        raise IRError(f"{source}: not a qnnfab IR file (not a zip archive; truncated?)") from None
    with zf:
        if "header.json" not in names:
            raise IRError(f"{source}: not a qnnfab IR file (no header.json)")
        try:
            header = json.loads(zf.read("header.json"))
        except (ValueError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
            raise IRError(f"{source}: header.json: unreadable ({exc})") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise IRError(f"{source}: format: expected {FORMAT!r}, got "
                          f"{header.get('format') if isinstance(header, dict) else header!r}")
        version = header.get("format_version")
        if version != FORMAT_VERSION:
            raise IRError(f"{source}: format_version: expected {FORMAT_VERSION}, got {version!r}"
                          + (" (written by a newer qnnfab?)"
                             if isinstance(version, int) and version > FORMAT_VERSION else ""))
        try:
            inp = header["input"]
            layers_h = header["layers"]
            features, bits = inp["features"], inp["bits"]
        except (KeyError, TypeError) as exc:
            raise IRError(f"{source}: header.json: missing field {exc}") from None
        if not isinstance(layers_h, list):
            raise IRError(f"{source}: layers: expected a list")
        layers = []
        for i, entry in enumerate(layers_h):
            where = f"layers[{i}]"
            if not isinstance(entry, dict):
                raise IRError(f"{source}: {where}: expected an object")
            kind = entry.get("kind")
            if kind not in LAYER_KINDS:
                raise IRError(f"{source}: {where}.kind: expected one of "
                              f"{', '.join(LAYER_KINDS)}, got {kind!r}")
            arrays = {}
            for name, member in (entry.get("arrays") or {}).items():
                if member not in names:
                    raise IRError(f"{source}: {where}.{name}: array {member} missing from file")
                try:
                    arrays[name] = np.lib.format.read_array(io.BytesIO(zf.read(member)),
                                                            allow_pickle=False)
                except (ValueError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
                    raise IRError(f"{source}: {where}.{name}: unreadable array ({exc})") from None
            fields = {k: v for k, v in entry.items() if k != "arrays"}
            try:
                layers.append(LAYER_KINDS[kind].from_file(where, fields, arrays))
            except IRError as exc:
                raise IRError(f"{source}: {exc}") from None
    network = Network(input_features=features, input_bits=bits, layers=layers,
                      classes=list(header.get("classes") or []), meta=header.get("meta") or {})
    try:
        return network.validate()
    except IRError as exc:
        raise IRError(f"{source}: {exc}") from None


#: The largest ``.qnn`` file :func:`load` reads (a network of a billion weights is far beyond
#: any FPGA this tool targets); a larger file is refused before it is read.
MAX_FILE_BYTES = 512 << 20


def load(path):
    """Read and validate a ``.qnn`` file. Raises :class:`IRError` (or ``OSError``)."""
    import stat
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            if stat.S_ISDIR(info.st_mode):
                raise IsADirectoryError
            if not stat.S_ISREG(info.st_mode):
                raise IRError(f"{path}: not a regular file (a device, pipe or socket), "
                              f"expected a .qnn file")
            if info.st_size > MAX_FILE_BYTES:
                raise IRError(f"{path}: {info.st_size:,} bytes, larger than any network IR "
                              f"(at most {MAX_FILE_BYTES:,}): not a .qnn file?")
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise IRError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise IRError(f"{path}: is a folder, expected a .qnn file") from None
    if len(data) > MAX_FILE_BYTES:
        raise IRError(f"{path}: larger than any network IR (at most {MAX_FILE_BYTES:,} bytes)")
    return from_bytes(data, source=path)
