"""Multiplier-free optimizers: a log-quantized momentum SGD and shift-based AdaMax.

Both are :class:`torch.optim.Optimizer` subclasses whose every multiplication is by a power of
two, so a fixed-point implementation needs shifters, adders, comparators and a leading-one
detector, and no multiplier.

:class:`LogQuantSGD`
    After "A novel hardware-oriented log-quantized optimizer for edge AI devices and their
    online learning": momentum SGD whose momentum is quantized to a signed power of two
    (:func:`logq`) before it is reused::

        m_t = LogQ(m_{t-1}) - lr * g_t
        w_t = w_{t-1} + m_t

    There is no momentum factor: LogQ itself is the friction. With ``rounding="floor"``,
    ``LogQ(m)`` keeps ``|m|`` down to the power of two below it (a factor in ``(1/2, 1]``); with
    ``rounding="nearest"`` (rounding in the log domain) to the nearest power of two in
    ``log2`` (a factor in ``[1/sqrt 2, sqrt 2)``, so the momentum can also grow). A momentum that
    is already a power of two is kept unchanged while the gradient is zero.

    Operations per weight and step: ``lr * g_t`` is an arithmetic shift right of ``g_t`` by
    ``-log2(lr)`` bits (``lr`` must be a power of two); ``LogQ(m)`` is a leading-one detection
    on ``|m|`` that keeps only that bit (floor), moved up one position when the mantissa is at
    least ``sqrt 2`` (nearest: one compare against a constant); the rest are one subtraction
    and one addition. Only the
    sign and the exponent of ``LogQ(m)`` need storing: the state keeps ``momentum_logq``, a
    tensor of signed powers of two (or zeros).

:class:`ShiftAdaMax`
    Algorithm 4 of Hubara, Courbariaux et al., "Binarized Neural Networks" (2016): AdaMax
    (Kingma & Ba) with every multiplication replaced by its power-of-two approximation
    ``AP2(x) = sign(x) * 2**round(log2|x|)`` (:func:`logq` with ``rounding="nearest"``)::

        m_t = m_{t-1} + (g_t - m_{t-1}) * 2**-k1         # beta1 * m + (1 - beta1) * g
        v_t = max(v_{t-1} - v_{t-1} * 2**-k2, |g_t| + eps)   # max(beta2 * v, |g|)
        w_t = w_{t-1} - lr * AP2(1 / (1 - beta1_eff**t)) * m_t * AP2(1 / v_t)

    with ``2**-k = AP2(1 - beta)`` (:func:`shift_betas`; the defaults are the paper's
    ``1 - 2**-3`` and ``1 - 2**-10``; 0.9 and 0.999 would become the same) and ``lr`` a power of
    two (the paper suggests ``2**-10``). The paper prints the bias correction as
    ``alpha <<>> (1 - beta1)``; this is AdaMax's ``1 / (1 - beta1**t)`` as a shift.
    Operations per weight: the two moment updates are a subtraction, a shift by a constant and
    an addition each, plus a compare (``max``) and a sign strip (``|g|``); ``AP2(1 / v_t)`` is a
    leading-one detection on ``v_t`` (rounded by a mantissa compare, as above) giving a shift
    amount ``-e``, and ``m_t * AP2(1 / v_t)`` is ``m_t`` shifted by ``-e`` (a barrel shifter);
    the bias correction is a shift amount per step, the same for every weight (a scalar,
    computed here in Python); the weight update is one subtraction. The state keeps ``exp_avg``
    (``m``) and ``exp_inf`` (``v``).

Here the arithmetic is torch floating point: a multiplication by ``2**k`` only changes the
exponent, so it is exact (barring overflow and underflow) and equals the fixed-point shift
without its truncation. Schedulers that set a learning rate that is not a power of two make
:meth:`step` raise a ``ValueError``.
"""

import functools
import math
import numbers
from fractions import Fraction

import torch

__all__ = ["ROUNDINGS", "logq", "log2_round", "is_power_of_two", "check_power_of_two",
           "shift_betas", "LogQuantSGD", "ShiftAdaMax"]

#: The rounding modes of :func:`logq` (in the log domain).
ROUNDINGS = ("floor", "nearest")


def is_power_of_two(x):
    """True when ``x`` is a real number ``2**k`` (``k`` any integer, negative included)."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return False
    x = float(x)
    return math.isfinite(x) and x > 0 and math.frexp(x)[0] == 0.5


def check_power_of_two(x, what="lr"):
    """``x`` as a float; ValueError naming ``what`` and the nearest powers of two otherwise."""
    if is_power_of_two(x):
        return float(x)
    hint = ""
    if isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x)) \
            and float(x) > 0:
        k = math.floor(math.log2(float(x)))
        hint = f" (the nearest are 2**{k} = {2.0 ** k!r} and 2**{k + 1} = {2.0 ** (k + 1)!r})"
    raise ValueError(f"{what} must be a power of two 2**k, so that multiplying by it is a shift, "
                     f"not {x!r}{hint}")


def _check_rounding(rounding):
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {', '.join(map(repr, ROUNDINGS))}, "
                         f"not {rounding!r}")
    return rounding


@functools.lru_cache(maxsize=None)
def _sqrt2_threshold(dtype):
    """The smallest value of ``dtype`` above sqrt 2 (a mantissa ``>=`` it rounds up)."""
    t = torch.tensor(math.sqrt(2), dtype=dtype)
    if Fraction(float(t)) ** 2 < 2:
        t = torch.nextafter(t, torch.tensor(2.0, dtype=dtype))
    return float(t)


def _float_tensor(x):
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        raise TypeError(f"logq: expected a floating-point tensor, got dtype {x.dtype}")
    return x


def log2_round(x, rounding="floor"):
    """``floor(log2|x|)`` or ``round(log2|x|)`` (``rounding``), exactly, as an int32 tensor.

    Exact for every finite non-zero ``x`` (from the float's exponent and, for ``"nearest"``, a
    compare of its mantissa against sqrt 2; no ``log2`` is evaluated). Zeros and non-finite
    values give meaningless exponents; :func:`logq` masks them."""
    x = _float_tensor(x)
    _check_rounding(rounding)
    mantissa, exponent = torch.frexp(x)  # |x| = |mantissa| * 2**exponent, |mantissa| in [1/2, 1)
    e = exponent - 1
    if rounding == "nearest":
        e = e + (2 * mantissa.abs() >= _sqrt2_threshold(x.dtype)).to(e.dtype)
    return e


def logq(x, rounding="floor"):
    """Log quantization ``sign(x) * 2**floor(log2|x|)`` (``rounding="floor"``) or
    ``sign(x) * 2**round(log2|x|)`` (``"nearest"``: the power of two nearest in ``log2``, i.e.
    ``AP2`` of Hubara et al.), element-wise. ``0 -> 0``; infinities and NaN pass through.

    ``x``: a floating-point tensor (or anything :func:`torch.as_tensor` makes one of); returns a
    tensor of the same dtype and shape. Values rounded up past the dtype's largest power of two
    become infinite."""
    x = _float_tensor(x)
    e = log2_round(x, rounding)
    q = torch.ldexp(torch.sign(x), e)
    return torch.where((x == 0) | ~torch.isfinite(x), x, q)


def _log2_round_scalar(x):
    """:func:`log2_round` (``"nearest"``) of one positive finite Python float, without torch."""
    mantissa, exponent = math.frexp(x)
    return exponent - 1 + (2 * mantissa >= _sqrt2_threshold(torch.float64))


def shift_betas(betas):
    """``(k1, k2)`` with ``2**-k = AP2(1 - beta)``: ShiftAdaMax's moment decays as shifts.

    The effective betas are ``1 - 2**-k1`` and ``1 - 2**-k2``. ValueError unless
    ``0 <= beta < 1``."""
    try:
        b1, b2 = betas
    except (TypeError, ValueError):
        raise ValueError(f"betas must be a pair (beta1, beta2), not {betas!r}") from None
    out = []
    for i, b in enumerate((b1, b2)):
        if isinstance(b, bool) or not isinstance(b, numbers.Real) or not 0 <= float(b) < 1:
            raise ValueError(f"betas[{i}] must be a number in [0, 1), not {b!r}")
        out.append(-_log2_round_scalar(1 - float(b)))
    return tuple(out)


def _grads(group, name):
    for p in group["params"]:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise RuntimeError(f"{name} does not support sparse gradients")
        yield p, p.grad


class LogQuantSGD(torch.optim.Optimizer):
    """Momentum SGD with a log-quantized momentum (see the module docstring)::

        m_t = LogQ(m_{t-1}) - lr * g_t;   w_t = w_{t-1} + m_t

    Parameters
    ----------
    params : iterable of tensors or of dicts (parameter groups)
    lr : float
        A power of two (``2**-7``, ...); ValueError otherwise.
    rounding : str
        ``"floor"`` (the published rule) or ``"nearest"`` (round in the log domain).

    State per parameter: ``step`` (int), ``momentum_logq`` (``LogQ(m_t)``: signed powers of two
    or zeros, what the next step adds).
    """

    def __init__(self, params, lr, *, rounding="floor"):
        defaults = {"lr": check_power_of_two(lr, "lr"), "rounding": _check_rounding(rounding)}
        super().__init__(params, defaults)

    def add_param_group(self, param_group):
        check_power_of_two(param_group.get("lr", self.defaults["lr"]), "lr")
        _check_rounding(param_group.get("rounding", self.defaults["rounding"]))
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter with a gradient; returns ``closure()``'s loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr = check_power_of_two(group["lr"], "lr (param group)")
            rounding = _check_rounding(group["rounding"])
            for p, g in _grads(group, "LogQuantSGD"):
                state = self.state[p]
                m = g * -lr  # a shift of g
                if "momentum_logq" in state:
                    m = state["momentum_logq"] + m
                p.add_(m)
                state["momentum_logq"] = logq(m, rounding)
                state["step"] = state.get("step", 0) + 1
        return loss


class ShiftAdaMax(torch.optim.Optimizer):
    """Shift-based AdaMax, Algorithm 4 of Hubara et al. (see the module docstring).

    Parameters
    ----------
    params : iterable of tensors or of dicts (parameter groups)
    lr : float
        A power of two; ValueError otherwise.
    betas : (float, float)
        Decays of the first moment and of the infinity norm, each in ``[0, 1)``; used as
        ``1 - AP2(1 - beta)`` (:func:`shift_betas`).
    eps : float
        Added to ``|g|`` before the ``max`` (keeps ``v`` positive), ``>= 0``; with ``eps = 0`` a
        weight whose gradients have all been zero gets no update.

    State per parameter: ``step`` (int), ``exp_avg`` (``m``), ``exp_inf`` (``v``).
    """

    def __init__(self, params, lr, betas=(1 - 2 ** -3, 1 - 2 ** -10), eps=1e-8):
        shift_betas(betas)
        defaults = {"lr": check_power_of_two(lr, "lr"), "betas": tuple(float(b) for b in betas),
                    "eps": self._check_eps(eps)}
        super().__init__(params, defaults)

    @staticmethod
    def _check_eps(eps):
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) \
                or not (math.isfinite(eps) and eps >= 0):
            raise ValueError(f"eps must be a finite number >= 0, not {eps!r}")
        return float(eps)

    def add_param_group(self, param_group):
        check_power_of_two(param_group.get("lr", self.defaults["lr"]), "lr")
        shift_betas(param_group.get("betas", self.defaults["betas"]))
        self._check_eps(param_group.get("eps", self.defaults["eps"]))
        super().add_param_group(param_group)

    @staticmethod
    def step_size(lr, k1, step):
        """``lr * AP2(1 / (1 - beta1_eff**step))``: the bias-corrected step, a power of two."""
        beta1 = 1.0 - 2.0 ** -k1
        return lr * 2.0 ** _log2_round_scalar(1.0 / (1.0 - beta1 ** step))

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter with a gradient; returns ``closure()``'s loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr = check_power_of_two(group["lr"], "lr (param group)")
            k1, k2 = shift_betas(group["betas"])
            eps = group["eps"]
            for p, g in _grads(group, "ShiftAdaMax"):
                state = self.state[p]
                if "exp_avg" not in state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_inf"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                m, v = state["exp_avg"], state["exp_inf"]
                m.add_((g - m).mul_(2.0 ** -k1))                       # (g - m) >> k1
                decayed = v - v * 2.0 ** -k2                           # v - (v >> k2)
                torch.maximum(decayed, g.abs() + eps, out=v)
                step_size = self.step_size(lr, k1, state["step"])     # a power of two
                shift = -log2_round(v, "nearest")                      # AP2(1 / v) = 2**shift
                update = torch.ldexp(m, shift)                         # m shifted by `shift`
                if eps == 0:  # v = 0 only where every gradient so far was 0 (and m is 0)
                    update = torch.where(v > 0, update, torch.zeros_like(update))
                p.add_(update, alpha=-step_size)                       # alpha: a power of two
        return loss
