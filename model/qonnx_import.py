"""Import a QONNX model (as Brevitas's ``export_qonnx`` writes it) into the network IR.

The file is read with the ``qonnx`` package (``ModelWrapper``, then ``cleanup_model``: shape
inference, constant folding that keeps the quantizers, weight transposes folded into the
quantizer's input) and walked as one chain from the graph input to the graph output:

``input quantizer → { MatMul | Gemm | Conv → affine chain → quantizer [→ MaxPool] } → MatMul |
Gemm → affine chain → output``, with Flatten/Reshape/Transpose/Squeeze/Unsqueeze/Identity/Dropout
anywhere.

* Weights: ``BipolarQuant`` (binary ±1), ``Quant`` with a per-tensor or per-output-channel scale
  and an integer zero point: 2-bit signed narrow-range is ternary, 1-bit signed binary, anything
  else of ≤ 8 bits a codebook of its ``2**k`` integer levels. Their scales go into the affine
  chain.
* Activations: ``BipolarQuant`` and 1-bit signed ``Quant`` (±1), unsigned ``Quant`` (k-bit, zero
  point 0) and ``MultiThreshold`` (unsigned, or ±1 with ``out_scale = 2·s``, ``out_bias = -s``),
  each with one scale for the whole tensor.
* The affine chain from an accumulator to the next quantizer (the scales of the input and the
  weights, bias, ``BatchNormalization``, ``Mul``/``Div``/``Add``/``Sub`` by per-channel constants,
  ``Relu``, ``Clip``) becomes exact integer thresholds: the chain and the quantizer are evaluated
  in float32 the way the qonnx executor does (qonnx's own ``int_quant``/``multithreshold``
  functions) and :func:`qnnfab.model.export.fold_levels` — the search ``export`` uses — finds
  each threshold as the smallest accumulator reaching each code.
* ``Conv``: stride 1, square odd kernel, symmetric padding ≤ k//2, no groups or dilation (the
  IR's :class:`~qnnfab.ir.ConvLayer`); zero padding needs k-bit inputs (a ±1 code has no 0).
* ``MaxPool``: stride = size, no padding, on codes; between an accumulator and its quantizer
  only where the chain is non-decreasing in every channel (then pooling commutes with it).
* The last layer's affine map must be the same for every output (one positive scale, one
  offset): the IR's last layer emits raw accumulators and their argmax. It is recorded in
  ``meta["output_affine"]`` (score ≈ ``scale·acc + offset``).

Layout: the IR flattens an image ``(y, x, c)``; ONNX tensors are ``NCHW``. The importer tracks,
for every element of the current tensor, its position in the IR's code vector, and permutes the
first dense layer's columns accordingly. The network's input is the graph input, an ``NCHW``
image read as ``(y, x, c)`` (other ranks row-major), quantized by the input quantizer, whose
scale, zero point and bits are recorded in ``meta["input_quant"]`` (and the input shape in
``meta["input_layout"]``); :func:`input_codes` turns raw inputs into the IR's codes.

Anything else raises :class:`QonnxImportError`, one line naming the node (name, op type) and
what is supported.
"""

import os
from dataclasses import dataclass, field

import numpy as np

from qnnfab import ir

__all__ = ["QonnxImportError", "load_qonnx", "import_qonnx", "input_codes", "raw_inputs",
           "output_scores", "SUPPORTED"]

#: One line of what the importer takes (for error messages and the CLI).
SUPPORTED = ("supported: Quant/BipolarQuant/MultiThreshold, MatMul, Gemm, Conv (stride 1, odd "
             "square kernel), MaxPool (stride = size), BatchNormalization, Mul/Div/Add/Sub by "
             "constants, Relu, Clip, Flatten/Reshape/Transpose")

_LAYOUT_OPS = ("Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze")
_PASS_OPS = ("Identity", "Dropout")
_AFFINE_OPS = ("Mul", "Div", "Add", "Sub", "BatchNormalization", "Relu", "Clip")
_QUANT_OPS = ("Quant", "BipolarQuant", "MultiThreshold")


class QonnxImportError(ValueError):
    """The QONNX model uses something the IR cannot hold; the message is one line naming the
    node (name, op type) and what is supported."""


def _fail(node, what, hint=SUPPORTED):
    where = f"node {node.name!r} ({node.op_type})" if node is not None else "model"
    raise QonnxImportError(f"{where}: {what}" + (f"; {hint}" if hint else ""))


def load_qonnx(source):
    """A cleaned-up ``qonnx`` ``ModelWrapper`` of ``source`` (a path, an ``onnx.ModelProto`` or
    a ``ModelWrapper``): ``cleanup_model`` (shape inference, constant folding that keeps the
    quantizers, weight transposes folded into the quantizers, readable names)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise QonnxImportError(f"{path}: no such file")
        try:
            model = ModelWrapper(path)
        except Exception as exc:  # noqa: BLE001 -- onnx raises several kinds; say it in one line
            raise QonnxImportError(f"{path}: not a readable ONNX file "
                                   f"({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    elif isinstance(source, ModelWrapper):
        model = ModelWrapper(source.model.SerializeToString())
    else:
        model = ModelWrapper(source)
    try:
        return cleanup_model(model)
    except Exception as exc:  # noqa: BLE001
        raise QonnxImportError(f"qonnx cleanup_model failed ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


# -- constants and quantized weights --------------------------------------------------------------

@dataclass
class _Weight:
    """A quantized weight tensor: integer levels ``I`` and per-element scale ``S`` (the float
    weight is ``I·S``), in the tensor's own layout; ``levels`` the table of its kind."""
    ints: np.ndarray
    scale: np.ndarray
    kind: str
    table: "np.ndarray | None"


class _Graph:
    def __init__(self, model):
        self.model = model
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.consumers = {}
        for n in model.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def shape(self, name):
        return tuple(int(d) for d in self.model.get_tensor_shape(name))

    def const(self, name, node):
        """The value of a constant input ``name`` of ``node`` (an initializer, or the float
        output of a weight quantizer); raises naming ``node`` when it is not constant."""
        value = self.model.get_initializer(name)
        if value is not None:
            return np.asarray(value)
        producer = self.producer.get(name)
        if producer is not None and producer.op_type in ("Quant", "BipolarQuant"):
            w = self.weight(name, node)
            return (w.ints * w.scale).astype(np.float32)
        _fail(node, f"input {name!r} must be a constant (a data input here is not supported)")

    def weight(self, name, node):
        """The :class:`_Weight` behind input ``name`` of ``node`` (a weight quantizer on an
        initializer, through Transpose/Reshape/Identity)."""
        if self.model.get_initializer(name) is not None:
            _fail(node, f"weight {name!r} is not quantized (float weights); quantize it with a "
                  f"Quant or BipolarQuant node (Brevitas QuantLinear/QuantConv2d)",
                  hint="supported weights: binary, ternary, k-bit integer (≤ 8 bits)")
        q = self.producer.get(name)
        if q is None:
            _fail(node, f"weight {name!r} must be a constant")
        if q.op_type in ("Transpose", "Reshape", "Identity"):
            w = self.weight(q.input[0], node)
            if q.op_type == "Transpose":
                perm = _attr(q, "perm", list(range(w.ints.ndim))[::-1])
                return _Weight(w.ints.transpose(perm), w.scale.transpose(perm), w.kind, w.table)
            if q.op_type == "Reshape":
                shape = self.shape(q.output[0])
                return _Weight(w.ints.reshape(shape), w.scale.reshape(shape), w.kind, w.table)
            return w
        if q.op_type not in ("Quant", "BipolarQuant"):
            _fail(q, "a weight must come from a Quant or BipolarQuant node",
                  hint="supported weights: binary, ternary, k-bit integer (≤ 8 bits)")
        return _weight_quant(self, q)


def _attr(node, name, default=None):
    import onnx
    for a in node.attribute:
        if a.name == name:
            v = onnx.helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def _weight_quant(g, q):
    from qonnx.custom_op.general.bipolar_quant import binary_quant
    from qonnx.custom_op.general.intquant import int_quant, min_int
    w = g.model.get_initializer(q.input[0])
    if w is None:
        _fail(q, "the weight quantizer's input must be an initializer")
    w = np.asarray(w, dtype=np.float32)
    scale = np.asarray(g.const(q.input[1], q), dtype=np.float32)
    if np.any(~np.isfinite(scale)) or np.any(scale <= 0):
        _fail(q, "weight scales must be positive", hint=None)
    s = np.broadcast_to(scale, w.shape).astype(np.float64)
    if q.op_type == "BipolarQuant":
        y = binary_quant(w, scale)
        return _Weight(np.where(y >= 0, 1, -1).astype(np.int64), s, "binary", None)
    zp = np.asarray(g.const(q.input[2], q), dtype=np.float64)
    bits = np.asarray(g.const(q.input[3], q), dtype=np.float64)
    signed, narrow = bool(_attr(q, "signed", 1)), bool(_attr(q, "narrow", 0))
    hint = "supported weights: binary, ternary (2-bit signed narrow), k-bit integer (≤ 8 bits)"
    if bits.size != 1 or bits.item() != int(bits.item()) or not 1 <= bits.item() <= 8:
        _fail(q, f"weight bit width {bits.ravel().tolist()} is not an integer of 1..8", hint)
    if zp.size != 1 or zp.item() != int(zp.item()):
        _fail(q, f"weight zero point {zp.ravel().tolist()[:4]} is not one integer: the "
              f"weights do not map to integer levels", hint)
    k, z = int(bits.item()), int(zp.item())
    y = np.asarray(int_quant(w, scale, np.float32(z), np.float32(k), signed, narrow,
                             _attr(q, "rounding_mode", "ROUND")), dtype=np.float64)
    ints = np.rint(y / s).astype(np.int64)
    if k == 1 and signed:  # qonnx reads a 1-bit signed Quant as ±1
        return _Weight(ints, s, "binary", None)
    if k == 2 and signed and narrow and z == 0:
        return _Weight(ints, s, "ternary", None)
    lo = int(min_int(signed, False, k)) - z
    table = np.arange(lo, lo + (1 << k), dtype=np.int64)
    if np.abs(table).max() >= 1 << (ir.MAX_LEVEL_BITS - 1):
        _fail(q, f"weight levels {table[0]}..{table[-1]} exceed {ir.MAX_LEVEL_BITS} bits", hint)
    return _Weight(ints, s, "codebook", table)


def _ir_codes(w):
    """IR weight codes of a :class:`_Weight` (same layout)."""
    if w.kind == "binary":
        return (w.ints > 0).astype(np.int64)
    if w.kind == "ternary":
        return np.select([w.ints == 0, w.ints == 1], [0, 1], 2).astype(np.int64)
    return (w.ints - w.table[0]).astype(np.int64)


def _levels(w):
    return w.kind if w.table is None else tuple(int(v) for v in w.table)


def _per_channel(value, shape, axis, node, what):
    """``value`` broadcast to ``shape`` as one number per channel (``axis``): array (C,)."""
    full = np.broadcast_to(np.asarray(value, dtype=np.float64), shape)
    moved = np.moveaxis(full, axis, 0).reshape(shape[axis], -1)
    if not np.all(moved == moved[:, :1]):
        _fail(node, f"{what} varies within a channel; only per-channel constants are supported")
    return moved[:, 0].copy()


# -- the affine chain between an accumulator and its quantizer -----------------------------------

@dataclass
class _Op:
    """One elementwise step: ``fn(x)`` on float32 ``(batch, C)``, its per-channel slope sign
    (+1, -1 or 0), whether it is affine, and its node (for messages)."""
    fn: object
    slope: np.ndarray
    affine: bool
    node: object


def _affine_op(g, node, cur, channels, axis):
    """The :class:`_Op` of an elementwise node whose data input is ``cur``."""
    op = node.op_type
    shape = g.shape(cur)
    if op == "Relu":
        return _Op(lambda x: np.maximum(x, np.float32(0)), np.ones(channels), False, node)
    if op == "Clip":
        lo = g.const(node.input[1], node) if len(node.input) > 1 and node.input[1] else None
        hi = g.const(node.input[2], node) if len(node.input) > 2 and node.input[2] else None
        lo = np.float32(-np.inf if lo is None else np.asarray(lo).item())
        hi = np.float32(np.inf if hi is None else np.asarray(hi).item())
        return _Op(lambda x: np.clip(x, lo, hi), np.ones(channels), False, node)
    if op == "BatchNormalization":
        if node.input[0] != cur:
            _fail(node, "the data input must come first")
        scale, bias, mean, var = (np.asarray(g.const(n, node), np.float32)
                                  for n in node.input[1:5])
        eps = np.float32(_attr(node, "epsilon", 1e-5))
        if scale.shape != (channels,):
            _fail(node, f"expected {channels} channels, got {scale.shape}")
        std = np.sqrt(var + eps)
        slope = np.sign(scale.astype(np.float64))

        def bn(x):
            return (x - mean) / std * scale + bias
        return _Op(bn, slope, True, node)
    # Mul, Div, Add, Sub: one data input, one constant
    data_first = node.input[0] == cur
    other = node.input[1] if data_first else node.input[0]
    if node.input[0] == node.input[1]:
        _fail(node, "both inputs are the same tensor")
    c = _per_channel(g.const(other, node), shape, axis, node, "the constant").astype(np.float32)
    out_shape = g.shape(node.output[0])
    if out_shape != shape:
        _fail(node, f"the constant changes the shape {shape} to {out_shape}")
    if op == "Mul":
        return _Op(lambda x: x * c, np.sign(c.astype(np.float64)), True, node)
    if op == "Add":
        return _Op(lambda x: x + c, np.ones(channels), True, node)
    if op == "Div":
        if not data_first:
            _fail(node, "a constant divided by data is not affine")
        return _Op(lambda x: x / c, np.sign(c.astype(np.float64)), True, node)
    if data_first:
        return _Op(lambda x: x - c, np.ones(channels), True, node)
    return _Op(lambda x: c - x, -np.ones(channels), True, node)


@dataclass
class _Quantizer:
    """An activation quantizer: ``codes(x)`` on float32 ``(batch, C)``; ``n_levels`` codes
    above 0; ``bits``; the value of a code is ``code·scale`` (or ``(2·code - 1)·scale`` for 1
    bit)."""
    node: object
    codes: object
    n_levels: int
    bits: int
    scale: float
    info: dict


def _scalar(g, name, node, what):
    v = np.asarray(g.const(name, node), dtype=np.float64)
    if v.size == 0 or not np.all(v == v.ravel()[0]):
        _fail(node, f"{what} must be one number for the whole tensor (per-channel activation "
              f"scales are not supported), got {v.ravel().tolist()[:4]}")
    return float(v.ravel()[0])


def _quantizer(g, node, channels):
    """The :class:`_Quantizer` of an activation quantizer node."""
    from qonnx.custom_op.general.intquant import int_quant, max_int
    from qonnx.custom_op.general.multithreshold import multithreshold
    hint = "supported activations: ±1 (BipolarQuant, 1-bit Quant) and unsigned k-bit (k ≤ 8)"
    op = node.op_type
    if op == "BipolarQuant":
        s = _scalar(g, node.input[1], node, "the scale")
        if not s > 0:
            _fail(node, f"scale {s} must be positive", None)
        return _Quantizer(node, lambda x: (x >= 0).astype(np.int64), 1, 1, s,
                          {"kind": "bipolar", "scale": s})
    if op == "Quant":
        s = _scalar(g, node.input[1], node, "the scale")
        zp = _scalar(g, node.input[2], node, "the zero point")
        k = _scalar(g, node.input[3], node, "the bit width")
        signed, narrow = bool(_attr(node, "signed", 1)), bool(_attr(node, "narrow", 0))
        mode = _attr(node, "rounding_mode", "ROUND")
        info = {"kind": "quant", "scale": s, "zero_point": zp, "bits": k, "signed": signed,
                "narrow": narrow, "rounding_mode": mode}
        if not s > 0:
            _fail(node, f"scale {s} must be positive", None)
        if k != int(k) or not 1 <= k <= ir.MAX_ACTIVATION_BITS:
            _fail(node, f"bit width {k} is not an integer of 1..{ir.MAX_ACTIVATION_BITS}", hint)
        k = int(k)
        if signed and k == 1:
            return _Quantizer(node, lambda x: (x >= 0).astype(np.int64), 1, 1, s, info)
        if signed:
            _fail(node, f"signed {k}-bit activations are not supported (their codes are not "
                  f"unsigned); use QuantReLU or an unsigned QuantIdentity", hint)
        if zp != 0:
            _fail(node, f"zero point {zp} is not supported (activations need zero point 0)", hint)
        s32, zp32, k32 = np.float32(s), np.float32(0), np.float32(k)

        def codes(x):
            y = int_quant(x, s32, zp32, k32, False, narrow, mode)
            return np.rint(np.asarray(y, np.float64) / s).astype(np.int64)
        return _Quantizer(node, codes, int(max_int(False, narrow, k)), k, s, info)
    if op == "MultiThreshold":
        t = np.asarray(g.const(node.input[1], node), dtype=np.float32)
        if t.ndim != 2 or t.shape[0] not in (1, channels) or not 1 <= t.shape[1] <= 255:
            _fail(node, f"thresholds of shape {t.shape}: expected ({channels}, T), T ≤ 255")
        layout = _attr(node, "data_layout", "")
        if layout and layout.index("C") != 1:
            _fail(node, f"data layout {layout} (channels last) is not supported")
        out_scale = float(_attr(node, "out_scale", 1.0))
        out_bias = float(_attr(node, "out_bias", 0.0))
        n = int(t.shape[1])

        def codes(x):
            return np.rint(multithreshold(x, t)).astype(np.int64)
        if out_bias == 0 and out_scale > 0:
            return _Quantizer(node, codes, n, n.bit_length(), out_scale,
                              {"kind": "multithreshold", "scale": out_scale})
        if n == 1 and out_scale > 0 and np.isclose(out_bias, -out_scale / 2, rtol=0, atol=0):
            return _Quantizer(node, codes, 1, 1, out_scale / 2,
                              {"kind": "multithreshold", "scale": out_scale / 2})
        _fail(node, f"out_scale {out_scale}, out_bias {out_bias}: expected an unsigned output "
              f"(out_bias 0) or ±1 (one threshold, out_bias = -out_scale/2)", hint)
    _fail(node, "not a quantizer")


# -- the walk -------------------------------------------------------------------------------------

def _canonical(c, h, w):
    """Position in the IR's ``(y, x, c)`` vector of each element of a ``(C, H, W)`` image."""
    return np.arange(c * h * w).reshape(h, w, c).transpose(2, 0, 1)


@dataclass
class _Pending:
    """A dense or conv layer whose accumulator is on its way to the next quantizer."""
    node: object
    layer: dict
    factor: np.ndarray  # float value of one accumulator unit, per output channel
    channels: int
    conv: bool
    ops: list = field(default_factory=list)
    pools: list = field(default_factory=list)  # MaxPool nodes met in the chain


class _Walker:
    def __init__(self, model):
        self.g = _Graph(model)
        self.model = model
        self.layers = []
        self.ambiguous = 0

    def next_node(self, cur):
        users = self.g.consumers.get(cur, [])
        if not users:
            return None
        if len(users) > 1:
            _fail(users[1], f"tensor {cur!r} feeds {len(users)} nodes "
                  f"({', '.join(n.name for n in users)}); only a single chain is supported")
        return users[0]

    def layout(self, node, cur, idx):
        """``idx`` after a layout node (the batch axis must stay first and whole)."""
        shape_in, shape_out = self.g.shape(cur), self.g.shape(node.output[0])
        if not shape_out or shape_out[0] != shape_in[0]:
            _fail(node, f"changes the batch axis ({shape_in} -> {shape_out})")
        if node.op_type == "Transpose":
            perm = _attr(node, "perm", list(range(len(shape_in)))[::-1])
            if perm[0] != 0:
                _fail(node, f"permutation {perm} moves the batch axis")
            return idx.transpose([p - 1 for p in perm[1:]])
        return idx.reshape(shape_out[1:])

    def run(self):
        model, g = self.model, self.g
        graph = model.graph
        if len(graph.input) != 1 or len(graph.output) != 1:
            _fail(None, f"expected one input and one output, got {len(graph.input)} and "
                  f"{len(graph.output)}")
        cur = graph.input[0].name
        out_name = graph.output[0].name
        in_shape = g.shape(cur)
        if len(in_shape) < 2:
            _fail(None, f"input shape {in_shape}: expected (batch, ...)")
        feat_shape = in_shape[1:]
        idx = (_canonical(*feat_shape) if len(feat_shape) == 3
               else np.arange(int(np.prod(feat_shape))).reshape(feat_shape))
        self.input_layout = {"shape": list(feat_shape),
                             "order": "(y, x, c)" if len(feat_shape) == 3 else "row-major"}
        state = "float"  # float (before the input quantizer), codes, acc
        bits, step = None, None
        pending = None
        self.input_quant = None
        while cur != out_name:
            node = self.next_node(cur)
            if node is None:
                _fail(None, f"tensor {cur!r} leads nowhere (the graph output is {out_name!r})")
            op = node.op_type
            nxt = node.output[0]
            if op in _PASS_OPS:
                pass
            elif op in _LAYOUT_OPS:
                if state == "acc":
                    _fail(node, "a reshape between an accumulator and its quantizer is not "
                          "supported")
                idx = self.layout(node, cur, idx)
            elif op in _QUANT_OPS:
                if state == "codes":
                    _fail(node, "a second quantizer on codes is not supported")
                channels = pending.channels if state == "acc" else 1
                q = _quantizer(g, node, channels)
                if state == "float":
                    if op == "MultiThreshold":
                        _fail(node, "a MultiThreshold input quantizer is not supported; the "
                              "input quantizer must be Quant or BipolarQuant")
                    self.input_quant = q.info
                    self.input_bits = q.bits
                else:
                    self.finish(pending, q, bits)
                    pending = None
                state, bits, step = "codes", q.bits, q.scale
            elif op in ("MatMul", "Gemm", "Conv"):
                if state != "codes":
                    _fail(node, "expects quantized inputs (a Quant/BipolarQuant/MultiThreshold "
                          "before it)" if state == "float" else
                          "follows another accumulator without a quantizer in between")
                pending, idx = self.matmul(node, cur, idx, bits, step)
                state = "acc"
            elif op in _AFFINE_OPS:
                if state != "acc":
                    _fail(node, "only supported between an accumulator (MatMul/Gemm/Conv) and "
                          "the next quantizer" if op != "Relu" else
                          "Relu on codes is not supported")
                pending.ops.append(_affine_op(g, node, cur, pending.channels, 1))
            elif op == "MaxPool":
                self.check_pool(node, cur)
                if state == "codes":
                    c, h, w = idx.shape
                    s = _attr(node, "kernel_shape")[0]
                    self.layers.append(ir.PoolLayer(channels=c, height=h, width=w, size=s,
                                                    bits=bits, name=f"pool{len(self.layers)}"))
                    idx = _canonical(*g.shape(nxt)[1:])
                elif state == "acc" and pending.conv:
                    pending.pools.append((node, len(pending.ops)))
                    idx = _canonical(*g.shape(nxt)[1:])
                else:
                    _fail(node, "MaxPool is supported on conv outputs and codes only")
            else:
                _fail(node, "unsupported operation")
            cur = nxt
        if state != "acc":
            _fail(self.g.producer.get(out_name), "the network must end with a MatMul/Gemm "
                  "(raw scores), not a quantizer")
        self.finish_output(pending)
        return self.layers

    def check_pool(self, node, cur):
        k = _attr(node, "kernel_shape")
        strides = _attr(node, "strides", k)
        pads = _attr(node, "pads", [0] * 2 * len(k))
        if (len(k) != 2 or k[0] != k[1] or list(strides) != list(k) or any(pads)
                or _attr(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID")
                or any(d != 1 for d in _attr(node, "dilations", [1, 1]))
                or _attr(node, "ceil_mode", 0) or len(node.output) > 1):
            _fail(node, f"kernel {k}, strides {strides}, pads {pads}: only square pooling with "
                  f"stride = size and no padding is supported")
        if not 2 <= k[0] <= 8:
            _fail(node, f"pool size {k[0]}: expected 2..8")
        _, _, h, w = self.g.shape(cur)
        if h % k[0] or w % k[0]:
            _fail(node, f"a {h}x{w} image is not divisible by the pool size {k[0]}")

    def matmul(self, node, cur, idx, bits, step):
        """Start a :class:`_Pending` layer at a MatMul/Gemm/Conv node."""
        g = self.g
        op = node.op_type
        if node.input[0] != cur:
            _fail(node, "the data must be the first input (x @ W)")
        w = g.weight(node.input[1], node)
        bias = None
        if op == "Conv":
            return self.conv(node, cur, idx, bits, step, w)
        if idx.ndim != 1:
            _fail(node, f"expects a (batch, features) input, got {g.shape(cur)} (add a Flatten)")
        alpha = 1.0
        if op == "Gemm":
            if _attr(node, "transA", 0):
                _fail(node, "transA = 1 is not supported")
            if _attr(node, "transB", 0):
                w = _Weight(w.ints.T, w.scale.T, w.kind, w.table)
            alpha = float(_attr(node, "alpha", 1.0))
            if len(node.input) > 2 and node.input[2]:
                beta = np.float32(_attr(node, "beta", 1.0))
                bias = beta * np.asarray(g.const(node.input[2], node), np.float32)
        if w.ints.ndim != 2 or w.ints.shape[0] != idx.size:
            _fail(node, f"weight shape {w.ints.shape} does not fit {idx.size} inputs")
        n_in, n_out = w.ints.shape
        scale = _per_channel(w.scale, w.scale.shape, 1, node, "the weight scale")
        codes = _ir_codes(w)
        weights = np.empty((n_out, n_in), dtype=np.int64)
        weights[:, idx] = codes.T
        layer = dict(cls=ir.DenseLayer, in_features=n_in, out_features=n_out, in_bits=bits,
                     weight_kind=w.kind, weights=weights, codebook=w.table,
                     name=node.name)
        pending = _Pending(node, layer, step * scale * alpha, n_out, conv=False)
        pending.levels = _levels(w)
        if bias is not None:
            b = _per_channel(bias, (1, n_out), 1, node, "the bias").astype(np.float32)
            pending.ops.append(_Op(lambda x: x + b, np.ones(n_out), True, node))
        return pending, np.arange(n_out)

    def conv(self, node, cur, idx, bits, step, w):
        g = self.g
        shape = g.shape(cur)
        if len(shape) != 4:
            _fail(node, f"expects an NCHW input, got shape {shape}")
        _, c, h, wd = shape
        if not np.array_equal(idx, _canonical(c, h, wd)):
            _fail(node, "its input is not an image in the order the previous layer wrote it "
                  "(a Transpose/Reshape before a Conv is not supported)")
        k = _attr(node, "kernel_shape", list(w.ints.shape[2:]))
        pads = _attr(node, "pads", [0, 0, 0, 0])
        strides = _attr(node, "strides", [1, 1])
        if (len(k) != 2 or k[0] != k[1] or k[0] % 2 == 0 or k[0] > ir.ConvLayer.MAX_KERNEL
                or list(strides) != [1, 1] or len(set(pads)) > 1 or pads[0] > k[0] // 2
                or _attr(node, "group", 1) != 1
                or any(d != 1 for d in _attr(node, "dilations", [1, 1]))
                or _attr(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID")):
            _fail(node, f"kernel {k}, strides {strides}, pads {pads}, group "
                  f"{_attr(node, 'group', 1)}: supported convolutions have stride 1, an odd "
                  f"square kernel ≤ {ir.ConvLayer.MAX_KERNEL}, the same padding ≤ k//2 on "
                  f"every side, no groups or dilation")
        p = int(pads[0])
        if p and bits == 1:
            _fail(node, "zero padding of ±1 inputs is not supported (the IR pads with code 0, "
                  "which is -1 for 1-bit codes); use padding 0 or k-bit inputs")
        o = w.ints.shape[0]
        if w.ints.shape != (o, c, k[0], k[0]):
            _fail(node, f"weight shape {w.ints.shape}, expected ({o}, {c}, {k[0]}, {k[0]})")
        scale = _per_channel(w.scale, w.scale.shape, 0, node, "the weight scale")
        layer = dict(cls=ir.ConvLayer, in_channels=c, out_channels=o, height=h, width=wd,
                     kernel_size=k[0], padding=p, in_bits=bits, weight_kind=w.kind,
                     weights=_ir_codes(w), codebook=w.table, name=node.name)
        pending = _Pending(node, layer, step * scale, o, conv=True)
        pending.levels = _levels(w)
        if len(node.input) > 2 and node.input[2]:
            b = np.asarray(g.const(node.input[2], node), np.float32).reshape(-1)
            pending.ops.append(_Op(lambda x: x + b, np.ones(o), True, node))
        return pending, _canonical(*g.shape(node.output[0])[1:])

    @staticmethod
    def chain(pending, acc, ops=None, nudge=0.0):
        """The float32 value after the chain of ``pending`` for integer accumulators ``acc``
        ``(batch, C)``, as the executor computes it (up to the matmul's own float sums;
        ``nudge`` adds that many accumulator units first)."""
        x = ((np.asarray(acc, np.float64) + nudge) * pending.factor).astype(np.float32)
        for op in pending.ops if ops is None else ops:
            x = np.asarray(op.fn(x), dtype=np.float32)
        return x

    def finish(self, pending, q, bits):
        """Fold the chain and quantizer ``q`` of ``pending`` into thresholds; append it."""
        import torch

        from .export import fold_levels
        slopes = np.sign(pending.factor) * np.prod([op.slope for op in pending.ops] or [1],
                                                   axis=0)
        if pending.pools:
            signs = np.array([np.sign(pending.factor)] + [op.slope for op in pending.ops])
            if np.any(signs < 0):
                node = pending.pools[0][0]
                ch = int(np.argwhere((signs < 0).any(axis=0))[0, 0])
                _fail(node, f"MaxPool before the quantizer {q.node.name!r} needs a "
                      f"non-decreasing scale in every channel (channel {ch} decreases, e.g. a "
                      f"negative batch-norm weight); pool after the quantizer")
        sign = np.where(slopes < 0, -1, 1).astype(np.int64)

        def code_fn(acc):
            return torch.from_numpy(q.codes(self.chain(pending, acc.numpy())))

        layer = dict(pending.layer)
        fan_in = (layer["in_features"] if not pending.conv
                  else layer["in_channels"] * layer["kernel_size"] ** 2)
        thresholds = fold_levels(code_fn, q.n_levels, torch.from_numpy(sign),
                                 in_features=fan_in, in_bits=bits, weight_kind=pending.levels)
        cls = layer.pop("cls")
        self.layers.append(cls(**layer, thresholds=thresholds, threshold_sign=sign))
        self.ambiguous += self.count_ambiguous(pending, q, thresholds, sign, fan_in)
        if pending.pools:
            lay = self.layers[-1]
            h, w = lay.out_height, lay.out_width
            for node, _ in pending.pools:
                s = _attr(node, "kernel_shape")[0]
                self.layers.append(ir.PoolLayer(channels=lay.out_channels, height=h, width=w,
                                                size=s, bits=q.bits, name=node.name))
                h, w = h // s, w // s

    def count_ambiguous(self, pending, q, thresholds, sign, fan_in):
        """Thresholds whose accumulator (or the one below) lands within float rounding of a
        quantizer boundary: there the executor's float sums (whose order qnnfab cannot know)
        may round either way; the IR takes the exact value."""
        count = 0
        for t in (thresholds, thresholds - 1):
            acc = sign[:, None] * t
            eps = 2.0 ** -20 * np.sqrt(fan_in) * np.maximum(np.abs(acc), 1)
            for level in range(acc.shape[1]):
                a, e = acc[:, level][None, :], eps[:, level][None, :]
                lo = q.codes(self.chain(pending, a, nudge=-e))
                hi = q.codes(self.chain(pending, a, nudge=e))
                count += int(np.sum(lo != hi))
        return count

    def finish_output(self, pending):
        """The last layer: its chain must be one positive scale and offset for all outputs."""
        if pending.conv:
            _fail(pending.node, "the last layer must be a MatMul/Gemm (raw scores), not a Conv")
        for op in pending.ops:
            if not op.affine:
                _fail(op.node, "after the last MatMul/Gemm only affine operations are supported "
                      "(the IR's last layer emits raw accumulators)")
        for i in range(len(pending.ops) + 1):
            ops = pending.ops[:i]
            zero = self.chain(pending, np.zeros((1, pending.channels)), ops)[0].astype(np.float64)
            one = self.chain(pending, np.ones((1, pending.channels)), ops)[0].astype(np.float64)
            m, b = one - zero, zero
            tol = 1e-5 * max(abs(m[0]), 1e-30)
            if m[0] <= 0 or np.ptp(m) > 1e-5 * abs(m[0]) or np.ptp(b) > tol:
                node = pending.ops[i - 1].node if i else pending.node
                what = ("a scale that differs between outputs (per-channel weight scale)"
                        if np.ptp(m) > 1e-5 * abs(m[0]) else
                        "a negative scale" if m[0] <= 0 else "an offset that differs between "
                        "outputs (a bias)")
                _fail(node, f"the last layer's affine map has {what}: the IR's last layer "
                      f"emits raw accumulators, so every output must share one positive scale "
                      f"and one offset (export the last layer with bias=False, a per-tensor "
                      f"weight scale and no batch-norm)", hint=None)
        self.output_affine = {"scale": float(m.mean()), "offset": float(b.mean())}
        layer = dict(pending.layer)
        cls = layer.pop("cls")
        self.layers.append(cls(**layer))


def import_qonnx(source, *, classes=None, meta=None):
    """The :class:`qnnfab.ir.Network` of a QONNX model.

    Parameters
    ----------
    source : path, ``onnx.ModelProto`` or ``qonnx`` ``ModelWrapper``
    classes : list of str, optional, the names of the outputs
    meta : dict, optional, extra entries for ``network.meta``

    Returns the network, validated; ``meta`` holds ``source`` ("qonnx"), ``onnx`` (the file
    name), ``input_quant`` (the input quantizer: kind, scale, zero point, bits, signed),
    ``input_layout`` (the input shape without the batch axis and its order in the code
    vector) and ``output_affine`` (``scale``, ``offset``: a score of the file is
    ``scale·acc + offset`` of the IR's accumulator). Raises :class:`QonnxImportError`.
    """
    model = load_qonnx(source)
    walker = _Walker(model)
    layers = walker.run()
    if walker.input_quant is None:
        _fail(None, "no input quantizer")
    info = {"source": "qonnx", "input_quant": walker.input_quant,
            "input_layout": walker.input_layout, "output_affine": walker.output_affine,
            "ambiguous_thresholds": walker.ambiguous}
    if isinstance(source, (str, os.PathLike)):
        info["onnx"] = os.path.basename(os.fspath(source))
    info.update(meta or {})
    first = layers[0]
    n_in = first.in_size
    network = ir.Network(input_features=n_in, input_bits=walker.input_bits, layers=layers,
                         classes=list(classes or []), meta=info)
    try:
        return network.validate()
    except ir.IRError as exc:
        raise QonnxImportError(f"the imported network is not valid IR: {exc}") from None


# -- inputs and outputs ---------------------------------------------------------------------------

def _order(network):
    """``idx`` with ``codes[:, idx.ravel()] = onnx_input.reshape(n, -1)``."""
    layout = network.meta["input_layout"]
    shape = tuple(layout["shape"])
    if layout["order"] == "(y, x, c)":
        return _canonical(*shape).ravel(), shape
    return np.arange(int(np.prod(shape))), shape


def input_codes(network, x):
    """The IR input codes ``(n, input_features)`` of raw float inputs ``x`` (the ONNX model's
    input, ``(n, *shape)``), by the input quantizer recorded in ``meta["input_quant"]``."""
    from qonnx.custom_op.general.intquant import int_quant
    q = network.meta["input_quant"]
    order, shape = _order(network)
    x = np.asarray(x, dtype=np.float32)
    if x.shape[1:] != shape:
        raise ValueError(f"inputs: expected shape (n, {', '.join(map(str, shape))}), got "
                         f"{x.shape}")
    flat = x.reshape(len(x), -1)
    if network.input_bits == 1:
        c = (flat >= 0).astype(np.int64)
    else:
        y = int_quant(flat, np.float32(q["scale"]), np.float32(q["zero_point"]),
                      np.float32(q["bits"]), q["signed"], q["narrow"], q["rounding_mode"])
        c = np.rint(np.asarray(y, np.float64) / q["scale"]).astype(np.int64)
    codes = np.empty_like(c)
    codes[:, order] = c
    return codes


def raw_inputs(network, codes):
    """Float inputs ``(n, *shape)`` of the ONNX model that its input quantizer maps to the IR
    input ``codes`` (the inverse of :func:`input_codes`)."""
    q = network.meta["input_quant"]
    order, shape = _order(network)
    codes = np.asarray(codes, dtype=np.int64)
    values = (2 * codes - 1 if network.input_bits == 1 else codes).astype(np.float64)
    flat = (values[:, order] * (1.0 if network.input_bits == 1 else q["scale"]))
    return flat.astype(np.float32).reshape(len(codes), *shape)


def output_scores(network, acc):
    """The ONNX model's scores that the IR's raw accumulators ``acc`` stand for
    (``meta["output_affine"]``: ``scale·acc + offset``), float64."""
    a = network.meta["output_affine"]
    return np.asarray(acc, np.float64) * a["scale"] + a["offset"]
