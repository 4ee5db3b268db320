"""Training presets: a named network shape, data set and optimizer settings.

:data:`PRESETS` maps a name to a :class:`Preset`; :func:`get_preset` looks one up and raises a
``ValueError`` listing the known names otherwise.
"""

import dataclasses
import operator
from dataclasses import dataclass

from .sq import SQConfig

__all__ = ["ConvSpec", "Preset", "PRESETS", "get_preset", "register", "preset_to_dict",
           "preset_from_dict"]


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
register(Preset(name="digits-bnn", hidden=(256, 256), epochs=60, batch_size=64, lr=1e-2,
                label_smoothing=0.1))


#: All-ternary weights, 2-bit hidden activations, the Smart Quantization regularizer pulling
#: the weights to {-α, 0, +α}. 128-wide hidden layers: 2-bit weights of a 256-wide net would
#: need 169 kbit, more than the UP5K's 120 kbit of block RAM.
register(Preset(name="digits-tnn", hidden=(128, 128), weights="ternary", act_bits=2, epochs=60,
                batch_size=64, lr=1e-2, label_smoothing=0.1, sq=SQConfig()))

#: Smart Quantization: the same network, each layer binary or ternary as the switching rule
#: decides (at most 1.5 stored bits per weight on average).
register(Preset(name="digits-sq", hidden=(128, 128), weights="adaptive", act_bits=2, epochs=60,
                batch_size=64, lr=1e-2, label_smoothing=0.1, sq=SQConfig(bit_budget=1.5)))


#: Float weights (2-bit activations) for post-training quantization: `qnnfab quantize` turns
#: it into codebook weights (GA, k-means, fixed point, minifloat, powers of two).
register(Preset(name="digits-mlp", hidden=(128, 128), weights="float", act_bits=2, epochs=60,
                batch_size=64, lr=1e-2, label_smoothing=0.1))


#: A small CNN on the 8x8 digits: conv 1->16 + pool (4x4x16), conv 16->32 + pool (2x2x32),
#: dense 128->10; ternary weights (the Smart Quantization regularizer pulls them to the levels),
#: 2-bit activations: 6,032 weights (12.1 kbit), 84,224 MACs per image. lr 5e-3 and 80 epochs
#: were chosen on validation accuracy (mean best-epoch val over seeds 3-6: 98.75 % vs 98.06 %
#: at lr 1e-2 and 60 epochs; lr 3e-3, 120 epochs, dropout 0.2 and a 64-wide hidden layer were
#: no better; 24/48 channels reached 99.03 % with twice the weight bits; no pool after the
#: first conv 99.03 % with 3.6x the MACs).
register(Preset(name="digits-cnn", model="cnn", conv=(ConvSpec(16), ConvSpec(32)), hidden=(),
                weights="ternary", act_bits=2, epochs=80, batch_size=64, lr=5e-3,
                label_smoothing=0.1, sq=SQConfig()))


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
