"""Smart Quantization: each layer's weights become binary or ternary in one training run.

Razani et al., "Adaptive Binary-Ternary Quantization" (arXiv 1909.12205, CVPR 2021 workshops),
change the quantization depth of each layer directly by a regularization function, so the
network trains once. The paper is public, only not available here, so the formulas below are
qnnfab's own construction of that idea, not the paper's (docs/methods.md names the deviations).
Two methods, chosen by :attr:`SQConfig.method`:

* **Levels (both).** Every quantized layer ``l`` has a trainable scale ``α_l > 0``. Binary
  levels are ``{-α, +α}``; ternary levels ``{-α, 0, +α}``, with a latent weight quantized to the
  nearest level (``|w| > α/2`` is non-zero). The forward pass uses the integer levels ``±1`` /
  ``0`` (batch-norm after each layer absorbs ``α``). The level penalties are
  ``R_b = mean (|w| − α)²`` and ``R_t = mean min(w², (|w| − α)²)``; ``λ(t)`` ramps linearly from
  ``λ_0`` to ``λ_max`` over training, so the weights settle onto the levels by the end; ``α_l``
  learns through the penalty only. Layers with a fixed kind (not adaptive) get their own
  kind's penalty in both methods.

* **method="regularizer": the depth is a trainable parameter of the regularizer.** Each adaptive
  layer has a depth gate ``s_l`` (:attr:`~qnnfab.model.layers.QuantLinear.depth_logit`), and
  ``p_l = sigmoid(s_l)`` says how ternary it is. Until the read-off (``freeze`` of the epochs):

  - the penalty is the gated mix ``R_l(p_l) = (1 − p_l)·R_b + p_l·R_t``: the layer's weights are
    pulled toward ``±α`` while ``p`` is small and toward ``{-α, 0, +α}`` as it grows;
  - the forward pass uses the same gate, ``(1 − p)·binary(w) + p·ternary(w)``: the weights below
    the threshold count ``±(1 − p)``. So the task loss reaches the gate
    (``∂/∂p = Σ g·(ternary − binary)``): data decide whether zeroing a layer's small weights
    helps;
  - a memory-cost term ``μ · Σ_l n_l·p_l / N`` (``μ`` = :attr:`SQConfig.cost`; ``n_l`` weights
    of layer ``l``, ``N`` of the network) is the expected extra stored bit per weight of a
    ternary layer: it pushes every gate toward binary, the big layers hardest.

  The loss is ``CE + λ(t)·Σ_l R_l(p_l) + μ·Σ_l n_l·p_l / N``; the gates train with the weights
  (same optimizer). At the read-off epoch each layer's depth is rounded, ternary where
  ``p_l >= 1/2``, ``α`` is re-fitted to those levels and the gates stop; the remaining epochs
  fine-tune the network with its depths frozen, and the best validation epoch among them is
  exported. ``μ`` sweeps the bits per weight (0: nothing pays for ternary; large: all binary).

* **method="rule": a separate switching rule (qnnfab's first formulation).** Adaptive layers
  start at ``initial`` depth (ternary) with their own kind's penalty. From ``warmup`` on (a
  fraction of the epochs), after every epoch each layer fits both level sets to its latent
  weights (Lloyd iterations: :func:`fit_levels`) and computes its *zero gain*
  ``G_l = 1 − E_ternary / E_binary``: the share of the binary quantization error that a zero
  level removes. Weights that pile up near zero give ``G`` near 1; weights split into two
  clusters at ``±α`` give ``G`` near 0. Layers with ``G_l >= ρ`` are candidates; within the bit
  budget (average stored bits per weight of the whole network) the candidates that remove the
  most error, ``max Σ n_l·G_l``, become ternary and the others binary. When the rule has given
  the same answer ``patience`` epochs in a row (or at ``freeze`` at the latest) the layers
  switch to it, ``α`` is re-fitted to the new levels, and the depths are final: ``G`` drifts
  differently under the binary and the ternary regularizer, so values measured in different
  depths are not comparable and re-deciding later made layers flap. The regularizer then
  pulls each layer's weights toward its own levels.

* **Final hard quantization (both).** The best validation epoch is chosen among the epochs
  trained after the depths were fixed, and exported with each layer's own weight kind.

:class:`SQController` carries this out; its :attr:`~SQController.history` (depth, zero gain
``G`` and, for the regularizer, the gate ``p`` of each layer per epoch) is stored in the IR's
``meta["sq"]`` and drawn by :func:`depth_plot_svg`.
"""

import math
from dataclasses import dataclass
from xml.sax.saxutils import escape

import torch

from qnnfab import numerics

__all__ = ["SQConfig", "SQ_METHODS", "fit_levels", "level_regularizer", "gated_regularizer",
           "zero_gain", "SQController", "depth_plot_svg"]

#: The ways Smart Quantization decides each adaptive layer's depth (see the module docstring).
SQ_METHODS = ("regularizer", "rule")


@dataclass(frozen=True)
class SQConfig:
    """Settings of Smart Quantization (see the module docstring).

    Attributes
    ----------
    method : str
        ``"rule"`` (the default: the zero-gain rule with a bit budget decides) or
        ``"regularizer"`` (the depth gates in the regularizer decide). The rule stays the
        default because on the digits CNN the regularizer, at its default cost, kept every
        layer ternary (2 bits per weight) where the rule reached the same accuracy at about 1.2
        (``make bench-sq``, docs/results.md).
    lambda_start, lambda_end : float
        Level-penalty weight at the first and at the last step (linear in between).
    cost : float
        Regularizer method: ``μ``, the weight of the memory cost (expected extra stored bits per
        weight of the network, ``Σ n_l·p_l / N``); larger makes more layers binary.
    gate_init : float
        Regularizer method: every depth gate's initial logit (0: ``p = 1/2``, undecided).
    rho : float
        Rule method: zero-gain threshold, ternary when ``G >= rho``.
    bit_budget : float or None
        Rule method: largest average stored bits per weight over the network; None: no budget.
    warmup, freeze : float
        Fractions of the epochs. Rule: it runs after epochs ``warmup·E <= e < freeze·E``.
        Regularizer: the depths are read off the gates after epoch ``freeze·E`` (``warmup`` is
        not used).
    patience : int
        Rule method: epochs in a row the rule must ask for a change before the depth changes.
    initial : str
        Depth of every adaptive layer at the start (``"ternary"`` or ``"binary"``); for the
        regularizer method only the kind ``α`` is first fitted to.
    """
    method: str = "rule"
    lambda_start: float = 1e-4
    lambda_end: float = 1e-2
    rho: float = 0.3
    bit_budget: "float | None" = 1.5
    warmup: float = 0.05
    freeze: float = 0.6
    patience: int = 3
    initial: str = "ternary"
    cost: float = 0.01
    gate_init: float = 0.0

    def __post_init__(self):
        if self.method not in SQ_METHODS:
            raise ValueError(f"SQConfig.method: expected one of {', '.join(map(repr, SQ_METHODS))}"
                             f", got {self.method!r}")
        if not (self.cost >= 0 and math.isfinite(self.cost)):
            raise ValueError(f"SQConfig.cost: expected a finite number >= 0, got {self.cost}")
        if not math.isfinite(self.gate_init):
            raise ValueError(f"SQConfig.gate_init: expected a finite number, got "
                             f"{self.gate_init}")
        if self.initial not in ("binary", "ternary"):
            raise ValueError(f"SQConfig.initial: expected 'binary' or 'ternary', got "
                             f"{self.initial!r}")
        if not 0 <= self.warmup <= self.freeze <= 1:
            raise ValueError(f"SQConfig: expected 0 <= warmup <= freeze <= 1, got warmup="
                             f"{self.warmup}, freeze={self.freeze}")
        if not 0 <= self.rho <= 1:
            raise ValueError(f"SQConfig.rho: expected 0..1, got {self.rho}")
        if self.patience < 1:
            raise ValueError(f"SQConfig.patience: expected >= 1, got {self.patience}")
        if not (self.lambda_start >= 0 and self.lambda_end >= 0):
            raise ValueError(f"SQConfig: regularizer weights must be >= 0, got "
                             f"{self.lambda_start}, {self.lambda_end}")
        if self.bit_budget is not None and not self.bit_budget >= 1:
            raise ValueError(f"SQConfig.bit_budget: expected >= 1 bit per weight or None, "
                             f"got {self.bit_budget}")

    def regularizer_weight(self, step, total):
        """``λ`` at ``step`` of ``total``."""
        f = min(1.0, step / max(1, total))
        return self.lambda_start + (self.lambda_end - self.lambda_start) * f


@torch.no_grad()
def fit_levels(w, kind, iters=20):
    """``(α, error)``: the scale of ``kind``'s levels that fits latent weights ``w`` best (Lloyd
    iterations on ``|w|``) and the mean squared distance of the weights to those levels."""
    a = w.detach().abs().flatten().to(torch.float64)
    if kind == "binary":
        alpha = a.mean()
        return float(alpha), float(((a - alpha) ** 2).mean())
    if kind != "ternary":
        raise ValueError(f"fit_levels: unknown kind {kind!r}")
    alpha = a.mean() * 1.5
    for _ in range(iters):
        nz = a > alpha / 2
        if not nz.any():
            break
        new = a[nz].mean()
        if torch.isclose(new, alpha, rtol=1e-9, atol=0):
            alpha = new
            break
        alpha = new
    err = torch.minimum(a ** 2, (a - alpha) ** 2).mean()
    return float(alpha), float(err)


def level_regularizer(w, alpha, kind):
    """``mean dist(w, levels)²`` for ``kind``'s levels at scale ``alpha`` (differentiable)."""
    a = w.abs()
    if kind == "binary":
        return ((a - alpha) ** 2).mean()
    if kind == "ternary":
        return torch.minimum(a ** 2, (a - alpha) ** 2).mean()
    raise ValueError(f"level_regularizer: unknown kind {kind!r}")


def gated_regularizer(w, alpha, p):
    """``(1 − p)·R_binary + p·R_ternary``: the level penalty of a layer whose depth gate is ``p``
    (differentiable in ``w``, ``alpha`` and ``p``; ``∂/∂p = R_ternary − R_binary <= 0``)."""
    return (1 - p) * level_regularizer(w, alpha, "binary") + \
        p * level_regularizer(w, alpha, "ternary")


def zero_gain(w):
    """``G = 1 − E_ternary / E_binary`` of latent weights ``w`` (see the module docstring)."""
    _, eb = fit_levels(w, "binary")
    _, et = fit_levels(w, "ternary")
    return 1.0 - et / eb if eb > 0 else 0.0


class SQController:
    """Carries out Smart Quantization over a model's quantized linears (either method).

    Parameters
    ----------
    linears : list of :class:`~qnnfab.model.layers.QuantLinear`
        All quantized layers in order; the adaptive ones (``adaptive`` true) get their depth
        here, the others keep their fixed kind (and count toward the bits per weight).
    config : SQConfig
    epochs : int
        Total epochs of the run.

    Attributes
    ----------
    history : list of dict
        One entry per epoch: ``epoch``, ``depth`` (list of "binary"/"ternary" per layer: the
        kinds in use, or, before the regularizer's read-off, the depths its gates would give),
        ``gain`` (G per layer), ``bits_per_weight`` (network average of ``depth``); the
        regularizer method adds ``gate`` (``p`` per layer, None for a fixed layer).
    decided_at : int or None
        The epoch after which the depths were fixed.
    """

    def __init__(self, linears, config, epochs):
        self.linears = list(linears)
        self.config = config
        self.epochs = int(epochs)
        self.history = []
        self.decided_at = None
        self._last_want, self._streak = None, 0
        self.method = config.method
        for lin in self.linears:
            if lin.adaptive:
                lin.set_kind(config.initial)
                lin.soft_depth = self.method == "regularizer"
                with torch.no_grad():
                    lin.depth_logit.fill_(config.gate_init)

    @property
    def active(self):
        return any(lin.adaptive for lin in self.linears)

    @property
    def freeze_epoch(self):
        """First epoch (1-based) after which depths no longer change."""
        return max(1, int(round(self.config.freeze * self.epochs)))

    @property
    def n_weights(self):
        return sum(lin.weight.numel() for lin in self.linears)

    def regularizer(self, step, total):
        """The training objective's Smart Quantization terms at ``step`` of ``total``:
        ``λ(step)·Σ_l R_l``, plus, while gates are live (regularizer method, before the
        read-off), the memory cost ``μ·Σ_l n_l·p_l / N``."""
        lam = self.config.regularizer_weight(step, total)
        terms, cost = [], 0.0
        for lin in self.linears:
            if lin.adaptive and lin.soft_depth:
                p = lin.depth_gate()
                terms.append(gated_regularizer(lin.weight, lin.alpha, p))
                cost = cost + p * lin.weight.numel()
            else:
                terms.append(level_regularizer(lin.weight, lin.alpha, lin.kind))
        out = lam * sum(terms)
        if not isinstance(cost, float):
            out = out + self.config.cost * cost / self.n_weights
        return out

    @torch.no_grad()
    def gates(self):
        """``p`` of every layer (None for a layer that is not adaptive)."""
        return [float(lin.depth_gate()) if lin.adaptive else None for lin in self.linears]

    def read_off(self):
        """The depths the gates give now: ternary where ``p >= 1/2`` (fixed layers: their
        kind)."""
        return [("ternary" if float(lin.depth_logit.detach()) >= 0 else "binary") if lin.adaptive
                else lin.kind for lin in self.linears]

    def bits_per_weight(self, kinds=None):
        kinds = kinds or [lin.kind for lin in self.linears]
        bits = sum(lin.weight.numel() * numerics.weight_code_bits(k)
                   for lin, k in zip(self.linears, kinds))
        return bits / self.n_weights

    def _desired(self, gains):
        """Ternary where ``G >= rho``; within the bit budget, the set of ternary layers that
        removes the most quantization error, ``Σ n_l·G_l`` (exact over subsets for up to 12
        adaptive layers, greedy by ``G`` beyond)."""
        kinds = [lin.kind for lin in self.linears]
        candidates = []
        for i, lin in enumerate(self.linears):
            if lin.adaptive:
                kinds[i] = "binary"
                if gains[i] >= self.config.rho:
                    candidates.append(i)
        budget = self.config.bit_budget
        if budget is None:
            for i in candidates:
                kinds[i] = "ternary"
            return kinds
        best, best_value = [], -1.0
        if len(candidates) <= 12:
            for mask in range(1 << len(candidates)):
                chosen = [c for k, c in enumerate(candidates) if mask >> k & 1]
                trial = list(kinds)
                for i in chosen:
                    trial[i] = "ternary"
                value = sum(self.linears[i].weight.numel() * gains[i] for i in chosen)
                if self.bits_per_weight(trial) <= budget + 1e-12 and value > best_value:
                    best, best_value = chosen, value
        else:
            for i in sorted(candidates, key=lambda i: -gains[i]):
                trial = list(kinds)
                for j in best + [i]:
                    trial[j] = "ternary"
                if self.bits_per_weight(trial) <= budget + 1e-12:
                    best.append(i)
        for i in best:
            kinds[i] = "ternary"
        return kinds

    @property
    def settled(self):
        """True once the depths are final (always for a run without adaptive layers)."""
        return not self.active or self.decided_at is not None

    @torch.no_grad()
    def end_epoch(self, epoch):
        """After ``epoch`` (1-based): apply the rule, or read the depths off the gates at the
        read-off epoch; record the history. Returns the layers whose depth changed
        (indices)."""
        gains = [zero_gain(lin.weight) for lin in self.linears]
        if self.method == "regularizer":
            changed, depth = self._end_epoch_gates(epoch)
        else:
            changed, depth = self._end_epoch_rule(epoch, gains), None
        entry = {"epoch": int(epoch), "depth": depth or [lin.kind for lin in self.linears],
                 "gain": [round(g, 4) for g in gains]}
        entry["bits_per_weight"] = round(self.bits_per_weight(entry["depth"]), 4)
        if self.method == "regularizer" and self.active:
            entry["gate"] = [None if g is None else round(g, 4) for g in self.gates()]
        self.history.append(entry)
        return changed

    def _end_epoch_rule(self, epoch, gains):
        changed = []
        cfg = self.config
        if self.active and self.decided_at is None and epoch >= cfg.warmup * self.epochs:
            want = self._desired(gains)
            self._streak = self._streak + 1 if want == self._last_want else 1
            self._last_want = want
            if self._streak >= cfg.patience or epoch >= self.freeze_epoch:
                for i, lin in enumerate(self.linears):
                    if lin.adaptive and want[i] != lin.kind:
                        lin.set_kind(want[i])
                        changed.append(i)
                self.decided_at = int(epoch)
        return changed

    def _end_epoch_gates(self, epoch):
        """Regularizer method: before the read-off, the depths the gates give (the layers keep
        the gated forward pass); at it, round the gates, re-fit ``α`` and stop the gates."""
        want = self.read_off()
        if not self.active or self.decided_at is not None:
            return [], None
        if epoch < self.freeze_epoch:
            return [], want
        changed = []
        for i, lin in enumerate(self.linears):
            if lin.adaptive:
                if want[i] != lin.kind:
                    changed.append(i)
                lin.set_kind(want[i])
                lin.soft_depth = False
                lin.depth_logit.requires_grad_(False)
        self.decided_at = int(epoch)
        return changed, None


def depth_plot_svg(history, *, names=None, title="Smart Quantization: depth per layer"):
    """An SVG (text) plotting each layer's depth (binary/ternary) and zero gain G per epoch.

    One row per layer: a band coloured by depth (binary light, ternary dark) and the line of
    ``G`` over it, on a shared epoch axis; where the history has gates (the regularizer
    method), a second line draws each adaptive layer's gate ``p``. No plotting library needed.
    """
    if not history:
        raise ValueError("depth_plot_svg: empty history")
    n_layers = len(history[0]["depth"])
    names = list(names or [f"layer {i}" for i in range(n_layers)])
    epochs = [h["epoch"] for h in history]
    e0, e1 = min(epochs), max(epochs)
    # The row labels sit left of the bands: room for the longest (about 7 px a character).
    left = 20 + 7 * max(len(str(n)) for n in names)
    top, width, row_h, gap = 40, 560, 60, 18
    height = top + n_layers * (row_h + gap) + 40
    span = max(1, e1 - e0 + 1)

    def x_of(e):
        return left + (e - e0) * width / span

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 30}" '
           f'height="{height}" font-family="sans-serif" font-size="12">',
           f'<text x="{left}" y="20" font-size="14">{escape(str(title))}</text>']
    for li in range(n_layers):
        y0 = top + li * (row_h + gap)
        out.append(f'<text x="5" y="{y0 + row_h / 2 + 4}">{escape(str(names[li]))}</text>')
        for h in history:
            ternary = h["depth"][li] == "ternary"
            colour = "#3b6fb6" if ternary else "#cfdcef"
            out.append(f'<rect x="{x_of(h["epoch"]):.1f}" y="{y0}" '
                       f'width="{width / span:.2f}" height="{row_h}" fill="{colour}"/>')
        pts = " ".join(f'{x_of(h["epoch"]) + width / span / 2:.1f},'
                       f'{y0 + row_h * (1 - max(0.0, min(1.0, h["gain"][li]))):.1f}'
                       for h in history)
        out.append(f'<polyline points="{pts}" fill="none" stroke="#d0452f" stroke-width="2"/>')
        gates = [(h["epoch"], h["gate"][li]) for h in history
                 if h.get("gate") and h["gate"][li] is not None]
        if gates:
            pts = " ".join(f'{x_of(e) + width / span / 2:.1f},'
                           f'{y0 + row_h * (1 - max(0.0, min(1.0, g))):.1f}' for e, g in gates)
            out.append(f'<polyline class="gate" points="{pts}" fill="none" stroke="#222222" '
                       f'stroke-width="2" stroke-dasharray="5,3"/>')
    y_axis = top + n_layers * (row_h + gap)
    out.append(f'<text x="{left}" y="{y_axis + 12}">epoch {e0}</text>')
    out.append(f'<text x="{left + width - 60}" y="{y_axis + 12}">epoch {e1}</text>')
    out.append(f'<text x="{left}" y="{y_axis + 30}">dark: ternary, light: binary; '
               f'red line: zero gain G (0 bottom, 1 top)'
               + ("; dashed: depth gate p (0 binary, 1 ternary)"
                  if any(h.get("gate") for h in history) else "") + '</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
