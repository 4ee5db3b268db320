"""The integer on-chip learning rule: THE definition of what the learner hardware computes.

numpy only, like :mod:`qnnfab.spec.golden`. A device learns the weights of one dense layer
(the last layer of a network, on the frozen hidden layers' features) from labelled samples,
one sample per :func:`step`, with integers, shifts and saturating adds only (no multiplier):

.. code-block:: text

    v    = activation values of the input codes (±1 for 1-bit codes, the code otherwise)
    s    = W @ v                         scores, (n_out,)
    cls  = argmax(s)                     first index on ties
    e_y  = min(0, s_y - T)               hinge error of the label y   (T = 2**margin_exp)
    e_j  = max(0, s_j + T)    (j != y)   hinge error of every other class
    q    = logq(e)                       the error quantized to a sign and an exponent
    g    = outer(q, v)                   g[j, i] = ±(v_i << exp(q_j)): a shift of v_i
    d    = g >> lr_shift                 arithmetic shift right (floor), eta = 2**-lr_shift
    m    = sat(decay(logq(M)) - d, momentum_bits)    the new momentum
    W   <- sat(W + m, weight_bits)
    M   <- logq(m)                       stored as a sign and an exponent

``decay(L) = sign(L)·(|L| >> momentum_decay)`` lowers the exponent of the power of two ``L``
by ``momentum_decay`` (0 below ``2**0``).

``logq(x) = sign(x)·2**floor(log2|x|)`` keeps the leading one of ``|x|`` (``logq(0) = 0``);
see :func:`logq` for the ``"nearest"`` rounding. ``sat(x, b)`` clamps to the two's-complement
range of ``b`` bits. This is the log-quantized momentum optimizer of issue #6,
``m_t = LogQ(m_{t-1}) - eta·grad``, ``w_t = w_{t-1} + m_t`` (``momentum_decay = 0``), with a
momentum factor ``2**-momentum_decay`` (default 1, ``beta = 1/2``). The gradient of the
squared hinge loss ``½·max(0, T - s_y)² + ½·Σ_{j≠y} max(0, s_j + T)²`` with respect to
``W[j, i]`` is ``e_j·v_i``, so ``-d`` is a (log-quantized) step down the gradient.

Why the decay: ``logq`` maps a power of two to itself, so with ``momentum_decay = 0`` a
momentum that no error changes any more never shrinks, and its weight drifts by it every step
until it saturates. On the digits-tnn features that pinned ~90 % of the weights at
``±2**15`` after 10 000 steps (accuracy held, ~97 %, but the layer had become a sign
classifier); with ``momentum_decay = 1`` no weight saturated and accuracy was as good or better.

Why the stored momentum is ``logq(m)``: the rule only ever reads ``logq(M)``, and ``logq`` maps
a power of two to itself, so storing ``logq(m)`` instead of ``m`` changes no weight, score or
class of any step, while the state per momentum shrinks from ``momentum_bits`` to a sign, a
non-zero flag and an exponent (:attr:`LearnRule.momentum_code_bits`, 6 bits for the default
16): the memory saving that is the point of Kaneko et al.'s log-quantized optimizer. (A
state given with arbitrary momenta is read through ``logq`` as before; after a learning step
every momentum is a stored ``logq``.)

A *learn* flag per sample (:func:`step`'s ``learn``) leaves the state alone: inference only.

:func:`float_step` is the same rule in floating point without any quantization (the reference
for the accuracy-vs-samples comparison). :func:`init_state` draws random small weights;
:func:`learn` runs a sequence of samples.
"""

import math
from dataclasses import dataclass

import numpy as np

from .golden import activation_values

__all__ = ["ROUNDINGS", "LearnRule", "LearnState", "StepResult", "LearnResult", "DEFAULT_RULE",
           "logq", "logq_exponent", "sqrt2_threshold", "decay", "saturate", "hinge_error",
           "step", "float_step", "float_beta", "LOGQ_SHRINK", "init_state", "learn",
           "learning_curve", "predict", "accuracy"]

#: How :func:`logq` rounds: ``"floor"`` keeps the leading one, ``"nearest"`` rounds in the
#: log domain.
ROUNDINGS = ("floor", "nearest")

# 2**62 bounds every value the rule handles in int64 (checked where it matters).
_MAX_EXP = 62


def _int_param(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    value = int(value)
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in {lo}..{hi}, not {value}")
    return value


@dataclass(frozen=True)
class LearnRule:
    """The parameters of the integer learning rule (see the module docstring).

    Attributes
    ----------
    weight_bits : int
        Width of a stored weight ``W[j, i]`` (two's complement, saturating), 2..32.
    momentum_bits : int
        Width of a stored momentum ``M[j, i]``, 2..32.
    lr_shift : int
        ``s``: the learning rate is ``eta = 2**-s``; ``d = g >> s``. 0..31.
    margin_exp : int
        ``t``: the hinge margin is ``T = 2**t``. 0..40.
    rounding : str
        ``"floor"`` (default) or ``"nearest"``, how :func:`logq` rounds (both the error and
        the momentum).
    momentum_decay : int
        ``r``: ``logq(M)``'s exponent is lowered by ``r`` before ``d`` is subtracted (a
        momentum factor of ``2**-r``; 0 is issue #6's rule as written). 0..8.
    """
    weight_bits: int = 16
    momentum_bits: int = 16
    lr_shift: int = 8
    margin_exp: int = 14
    rounding: str = "floor"
    momentum_decay: int = 1

    def __post_init__(self):
        for name, lo, hi in (("weight_bits", 2, 32), ("momentum_bits", 2, 32),
                             ("lr_shift", 0, 31), ("margin_exp", 0, 40),
                             ("momentum_decay", 0, 8)):
            object.__setattr__(self, name, _int_param(name, getattr(self, name), lo, hi))
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {', '.join(map(repr, ROUNDINGS))}, "
                             f"not {self.rounding!r}")

    @property
    def margin(self):
        """``T = 2**margin_exp``."""
        return 1 << self.margin_exp

    @property
    def weight_range(self):
        """``(lo, hi)`` of a stored weight."""
        return (-(1 << (self.weight_bits - 1)), (1 << (self.weight_bits - 1)) - 1)

    @property
    def momentum_range(self):
        """``(lo, hi)`` of a new momentum ``m`` (``momentum_bits`` two's complement)."""
        return (-(1 << (self.momentum_bits - 1)), (1 << (self.momentum_bits - 1)) - 1)

    @property
    def stored_momentum_range(self):
        """``(lo, hi)`` of a stored momentum ``logq(m)``: ``"nearest"`` may round the largest
        ``m`` up to ``2**(momentum_bits - 1)``."""
        return (-(1 << (self.momentum_bits - 1)), 1 << (self.momentum_bits - 1))

    @property
    def momentum_exp_bits(self):
        """Bits of a stored momentum's exponent (``0 .. momentum_bits - 1``)."""
        return max(1, (self.momentum_bits - 1).bit_length())

    @property
    def momentum_code_bits(self):
        """Bits of one stored momentum: its exponent, a sign and a non-zero flag."""
        return self.momentum_exp_bits + 2

    @property
    def state_bits_per_weight(self):
        """Bits the learner stores per learned weight: the weight and its momentum code."""
        return self.weight_bits + self.momentum_code_bits

    @property
    def max_shift(self):
        """Error exponents at or above ``momentum_bits + lr_shift`` all give the same update
        (``|d| >= 2**momentum_bits`` for any ``v != 0``, so the momentum saturates): hardware
        may clamp the exponent to this value."""
        return self.momentum_bits + self.lr_shift

    def score_bound(self, n_in, in_bits):
        """Largest ``|s_j|`` of ``n_in`` inputs of ``in_bits`` bits."""
        vmax = 1 if in_bits == 1 else (1 << in_bits) - 1
        return int(n_in) * (1 << (self.weight_bits - 1)) * vmax

    def error_bound(self, n_in, in_bits):
        """Largest ``|e_j|``: the score bound plus the margin."""
        return self.score_bound(n_in, in_bits) + self.margin


#: The tuned default: 16-bit weights and momenta, ``eta = 2**-8``, ``T = 2**14``, floor
#: rounding, momentum factor 1/2. Measured on the last hidden layer's features of
#: ``train("digits-tnn", seed=0)`` (128 2-bit codes, 10 classes), from ``init_state``'s
#: random weights, training split shuffled, test split, mean of 5 seeds: 13.8 % (chance) ->
#: 58 % after 10 samples, 80 % after 20, 88 % after 30, 94 % after 50, 98.0 % after 100,
#: 98.2 % after 1000 and 3000 (the trained layer itself: 98.3 %); no weight saturated. The
#: float rule (:func:`float_step`) tracks it within 0.3 %; ``"nearest"`` is as good;
#: ``momentum_decay = 0`` reaches 97.6 % with 95 % of the weights saturated. ``lr_shift``
#: 6..10 with ``margin_exp`` 12..14 all reach >= 97 % by 1000 samples; 12-bit weights and
#: momenta (``lr_shift`` 8, ``margin_exp`` 11) do as well as 16-bit ones.
DEFAULT_RULE = LearnRule()


@dataclass
class LearnState:
    """Weights and momenta of the learnt layer, both int64 arrays of shape ``(n_out, n_in)``
    (float64 for :func:`float_step`)."""
    weights: np.ndarray
    momentum: np.ndarray

    @property
    def n_out(self):
        return self.weights.shape[0]

    @property
    def n_in(self):
        return self.weights.shape[1]

    def copy(self):
        return LearnState(self.weights.copy(), self.momentum.copy())

    def check(self, rule):
        """The state as int64 arrays, checked against ``rule``'s widths; ValueError naming
        the array and the offending entry."""
        w = _as_int_array("weights", self.weights)
        m = _as_int_array("momentum", self.momentum)
        if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] < 1:
            raise ValueError(f"weights: expected shape (n_out, n_in), got {w.shape}")
        if m.shape != w.shape:
            raise ValueError(f"momentum: expected shape {w.shape} (as weights), got {m.shape}")
        for name, arr, (lo, hi), bits in (("weights", w, rule.weight_range, rule.weight_bits),
                                          ("momentum", m, rule.stored_momentum_range,
                                           rule.momentum_bits)):
            bad = np.argwhere((arr < lo) | (arr > hi))
            if len(bad):
                j, i = (int(x) for x in bad[0])
                raise ValueError(f"{name}[{j}, {i}] = {int(arr[j, i])} does not fit "
                                 f"{bits} bits ({lo}..{hi})")
        return LearnState(w, m)


@dataclass
class StepResult:
    """What one :func:`step` computed: ``scores`` (n_out,) before the update, ``cls`` their
    argmax, ``error`` the hinge error ``e``, ``q = logq(e)``, and the new ``state`` (the old
    one, unchanged, when the step did not learn)."""
    scores: np.ndarray
    cls: int
    error: np.ndarray
    q: np.ndarray
    state: LearnState


@dataclass
class LearnResult:
    """What :func:`learn` computed: ``classes`` (n,), ``scores`` (n, n_out) before each
    step's update, the final ``state``; ``weights`` (n, n_out, n_in) after each step when
    asked for (``keep_weights``), else None."""
    classes: np.ndarray
    scores: np.ndarray
    state: LearnState
    weights: "np.ndarray | None" = None


def _as_int_array(name, x):
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"{name}: expected integers, got dtype {x.dtype}")
    return x.astype(np.int64)


def _bit_length(a):
    """``floor(log2 a) + 1`` of non-negative int64 values (0 for 0), exactly."""
    a = np.array(a, dtype=np.int64, copy=True)
    n = np.zeros(a.shape, dtype=np.int64)
    for sh in (32, 16, 8, 4, 2, 1):
        big = a >= (np.int64(1) << sh)
        n += np.where(big, sh, 0)
        a = np.where(big, a >> sh, a)
    return n + (a > 0)


#: ``_SQRT2_UP[e]`` = the least integer ``c`` with ``c**2 >= 2**(2e+1)``, i.e.
#: ``ceil(sqrt(2)·2**e)``: ``nearest`` rounds ``|x|`` in ``2**e .. 2**(e+1)-1`` up iff
#: ``|x| >= _SQRT2_UP[e]``.
_SQRT2_UP = np.array([math.isqrt((1 << (2 * e + 1)) - 1) + 1 for e in range(_MAX_EXP + 1)],
                     dtype=np.int64)


def sqrt2_threshold(e):
    """``ceil(sqrt(2)·2**e)``: the smallest magnitude with leading one at ``2**e`` that
    ``"nearest"`` rounds up to ``2**(e+1)`` (a Python int; hardware compares with it)."""
    return math.isqrt((1 << (2 * int(e) + 1)) - 1) + 1


def logq_exponent(x, rounding="floor"):
    """``(sign, exponent, nonzero)`` of :func:`logq` of int array ``x``: ``sign`` is -1, 0 or
    +1, ``exponent`` the power of two (0 where ``x == 0``), ``nonzero`` bool."""
    x = _as_int_array("x", x)
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {', '.join(map(repr, ROUNDINGS))}, "
                         f"not {rounding!r}")
    mag = np.abs(x)
    if mag.size and int(mag.max()) >= (1 << _MAX_EXP):
        raise ValueError(f"logq: |x| must be < 2**{_MAX_EXP}, got {int(mag.max())}")
    nz = mag > 0
    e = np.maximum(_bit_length(mag) - 1, 0)
    if rounding == "nearest":
        e = e + (nz & (mag >= _SQRT2_UP[e]))
    return np.sign(x), np.where(nz, e, 0), nz


def logq(x, rounding="floor"):
    """Log-quantize integers: ``sign(x)·2**E(|x|)``, 0 for 0.

    ``"floor"``: ``E = floor(log2|x|)``, the leading one of ``|x|`` (``|logq(x)| <= |x|``).
    ``"nearest"``: ``E = round(log2|x|)``, rounding in the log domain, ties up: with
    ``e = floor(log2|x|)``, ``E = e + 1`` iff ``log2|x| - e >= 1/2``, i.e. iff
    ``|x|**2 >= 2**(2e+1)`` (``|x| >= sqrt(2)·2**e``; equality never happens for integers, so
    no tie occurs). Negative values are rounded by magnitude: ``logq(-x) = -logq(x)``."""
    sign, e, nz = logq_exponent(x, rounding)
    return np.where(nz, sign * (np.int64(1) << e), 0).astype(np.int64)


def decay(x, r):
    """``sign(x)·(|x| >> r)``: shrink toward zero by ``2**r`` (truncating the magnitude)."""
    x = np.asarray(x, dtype=np.int64)
    return np.sign(x) * (np.abs(x) >> int(r))


def saturate(x, bits):
    """Clamp int array ``x`` to the ``bits``-bit two's-complement range."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return np.clip(np.asarray(x, dtype=np.int64), lo, hi)


def hinge_error(scores, label, margin):
    """``e``: ``min(0, s_y - T)`` at the label, ``max(0, s_j + T)`` elsewhere."""
    s = np.asarray(scores)
    e = np.maximum(0, s + margin)
    e[label] = min(0, s[label] - margin)
    return e


def _check_sample(rule, state, codes, label, in_bits):
    in_bits = _int_param("in_bits", in_bits, 1, 8)
    codes = _as_int_array("codes", codes)
    if codes.shape != (state.n_in,):
        raise ValueError(f"codes: expected shape ({state.n_in},), got {codes.shape}")
    hi = (1 << in_bits) - 1
    if codes.size and (codes.min() < 0 or codes.max() > hi):
        raise ValueError(f"codes: must lie in 0..{hi} ({in_bits} bits), got "
                         f"{int(codes.min())}..{int(codes.max())}")
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) \
            or not 0 <= int(label) < state.n_out:
        raise ValueError(f"label must be an integer in 0..{state.n_out - 1}, not {label!r}")
    return codes, int(label), in_bits


def step(rule, state, codes, label, in_bits, *, learn=True):
    """One sample: scores, class, and (if ``learn``) the update. Returns a
    :class:`StepResult`; ``state`` is not modified.

    Parameters
    ----------
    rule : LearnRule
    state : LearnState
        Integer weights and momenta, ``(n_out, n_in)``, within the rule's widths.
    codes : int array (n_in,)
        Input activation codes of ``in_bits`` bits.
    label : int
        The true class, ``0 .. n_out - 1`` (checked even when not learning).
    in_bits : int
    """
    if not isinstance(rule, LearnRule):
        raise TypeError(f"rule must be a LearnRule, not {rule!r}")
    state = state.check(rule)
    codes, label, in_bits = _check_sample(rule, state, codes, label, in_bits)
    v = activation_values(codes, in_bits)
    scores = state.weights @ v
    cls = int(np.argmax(scores))
    e = hinge_error(scores, label, rule.margin)
    q = logq(e, rule.rounding)
    if not learn:
        return StepResult(scores=scores, cls=cls, error=e, q=q, state=state)
    d = np.outer(q, v) >> rule.lr_shift
    m = saturate(decay(logq(state.momentum, rule.rounding), rule.momentum_decay) - d,
                 rule.momentum_bits)
    w = saturate(state.weights + m, rule.weight_bits)
    return StepResult(scores=scores, cls=cls, error=e, q=q,
                      state=LearnState(w, logq(m, rule.rounding)))


#: ``E[logq(m) / m]`` for a log-uniformly distributed mantissa, ``1 / (2 ln 2)``: how much
#: ``logq`` (floor) shrinks a momentum on average.
LOGQ_SHRINK = 1 / (2 * math.log(2))


def float_beta(rule):
    """The float momentum factor standing for ``decay(logq(M))``:
    ``2**-momentum_decay`` times :data:`LOGQ_SHRINK` (floor) or 1 (nearest, unbiased on
    average)."""
    return 2.0 ** -rule.momentum_decay * (LOGQ_SHRINK if rule.rounding == "floor" else 1.0)


def float_step(rule, state, codes, label, in_bits, *, beta=None, learn=True):
    """The same rule in float64 without quantization: ``e`` as in :func:`step` (margin
    ``T``), ``g = outer(e, v)``, ``m <- beta·m - eta·g`` (``eta = 2**-lr_shift``; ``beta``
    defaults to :func:`float_beta`), ``w <- w + m``; no logq, no shifts, no saturation.
    ``state`` holds float arrays (an integer state is converted)."""
    if beta is None:
        beta = float_beta(rule)
    w = np.asarray(state.weights, dtype=np.float64)
    codes, label, in_bits = _check_sample(rule, LearnState(w, w), codes, label, in_bits)
    v = activation_values(codes, in_bits).astype(np.float64)
    scores = w @ v
    cls = int(np.argmax(scores))
    e = hinge_error(scores, label, float(rule.margin))
    if not learn:
        return StepResult(scores=scores, cls=cls, error=e, q=e, state=state)
    m = beta * np.asarray(state.momentum, dtype=np.float64) \
        - np.outer(e, v) * 2.0 ** -rule.lr_shift
    return StepResult(scores=scores, cls=cls, error=e, q=e, state=LearnState(w + m, m))


def init_state(rng, n_out, n_in, rule=DEFAULT_RULE, *, init_bits=None):
    """Random small weights, zero momenta: ``W`` uniform in ``-2**init_bits .. 2**init_bits``
    (default ``init_bits = weight_bits - 8``, a 1/128 of the weight range, at least 0)."""
    n_out = _int_param("n_out", n_out, 1, 1 << 16)
    n_in = _int_param("n_in", n_in, 1, 1 << 20)
    if init_bits is None:
        init_bits = max(0, rule.weight_bits - 8)
    init_bits = _int_param("init_bits", init_bits, 0, rule.weight_bits - 2)
    top = 1 << init_bits
    w = rng.integers(-top, top + 1, size=(n_out, n_in), dtype=np.int64)
    return LearnState(w, np.zeros((n_out, n_in), dtype=np.int64))


def learn(rule, state, codes, labels, in_bits, *, learn=True, keep_weights=False,
          use_float=False, beta=None):
    """Run :func:`step` (or :func:`float_step` with ``use_float``) over samples
    ``codes`` (n, n_in) with ``labels`` (n,); ``learn`` is one flag or one per sample.
    Returns a :class:`LearnResult`."""
    codes = _as_int_array("codes", codes)
    labels = _as_int_array("labels", labels)
    if codes.ndim != 2:
        raise ValueError(f"codes: expected shape (n, n_in), got {codes.shape}")
    if labels.shape != (len(codes),):
        raise ValueError(f"labels: expected shape ({len(codes)},), got {labels.shape}")
    flags = np.broadcast_to(np.asarray(learn, dtype=bool), (len(codes),))
    n_out = state.weights.shape[0]
    classes = np.zeros(len(codes), dtype=np.int64)
    scores = np.zeros((len(codes), n_out), dtype=np.float64 if use_float else np.int64)
    weights = [] if keep_weights else None
    for k, (x, y, f) in enumerate(zip(codes, labels, flags)):
        if use_float:
            r = float_step(rule, state, x, int(y), in_bits, beta=beta, learn=bool(f))
        else:
            r = step(rule, state, x, int(y), in_bits, learn=bool(f))
        classes[k], scores[k], state = r.cls, r.scores, r.state
        if keep_weights:
            weights.append(state.weights.copy())
    return LearnResult(classes=classes, scores=scores, state=state,
                       weights=None if weights is None else np.array(weights))


def learning_curve(rule, state, codes, labels, in_bits, eval_codes, eval_labels, points, *,
                   use_float=False, beta=None):
    """Accuracy on ``(eval_codes, eval_labels)`` after learning from the first ``p`` samples
    of ``codes``/``labels``, for each ``p`` in ``points`` (ascending, 0 for the start);
    returns ``(points, accuracies, final state)``. ``use_float``: :func:`float_step`."""
    points = [int(p) for p in points]
    if points != sorted(points) or (points and (points[0] < 0 or points[-1] > len(codes))):
        raise ValueError(f"points must be ascending within 0..{len(codes)}, not {points}")
    if use_float:
        state = LearnState(np.asarray(state.weights, dtype=np.float64),
                           np.asarray(state.momentum, dtype=np.float64))
    accs, done = [], 0
    for p in points:
        if p > done:
            state = learn(rule, state, codes[done:p], labels[done:p], in_bits,
                          use_float=use_float, beta=beta).state
            done = p
        accs.append(accuracy(state, eval_codes, eval_labels, in_bits))
    return points, accs, state


def predict(state, codes, in_bits):
    """Classes ``argmax(W @ v)`` of a batch of codes (n, n_in) (first index on ties)."""
    v = activation_values(np.asarray(codes), in_bits)
    return np.argmax(v @ np.asarray(state.weights).T, axis=1)


def accuracy(state, codes, labels, in_bits):
    """Fraction of ``codes`` whose :func:`predict` class is the label."""
    return float(np.mean(predict(state, codes, in_bits) == np.asarray(labels)))
