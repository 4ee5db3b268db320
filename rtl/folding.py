"""Folding of a network onto hardware: how many outputs (``PE``) and inputs (``SIMD``) each
matrix-vector unit handles per cycle.

A dense layer of ``in_features`` inputs and ``out_features`` outputs folded by ``(pe, simd)``
takes ``(in_features / simd) * (out_features / pe)`` cycles per vector and reads ``pe * simd``
weights per cycle. ``pe`` must divide ``out_features`` and ``simd`` must divide ``in_features``;
a folding that does not divide is refused with :class:`FoldingError` naming the allowed values
(padding would waste weight memory and complicate the address logic for no gain on the
power-of-two layer sizes qnnfab targets).
"""

import math
import operator
from dataclasses import dataclass

from qnnfab import ir

from . import timing
from .estimate import folding_cost

__all__ = ["LayerFolding", "FoldingError", "divisors", "layer_cycles", "kernel_simd_step",
           "simd_choices", "check_folding", "auto_folding", "network_cycles"]


class FoldingError(ValueError):
    """A folding does not fit the network (wrong length, non-dividing PE or SIMD, ...)."""


def divisors(n):
    """The divisors of ``n`` in ascending order."""
    n = operator.index(n)
    if n < 1:
        raise ValueError(f"divisors: expected a positive integer, got {n}")
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


@dataclass(frozen=True)
class LayerFolding:
    """The folding of one dense layer.

    Attributes
    ----------
    pe : int
        Output neurons computed in parallel (divides ``out_features``).
    simd : int
        Inputs consumed per cycle by each PE (divides ``in_features``).
    """
    pe: int
    simd: int

    def __post_init__(self):
        for name in ("pe", "simd"):
            value = getattr(self, name)
            if isinstance(value, bool):
                raise TypeError(f"LayerFolding.{name} must be an integer, not {value!r}")
            try:
                value = operator.index(value)
            except TypeError:
                raise TypeError(f"LayerFolding.{name} must be an integer, not {value!r}") \
                    from None
            if value < 1:
                raise FoldingError(f"LayerFolding.{name} must be >= 1, not {value}")
            object.__setattr__(self, name, value)

    @property
    def lanes(self):
        """Weights read (multiply-accumulates done) per cycle: ``pe * simd``."""
        return self.pe * self.simd


def layer_cycles(layer, folding):
    """Issue steps one input takes in a layer folded by ``folding``, what the search balances:
    :func:`qnnfab.rtl.timing.fold_steps`, ``(in/simd)·(out/pe)``, for a dense layer, that per
    window times the windows (``positions``) for a conv layer (``in`` being ``in_channels·k²``),
    one per input pixel for a max-pool layer. (A stage's interval, :mod:`qnnfab.rtl.timing`,
    adds the cycles of its hand-overs.)"""
    if isinstance(layer, ir.PoolLayer):
        return layer.height * layer.width
    per_vector = timing.fold_steps(layer.in_features, layer.out_features, folding.pe,
                                   folding.simd)
    return per_vector * getattr(layer, "positions", 1)


def kernel_simd_step(layer):
    """SIMD must be a multiple of this: ``kernel_size²`` for a conv layer with a kernel
    codebook (a slice reads whole kernels), else 1."""
    if isinstance(layer, ir.ConvLayer) and layer.kernel_codebook is not None:
        return layer.kernel_size ** 2
    return 1


def simd_choices(layer):
    """The SIMD values a layer allows: divisors of ``in_features`` (multiples of
    :func:`kernel_simd_step`)."""
    step = kernel_simd_step(layer)
    return [d for d in divisors(layer.in_features) if d % step == 0]


def network_cycles(network, folding):
    """Issue steps of the slowest layer (:func:`layer_cycles`; about the network's interval,
    see ``Network.interval``)."""
    folding = check_folding(network, folding)
    return max(layer_cycles(layer, f) for layer, f in zip(network.layers, folding))


def _as_layer_folding(where, item):
    if isinstance(item, LayerFolding):
        return item
    try:
        pe, simd = item
    except (TypeError, ValueError):
        raise FoldingError(f"{where}: expected a LayerFolding or a (pe, simd) pair, "
                           f"got {item!r}") from None
    try:
        return LayerFolding(pe, simd)
    except (TypeError, FoldingError) as exc:
        raise FoldingError(f"{where}: {exc}") from None


def check_folding(network, folding):
    """Check ``folding`` against ``network``; return it as a list of :class:`LayerFolding`.

    ``folding`` is a sequence with one ``LayerFolding`` or ``(pe, simd)`` pair per layer.
    Raises :class:`FoldingError`, e.g. ``"layers[2]: PE=3 does not divide out_features=10
    (choose one of 1, 2, 5, 10)"``.
    """
    if not isinstance(network, ir.Network):
        raise TypeError(f"network must be a qnnfab.ir.Network, not {network!r}")
    if isinstance(folding, (str, bytes)) or not hasattr(folding, "__len__"):
        raise FoldingError(f"folding: expected a list of (pe, simd) pairs, one per layer, "
                           f"got {folding!r}")
    if len(folding) != len(network.layers):
        raise FoldingError(f"folding: expected {len(network.layers)} entries (one per layer), "
                           f"got {len(folding)}")
    result = []
    for i, (layer, item) in enumerate(zip(network.layers, folding)):
        where = f"layers[{i}]"
        if isinstance(layer, ir.PoolLayer):
            # A max-pool unit takes one pixel per cycle: nothing to fold.
            f = None if item is None else _as_layer_folding(where, item)
            if f is not None and (f.pe, f.simd) != (1, 1):
                raise FoldingError(f"{where}: a maxpool layer has no folding (use None or "
                                   f"(1, 1)), got {item!r}")
            result.append(LayerFolding(1, 1))
            continue
        f = _as_layer_folding(where, item)
        if layer.out_features % f.pe:
            raise FoldingError(
                f"{where}: PE={f.pe} does not divide out_features={layer.out_features} "
                f"(choose one of {', '.join(map(str, divisors(layer.out_features)))})")
        if layer.in_features % f.simd:
            raise FoldingError(
                f"{where}: SIMD={f.simd} does not divide in_features={layer.in_features} "
                f"(choose one of {', '.join(map(str, divisors(layer.in_features)))})")
        step = kernel_simd_step(layer)
        if f.simd % step:
            raise FoldingError(
                f"{where}: SIMD={f.simd} must read whole {layer.kernel_size}x"
                f"{layer.kernel_size} kernels of the kernel codebook (choose one of "
                f"{', '.join(map(str, simd_choices(layer)))})")
        result.append(f)
    return result


def _best_folding(layer, target, max_simd):
    """The cheapest folding (:func:`~qnnfab.rtl.estimate.folding_cost`) that meets ``target``
    cycles, or the fastest one when none does."""
    if isinstance(layer, ir.PoolLayer):
        return LayerFolding(1, 1)
    best = None
    choices = simd_choices(layer)
    for pe in divisors(layer.out_features):
        for simd in choices:
            if simd > max_simd and simd != choices[0]:
                continue
            f = LayerFolding(pe, simd)
            cycles = layer_cycles(layer, f)
            key = (cycles > target, cycles if cycles > target else 0,
                   folding_cost(layer, f), -simd)
            if best is None or key < best[0]:
                best = (key, f)
    return best[1]


def auto_folding(network, *, target_cycles=None, max_lanes=256, max_simd=256):
    """A balanced folding: every layer takes about the same number of cycles per vector.

    Parameters
    ----------
    network : ir.Network
    target_cycles : int, optional
        Cycles per vector to aim for. Default: what the largest layer needs when it reads
        ``max_lanes`` weights per cycle, ``ceil(max(macs) / max_lanes)``.
    max_lanes : int
        Weights read per cycle by the largest layer when ``target_cycles`` is not given (256
        suits the iCE40 UP5K: 16 block RAMs of 16-bit ports for one layer).
    max_simd : int
        Largest SIMD considered.

    Each layer gets the cheapest folding (:func:`~qnnfab.rtl.estimate.folding_cost`, the one
    resource model's) whose cycles per vector are at most the target (the fastest folding when
    none is).
    """
    if not isinstance(network, ir.Network):
        raise TypeError(f"network must be a qnnfab.ir.Network, not {network!r}")
    if target_cycles is None:
        max_lanes = operator.index(max_lanes)
        if max_lanes < 1:
            raise ValueError(f"max_lanes must be >= 1, not {max_lanes}")
        target_cycles = max(-(-layer.macs // max_lanes) for layer in network.layers
                            if not isinstance(layer, ir.PoolLayer))
    target_cycles = operator.index(target_cycles)
    if target_cycles < 1:
        raise ValueError(f"target_cycles must be >= 1, not {target_cycles}")
    return [_best_folding(layer, target_cycles, max_simd) for layer in network.layers]
