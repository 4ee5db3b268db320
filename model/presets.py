"""Training presets: a named network shape, data set and optimizer settings.

:data:`PRESETS` maps a name to a :class:`Preset`; :func:`get_preset` looks one up and raises a
``ValueError`` listing the known names otherwise. Later presets (``digits-tnn``, ``digits-sq``,
``digits-cnn``) register here.
"""

from dataclasses import dataclass

from .sq import SQConfig

__all__ = ["Preset", "PRESETS", "get_preset", "register"]


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
        Hidden layer widths; inputs and outputs come from the data set.
    model : str
        Model family (``"mlp"``: :class:`qnnfab.model.layers.QuantMLP`).
    weights : str or tuple of str
        Weight kind of every layer or of each layer: ``"binary"``, ``"ternary"``, ``"adaptive"``
        (Smart Quantization chooses; needs ``sq``) or ``"float"`` (all layers: a float network
        for ``qnnfab quantize``).
    act_bits : int or tuple of int
        Bits of the hidden activations (1: sign), for all hidden layers or each.
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


def get_preset(name):
    """The preset called ``name``; ValueError listing the known presets otherwise."""
    if isinstance(name, Preset):
        return name
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}") \
            from None
