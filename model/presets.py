"""Training presets: a named network shape, data set and optimizer settings.

A preset is an architecture in the ``--arch`` language (:mod:`qnnfab.model.arch`, e.g.
``c16,p2,c32,p2,d10``) plus options (weight kinds, activation bits, optimizer settings):
:meth:`Preset.from_arch` builds one. :data:`PRESETS` maps a name to a :class:`Preset`;
:func:`get_preset` looks one up and raises a ``ValueError`` listing the known names otherwise.
:func:`customize` makes the preset ``qnnfab train --arch/--weights/--act-bits/--input-shape``
trains: a registered preset's options (or :data:`CUSTOM`'s) with those replaced.
"""

import dataclasses
import operator
from dataclasses import dataclass

from .arch import (Arch, ArchError, Conv, parse_act_bits, parse_arch, parse_input_shape,
                   parse_weights)
from .sq import SQConfig

__all__ = ["ConvSpec", "Preset", "PRESETS", "CUSTOM", "get_preset", "register", "customize",
           "preset_to_dict", "preset_from_dict"]


@dataclass(frozen=True)
class ConvSpec:
    """One convolution block of a ``"cnn"`` preset (:class:`qnnfab.model.conv.QuantConvBlock`).

    Attributes
    ----------
    channels : int
        Output channels.
    pool : int
        Max-pool size and stride after the activation (0: none).
    kernel_size : int
        Odd, 1..7 (stride 1).
    padding : int
        ``0 .. kernel_size // 2``; padded positions hold activation code 0.
    """
    channels: int
    pool: int = 2
    kernel_size: int = 3
    padding: int = 1

    def __post_init__(self):
        for name in ("channels", "pool", "kernel_size", "padding"):
            operator.index(getattr(self, name))
        if self.channels < 1 or self.pool < 0:
            raise ValueError(f"ConvSpec: channels must be >= 1 and pool >= 0, got {self}")
        if not (1 <= self.kernel_size <= 7 and self.kernel_size % 2) \
                or not 0 <= self.padding <= self.kernel_size // 2:
            raise ValueError(f"ConvSpec: kernel_size must be odd 1..7 and padding "
                             f"0..kernel_size//2, got {self}")


@dataclass(frozen=True)
class Preset:
    """How to build and train one network.

    Attributes
    ----------
    name : str
    dataset : str
        A name for :func:`qnnfab.model.data.load_dataset`.
    split_seed : int
        The data split seed (fixed, so runs with different training seeds share a test split).
    hidden : tuple of int
        Hidden (dense) layer widths; inputs and outputs come from the data set.
    model : str
        Model family (``"mlp"``: :class:`qnnfab.model.layers.QuantMLP`; ``"cnn"``:
        :class:`qnnfab.model.conv.QuantCNN`, the ``conv`` blocks then the ``hidden`` layers).
    conv : tuple of ConvSpec
        The convolution blocks of a ``"cnn"`` preset.
    input_shape : tuple (H, W, C) or None
        The image shape of a ``"cnn"`` preset's inputs; None: a square one-channel image of
        the data set's features (8×8×1 digits, 28×28×1 MNIST).
    weights : str or tuple of str
        Weight kind of every layer or of each layer (convolutions first): ``"binary"``,
        ``"ternary"``, ``"adaptive"`` (Smart Quantization chooses; needs ``sq``) or ``"float"``
        (all layers: a float network for ``qnnfab quantize``).
    act_bits : int or tuple of int
        Bits of the hidden activations (1: sign), for all hidden layers (conv blocks included)
        or each.
    sq : SQConfig or None
        Smart Quantization settings (the regularizer and the switching rule); None: plain QAT.
    epochs, batch_size : int
    lr : float
        Adam's peak learning rate; cosine decay to ``lr * lr_min_factor`` over the epochs.
    lr_min_factor, weight_decay, dropout, label_smoothing : float
    outputs : int or None
        Width of the output layer, the number of classes the data set must have (the last
        ``dN`` of an arch); None: as many as the data set has.
    """
    name: str
    dataset: str = "digits"
    split_seed: int = 0
    hidden: tuple = (256, 256)
    model: str = "mlp"
    conv: tuple = ()
    input_shape: "tuple | None" = None
    weights: "str | tuple" = "binary"
    act_bits: "int | tuple" = 1
    sq: "SQConfig | None" = None
    epochs: int = 60
    batch_size: int = 64
    lr: float = 1e-2
    lr_min_factor: float = 0.01
    weight_decay: float = 0.0
    dropout: float = 0.0
    label_smoothing: float = 0.0
    outputs: "int | None" = None

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"preset {self.name!r}: epochs, batch_size and lr must be positive")
        if self.model not in ("mlp", "cnn"):
            raise ValueError(f"preset {self.name!r}: unknown model family {self.model!r}; "
                             f"known: mlp, cnn")
        if (self.model == "cnn") != bool(self.conv):
            raise ValueError(f"preset {self.name!r}: a cnn preset needs conv blocks and an mlp "
                             f"preset has none (model={self.model!r}, conv={self.conv!r})")
        if not all(isinstance(c, ConvSpec) for c in self.conv):
            raise ValueError(f"preset {self.name!r}: conv must hold ConvSpec objects")
        kinds = (self.weights,) if isinstance(self.weights, str) else tuple(self.weights)
        if "adaptive" in kinds and self.sq is None:
            raise ValueError(f"preset {self.name!r}: adaptive layers need Smart Quantization "
                             f"settings (sq=SQConfig(...))")
        if "float" in kinds and self.conv:
            raise ValueError(f"preset {self.name!r}: float weights are for MLPs (qnnfab "
                             f"quantize takes dense layers); a network with convolutions needs "
                             f"binary, ternary or adaptive weights")
        n_layers = len(self.conv) + len(self.hidden) + 1
        for field, n in (("weights", n_layers), ("act_bits", n_layers - 1)):
            value = getattr(self, field)
            if not isinstance(value, (str, int)) and len(value) != n:
                raise ValueError(f"preset {self.name!r}: {field}: {len(value)} values for "
                                 f"{n} layers; give one for all or one per layer")
        if self.outputs is not None and (isinstance(self.outputs, bool)
                                         or operator.index(self.outputs) < 2):
            raise ValueError(f"preset {self.name!r}: outputs must be an integer >= 2 or None, "
                             f"got {self.outputs!r}")

    @classmethod
    def from_arch(cls, name, arch, **options):
        """The preset of architecture ``arch`` (``--arch`` text or an :class:`Arch`) with
        ``options`` (the other fields; ``weights`` and ``act_bits`` may be ``--weights`` /
        ``--act-bits`` text, checked against the layers)."""
        arch = parse_arch(arch) if isinstance(arch, str) else arch
        if not isinstance(arch, Arch):
            raise TypeError(f"arch must be --arch text or an Arch, not {arch!r}")
        options = dict(options)
        if isinstance(options.get("weights"), str):
            options["weights"] = parse_weights(options["weights"], arch)
        if isinstance(options.get("act_bits"), str):
            options["act_bits"] = parse_act_bits(options["act_bits"], arch)
        for field in ("model", "conv", "hidden", "outputs"):
            if field in options:
                raise TypeError(f"from_arch: {field} comes from the arch, not an option")
        return cls(name=name, model="cnn" if arch.convs else "mlp",
                   conv=tuple(ConvSpec(c.channels, c.pool, c.kernel_size, c.padding)
                              for c in arch.convs),
                   hidden=tuple(arch.hidden), outputs=arch.outputs, **options)

    @property
    def arch(self):
        """The :class:`~qnnfab.model.arch.Arch` of a preset with ``outputs`` (None without)."""
        if self.outputs is None:
            return None
        return Arch(convs=tuple(Conv(c.channels, c.kernel_size, c.padding,
                                     c.pool if c.pool > 1 else 0) for c in self.conv),
                    hidden=tuple(self.hidden), outputs=self.outputs)


#: Presets by name.
PRESETS = {}


def register(preset):
    """Add ``preset`` to :data:`PRESETS`; ValueError if the name is taken."""
    if preset.name in PRESETS:
        raise ValueError(f"preset {preset.name!r} is already registered")
    PRESETS[preset.name] = preset
    return preset


#: The default: a 64-256-256-10 binarized MLP on the digits pixels. Label smoothing 0.1 was
#: chosen on validation accuracy (mean best-epoch val 98.2% vs 97.5% without, seeds 3-6).
register(Preset.from_arch("digits-bnn", "d256,d256,d10", epochs=60, batch_size=64, lr=1e-2,
                          label_smoothing=0.1))


#: All-ternary weights, 2-bit hidden activations, the Smart Quantization regularizer pulling
#: the weights to {-α, 0, +α}. 128-wide hidden layers: 2-bit weights of a 256-wide net would
#: need 169 kbit, more than the UP5K's 120 kbit of block RAM.
register(Preset.from_arch("digits-tnn", "d128,d128,d10", weights="ternary", act_bits=2,
                          epochs=60, batch_size=64, lr=1e-2, label_smoothing=0.1,
                          sq=SQConfig()))

#: Smart Quantization: the same network, each layer binary or ternary as the switching rule
#: decides (at most 1.5 stored bits per weight on average).
register(Preset.from_arch("digits-sq", "d128,d128,d10", weights="adaptive", act_bits=2,
                          epochs=60, batch_size=64, lr=1e-2, label_smoothing=0.1,
                          sq=SQConfig(bit_budget=1.5)))


#: Float weights (2-bit activations) for post-training quantization: `qnnfab quantize` turns
#: it into codebook weights (GA, k-means, fixed point, minifloat, powers of two).
register(Preset.from_arch("digits-mlp", "d128,d128,d10", weights="float", act_bits=2,
                          epochs=60, batch_size=64, lr=1e-2, label_smoothing=0.1))


#: A small CNN on the 8x8 digits: conv 1->16 + pool (4x4x16), conv 16->32 + pool (2x2x32),
#: dense 128->10; ternary weights (the Smart Quantization regularizer pulls them to the levels),
#: 2-bit activations: 6,032 weights (12.1 kbit), 84,224 MACs per image. lr 5e-3 and 80 epochs
#: were chosen on validation accuracy (mean best-epoch val over seeds 3-6: 98.75 % vs 98.06 %
#: at lr 1e-2 and 60 epochs; lr 3e-3, 120 epochs, dropout 0.2 and a 64-wide hidden layer were
#: no better; 24/48 channels reached 99.03 % with twice the weight bits; no pool after the
#: first conv 99.03 % with 3.6x the MACs).
register(Preset.from_arch("digits-cnn", "c16,p2,c32,p2,d10", weights="ternary", act_bits=2,
                          epochs=80, batch_size=64, lr=5e-3, label_smoothing=0.1,
                          sq=SQConfig()))


#: The options of a network given only by ``--arch`` (no ``--preset``): the digits presets'
#: optimizer settings; weights binary unless ``--weights`` says otherwise.
CUSTOM = Preset.from_arch("custom", "d256,d256,d10", epochs=60, batch_size=64, lr=1e-2,
                          label_smoothing=0.1)


def customize(preset=None, *, arch=None, weights=None, act_bits=None, input_shape=None):
    """The preset ``qnnfab train`` trains for ``--preset``/``--arch``/``--weights``/
    ``--act-bits``/``--input-shape``.

    ``preset``: a name or :class:`Preset` whose options are kept (None: :data:`CUSTOM` when
    ``arch`` is given, else ``digits-bnn``); ``arch``: ``--arch`` text or an :class:`Arch`
    replacing its layers; ``weights``, ``act_bits``: ``--weights`` / ``--act-bits`` text (or
    a kind / an int / a tuple per layer); ``input_shape``: ``"HxWxC"`` or ``(H, W, C)``.

    Defaults when not given: the preset's weights and activation bits (for :data:`CUSTOM`: 1-bit
    activations when every layer is binary, else 2), a per-layer list only if the layer count
    is unchanged. Ternary or adaptive weights bring Smart Quantization's regularizer
    (``SQConfig()``) when the preset has none. The name is the preset's, followed by what was
    replaced: ``custom(arch=c16,p2,d10, weights=ternary, act_bits=2)``.
    """
    base = get_preset(preset if preset is not None else "digits-bnn" if arch is None
                      else CUSTOM)
    if arch is None and weights is None and act_bits is None and input_shape is None:
        return base
    if arch is None:
        if base.outputs is None:
            raise ValueError(f"preset {base.name!r} has no arch to change the weights or "
                             f"activations of; give --arch")
        new = base.arch
    else:
        new = parse_arch(arch) if isinstance(arch, str) else arch
    same_layers = base.outputs is not None and \
        (len(base.conv), len(base.hidden)) == (len(new.convs), len(new.hidden))
    changes = {}
    if arch is not None or base is CUSTOM:
        changes["arch"] = str(new)

    def per_layer(value, parse, field, n):
        if value is None:
            value = getattr(base, field)
            if isinstance(value, (str, int)) or same_layers:
                return value
            raise ArchError(f"preset {base.name!r} gives {field} per layer ({len(value)} "
                            f"values); give --{field.replace('_', '-')} for the {n} layers of "
                            f"--arch {new}")
        if isinstance(value, bool):
            raise TypeError(f"{field} must be text, a number or a sequence, not {value!r}")
        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        return parse(str(value), new)

    kinds = per_layer(weights, parse_weights, "weights", new.n_weight_layers)
    if weights is not None or base is CUSTOM:
        changes["weights"] = kinds if isinstance(kinds, str) else ",".join(kinds)
    if act_bits is None and base is CUSTOM:
        all_binary = {kinds} == {"binary"} if isinstance(kinds, str) else set(kinds) == {"binary"}
        act_bits = 1 if all_binary else 2
    bits = per_layer(act_bits, parse_act_bits, "act_bits", new.n_hidden_layers)
    if act_bits is not None or base is CUSTOM:
        changes["act_bits"] = bits if isinstance(bits, int) else ",".join(map(str, bits))
    shape = base.input_shape
    if input_shape is not None:
        shape = parse_input_shape(input_shape) if isinstance(input_shape, str) \
            else tuple(input_shape)
        changes["input_shape"] = "x".join(map(str, shape))
    sq = base.sq
    used = {kinds} if isinstance(kinds, str) else set(kinds)
    if sq is None and used & {"ternary", "adaptive"}:
        sq = SQConfig()
    name = f"{base.name}({', '.join(f'{k}={v}' for k, v in changes.items())})"
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(Preset)
              if f.name not in ("name", "model", "conv", "hidden", "outputs")}
    fields.update(weights=kinds, act_bits=bits, input_shape=shape, sq=sq)
    return Preset.from_arch(name, new, **fields)


def preset_to_dict(preset):
    """A preset as plain data (dicts, lists, numbers, strings; for checkpoints)."""
    return dataclasses.asdict(get_preset(preset))


def preset_from_dict(fields):
    """The :class:`Preset` :func:`preset_to_dict` gave these fields for."""
    fields = dict(fields)
    if fields.get("sq") is not None:
        fields["sq"] = SQConfig(**fields["sq"])
    fields["conv"] = tuple(ConvSpec(**c) for c in fields.get("conv", ()))
    for name in ("hidden", "input_shape", "weights", "act_bits"):
        if isinstance(fields.get(name), list):
            fields[name] = tuple(fields[name])
    return Preset(**fields)


def get_preset(name):
    """The preset called ``name``; ValueError listing the known presets otherwise."""
    if isinstance(name, Preset):
        return name
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}") \
            from None
