"""The integer learning rule: hand-computed steps, logq, validation, and that it learns."""

import numpy as np
import pytest

from qnnfab.spec import learn_rule as lr


def state(w, m):
    return lr.LearnState(np.array(w, dtype=np.int64), np.array(m, dtype=np.int64))


# --- logq --------------------------------------------------------------------------------------

def test_logq_floor_keeps_the_leading_one():
    x = np.array([0, 1, 2, 3, 5, 7, 8, 22, 23, -1, -3, -16, -17, -23, 1 << 40, (1 << 41) - 1])
    assert lr.logq(x).tolist() == [0, 1, 2, 2, 4, 4, 8, 16, 16, -1, -2, -16, -16, -16,
                                   1 << 40, 1 << 40]


def test_logq_nearest_rounds_in_the_log_domain():
    # 2**e·sqrt(2) is the midpoint: 1.41, 2.83, 5.66, 11.31, 22.63, ...
    x = np.array([0, 1, 2, 3, 5, 6, 11, 12, 22, 23, -3, -5, -22, -23, 46341, 46340])
    assert lr.logq(x, "nearest").tolist() == [0, 1, 2, 4, 4, 8, 8, 16, 16, 32, -4, -4, -16,
                                              -32, 65536, 32768]
    # 46340 < sqrt(2)·2**15 = 46340.95 <= 46341
    assert lr.sqrt2_threshold(15) == 46341 and lr.sqrt2_threshold(0) == 2


def test_logq_exponent_and_bad_rounding():
    sign, exp, nz = lr.logq_exponent(np.array([0, 6, -6]), "nearest")
    assert sign.tolist() == [0, 1, -1] and exp.tolist() == [0, 3, 3]
    assert nz.tolist() == [False, True, True]
    with pytest.raises(ValueError, match=r"rounding must be one of 'floor', 'nearest', "
                                         r"not 'up'"):
        lr.logq(np.array([1]), "up")
    with pytest.raises(ValueError, match=r"logq: \|x\| must be < 2\*\*62"):
        lr.logq(np.array([1 << 62]))


def test_decay_and_saturate():
    assert lr.decay(np.array([8, -8, 1, -1, 0, -16]), 1).tolist() == [4, -4, 0, 0, 0, -8]
    assert lr.saturate(np.array([200, -200, 5, 127, -128]), 8).tolist() == [127, -128, 5, 127,
                                                                            -128]


# --- hand-computed steps -----------------------------------------------------------------------

def test_step_by_hand_floor_shift():
    """T = 4, s = 1, no decay. v = (3, 1); s = W v = (5, 3, 4), label 1:
    e = (9, -1, 8), q = (8, -1, 8); g = q v = [[24, 8], [-3, -1], [24, 8]];
    d = g >> 1 = [[12, 4], [-2, -1], [12, 4]] (floor: -1.5 -> -2, -0.5 -> -1);
    logq(M) = [[-4, 0], [2, 0], [0, 4]]; m = logq(M) - d; W' = W + m; stored M' = logq(m)."""
    rule = lr.LearnRule(weight_bits=8, momentum_bits=6, lr_shift=1, margin_exp=2,
                        momentum_decay=0)
    st = state([[2, -1], [0, 3], [1, 1]], [[-5, 0], [3, 0], [0, 7]])
    r = lr.step(rule, st, [3, 1], 1, 2)
    assert r.scores.tolist() == [5, 3, 4] and r.cls == 0
    assert r.error.tolist() == [9, -1, 8] and r.q.tolist() == [8, -1, 8]
    assert r.state.momentum.tolist() == [[-16, -4], [4, 1], [-8, 0]]    # logq of -16 -4 4 1 -12 0
    assert r.state.weights.tolist() == [[-14, -5], [4, 4], [-11, 1]]
    assert st.weights.tolist() == [[2, -1], [0, 3], [1, 1]]       # not modified


def test_step_by_hand_zero_error_and_weight_saturation():
    """±1 inputs v = (+1, -1); s = (61, -25), label 0, T = 8: e = (0, 0), q = 0, d = 0.
    Only the momentum acts: logq(M) = [[8, -16], [8, -2]] (negative values by magnitude);
    W + M' = [[38, -47], [-12, 3]] saturates to 6 bits: [[31, -32], [-12, 3]]."""
    rule = lr.LearnRule(weight_bits=6, momentum_bits=5, lr_shift=0, margin_exp=3,
                        momentum_decay=0)
    r = lr.step(rule, state([[30, -31], [-20, 5]], [[15, -16], [9, -3]]), [1, 0], 0, 1)
    assert r.scores.tolist() == [61, -25] and r.cls == 0
    assert r.q.tolist() == [0, 0]
    assert r.state.momentum.tolist() == [[8, -16], [8, -2]]
    assert r.state.weights.tolist() == [[31, -32], [-12, 3]]


def test_step_by_hand_momentum_saturation_and_decay():
    """v = 7 (3-bit), s = (21, -14), label 1, T = 8: e = (29, -22), q = (16, -16),
    d = (112, -112); decay(logq(M)) = decay((-8, 4), 1) = (-4, 2); m = (-116, 114)
    saturates to 5 bits (-16, 15); W' = (3 - 16, -2 + 15); stored M' = logq(m) = (-16, 8)."""
    rule = lr.LearnRule(weight_bits=6, momentum_bits=5, lr_shift=0, margin_exp=3,
                        momentum_decay=1)
    r = lr.step(rule, state([[3], [-2]], [[-9], [6]]), [7], 1, 3)
    assert r.error.tolist() == [29, -22] and r.q.tolist() == [16, -16]
    assert r.state.momentum.tolist() == [[-16], [8]]
    assert r.state.weights.tolist() == [[-13], [13]]


def test_storing_logq_of_the_momentum_changes_no_weight():
    """The rule reads only logq(M), so a rule that stored the full m would give the same
    weights, scores and classes, step after step; the stored state needs only a sign, a
    non-zero flag and an exponent (6 bits for the default 16-bit momentum)."""
    rng = np.random.default_rng(4)
    rule = lr.LearnRule(weight_bits=10, momentum_bits=8, lr_shift=2, margin_exp=6)
    st = lr.init_state(rng, 4, 6, rule, init_bits=3)
    full_w, full_m = st.weights.copy(), st.momentum.copy()
    for k in range(60):
        x, y = rng.integers(0, 4, size=6), int(rng.integers(0, 4))
        r = lr.step(rule, st, x, y, 2)
        # the rule as it was: store m itself
        v = lr.activation_values(x, 2)
        q = lr.logq(lr.hinge_error(full_w @ v, y, rule.margin), rule.rounding)
        m = lr.saturate(lr.decay(lr.logq(full_m, rule.rounding), rule.momentum_decay)
                        - (np.outer(q, v) >> rule.lr_shift), rule.momentum_bits)
        full_w, full_m = lr.saturate(full_w + m, rule.weight_bits), m
        assert np.array_equal(r.state.weights, full_w), k
        assert np.array_equal(r.state.momentum, lr.logq(full_m, rule.rounding)), k
        st = r.state
    assert lr.DEFAULT_RULE.momentum_code_bits == 6
    assert lr.DEFAULT_RULE.state_bits_per_weight == 16 + 6


def test_zero_error_and_zero_momentum_change_nothing():
    rule = lr.LearnRule(margin_exp=2)
    st = state([[100, -3], [-50, 7]], [[0, 0], [0, 0]])
    r = lr.step(rule, st, [3, 0], 0, 2)          # s = (300, -150): margins met, e = 0
    assert r.q.tolist() == [0, 0]
    assert np.array_equal(r.state.weights, st.weights)
    assert np.array_equal(r.state.momentum, st.momentum)


def test_no_learning_keeps_the_state_and_ties_pick_the_first_class():
    rule = lr.LearnRule()
    st = state([[1, 1], [1, 1], [0, 0]], [[5, 5], [5, 5], [5, 5]])
    r = lr.step(rule, st, [1, 2], 2, 2, learn=False)
    assert r.cls == 0 and r.scores.tolist() == [3, 3, 0]
    assert r.state.weights.tolist() == st.weights.tolist()
    assert r.state.momentum.tolist() == st.momentum.tolist()


def test_learn_matches_repeated_steps():
    rule = lr.LearnRule(lr_shift=4, margin_exp=6)
    rng = np.random.default_rng(5)
    st = lr.init_state(rng, 4, 6, rule)
    codes = rng.integers(0, 4, size=(20, 6))
    labels = rng.integers(0, 4, size=20)
    flags = rng.random(20) < 0.7
    res = lr.learn(rule, st, codes, labels, 2, learn=flags, keep_weights=True)
    s = st
    for k in range(20):
        r = lr.step(rule, s, codes[k], labels[k], 2, learn=flags[k])
        assert r.cls == res.classes[k] and r.scores.tolist() == res.scores[k].tolist()
        s = r.state
        assert np.array_equal(res.weights[k], s.weights)
    assert np.array_equal(res.state.momentum, s.momentum)


# --- validation --------------------------------------------------------------------------------

def test_rule_validation():
    with pytest.raises(ValueError, match=r"weight_bits must be in 2..32, not 1"):
        lr.LearnRule(weight_bits=1)
    with pytest.raises(TypeError, match=r"lr_shift must be an integer, not 2.5"):
        lr.LearnRule(lr_shift=2.5)
    with pytest.raises(ValueError, match=r"rounding must be one of 'floor', 'nearest', "
                                         r"not 'ceil'"):
        lr.LearnRule(rounding="ceil")
    rule = lr.LearnRule(weight_bits=8, momentum_bits=6, lr_shift=3, margin_exp=4)
    assert rule.margin == 16 and rule.weight_range == (-128, 127)
    assert rule.momentum_range == (-32, 31) and rule.max_shift == 9
    assert rule.score_bound(10, 2) == 10 * 128 * 3 and rule.score_bound(10, 1) == 10 * 128
    assert rule.error_bound(10, 1) == 10 * 128 + 16


def test_step_validation():
    rule = lr.LearnRule(weight_bits=8)
    st = state([[1, 2], [3, 4]], [[0, 0], [0, 0]])
    with pytest.raises(ValueError, match=r"codes: expected shape \(2,\), got \(3,\)"):
        lr.step(rule, st, [1, 2, 3], 0, 2)
    with pytest.raises(ValueError, match=r"codes: must lie in 0..3 \(2 bits\), got 0..4"):
        lr.step(rule, st, [0, 4], 0, 2)
    with pytest.raises(ValueError, match=r"label must be an integer in 0..1, not 2"):
        lr.step(rule, st, [0, 1], 2, 2)
    with pytest.raises(ValueError, match=r"weights\[1, 0\] = 300 does not fit 8 bits "
                                         r"\(-128..127\)"):
        lr.step(rule, state([[1, 2], [300, 4]], [[0, 0], [0, 0]]), [0, 1], 0, 2)
    with pytest.raises(ValueError, match=r"momentum: expected shape \(2, 2\) \(as weights\), "
                                         r"got \(2, 1\)"):
        lr.step(rule, state([[1, 2], [3, 4]], [[0], [0]]), [0, 1], 0, 2)
    with pytest.raises(ValueError, match=r"weights: expected integers, got dtype float64"):
        lr.step(rule, lr.LearnState(np.zeros((2, 2)), np.zeros((2, 2))), [0, 1], 0, 2)
    with pytest.raises(TypeError, match=r"rule must be a LearnRule"):
        lr.step("rule", st, [0, 1], 0, 2)
    with pytest.raises(ValueError, match=r"labels: expected shape \(2,\), got \(3,\)"):
        lr.learn(rule, st, [[0, 1], [1, 0]], [0, 1, 0], 2)


def test_init_state():
    rule = lr.LearnRule()
    st = lr.init_state(np.random.default_rng(0), 10, 64, rule)
    assert st.weights.shape == (10, 64) and st.weights.dtype == np.int64
    assert np.abs(st.weights).max() <= 1 << (rule.weight_bits - 8)
    assert np.all(st.momentum == 0)
    st.check(rule)
    with pytest.raises(ValueError, match=r"init_bits must be in 0..14, not 15"):
        lr.init_state(np.random.default_rng(0), 2, 2, rule, init_bits=15)


# --- it learns -----------------------------------------------------------------------------------

def _prototype_data(rng, n, n_in=48, n_out=6, bits=2, flip=0.15):
    """Noisy copies of one random code vector per class (an independent, linearly separable
    toy problem)."""
    protos = rng.integers(0, 1 << bits, size=(n_out, n_in))
    labels = rng.integers(0, n_out, size=n)
    codes = protos[labels].copy()
    noise = rng.random(codes.shape) < flip
    codes[noise] = rng.integers(0, 1 << bits, size=int(noise.sum()))
    return codes, labels


@pytest.mark.parametrize("rule", [lr.DEFAULT_RULE, lr.LearnRule(rounding="nearest")],
                         ids=["default", "nearest"])
def test_learning_improves_accuracy(rule):
    rng = np.random.default_rng(11)
    codes, labels = _prototype_data(rng, 500)
    test_codes, test_labels = _prototype_data(np.random.default_rng(11), 300)
    st = lr.init_state(rng, 6, 48, rule)
    before = lr.accuracy(st, test_codes, test_labels, 2)
    res = lr.learn(rule, st, codes[:300], labels[:300], 2)
    after = lr.accuracy(res.state, test_codes, test_labels, 2)
    assert before < 0.5 and after >= 0.9, f"accuracy {before:.3f} -> {after:.3f}"
    # The float version of the rule learns this too (the comparison's reference).
    fst = lr.LearnState(st.weights.astype(float), st.momentum.astype(float))
    fres = lr.learn(rule, fst, codes[:300], labels[:300], 2, use_float=True)
    assert lr.accuracy(fres.state, test_codes, test_labels, 2) >= 0.9


@pytest.fixture(scope="module")
def tnn_features():
    """Last-hidden-layer features of a trained digits-tnn (golden forward of layers[:-1]);
    10 of the preset's 60 epochs, to keep the test short (the features of the full run are
    as good for this: see the report in ``qnnfab.spec.learn_rule``)."""
    from qnnfab.model.train import train
    from qnnfab.sim.learn_sim import learner_features
    r = train("digits-tnn", seed=0, progress=False, epochs=10)
    ds = r.dataset
    return (learner_features(r.network, ds.x_train), ds.y_train,
            learner_features(r.network, ds.x_test), ds.y_test)


def test_default_rule_learns_digits_tnn_last_layer(tnn_features):
    """From random weights to >= 85 % test accuracy within 1000 samples (shuffled training
    split), for several seeds; no weight saturated."""
    xtr, ytr, xte, yte = tnn_features
    rule = lr.DEFAULT_RULE
    for seed in range(3):
        rng = np.random.default_rng(seed)
        st = lr.init_state(rng, 10, xtr.shape[1], rule)
        order = np.concatenate([rng.permutation(len(xtr)) for _ in range(2)])[:1000]
        points, accs, final = lr.learning_curve(rule, st, xtr[order], ytr[order], 2, xte, yte,
                                                [0, 100, 1000])
        assert accs[0] < 0.4 and accs[-1] >= 0.85, f"seed {seed}: {points} {accs}"
        assert np.isclose(accs[-1], lr.accuracy(
            lr.learn(rule, st, xtr[order], ytr[order], 2).state, xte, yte, 2))
        lo, hi = rule.weight_range
        assert not np.any((final.weights == lo) | (final.weights == hi)), seed
    with pytest.raises(ValueError, match=r"points must be ascending within 0..1000"):
        lr.learning_curve(rule, st, xtr[order], ytr[order], 2, xte, yte, [10, 5])
