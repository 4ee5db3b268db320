"""Smart Quantization: each layer chooses binary or ternary weights during one training run.

The formulation (qnnfab's own, in the spirit of Razani et al., "Adaptive Binary-Ternary
Quantization"; the paper's exact regularizer is not public):

* **Levels.** Every quantized layer ``l`` has a trainable scale ``α_l > 0`` and a *depth*
  ``d_l ∈ {binary, ternary}``. Binary levels are ``{-α, +α}``; ternary levels ``{-α, 0, +α}``,
  with a latent weight quantized to the nearest level (``|w| > α/2`` is non-zero). The forward
  pass uses the integer levels ``±1`` / ``0`` (batch-norm after each layer absorbs ``α``).
* **Regularizer.** ``R_l = mean_i dist(w_i, levels(d_l, α_l))²``, i.e. ``(|w| − α)²`` for a
  binary layer and ``min(w², (|w| − α)²)`` for a ternary one. The loss is
  ``CE + λ(t)·Σ_l R_l``; ``λ`` ramps linearly from ``λ_0`` to ``λ_max`` over training, so the
  weights settle onto the levels by the end. ``α_l`` learns through ``R_l`` only.
* **Switching rule (how the weights cluster).** Adaptive layers start at ``initial`` depth
  (ternary). From ``warmup`` on (a fraction of the epochs), after every epoch each layer fits
  both level sets to its latent weights (Lloyd iterations: :func:`fit_levels`) and computes its
  *zero gain* ``G_l = 1 − E_ternary / E_binary``: the share of the binary quantization error
  that a zero level removes. Weights that pile up near zero give ``G`` near 1; weights split
  into two clusters at ``±α`` give ``G`` near 0. Layers with ``G_l >= ρ`` are candidates; within
  the bit budget (average stored bits per weight of the whole network) the candidates that
  remove the most error, ``max Σ n_l·G_l``, become ternary and the others binary. When the
  rule has given the same answer ``patience`` epochs in a row (or at ``freeze`` at the latest)
  the layers switch to it, ``α`` is re-fitted to the new levels, and the depths are final:
  ``G`` drifts differently under the binary and the ternary regularizer, so values measured
  in different depths are not comparable and re-deciding later made layers flap. The
  regularizer then pulls each layer's weights toward its own levels.
* **Final hard quantization.** The best validation epoch is chosen among the epochs trained
  after the decision, and exported with each layer's own weight kind.

:class:`SQController` carries this out; its :attr:`~SQController.history` (depth and ``G`` of
each layer per epoch) is stored in the IR's ``meta["sq"]`` and drawn by :func:`depth_plot_svg`.
"""

from dataclasses import dataclass
from xml.sax.saxutils import escape

import torch

from qnnfab import numerics

__all__ = ["SQConfig", "fit_levels", "level_regularizer", "zero_gain", "SQController",
           "depth_plot_svg"]


@dataclass(frozen=True)
class SQConfig:
    """Settings of Smart Quantization (see the module docstring).

    Attributes
    ----------
    lambda_start, lambda_end : float
        Regularizer weight at the first and at the last step (linear in between).
    rho : float
        Zero-gain threshold: ternary when ``G >= rho``.
    bit_budget : float or None
        Largest average stored bits per weight over the network; None: no budget.
    warmup, freeze : float
        Fractions of the epochs: the rule runs after epochs ``warmup·E <= e < freeze·E``.
    patience : int
        Epochs in a row the rule must ask for a change before the depth changes.
    initial : str
        Depth of every adaptive layer at the start (``"ternary"`` or ``"binary"``).
    """
    lambda_start: float = 1e-4
    lambda_end: float = 1e-2
    rho: float = 0.3
    bit_budget: "float | None" = 1.5
    warmup: float = 0.05
    freeze: float = 0.6
    patience: int = 3
    initial: str = "ternary"

    def __post_init__(self):
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


def zero_gain(w):
    """``G = 1 − E_ternary / E_binary`` of latent weights ``w`` (see the module docstring)."""
    _, eb = fit_levels(w, "binary")
    _, et = fit_levels(w, "ternary")
    return 1.0 - et / eb if eb > 0 else 0.0


class SQController:
    """Runs the switching rule over a model's quantized linears.

    Parameters
    ----------
    linears : list of :class:`~qnnfab.model.layers.QuantLinear`
        All quantized layers in order; the adaptive ones (``adaptive`` true) may switch, the
        others count toward the bit budget with their fixed kind.
    config : SQConfig
    epochs : int
        Total epochs of the run.

    Attributes
    ----------
    history : list of dict
        One entry per epoch: ``epoch``, ``depth`` (list of "binary"/"ternary" per layer),
        ``gain`` (G per layer), ``bits_per_weight`` (network average).
    """

    def __init__(self, linears, config, epochs):
        self.linears = list(linears)
        self.config = config
        self.epochs = int(epochs)
        self.history = []
        self.decided_at = None
        self._last_want, self._streak = None, 0
        for lin in self.linears:
            if lin.adaptive:
                lin.set_kind(config.initial)

    @property
    def active(self):
        return any(lin.adaptive for lin in self.linears)

    @property
    def freeze_epoch(self):
        """First epoch (1-based) after which depths no longer change."""
        return max(1, int(round(self.config.freeze * self.epochs)))

    def regularizer(self, step, total):
        """``λ(step) · Σ_l R_l`` over all quantized layers."""
        lam = self.config.regularizer_weight(step, total)
        return lam * sum(level_regularizer(lin.weight, lin.alpha, lin.kind)
                         for lin in self.linears)

    def bits_per_weight(self, kinds=None):
        kinds = kinds or [lin.kind for lin in self.linears]
        n = sum(lin.weight.numel() for lin in self.linears)
        bits = sum(lin.weight.numel() * numerics.weight_code_bits(k)
                   for lin, k in zip(self.linears, kinds))
        return bits / n

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
        """Apply the rule after ``epoch`` (1-based); record the history. Returns the layers whose
        depth changed (indices)."""
        gains = [zero_gain(lin.weight) for lin in self.linears]
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
        self.history.append({"epoch": int(epoch), "depth": [lin.kind for lin in self.linears],
                             "gain": [round(g, 4) for g in gains],
                             "bits_per_weight": round(self.bits_per_weight(), 4)})
        return changed


def depth_plot_svg(history, *, names=None, title="Smart Quantization: depth per layer"):
    """An SVG (text) plotting each layer's depth (binary/ternary) and zero gain G per epoch.

    One row per layer: a band coloured by depth (binary light, ternary dark) and the line of
    ``G`` over it, on a shared epoch axis. No plotting library needed.
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
    y_axis = top + n_layers * (row_h + gap)
    out.append(f'<text x="{left}" y="{y_axis + 12}">epoch {e0}</text>')
    out.append(f'<text x="{left + width - 60}" y="{y_axis + 12}">epoch {e1}</text>')
    out.append(f'<text x="{left}" y="{y_axis + 30}">dark: ternary, light: binary; '
               f'red line: zero gain G (0 bottom, 1 top)</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
