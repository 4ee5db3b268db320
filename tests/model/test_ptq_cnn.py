"""Post-training quantization of a float CNN (qnnfab.model.ptq_cnn): codebooks per conv and
dense layer, float and 8-bit activations, the GA scored on the validation split only, and the
fixed-point distance of a codebook's levels."""

import dataclasses

import numpy as np
import pytest
import torch

from qnnfab.model import codebooks, ptq_cnn
from qnnfab.model.data import load_dataset


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ds():
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="module")
def model(ds, one_torch_thread):
    """A tiny float CNN (4 and 8 channels), trained briefly."""
    return ptq_cnn.train_float_cnn(ds, seed=0, epochs=6, lr=5e-3, channels=(4, 8))


def test_float_cnn_shape_and_training(ds, model):
    assert ptq_cnn.image_shape(ds) == (8, 8, 1)
    assert [tuple(w.shape) for w in ptq_cnn.layer_weights(model)] == \
        [(4, 1, 3, 3), (8, 4, 3, 3), (10, 8 * 2 * 2)]
    acc, _ = ptq_cnn.evaluate(model, ds.x_test, ds.y_test)
    assert acc > 0.5   # far above chance (10 %) after 6 epochs
    # Deterministic for a seed.
    again = ptq_cnn.train_float_cnn(ds, seed=0, epochs=6, lr=5e-3, channels=(4, 8))
    for a, b in zip(ptq_cnn.layer_weights(model), ptq_cnn.layer_weights(again)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("act", ptq_cnn.ACTIVATIONS)
def test_float_row_is_the_unquantized_model(ds, model, act):
    before = [w.copy() for w in ptq_cnn.layer_weights(model)]
    r = ptq_cnn.quantize_cnn(model, ds, "float", 2, act=act)
    assert r.books is None and r.distances == []
    for a, b in zip(ptq_cnn.layer_weights(r.model), before):
        np.testing.assert_array_equal(a, b)
    # The source model is untouched and still has float activations.
    assert model.act_bits is None
    for a, b in zip(ptq_cnn.layer_weights(model), before):
        np.testing.assert_array_equal(a, b)
    with torch.no_grad():
        want = float((model(torch.as_tensor(ds.x_test)).argmax(1).numpy() == ds.y_test).mean())
    if act == "float":
        assert r.test_accuracy == want
    else:
        assert r.model.act_bits == 8 and abs(r.test_accuracy - want) <= 0.02


def test_int8_activations_take_at_most_256_values(ds, model):
    r = ptq_cnn.quantize_cnn(model, ds, "fixed", 3, act="int8")
    seen = []
    x = torch.as_tensor(ds.x_test, dtype=torch.float32)
    h, w, c = r.model.input_shape
    a = x.reshape(-1, h, w, c).permute(0, 3, 1, 2) / r.model.in_scale
    with torch.no_grad():
        for i, conv in enumerate(r.model.convs):
            a = torch.nn.functional.max_pool2d(torch.relu(conv(a)), 2)
            step = r.model.act_steps[i]
            a = torch.clamp(torch.round(a / step), 0, 255) * step
            seen.append(torch.unique(a).numel())
        # The same computation as the model's forward pass.
        assert torch.equal(r.model.head(a.flatten(1)), r.model(x))
    assert all(1 < n <= 256 for n in seen)
    # Calibration: the largest calibration activation of block 0 is exactly code 255.
    calib = ptq_cnn._calibration_x(ds)
    with torch.no_grad():
        a0 = torch.nn.functional.max_pool2d(
            torch.relu(r.model.convs[0](calib.reshape(-1, h, w, c).permute(0, 3, 1, 2)
                                        / r.model.in_scale)), 2)
    assert float(a0.max()) / float(r.model.act_steps[0]) == pytest.approx(255, rel=1e-6)


@pytest.mark.parametrize("method", [m for m in ptq_cnn.METHODS if m != "float"])
@pytest.mark.parametrize("bits", [2, 3])
def test_every_layer_has_at_most_2_bits_values(ds, model, method, bits):
    r = ptq_cnn.quantize_cnn(model, ds, method, bits, act="float", population=4,
                             generations=2)
    weights = ptq_cnn.layer_weights(r.model)
    assert len(r.books) == len(weights) == 3
    for w, book, n in zip(weights, r.books, r.distinct):
        assert np.unique(w).size == n <= 2 ** bits
        assert book.levels.size == 2 ** bits
        assert set(np.unique(w)) <= set(book.levels.astype(np.float32).tolist())
    # Biases stay float and unchanged.
    for a, b in zip(r.model.layers(), model.layers()):
        assert torch.equal(a.bias, b.bias)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6])
def test_fixed_levels_lie_on_a_power_of_two_grid_at_distance_0(ds, model, bits):
    r = ptq_cnn.quantize_cnn(model, ds, "fixed", bits)
    for book, d in zip(r.books, r.distances):
        step = float(np.min(np.diff(np.unique(book.levels))))
        assert step == 2.0 ** round(np.log2(step))          # a power of two
        j = book.levels / step
        np.testing.assert_array_equal(j, np.arange(-2 ** (bits - 1), 2 ** (bits - 1)))
        assert d < 1e-9
        dd, s = ptq_cnn.fixed_point_distance(book.levels)
        assert dd < 1e-9 and s == pytest.approx(step, rel=1e-9)


def test_fixed_point_distance():
    # Uniform grids (any step, either orientation) are at distance 0.
    assert ptq_cnn.fixed_point_distance(0.3 * np.arange(-4, 4))[0] < 1e-12
    assert ptq_cnn.fixed_point_distance(-0.3 * np.arange(-4, 4))[0] < 1e-12
    assert ptq_cnn.fixed_point_distance(np.zeros(4)) == (0.0, 1.0)
    # A midrise grid (±0.5, ±1.5) is not a fixed-point grid: every level is off by s/2 for the
    # grid through 0 with step 1, but step 3 puts two levels exactly: the best fit is smaller.
    d, s = ptq_cnn.fixed_point_distance([-1.5, -0.5, 0.5, 1.5])
    assert 0.1 < d < 0.5
    # Powers of two are far from uniform at 4 bits.
    pow2 = codebooks.pow2_codebook(np.linspace(-1, 1, 101), 4).levels
    assert ptq_cnn.fixed_point_distance(pow2)[0] > 0.1
    # Random levels: about 1/sqrt(12) on average.
    rng = np.random.default_rng(0)
    ds_ = [ptq_cnn.fixed_point_distance(rng.normal(size=16))[0] for _ in range(20)]
    assert 0.15 < np.mean(ds_) < 0.35
    with pytest.raises(ValueError, match="2\\*\\*k levels"):
        ptq_cnn.fixed_point_distance([1.0, 2.0, 3.0])


def test_ga_scores_validation_never_test(ds, model):
    """The GA's result does not depend on the test split, and does on the validation split."""
    kw = dict(act="float", seed=1, population=6, generations=3)
    base = ptq_cnn.quantize_cnn(model, ds, "ga", 2, **kw)
    rng = np.random.default_rng(5)
    poisoned = dataclasses.replace(
        ds, x_test=rng.integers(0, 17, size=ds.x_test.shape),
        y_test=rng.integers(0, 10, size=ds.y_test.shape))
    other = ptq_cnn.quantize_cnn(model, poisoned, "ga", 2, **kw)
    assert [b == c for b, c in zip(base.books, other.books)] == [True] * 3
    assert base.history == other.history and base.val_accuracy == other.val_accuracy
    # The fitness is the validation accuracy (minus a small cross-entropy tie-breaker).
    assert base.history[-1]["best"] <= base.val_accuracy + 1e-12
    assert base.history[-1]["best"] >= base.val_accuracy - 0.002 - 1e-12
    # Another validation split changes the search.
    shuffled = dataclasses.replace(ds, y_val=np.roll(ds.y_val, 1))
    third = ptq_cnn.quantize_cnn(model, shuffled, "ga", 2, **kw)
    assert third.history != base.history


def test_ga_fitness_images_limits_the_validation_images(ds, model):
    kw = dict(act="float", seed=0, population=4, generations=2)
    full = ptq_cnn.quantize_cnn(model, ds, "ga", 2, **kw)
    part = ptq_cnn.quantize_cnn(model, ds, "ga", 2, fitness_images=20, **kw)
    # Fitness on 20 images moves in steps of 1/20.
    best = part.history[0]["best"]
    assert abs(best * 20 - round(best * 20)) < 0.05
    assert part.history != full.history


def test_bad_arguments(ds, model):
    with pytest.raises(ValueError, match="unknown method"):
        ptq_cnn.quantize_cnn(model, ds, "nope", 2)
    with pytest.raises(ValueError, match="unknown activation variant"):
        ptq_cnn.quantize_cnn(model, ds, "fixed", 2, act="int4")
    with pytest.raises(ValueError, match="bits"):
        ptq_cnn.quantize_cnn(model, ds, "fixed", 9)


@pytest.mark.parametrize("bits", [3, 4, 6])
def test_format_distances_find_each_format(bits):
    """Each baseline's own levels are at distance 0 from its format and (4 bits) farther from
    the others; the distances share one unit (the levels' mean spacing)."""
    w = np.random.default_rng(1).normal(size=2000)
    for name in ("fixed", "minifloat", "pow2"):
        d = ptq_cnn.format_distances(codebooks.METHODS[name](w, bits).levels)
        assert set(d) == {"fixed", "minifloat", "pow2"}
        assert d[name] < 1e-9
        if bits == 4:   # (3-bit e1m1 minifloat is a uniform grid; 6-bit pow2 ~ a minifloat)
            assert all(v > 0.1 for k, v in d.items() if k != name), (name, d)
    # Scale and sign do not matter.
    lv = codebooks.minifloat_codebook(w, bits).levels
    assert ptq_cnn.format_distances(-3.7 * lv)["minifloat"] < 1e-9
    units = ptq_cnn.format_units(bits)
    assert all(u.size == 2 ** bits and np.all(np.diff(u) >= 0) for u in units.values())
    with pytest.raises(ValueError, match="2\\*\\*k levels"):
        ptq_cnn.format_distances([0.0, 1.0, 2.0])
