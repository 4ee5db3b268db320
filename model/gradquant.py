"""Gradient quantization: low-bit functions for the backward pass, and hooks that apply them.

After "Consideration on Functions for Quantization in Quantized Neural Networks": in a network
whose weights and activations are quantized, the gradients are quantized too, and the choice
of quantization function decides whether training still works at low bit widths.

The functions (:data:`GRAD_QUANTIZERS`), each ``f(grad, bits, *, generator=None)`` returning a
tensor of ``grad``'s shape and dtype. ``s = max|g|`` over the whole tensor (one scale per
tensor); a tensor of zeros stays zeros. ``n = 2**(bits-1) - 1`` levels per sign.

``"uniform"`` -- max scaling, round to nearest:
    ``q = round(g / s · n) · s / n``: the ``2**bits - 1`` values ``k·s/n``, ``k = -n..n``.
``"stochastic"`` -- the same grid, stochastic rounding:
    ``x = g / s · n``, ``q = (floor(x) + [u < x - floor(x)]) · s / n``, ``u ~ U[0, 1)``:
    rounds up with probability equal to the fraction, so ``E[q] = g``.
``"dorefa"`` -- DoReFa-Net's gradient quantizer (Zhou et al. 2016, eq. 12):
    ``x = g / (2s) + 1/2 ∈ [0, 1]``, ``L = 2**bits - 1``,
    ``q = 2s · (clip(round(L·x + σ), 0, L) / L - 1/2)``, ``σ ~ U[-1/2, 1/2)``: uniform noise of
    one quantization step, then round to nearest (the same as stochastic rounding, so
    ``E[q] = g``), on the affine grid of ``2**bits`` values ``s·(2j/L - 1)``, ``j = 0..L``
    (which has no zero). DoReFa-Net takes the maximum per sample (over all axes but the batch
    axis); here it is per tensor, like the others.
``"log"`` -- logarithmic (power-of-two): a sign and ``bits - 1`` exponent bits:
    ``e_max = round(log2 s)``, ``e = round(log2 |g|)`` (rounded in the log domain), and
    ``q = sign(g) · 2**e`` when ``e >= e_max - (n - 1)``, else ``0``: the ``n`` magnitudes
    ``2**e_max .. 2**(e_max - n + 1)`` and zero (one of the ``2**(bits-1)`` exponent codes),
    ``2**bits - 1`` values in all. Deterministic and biased (the rounding threshold between
    ``2**e`` and ``2**(e+1)`` is their geometric mean). Magnitudes below float32's smallest
    subnormal become zero.
``"terngrad"`` -- TernGrad (Wen et al. 2017), without its optional gradient clipping:
    ``q = s · sign(g) · b``, ``b ~ Bernoulli(|g| / s)``: values ``{-s, 0, s}``, ``E[q] = g``.
    Two bits by construction: ``bits`` is checked but otherwise ignored (None is accepted).

The stochastic ones (:data:`STOCHASTIC`) draw from ``generator`` (a ``torch.Generator``; None:
torch's global generator): the same generator state gives the same result.

:func:`quantize_gradients` applies one of them while a model trains (``qnnfab.model.train.train``
does it for ``grad_quant=(method, bits)`` or ``(method, bits, targets)``). It quantizes, for
every :class:`~qnnfab.model.layers.QuantLinear` (the hidden layers, the output layer and the
convolutions, which are QuantLinear too):

* ``"error"``: the gradient of the loss w.r.t. the layer's output, its integer-valued
  accumulator before scaling and batch-norm (the pre-activation). This is the error signal
  propagated backwards: the gradient of the layer's input and of its weights are both computed
  from the quantized error, and the layer below quantizes its own error again.
* ``"weight"``: the gradient of the loss w.r.t. the layer's quantized weights (``dL/dW_q``,
  computed from the quantized error and the layer's input), before the weight STE passes it to
  the latent weights. This is the weight update a low-precision trainer stores; the Smart
  Quantization regularizer's gradient (a float penalty on the latent weights, not part of the
  backward data path) is added after it, unquantized.

Both by default. The paper's setting is a fully quantized backward pass, so both the error
signal (as DoReFa-Net quantizes ``dr``) and the weight gradient (as TernGrad quantizes the
update) are low-bit; ``targets`` selects one of them for ablations.
"""

import operator

import torch

__all__ = ["GRAD_QUANTIZERS", "STOCHASTIC", "TARGETS", "MIN_BITS", "MAX_BITS", "check_bits",
           "uniform_quantize", "stochastic_quantize", "dorefa_quantize", "log_quantize",
           "terngrad_quantize", "quantize_gradients", "GradQuantHandle", "check_grad_quant",
           "check_targets", "NonFiniteGradient"]

#: The bit widths the functions take.
MIN_BITS, MAX_BITS = 2, 16

#: What :func:`quantize_gradients` can quantize (see the module docstring).
TARGETS = ("error", "weight")


def check_bits(bits, *, allow_none=False):
    """``bits`` as an int in ``MIN_BITS .. MAX_BITS`` (TypeError / ValueError naming it)."""
    if bits is None and allow_none:
        return None
    if isinstance(bits, bool):
        raise TypeError(f"bits must be an integer, not {bits!r}")
    try:
        bits = operator.index(bits)
    except TypeError:
        raise TypeError(f"bits must be an integer, not {bits!r}") from None
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must be {MIN_BITS}..{MAX_BITS}, not {bits}")
    return bits


class NonFiniteGradient(ValueError):
    """A gradient to quantize holds NaN or inf: in training, the run has diverged."""


def _check_grad(grad):
    if not isinstance(grad, torch.Tensor):
        raise TypeError(f"grad must be a torch.Tensor, not {type(grad).__name__}")
    if not grad.is_floating_point():
        raise TypeError(f"grad must be a floating-point tensor, not {grad.dtype}")
    if grad.numel() and not bool(torch.isfinite(grad).all()):
        raise NonFiniteGradient("grad contains NaN or inf")


def _scale(grad):
    """``max|g|`` as a 0-d tensor, or None when there is nothing to quantize (empty or zero)."""
    if grad.numel() == 0:
        return None
    s = grad.abs().amax()
    return None if float(s) == 0.0 else s


def _uniform_draws(grad, generator):
    return torch.rand(grad.shape, generator=generator, dtype=grad.dtype, device=grad.device)


@torch.no_grad()
def uniform_quantize(grad, bits, *, generator=None):
    """Max scaling, round to nearest: ``round(g/s · n) · s/n``, ``s = max|g|``,
    ``n = 2**(bits-1) - 1`` (``2**bits - 1`` values). ``generator`` is unused."""
    bits = check_bits(bits)
    _check_grad(grad)
    s = _scale(grad)
    if s is None:
        return torch.zeros_like(grad)
    n = (1 << (bits - 1)) - 1
    return torch.round(grad / s * n).clamp_(-n, n) * (s / n)


@torch.no_grad()
def stochastic_quantize(grad, bits, *, generator=None):
    """The grid of :func:`uniform_quantize`, rounded up with probability equal to the fraction
    (unbiased)."""
    bits = check_bits(bits)
    _check_grad(grad)
    s = _scale(grad)
    if s is None:
        return torch.zeros_like(grad)
    n = (1 << (bits - 1)) - 1
    x = grad / s * n
    low = torch.floor(x)
    up = (_uniform_draws(grad, generator) < x - low).to(grad.dtype)
    return (low + up).clamp_(-n, n) * (s / n)


@torch.no_grad()
def dorefa_quantize(grad, bits, *, generator=None):
    """DoReFa-Net's gradient quantizer: ``x = g/(2s) + 1/2``, uniform noise of one step,
    round to ``L = 2**bits - 1`` steps, map back: ``2s · (k/L - 1/2)`` (unbiased)."""
    bits = check_bits(bits)
    _check_grad(grad)
    s = _scale(grad)
    if s is None:
        return torch.zeros_like(grad)
    levels = (1 << bits) - 1
    x = grad / (2 * s) + 0.5
    noise = _uniform_draws(grad, generator) - 0.5
    k = torch.round(x * levels + noise).clamp_(0, levels)
    return (k / levels - 0.5) * (2 * s)


@torch.no_grad()
def log_quantize(grad, bits, *, generator=None):
    """Power-of-two: ``sign(g) · 2**round(log2|g|)`` for the ``2**(bits-1) - 1`` exponents at
    and below ``round(log2 max|g|)``, zero below them. ``generator`` is unused."""
    bits = check_bits(bits)
    _check_grad(grad)
    s = _scale(grad)
    if s is None:
        return torch.zeros_like(grad)
    n = (1 << (bits - 1)) - 1
    mag = grad.abs().to(torch.float64)
    e_max = torch.round(torch.log2(s.to(torch.float64)))
    e = torch.round(torch.log2(mag))                 # -inf for zeros
    keep = e >= e_max - (n - 1)
    e = torch.where(keep, torch.minimum(e, e_max), torch.zeros_like(e))
    out = torch.where(keep, torch.sign(grad.to(torch.float64)) * torch.exp2(e),
                      torch.zeros_like(mag))
    return out.to(grad.dtype)


@torch.no_grad()
def terngrad_quantize(grad, bits=None, *, generator=None):
    """TernGrad: ``s · sign(g) · Bernoulli(|g|/s)``, ``s = max|g|`` (unbiased; ``{-s, 0, s}``).
    ``bits`` is checked but ignored: TernGrad is two bits by construction."""
    check_bits(bits, allow_none=True)
    _check_grad(grad)
    s = _scale(grad)
    if s is None:
        return torch.zeros_like(grad)
    keep = (_uniform_draws(grad, generator) < grad.abs() / s).to(grad.dtype)
    return torch.sign(grad) * keep * s


#: Gradient quantization functions by name.
GRAD_QUANTIZERS = {
    "uniform": uniform_quantize,
    "stochastic": stochastic_quantize,
    "dorefa": dorefa_quantize,
    "log": log_quantize,
    "terngrad": terngrad_quantize,
}

#: The functions that draw random numbers.
STOCHASTIC = frozenset({"stochastic", "dorefa", "terngrad"})


def _check_method(method):
    if method not in GRAD_QUANTIZERS:
        raise ValueError(f"unknown gradient quantizer {method!r}; known: "
                         f"{', '.join(GRAD_QUANTIZERS)}")
    return method


def check_targets(targets):
    """``targets`` (one of :data:`TARGETS` or a sequence of them) as a tuple in
    :data:`TARGETS` order; ValueError naming ``targets`` otherwise."""
    seq = (targets,) if isinstance(targets, str) else targets
    try:
        seq = tuple(seq)
    except TypeError:
        seq = None
    if not seq or any(not isinstance(t, str) or t not in TARGETS for t in seq) \
            or len(set(seq)) != len(seq):
        raise ValueError(f"targets: expected some of {', '.join(TARGETS)}, got {targets!r}")
    return tuple(t for t in TARGETS if t in seq)


def check_grad_quant(grad_quant):
    """``(method, bits)`` or ``(method, bits, targets)`` (what ``train(grad_quant=...)``
    takes) checked and filled in as ``(method, bits, targets)`` (targets default: both, as a
    tuple in :data:`TARGETS` order), or None for None."""
    if grad_quant is None:
        return None
    try:
        method, bits, *rest = grad_quant
        if len(rest) > 1 or isinstance(grad_quant, str):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"grad_quant must be None, (method, bits) or (method, bits, targets), "
                         f"not {grad_quant!r}") from None
    _check_method(method)
    bits = check_bits(bits, allow_none=method == "terngrad")
    return method, bits, check_targets(rest[0] if rest else TARGETS)


class _QuantizeGrad(torch.autograd.Function):
    """Identity forward; the backward pass hands ``fn(grad)`` on."""

    @staticmethod
    def forward(ctx, x, fn):
        ctx.fn = fn
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return ctx.fn(grad), None


class GradQuantHandle:
    """What :func:`quantize_gradients` returns: :meth:`remove` takes the hooks off again (also
    on leaving a ``with`` block).

    Attributes
    ----------
    method : str
    bits : int or None
    targets : tuple of str
    generator : torch.Generator
        Where the stochastic functions draw from (seeded by ``seed``).
    calls : dict
        How many tensors were quantized so far, per target.
    """

    def __init__(self, method, bits, targets, generator):
        self.method, self.bits, self.targets, self.generator = method, bits, targets, generator
        self.calls = {t: 0 for t in targets}
        self._fn = GRAD_QUANTIZERS[method]
        self._hooks = []
        self._patched = []

    def quantize(self, grad, target):
        self.calls[target] += 1
        return self._fn(grad, self.bits, generator=self.generator)

    @property
    def active(self):
        return bool(self._hooks or self._patched)

    def remove(self):
        """Remove every hook (idempotent)."""
        for hook in self._hooks:
            hook.remove()
        for module in self._patched:
            module.__dict__.pop("weight_values", None)
            module.__dict__.pop(_MARK, None)
        self._hooks, self._patched = [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()

    def __repr__(self):
        return (f"GradQuantHandle({self.method!r}, bits={self.bits}, targets={self.targets}, "
                f"active={self.active})")


_MARK = "_qnnfab_grad_quant"


def quantize_gradients(model, method, bits, seed=0, *, targets=TARGETS):
    """Quantize the gradients of every :class:`~qnnfab.model.layers.QuantLinear` in ``model``
    with ``GRAD_QUANTIZERS[method]`` at ``bits``; returns a :class:`GradQuantHandle`.

    ``targets``: ``"error"`` (the gradient w.r.t. each layer's output accumulator) and/or
    ``"weight"`` (w.r.t. its quantized weights); see the module docstring. Stochastic functions
    draw from a ``torch.Generator`` seeded with ``seed``. ValueError if ``model`` has no
    QuantLinear or already has gradient quantization.
    """
    from .layers import QuantLinear

    _check_method(method)
    bits = check_bits(bits, allow_none=method == "terngrad")
    targets = check_targets(targets)
    try:
        if isinstance(seed, bool) or operator.index(seed) < 0:
            raise TypeError
    except TypeError:
        raise ValueError(f"seed must be a non-negative integer, not {seed!r}") from None
    seed = operator.index(seed)
    linears = [m for m in model.modules() if isinstance(m, QuantLinear)]
    if not linears:
        raise ValueError(f"model has no QuantLinear layer to quantize the gradients of "
                         f"({type(model).__name__})")
    if any(_MARK in m.__dict__ for m in linears):
        raise ValueError("model already has gradient quantization (remove() that handle first)")
    handle = GradQuantHandle(method, bits, targets, torch.Generator().manual_seed(seed))

    def on_output(module, args, output):
        if torch.is_grad_enabled() and output.requires_grad:
            output.register_hook(lambda g: handle.quantize(g, "error"))

    def weight_fn(g):
        return handle.quantize(g, "weight")

    for lin in linears:
        lin.__dict__[_MARK] = handle
        handle._patched.append(lin)
        if "error" in targets:
            handle._hooks.append(lin.register_forward_hook(on_output))
        if "weight" in targets:
            # The quantized weights are made inside weight_values(); an instance attribute
            # shadows the method and puts an identity with a quantizing backward after it.
            original = lin.weight_values
            lin.__dict__["weight_values"] = \
                lambda original=original: _QuantizeGrad.apply(original(), weight_fn)
    return handle
