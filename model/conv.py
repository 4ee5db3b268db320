"""Quantized convolutions (torch) whose inference is exactly what the integer model computes.

* :class:`QuantConv2d` — a :class:`~qnnfab.model.layers.QuantLinear` whose ``in_features`` are
  one ``C_in × k × k`` window (feature order ``(c, ky, kx)``, the IR's ``dense_view`` order),
  applied at every position: stride 1, ``padding`` rows and columns of a given *value* around
  the image. The weights are quantized exactly as a dense layer's (binary, ternary with the
  trained ``α``, adaptive, float, codebook), so Smart Quantization and export treat both alike.
  The window products are one integer matrix product (``unfold`` then ``@``, no Winograd or FFT
  convolution algorithm), so accumulators are exact integers in float32.
* :class:`QuantConvBlock` — ``QuantConv2d → (× in_step) → BatchNorm2d → activation →
  (MaxPool2d)``: the activation is ``sign`` (1 bit) or k-bit codes, as
  :class:`~qnnfab.model.layers.QuantDense`; the pool comes after the activation, so it takes
  the maximum of the codes exactly. Padded positions hold activation *code* 0, the IR rule:
  value 0 for k-bit inputs, ``-1`` for 1-bit (``±1``) inputs.
* :class:`QuantCNN` — conv blocks, flatten (torch's ``(c, y, x)`` order), then the dense
  layers of :class:`~qnnfab.model.layers.QuantMLP` (hidden :class:`QuantDense`, then
  :class:`QuantOutput`). Inputs are the IR's input vectors: the image flattened ``(y, x, c)``.
"""

import operator

import torch
import torch.nn.functional as F
from torch import nn

from .layers import CLIP_INIT, QuantDense, QuantLinear, QuantOutput, _per_layer, batchnorm_eval
from .presets import ConvSpec
from .quantizers import quantize_activation, sign_activation

__all__ = ["QuantConv2d", "QuantConvBlock", "QuantCNN", "pad_value"]


def pad_value(in_bits):
    """The value of activation code 0 for ``in_bits``-bit inputs (what padding holds)."""
    return -1.0 if operator.index(in_bits) == 1 else 0.0


class QuantConv2d(QuantLinear):
    """A ``k × k`` convolution, stride 1, with quantized weights (a :class:`QuantLinear` per
    window).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int
        Odd, 1..7.
    padding : int
        ``0 .. kernel_size // 2`` rows/columns on each side.
    weight_kind : str
        As :class:`QuantLinear` (``"binary"``, ``"ternary"``, ``"adaptive"``, ``"float"``).

    Members
    -------
    weight : Parameter, shape (out_channels, in_channels·k·k)
        The latent float weights, window order ``(c, ky, kx)``; :meth:`kernel_values` gives the
        quantized kernels shaped ``(out, in, k, k)``.

    ``forward(x, pad=0.0)`` takes ``(batch, in_channels, H, W)`` values and returns the
    integer-valued accumulators ``(batch, out_channels, Ho, Wo)``, ``Ho = H + 2·padding − k + 1``,
    the padding holding ``pad``.
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, padding=1,
                 weight_kind="binary"):
        in_channels, out_channels = operator.index(in_channels), operator.index(out_channels)
        k, p = operator.index(kernel_size), operator.index(padding)
        if not (1 <= k <= 7 and k % 2 == 1):
            raise ValueError(f"kernel_size must be odd and 1..7, not {kernel_size}")
        if not 0 <= p <= k // 2:
            raise ValueError(f"padding must be 0..{k // 2} for kernel_size {k}, not {padding}")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channels must be >= 1, not {in_channels}, {out_channels}")
        super().__init__(in_channels * k * k, out_channels, weight_kind)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.padding = k, p
        self.set_kernel_source(None)

    def set_kernel_source(self, source):
        """Take the quantized weights from ``source()`` (a callable returning the
        ``(out, in·k·k)`` or ``(out, in, k, k)`` weight values) instead of the latent weights;
        None restores them. Used by :mod:`qnnfab.model.kernel_finetune` (clustered kernels).
        The source is not a submodule: whoever owns its parameters trains them."""
        object.__setattr__(self, "_kernel_source", source)  # never a registered submodule

    @property
    def kernel_source(self):
        return self._kernel_source

    def weight_values(self):
        if self._kernel_source is not None:
            return self._kernel_source().reshape(self.out_features, self.in_features)
        return super().weight_values()

    def kernel_values(self):
        """The quantized kernels ``(out, in, k, k)`` (differentiable through the STE)."""
        k = self.kernel_size
        return self.weight_values().reshape(self.out_channels, self.in_channels, k, k)

    def output_size(self, height, width):
        """``(Ho, Wo)`` for an input of ``height × width``."""
        grow = 2 * self.padding - self.kernel_size + 1
        return height + grow, width + grow

    def forward(self, x, pad=0.0):
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"QuantConv2d: expected input (batch, {self.in_channels}, H, W), "
                             f"got {tuple(x.shape)}")
        p, k = self.padding, self.kernel_size
        if p:
            x = F.pad(x, (p, p, p, p), value=float(pad))
        b, _, h, w = x.shape
        ho, wo = h - k + 1, w - k + 1
        if ho < 1 or wo < 1:
            raise ValueError(f"QuantConv2d: a {h - 2 * p}x{w - 2 * p} input is smaller than "
                             f"the {k}x{k} kernel with padding {p}")
        cols = F.unfold(x, k)                                  # (b, C_in·k·k, Ho·Wo), (c, ky, kx)
        acc = self.weight_values() @ cols                      # (b, C_out, Ho·Wo)
        return acc.reshape(b, self.out_channels, ho, wo)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"padding={self.padding}, kind={self.kind}{' (adaptive)' if self.adaptive else ''}")


class QuantConvBlock(nn.Module):
    """``QuantConv2d → (× in_step) → BatchNorm2d → activation → (MaxPool2d(pool))``.

    Parameters
    ----------
    in_channels, out_channels : int
    in_bits : int
        Bits of the input codes (1: ``±1`` values, padded with ``-1``; else codes, padded 0).
    kernel_size, padding : int
        See :class:`QuantConv2d`.
    pool : int
        Max-pool size and stride (0 or 1: none).
    weight_kind : str
    act_bits : int
        1: ``sign`` (``±1`` values); 2..8: unsigned codes with a learned clip (PACT).

    ``forward(x, in_step)`` returns ``(out, step)`` like :class:`QuantDense`, ``out`` shaped
    ``(batch, out_channels, Ho', Wo')`` (after the pool).
    """

    def __init__(self, in_channels, out_channels, *, in_bits, kernel_size=3, padding=1, pool=0,
                 weight_kind="binary", act_bits=1):
        super().__init__()
        self.in_bits = operator.index(in_bits)
        self.act_bits = operator.index(act_bits)
        if not 1 <= self.act_bits <= 8:
            raise ValueError(f"act_bits must be 1..8, not {act_bits}")
        if not 1 <= self.in_bits <= 8:
            raise ValueError(f"in_bits must be 1..8, not {in_bits}")
        self.pool = operator.index(pool)
        if self.pool < 0:
            raise ValueError(f"pool must be >= 0, not {pool}")
        self.conv = QuantConv2d(in_channels, out_channels, kernel_size, padding, weight_kind)
        self.bn = nn.BatchNorm2d(out_channels)
        if self.act_bits > 1:
            self.clip = nn.Parameter(torch.tensor(CLIP_INIT))

    @property
    def linear(self):
        """The :class:`QuantConv2d` (its :class:`QuantLinear` interface: what
        :func:`qnnfab.model.export.fold_dense` and Smart Quantization use)."""
        return self.conv

    @property
    def pooled(self):
        return self.pool > 1

    step = QuantDense.step

    def accumulate(self, x):
        """The integer-valued accumulators ``(batch, C_out, Ho, Wo)`` (padding: code 0)."""
        return self.conv(x, pad_value(self.in_bits))

    def normalize(self, acc):
        """Batch-norm over the channel axis (axis 1): batch statistics when training (4-D
        input), :func:`batchnorm_eval` otherwise, element by element, so a ``(1, C)``
        accumulator row gives bit for bit what the same values give inside an image."""
        if self.training:
            return self.bn(acc)
        if acc.dim() == 4:
            return batchnorm_eval(acc.permute(0, 2, 3, 1), self.bn).permute(0, 3, 1, 2)
        return batchnorm_eval(acc, self.bn)

    def post(self, acc, in_step=None):
        """Scale, normalize and quantize accumulators (channels on axis 1; any trailing axes):
        ``±1`` values or k-bit codes, as :meth:`QuantDense.post`."""
        step = in_step
        if self.conv.w_scale is not None:
            step = self.conv.w_scale if step is None else step * self.conv.w_scale
        y = self.normalize(acc if step is None else acc * step)
        if self.act_bits == 1:
            return sign_activation(y)
        return quantize_activation(y, self.clip, self.act_bits)

    def activate(self, x, in_step=None):
        """The activation before the pool: ``(batch, C_out, Ho, Wo)``."""
        return self.post(self.accumulate(x), in_step)

    def forward(self, x, in_step=None):
        out = self.activate(x, in_step)
        if self.pooled:
            out = F.max_pool2d(out, self.pool)
        return out, self.step

    output_codes = QuantDense.output_codes
    constrain_ = QuantDense.constrain_

    def output_shape(self, height, width):
        """``(C_out, H', W')`` after the convolution and the pool, for ``height × width``."""
        ho, wo = self.conv.output_size(height, width)
        if self.pooled:
            if ho % self.pool or wo % self.pool:
                raise ValueError(f"a {ho}x{wo} convolution output is not divisible by the "
                                 f"pool size {self.pool}")
            ho, wo = ho // self.pool, wo // self.pool
        return self.conv.out_channels, ho, wo


def _spec(spec):
    if isinstance(spec, ConvSpec):
        return spec
    if isinstance(spec, dict):
        return ConvSpec(**spec)
    return ConvSpec(*spec)


class QuantCNN(nn.Module):
    """Quantized convolution blocks, then a quantized MLP.

    Parameters
    ----------
    input_shape : (H, W, C)
        The image; inputs are ``(batch, H·W·C)`` codes flattened ``(y, x, c)``.
    convs : sequence of :class:`~qnnfab.model.presets.ConvSpec` (or its field tuples)
        The conv blocks in order.
    hidden : sequence of int
        Widths of the hidden dense layers after the flatten (may be empty).
    n_classes : int
    input_bits : int
    weight_kinds : str or sequence of str
        For every layer, or one per layer: convs, hidden dense layers, output.
    act_bits : int or sequence of int
        For every conv block and hidden dense layer, or one each.
    dropout : float
        Dropout before each hidden dense layer and before the output layer (training only).
    """

    def __init__(self, input_shape, convs, hidden, n_classes, *, input_bits,
                 weight_kinds="binary", act_bits=1, dropout=0.0):
        super().__init__()
        h, w, c = (operator.index(v) for v in input_shape)
        self.input_shape = (h, w, c)
        self.input_bits = operator.index(input_bits)
        specs = [_spec(s) for s in convs]
        if not specs:
            raise ValueError("a QuantCNN needs at least one convolution")
        hidden = [operator.index(f) for f in hidden]
        n_layers = len(specs) + len(hidden) + 1
        kinds = _per_layer(weight_kinds, n_layers, "weight_kinds")
        bits = _per_layer(act_bits, n_layers - 1, "act_bits")
        blocks, in_bits, shape = [], self.input_bits, (c, h, w)
        for i, s in enumerate(specs):
            block = QuantConvBlock(shape[0], s.channels, in_bits=in_bits,
                                   kernel_size=s.kernel_size, padding=s.padding, pool=s.pool,
                                   weight_kind=kinds[i], act_bits=bits[i])
            shape = block.output_shape(*shape[1:])
            blocks.append(block)
            in_bits = bits[i]
        self.convs = nn.ModuleList(blocks)
        self.flat_shape = shape  # (C, H, W) entering the dense layers
        features = [shape[0] * shape[1] * shape[2], *hidden, operator.index(n_classes)]
        self.features = features
        n = len(specs)
        self.hidden = nn.ModuleList(
            QuantDense(i, o, weight_kind=kinds[n + j], act_bits=bits[n + j], dropout=dropout)
            for j, (i, o) in enumerate(zip(features[:-2], features[1:-1])))
        self.head_dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.head = QuantOutput(features[-2], features[-1], weight_kind=kinds[-1])

    @property
    def input_features(self):
        h, w, c = self.input_shape
        return h * w * c

    def quant_linears(self):
        """Every :class:`QuantLinear` (the convolutions first), in layer order."""
        return ([block.conv for block in self.convs] + [block.linear for block in self.hidden]
                + [self.head.linear])

    @torch.no_grad()
    def constrain_(self):
        for block in (*self.convs, *self.hidden):
            block.constrain_()
        self.head.linear.clip_()

    def image(self, x):
        """Input vectors ``(batch, H·W·C)`` in ``(y, x, c)`` order as ``(batch, C, H, W)``."""
        h, w, c = self.input_shape
        if x.dim() != 2 or x.shape[1] != h * w * c:
            raise ValueError(f"QuantCNN: expected inputs (batch, {h * w * c}), got "
                             f"{tuple(x.shape)}")
        return x.reshape(-1, h, w, c).permute(0, 3, 1, 2)

    def forward(self, x):
        x, step = self.image(x), None
        for block in self.convs:
            x, step = block(x, step)
        x = x.flatten(1)
        for block in self.hidden:
            x, step = block(x, step)
        return self.head(self.head_dropout(x), step)

    @torch.no_grad()
    def trace(self, x):
        """``(codes, scores)`` in IR layer order: for each conv block its output codes and,
        when it pools, the pooled codes (each ``(batch, H·W·C)`` flattened ``(y, x, c)``); then
        each hidden dense layer's codes; and the output layer's integer accumulators."""
        def flat(t):
            return t.permute(0, 2, 3, 1).flatten(1)

        codes, x, step = [], self.image(x), None
        for block in self.convs:
            out = block.activate(x, step)
            codes.append(flat(block.output_codes(out)))
            if block.pooled:
                out = F.max_pool2d(out, block.pool)
                codes.append(flat(block.output_codes(out)))
            x, step = out, block.step
        x = x.flatten(1)
        for block in self.hidden:
            x, step = block(x, step)
            codes.append(block.output_codes(x))
        return codes, self.head.linear(x)
