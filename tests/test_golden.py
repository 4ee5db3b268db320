"""The golden model against a plain-loop reading of the numerics definition."""

import numpy as np
import pytest

from qnnfab import ir, random_net
from qnnfab.spec import golden


def loop_weight(layer, o, i):
    """The value of one weight, read off DESIGN.md's encodings (not from qnnfab.numerics)."""
    code = int(layer.weights[o, i])
    if layer.weight_kind == "binary":
        return 1 if code else -1
    if layer.weight_kind == "ternary":
        return {0: 0, 1: 1, 2: -1}[code]
    assert layer.weight_kind == "codebook"
    return int(layer.codebook[code])


def loop_forward(network, x, accs_out=None):
    """Straight from DESIGN.md: values, dot products, multi-thresholds, argmax (first wins).
    Each layer's accumulators are appended to ``accs_out`` when given."""
    codes = [int(c) for c in x]
    for layer in network.layers:
        vals = [2 * c - 1 if layer.in_bits == 1 else c for c in codes]
        accs = []
        for o in range(layer.out_features):
            acc = 0
            for i in range(layer.in_features):
                acc += loop_weight(layer, o, i) * vals[i]
            accs.append(acc)
        if accs_out is not None:
            accs_out.append(accs)
        if layer.is_output:
            best = 0
            for o, a in enumerate(accs):
                if a > accs[best]:
                    best = o
            return best, accs
        codes = [sum(int(layer.threshold_sign[o]) * accs[o] >= int(t)
                     for t in layer.thresholds[o]) for o in range(layer.out_features)]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("features,input_bits,hidden_bits", [
    ([16, 8, 4], 1, 1), ([12, 10, 6, 3], 5, 1), ([9, 7, 5], 3, 2), ([20, 6, 5], 8, 3)])
def test_golden_matches_loops(seed, features, input_bits, hidden_bits):
    rng = np.random.default_rng(seed)
    net = random_net.random_network(rng, features=features, input_bits=input_bits,
                                    hidden_bits=hidden_bits)
    xs = random_net.random_inputs(rng, net, 12)
    trace = golden.forward(net, xs)
    for k, x in enumerate(xs):
        cls, scores = loop_forward(net, x)
        assert list(trace.scores[k]) == scores, f"seed {seed} vector {k}"
        assert int(trace.classes[k]) == cls, f"seed {seed} vector {k}"


def test_argmax_ties_pick_the_first_index():
    rng = np.random.default_rng(0)
    net = random_net.random_network(rng, features=[4, 3])
    net.layers[0].weights[:] = 1  # every class gets the same score
    trace = golden.forward(net, np.array([[1, 0, 1, 1]]))
    assert trace.classes.tolist() == [0]


def test_inputs_out_of_range_are_refused():
    rng = np.random.default_rng(0)
    net = random_net.random_network(rng, features=[4, 3], input_bits=2)
    with pytest.raises(ValueError, match=r"codes must lie in 0..3 \(2 bits\), got 0..4"):
        golden.forward(net, np.array([[0, 1, 4, 2]]))
    with pytest.raises(ValueError, match=r"expected shape \(batch, 4\), got \(1, 5\)"):
        golden.forward(net, np.zeros((1, 5), dtype=np.int64))


def codebook_network(rng, features, input_bits, hidden_bits, kinds, cb_bits, level_bits):
    """A random network whose layers have weight ``kinds``; codebook layers get a random
    codebook of ``cb_bits`` index bits and ``level_bits``-bit levels."""
    layers, bits = [], input_bits
    for n, (n_in, n_out) in enumerate(zip(features[:-1], features[1:])):
        last = n == len(features) - 2
        book = None
        while kinds[n] == "codebook" and (book is None or len(set(book.tolist())) == 1):
            book = random_net.random_codebook(rng, cb_bits, level_bits)  # not all equal
        layers.append(random_net.random_dense(
            rng, in_features=n_in, out_features=n_out, in_bits=bits,
            out_bits=1 if last else hidden_bits, weight_kind=kinds[n], codebook=book,
            output=last))
        bits = hidden_bits
    return ir.Network(input_features=features[0], input_bits=input_bits,
                      layers=layers).validate()


CODEBOOK_CASES = [  # features, input bits, hidden bits, kinds, codebook bits, level bits
    ([16, 8, 4], 1, 1, ["codebook", "codebook"], 1, 3),
    ([12, 10, 6, 3], 5, 2, ["codebook", "binary", "codebook"], 3, 8),
    ([9, 7, 5], 8, 3, ["ternary", "codebook"], 8, 16),
    ([20, 6, 5], 3, 1, ["codebook", "codebook"], 2, 5),
]


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("case", range(len(CODEBOOK_CASES)))
def test_codebook_accumulators_match_loops(case, seed):
    features, input_bits, hidden_bits, kinds, cb_bits, level_bits = CODEBOOK_CASES[case]
    rng = np.random.default_rng(100 * case + seed)
    net = codebook_network(rng, features, input_bits, hidden_bits, kinds, cb_bits, level_bits)
    xs = random_net.random_inputs(rng, net, 10)
    xs[0] = (1 << input_bits) - 1  # largest activations: the widest accumulators
    trace = golden.forward(net, xs)
    for k, x in enumerate(xs):
        accs = []
        cls, scores = loop_forward(net, x, accs)
        for n, want in enumerate(accs):
            got = trace.accs[n][k].tolist()
            assert got == want, f"case {case} seed {seed} vector {k} layer {n}: expected " \
                                f"{want}, got {got}"
            bound = (1 << (net.layers[n].acc_width - 1)) - 1
            assert max(abs(a) for a in want) <= bound, "the accumulator width holds it"
        assert int(trace.classes[k]) == cls, f"case {case} seed {seed} vector {k}"
    # the first layer's accumulators differ between vectors (else the test would mean little)
    assert len({tuple(a) for a in trace.accs[0].tolist()}) > 1


def test_float_network_is_refused():
    rng = np.random.default_rng(0)
    layer = ir.FloatDenseLayer(in_features=4, out_features=3, in_bits=2,
                               weights=rng.normal(size=(3, 4)).astype(np.float32))
    net = ir.Network(input_features=4, input_bits=2, layers=[layer]).validate()
    with pytest.raises(ir.IRError, match=r"^the integer golden model needs quantized weights, "
                                         r"and this network's weights are float .* quantize "
                                         r"it first"):
        golden.forward(net, np.zeros((1, 4), dtype=np.int64))


@pytest.mark.parametrize("scale", [1, (1 << 24) // (255 * 33), 1 << 15, 1 << 40])
def test_int_matmul_is_exact_on_every_side_of_the_float_bounds(scale):
    """Small products go through float32 BLAS, larger ones through float64, the largest
    through int64 (the scales straddle 2**24 and 2**53): all exact."""
    rng = np.random.default_rng(scale)
    a = rng.integers(-scale, scale + 1, size=(7, 33), dtype=np.int64)
    b = rng.integers(-255, 256, size=(33, 5), dtype=np.int64)
    a[0, 0] = scale     # the bound is reached whatever the draw
    want = np.array([[sum(int(x) * int(y) for x, y in zip(row, col)) for col in b.T]
                     for row in a], dtype=object)
    got = golden.int_matmul(a, b)
    assert got.dtype == np.int64
    assert (got.astype(object) == want).all()


def test_classify_in_batches_equals_forward():
    net = random_net.random_network(np.random.default_rng(3), features=[12, 9, 4],
                                    input_bits=3, hidden_bits=2, weight_kind="ternary")
    x = np.random.default_rng(4).integers(0, 8, size=(37, 12))
    want = golden.forward(net, x).classes
    for batch in (1, 5, 36, 37, 100):
        assert (golden.classify(net, x, batch=batch) == want).all()
    with pytest.raises(ValueError, match="batch"):
        golden.classify(net, x, batch=0)
