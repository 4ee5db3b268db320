"""The ``--arch`` language: a network's layer stack in one short string.

Grammar (tokens separated by commas; spaces around them and letter case are ignored)::

    ARCH  := LAYER ("," LAYER)*
    LAYER := "c" CHANNELS ["k" KERNEL] ["p" PADDING]    convolution, stride 1
           | "p" SIZE                                   max-pool SIZE x SIZE, stride SIZE
           | "d" WIDTH                                  dense (fully connected)

========== ======================================================================================
``c16``    3x3 convolution, 16 output channels, padding 1 ("same": ``KERNEL // 2``)
``c16k5``  5x5 convolution (``KERNEL`` odd, 1..7), padding 2
``c8k3p0`` 3x3 convolution without padding (``PADDING`` 0..``KERNEL // 2``; padded positions
           hold activation code 0)
``p2``     2x2 max-pool, stride 2, on the codes of the convolution right before it
``d128``   dense layer, 128 outputs; the **last** token is a dense layer, the output layer: its
           width is the number of classes (raw scores and their argmax, no activation)
========== ======================================================================================

Order: convolutions (each optionally followed by one pool), then dense layers; the image is
flattened ``(y, x, c)`` between them. Every convolution and every dense layer but the last is
a hidden layer with batch-norm and a quantized activation.

Examples: ``d256,d256,d10`` (the ``digits-bnn`` MLP), ``c16,p2,c32,p2,d10`` (``digits-cnn``),
``c32k5,p2,c64,p2,d256,d10`` (a CNN for 28x28 images).

Per-layer options (``--weights``, ``--act-bits``) are one value for every layer or a
comma-separated list with one value per *weight* layer (convolutions and dense layers, in order;
pools have none) for ``--weights``, per *hidden* layer (all weight layers but the output) for
``--act-bits``: :func:`parse_weights`, :func:`parse_act_bits`.

Pure Python (no torch, no numpy): :mod:`qnnfab.model.presets` turns an :class:`Arch` into a
:class:`~qnnfab.model.presets.Preset`.
"""

import re
from dataclasses import dataclass

__all__ = ["ArchError", "Conv", "Pool", "Dense", "Arch", "parse_arch", "parse_weights",
           "parse_act_bits", "parse_input_shape", "WEIGHT_CHOICES", "MAX_KERNEL",
           "MAX_ACT_BITS"]

#: What ``--weights`` takes per layer.
WEIGHT_CHOICES = ("binary", "ternary", "adaptive", "float")

#: Largest (odd) convolution kernel.
MAX_KERNEL = 7

#: Largest activation width (bits).
MAX_ACT_BITS = 8

_SYNTAX = ("cN[kK][pP] (convolution: N channels, K x K kernel, padding P), pS (max-pool S x S) "
           "or dN (dense, N outputs)")

_CONV = re.compile(r"c(\d+)(?:k(\d+))?(?:p(\d+))?")
_POOL = re.compile(r"p(\d+)")
_DENSE = re.compile(r"d(\d+)")


class ArchError(ValueError):
    """A bad ``--arch``, ``--weights``, ``--act-bits`` or ``--input-shape`` text (the message
    names the option, the bad token and what was expected)."""


@dataclass(frozen=True)
class Conv:
    """A convolution token: ``channels`` outputs, ``kernel_size`` x ``kernel_size``, stride 1,
    ``padding`` rows/columns of code 0 around the image; ``pool`` (0: none) from the ``pS``
    token after it."""
    channels: int
    kernel_size: int = 3
    padding: int = 1
    pool: int = 0

    def __str__(self):
        text = f"c{self.channels}"
        if self.kernel_size != 3:
            text += f"k{self.kernel_size}"
        if self.padding != self.kernel_size // 2:
            text += f"p{self.padding}"
        return text


@dataclass(frozen=True)
class Pool:
    """A max-pool token: ``size`` x ``size`` windows, stride ``size``."""
    size: int

    def __str__(self):
        return f"p{self.size}"


@dataclass(frozen=True)
class Dense:
    """A dense token: ``width`` outputs."""
    width: int

    def __str__(self):
        return f"d{self.width}"


@dataclass(frozen=True)
class Arch:
    """A parsed layer stack (:func:`parse_arch`).

    Attributes
    ----------
    convs : tuple of Conv
        The convolutions in order, each with the pool that follows it.
    hidden : tuple of int
        Widths of the hidden dense layers.
    outputs : int
        Width of the output layer (the number of classes).
    """
    convs: tuple
    hidden: tuple
    outputs: int

    @property
    def n_weight_layers(self):
        """Convolutions and dense layers: what ``--weights`` counts."""
        return len(self.convs) + len(self.hidden) + 1

    @property
    def n_hidden_layers(self):
        """Every weight layer but the output: what ``--act-bits`` counts."""
        return self.n_weight_layers - 1

    @property
    def tokens(self):
        """The canonical tokens (defaults left out): ``["c16", "p2", "d10"]``."""
        out = []
        for conv in self.convs:
            out.append(str(conv))
            if conv.pool:
                out.append(str(Pool(conv.pool)))
        return out + [str(Dense(w)) for w in (*self.hidden, self.outputs)]

    def weight_layer_names(self):
        """One label per weight layer, ``"c16"``, ``"d128"``, ... (for messages)."""
        return [str(c) for c in self.convs] + [f"d{w}" for w in (*self.hidden, self.outputs)]

    def __str__(self):
        return ",".join(self.tokens)

    def shapes(self, input_shape):
        """``[(token, (H, W, C)), ...]``: the shape after each convolution and pool for an
        ``(H, W, C)`` image, then ``(token, (width,))`` for each dense layer; ArchError naming
        the token when the image is too small for a kernel or a pool does not divide it."""
        h, w, c = input_shape
        out = []
        for conv in self.convs:
            k, p = conv.kernel_size, conv.padding
            if h + 2 * p < k or w + 2 * p < k:
                raise ArchError(f"--arch {self}: {conv}: its {k}x{k} kernel (padding {p}) "
                                f"does not fit the {h}x{w}x{c} input it gets")
            h, w, c = h + 2 * p - k + 1, w + 2 * p - k + 1, conv.channels
            out.append((str(conv), (h, w, c)))
            if conv.pool:
                s = conv.pool
                if h % s or w % s:
                    raise ArchError(f"--arch {self}: p{s} after {conv}: the {h}x{w}x{c} "
                                    f"output of {conv} is not divisible by the pool size {s}")
                h, w = h // s, w // s
                out.append((f"p{s}", (h, w, c)))
        for width in (*self.hidden, self.outputs):
            out.append((f"d{width}", (width,)))
        return out

    def describe(self, input_shape=None, input_features=None):
        """One line: ``8x8x1 -> c16 8x8x16 -> p2 4x4x16 -> d10``, or without an image shape
        ``64 -> d256 -> d256 -> d10``."""
        if self.convs:
            parts = ["x".join(map(str, input_shape))]
            parts += [f"{tok} {'x'.join(map(str, shape))}" if len(shape) == 3 else tok
                      for tok, shape in self.shapes(input_shape)]
        else:
            parts = [str(input_features)] if input_features is not None else []
            parts += self.tokens
        return " -> ".join(parts)


def _number(token, text, what, lo, hi=None):
    value = int(text)
    if value < lo or (hi is not None and value > hi):
        want = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ArchError(f"{token!r}: {what} must be {want}, got {value}")
    return value


def parse_arch(text):
    """Parse an ``--arch`` string (see the module docstring) into an :class:`Arch`.

    Raises
    ------
    ArchError
        Naming the position and text of the bad token and what was expected there.
    """
    if not isinstance(text, str):
        raise TypeError(f"--arch must be a string, not {text!r}")
    if not text.strip():
        raise ArchError(f"--arch: empty; expected comma-separated layers: {_SYNTAX}, the last "
                        f"one dense (e.g. c16,p2,c32,p2,d128,d10)")
    convs, dense = [], []
    raw = text.split(",")
    prev = None  # the previous token's text, when it was a convolution
    for i, token in enumerate(raw, 1):
        token = token.strip().lower()
        where = f"--arch {text.strip()!r}: layer {i} of {len(raw)}"
        if not token:
            raise ArchError(f"{where}: empty token; expected {_SYNTAX}")
        try:
            after_conv, prev = prev, None
            if m := _CONV.fullmatch(token):
                if dense:
                    raise ArchError(f"{token!r}: a convolution after the dense layer "
                                    f"d{dense[-1]}; convolutions (and pools) come first, then "
                                    f"the dense layers")
                k = 3 if m[2] is None else _number(token, m[2], "the kernel size K", 1,
                                                   MAX_KERNEL)
                if k % 2 == 0:
                    raise ArchError(f"{token!r}: the kernel size K must be odd (1, 3, 5, 7), "
                                    f"got {k}")
                p = k // 2 if m[3] is None else _number(token, m[3], "the padding P", 0, k // 2)
                convs.append(Conv(_number(token, m[1], "the channel count N", 1), k, p))
                prev = token
            elif m := _POOL.fullmatch(token):
                size = _number(token, m[1], "the pool size S", 2)
                if after_conv is None:
                    raise ArchError(f"{token!r}: a max-pool must follow a convolution "
                                    f"directly, " + (f"not {raw[i - 2].strip()!r}" if i > 1
                                                     else "not start the network"))
                c = convs[-1]
                convs[-1] = Conv(c.channels, c.kernel_size, c.padding, size)
            elif m := _DENSE.fullmatch(token):
                dense.append(_number(token, m[1], "the width N", 1))
            else:
                raise ArchError(f"{token!r}: expected {_SYNTAX}")
        except ArchError as exc:
            raise ArchError(f"{where}: {exc}") from None
    last = raw[-1].strip().lower()
    if not _DENSE.fullmatch(last):
        raise ArchError(f"--arch {text.strip()!r}: the last layer is {last!r}; it must be a "
                        f"dense layer dN, the output (N = the number of classes)")
    if dense[-1] < 2:
        raise ArchError(f"--arch {text.strip()!r}: the output layer d{dense[-1]} needs at "
                        f"least 2 outputs (classes)")
    return Arch(convs=tuple(convs), hidden=tuple(dense[:-1]), outputs=dense[-1])


def _per_layer(option, text, n, names, parse_one):
    """One value for all ``n`` layers, or ``n`` comma-separated values (``names`` label them)."""
    if not isinstance(text, str):
        raise TypeError(f"{option} must be a string, not {text!r}")
    parts = [p.strip() for p in text.split(",")]
    values = []
    for i, part in enumerate(parts):
        try:
            values.append(parse_one(part))
        except ArchError as exc:
            where = f" (value {i + 1} of {len(parts)})" if len(parts) > 1 else ""
            raise ArchError(f"{option} {text!r}{where}: {exc}") from None
    if len(values) == 1:
        return values[0]
    if n is not None and len(values) != n:
        raise ArchError(f"{option} {text!r}: {len(values)} values; expected one for every "
                        f"layer or {n}, one per layer ({', '.join(names)})")
    return tuple(values)


def _weight(part):
    if part not in WEIGHT_CHOICES:
        raise ArchError(f"{part!r}: expected {'|'.join(WEIGHT_CHOICES)}")
    return part


def _bits(part):
    if not re.fullmatch(r"\d+", part):
        raise ArchError(f"{part!r}: expected an integer 1..{MAX_ACT_BITS} (1: sign, +-1)")
    value = int(part)
    if not 1 <= value <= MAX_ACT_BITS:
        raise ArchError(f"{part!r}: expected 1..{MAX_ACT_BITS} bits, got {value}")
    return value


def parse_weights(text, arch=None):
    """``--weights``: ``"ternary"`` → ``"ternary"``; ``"ternary,binary,ternary"`` → a tuple with
    one kind per weight layer of ``arch`` (an :class:`Arch`, or None: any count).
    ``float`` is all or nothing (a float network is quantized afterwards, ``qnnfab quantize``).
    """
    n = None if arch is None else arch.n_weight_layers
    names = [] if arch is None else arch.weight_layer_names()
    value = _per_layer("--weights", text, n, names, _weight)
    if isinstance(value, tuple) and "float" in value and set(value) != {"float"}:
        raise ArchError(f"--weights {text!r}: float is for every layer or none (a float network "
                        f"is quantized afterwards with `qnnfab quantize`)")
    return value


def parse_act_bits(text, arch=None):
    """``--act-bits``: ``"2"`` → 2; ``"1,2"`` → a tuple with one width per hidden layer of
    ``arch`` (every weight layer but the output; None: any count)."""
    n = None if arch is None else arch.n_hidden_layers
    names = [] if arch is None else arch.weight_layer_names()[:-1]
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    return _per_layer("--act-bits", text, n, names, _bits)


def parse_input_shape(text):
    """``--input-shape``: ``"28x28x1"`` (or ``"28x28"``, one channel) → ``(28, 28, 1)``."""
    if not isinstance(text, str):
        raise TypeError(f"--input-shape must be a string, not {text!r}")
    m = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*(?:x\s*(\d+)\s*)?", text.lower())
    if not m:
        raise ArchError(f"--input-shape {text!r}: expected HxWxC (e.g. 28x28x1) or HxW "
                        f"(one channel)")
    shape = (int(m[1]), int(m[2]), int(m[3] or 1))
    if min(shape) < 1:
        raise ArchError(f"--input-shape {text!r}: height, width and channels must be >= 1")
    return shape
