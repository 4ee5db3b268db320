"""The network IR: save/load round trip, and bad files rejected with a message naming the field."""

import io
import json
import os
import zipfile

import numpy as np
import pytest

from qnnfab import ir, kinds, numerics, random_net
from qnnfab.ir import IRError


def make_net(seed=0, hidden_bits=1):
    rng = np.random.default_rng(seed)
    net = random_net.random_network(rng, features=[12, 9, 7, 4], input_bits=5,
                                    hidden_bits=hidden_bits)
    net.classes = ["a", "b", "c", "d"]
    net.meta = {"preset": "test", "seed": seed, "accuracy": {"float": 0.5, "integer": 0.5}}
    return net


def assert_same(a, b):
    assert (a.input_features, a.input_bits, a.classes, a.meta) == \
        (b.input_features, b.input_bits, b.classes, b.meta)
    assert len(a.layers) == len(b.layers)
    for i, (la, lb) in enumerate(zip(a.layers, b.layers)):
        assert la.header() == lb.header(), f"layer {i} header"
        assert la.arrays().keys() == lb.arrays().keys(), f"layer {i} arrays"
        for name, arr in la.arrays().items():
            got = lb.arrays()[name]
            assert got.dtype == arr.dtype and np.array_equal(got, arr), f"layer {i} {name}"


@pytest.mark.parametrize("seed,hidden_bits", [(0, 1), (1, 1), (2, 2), (3, 3)])
def test_round_trip(tmp_path, seed, hidden_bits):
    net = make_net(seed, hidden_bits)
    path = tmp_path / "net.qnn"
    ir.save(net, path)
    assert os.listdir(tmp_path) == ["net.qnn"], "no temporary file may be left behind"
    back = ir.load(path)
    assert_same(net, back)
    assert ir.to_bytes(back) == path.read_bytes(), "saving is deterministic"


def test_round_trip_keeps_derived_facts():
    net = make_net(0)
    back = ir.from_bytes(ir.to_bytes(net))
    assert back.summary() == net.summary()
    assert [layer.acc_width for layer in back.layers] == [layer.acc_width for layer in net.layers]
    assert back.macs == net.macs == 12 * 9 + 9 * 7 + 7 * 4


def test_save_refuses_invalid_network_and_keeps_old_file(tmp_path):
    path = tmp_path / "net.qnn"
    ir.save(make_net(0), path)
    before = path.read_bytes()
    bad = make_net(1)
    bad.layers[0].weights = bad.layers[0].weights + 5
    with pytest.raises(IRError, match=r"layers\[0\]\.weights"):
        ir.save(bad, path)
    assert path.read_bytes() == before


# -- bad files ------------------------------------------------------------------------------------

def rewrite(data, header=None, arrays=None, drop=()):
    """A copy of a .qnn file with the header changed by ``header(h)`` and members replaced."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            if name in drop:
                continue
            body = src.read(name)
            if name == "header.json" and header is not None:
                h = json.loads(body)
                header(h)
                body = json.dumps(h).encode()
            elif arrays and name in arrays:
                buf = io.BytesIO()
                np.save(buf, arrays[name], allow_pickle=False)
                body = buf.getvalue()
            dst.writestr(name, body)
    return out.getvalue()


@pytest.fixture
def good():
    return ir.to_bytes(make_net(0))


def load_bad(tmp_path, data):
    path = tmp_path / "bad.qnn"
    path.write_bytes(data)
    with pytest.raises(IRError) as exc:
        ir.load(path)
    msg = str(exc.value)
    assert msg.startswith(str(path)), f"the message names the file: {msg}"
    return msg


@pytest.mark.parametrize("cut", [0, 10, 0.5, -1])
def test_truncated_file(tmp_path, good, cut):
    n = int(len(good) * cut) if isinstance(cut, float) else (cut if cut >= 0 else len(good) - 1)
    msg = load_bad(tmp_path, good[:n])
    assert "not a zip archive; truncated?" in msg or "unreadable" in msg, msg


def test_not_a_file(tmp_path):
    with pytest.raises(IRError, match="no such file"):
        ir.load(tmp_path / "missing.qnn")
    with pytest.raises(IRError, match="is a folder"):
        ir.load(tmp_path)


def set_(path, value):
    """A header edit setting ``h[path...] = value``."""
    def edit(h):
        node = h
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


HEADER_CASES = [
    (set_(["format_version"], 2), "format_version: expected 1, got 2 (written by a newer qnnfab?)"),
    (set_(["format_version"], "1"), "format_version: expected 1, got '1'"),
    (set_(["format"], "onnx"), "format: expected 'qnnfab-ir', got 'onnx'"),
    (set_(["input", "bits"], 0), "input_bits: expected >= 1, got 0"),
    (set_(["input", "bits"], 9), "input_bits: expected <= 8, got 9"),
    (set_(["input", "features"], 13), "layers[0].in_features: expected 13"),
    (set_(["layers", 0, "in_bits"], 9), "layers[0].in_bits: expected <= 8, got 9"),
    (set_(["layers", 1, "in_bits"], 2), "layers[1].in_bits: expected 1 (the previous layer's"),
    (set_(["layers", 1, "in_features"], 8), "layers[1].weights: expected shape (7, 8), got (7, 9)"),
    (set_(["layers", 0, "kind"], "conv9"),
     "layers[0].kind: expected one of dense, float_dense, conv, maxpool, got 'conv9'"),
    (set_(["layers", 0, "weight_kind"], "quaternary"),
     f"layers[0].weight_kind: expected one of {', '.join(kinds.WEIGHT_KINDS)}, got "
     f"'quaternary'"),
    (set_(["layers", 0, "colour"], "red"), "layers[0]: unknown field(s) colour"),
    (set_(["layers", 2, "arrays", "weights"], "layers/2/nope.npy"),
     "layers[2].weights: array layers/2/nope.npy missing from file"),
    (set_(["classes"], ["a", "b"]), "classes: expected 4 names, got 2"),
    (set_(["layers"], []), "layers: expected at least one layer"),
]


@pytest.mark.parametrize("edit,message", HEADER_CASES,
                         ids=[m.split(":")[0] + f"-{i}" for i, (_, m) in enumerate(HEADER_CASES)])
def test_bad_header(tmp_path, good, edit, message):
    msg = load_bad(tmp_path, rewrite(good, header=edit))
    assert message in msg, f"expected {message!r} in {msg!r}"


def test_missing_field_and_header(tmp_path, good):
    msg = load_bad(tmp_path, rewrite(good, header=lambda h: h["layers"][0].pop("in_bits")))
    assert "layers[0].in_bits: missing" in msg
    msg = load_bad(tmp_path, rewrite(good, header=lambda h: h.pop("input")))
    assert "missing field 'input'" in msg
    msg = load_bad(tmp_path, rewrite(good, drop=("header.json",)))
    assert "no header.json" in msg


def test_header_not_json(tmp_path, good):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("header.json", b"{not json")
    assert "header.json: unreadable" in load_bad(tmp_path, out.getvalue())


def weights_of(net, i):
    return net.layers[i].weights


ARRAY_CASES = [
    ("layers/0/weights.npy", lambda n: weights_of(n, 0).astype(np.float64),
     "layers[0].weights: expected an integer array, got dtype float64"),
    ("layers/0/weights.npy", lambda n: np.where(weights_of(n, 0) == 1, np.nan, 0.0),
     "layers[0].weights: expected an integer array, got dtype float64 (NaN/inf"),
    ("layers/1/weights.npy", lambda n: weights_of(n, 1)[:, :-1],
     "layers[1].weights: expected shape (7, 9), got (7, 8)"),
    ("layers/2/weights.npy", lambda n: weights_of(n, 2).T,
     "layers[2].weights: expected shape (4, 7), got (7, 4)"),
    ("layers/0/weights.npy", lambda n: weights_of(n, 0) * 2,
     "layers[0].weights: values must lie in 0..1, got 2"),
    ("layers/0/thresholds.npy", lambda n: n.layers[0].thresholds[:-1],
     "layers[0].thresholds: expected shape (9, 1), got (8, 1)"),
    ("layers/0/thresholds.npy", lambda n: n.layers[0].thresholds.astype(np.float32),
     "layers[0].thresholds: expected an integer array, got dtype float32"),
    ("layers/0/thresholds.npy", lambda n: n.layers[0].thresholds[:, 0],
     "layers[0].thresholds: expected a 2-D array"),
    ("layers/0/thresholds.npy", lambda n: n.layers[0].thresholds * 0 + 10 ** 6,
     "layers[0].thresholds: values must lie in -372..373, got 1000000"),
    ("layers/1/threshold_sign.npy", lambda n: n.layers[1].threshold_sign * 0,
     "layers[1].threshold_sign: values must be +1 or -1, got 0"),
    ("layers/1/threshold_sign.npy", lambda n: n.layers[1].threshold_sign[:3],
     "layers[1].threshold_sign: expected shape (7,), got (3,)"),
]


@pytest.mark.parametrize("member,make,message", ARRAY_CASES,
                         ids=[m.split(":")[0] + f"-{i}" for i, (_, _, m) in enumerate(ARRAY_CASES)])
def test_bad_array(tmp_path, good, member, make, message):
    net = make_net(0)
    msg = load_bad(tmp_path, rewrite(good, arrays={member: make(net)}))
    assert message in msg, f"expected {message!r} in {msg!r}"


def test_unreadable_array(tmp_path, good):
    src = zipfile.ZipFile(io.BytesIO(good))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            body = src.read(name)
            dst.writestr(name, body[:20] if name == "layers/0/weights.npy" else body)
    assert "layers[0].weights: unreadable array" in load_bad(tmp_path, out.getvalue())


def corrupt_member(data, member, offset=0):
    """``data`` with one byte of ``member``'s compressed bytes flipped (CRC left stale)."""
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(member)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    out = bytearray(data)
    out[start + offset] ^= 0xFF
    return bytes(out)


def test_corrupted_array_bytes(tmp_path, good):
    # Garbage inside the stored bytes (CRC mismatch) is reported as an unreadable array.
    data = corrupt_member(good, "layers/0/weights.npy", offset=20)
    assert "layers[0].weights: unreadable array" in load_bad(tmp_path, data)


def test_corrupted_deflate_stream(tmp_path, good):
    data = corrupt_member(good, "layers/0/weights.npy", offset=0)
    assert "layers[0].weights: unreadable array" in load_bad(tmp_path, data)


def test_pickled_array_refused(tmp_path, good):
    buf = io.BytesIO()
    np.save(buf, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    src = zipfile.ZipFile(io.BytesIO(good))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, buf.getvalue() if name == "layers/0/weights.npy" else src.read(name))
    assert "layers[0].weights: unreadable array" in load_bad(tmp_path, out.getvalue())


# -- in-memory validation -------------------------------------------------------------------------

def test_validate_in_memory():
    net = make_net(2, hidden_bits=2)
    thr = net.layers[0].thresholds.copy()
    thr[0] = thr[0][::-1] if thr[0, 0] != thr[0, -1] else thr[0] + np.array([1, 0, 0])
    net.layers[0].thresholds = thr
    with pytest.raises(IRError, match=r"layers\[0\]\.thresholds: row 0 is not ascending"):
        net.validate()

    net = make_net(0)
    net.layers[-1].thresholds = np.zeros((4, 1), dtype=np.int64)
    net.layers[-1].threshold_sign = np.ones(4, dtype=np.int64)
    with pytest.raises(IRError, match=r"layers\[2\]\.thresholds: the last layer must emit raw"):
        net.validate()

    net = make_net(0)
    net.layers[1].thresholds = None
    net.layers[1].threshold_sign = None
    with pytest.raises(IRError, match=r"layers\[1\]\.thresholds: a hidden layer needs"):
        net.validate()

    net = make_net(0)
    net.layers[0].threshold_sign = None
    with pytest.raises(IRError, match=r"layers\[0\]\.threshold_sign: expected an array"):
        net.validate()

    net = make_net(0)
    net.meta = {"x": object()}
    with pytest.raises(IRError, match="meta: must be JSON-serializable"):
        net.validate()

    net = make_net(0)
    net.layers[0].in_features = 12.0
    with pytest.raises(IRError, match=r"layers\[0\]\.in_features: expected an integer"):
        net.validate()

    net = make_net(0)
    net.layers[0].weights = net.layers[0].weights.tolist()
    with pytest.raises(IRError, match=r"layers\[0\]\.weights: expected a numpy array, got list"):
        net.validate()


def test_saved_file_has_ordinary_permissions(tmp_path):
    path = tmp_path / "perm.qnn"
    ir.save(make_net(0), path)
    mask = os.umask(0o022)
    os.umask(mask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~mask)
    assert [p.name for p in tmp_path.iterdir()] == ["perm.qnn"]


# -- codebook weights -----------------------------------------------------------------------------

def make_codebook_net(seed=0, cb_bits=(3, 2), level_bits=6):
    """12x5b -> 9x2b (codebook) -> 7x1b (binary) -> 4 (codebook)."""
    rng = np.random.default_rng(seed)
    books = [random_net.random_codebook(rng, b, level_bits) for b in cb_bits]
    layers = [
        random_net.random_dense(rng, in_features=12, out_features=9, in_bits=5, out_bits=2,
                                weight_kind="codebook", codebook=books[0]),
        random_net.random_dense(rng, in_features=9, out_features=7, in_bits=2, out_bits=1),
        random_net.random_dense(rng, in_features=7, out_features=4, in_bits=1, output=True,
                                weight_kind="codebook", codebook=books[1]),
    ]
    return ir.Network(input_features=12, input_bits=5, layers=layers, classes=list("abcd"),
                      meta={"preset": "codebook-test", "seed": seed}).validate()


@pytest.mark.parametrize("seed,cb_bits,level_bits", [(0, (3, 2), 6), (1, (1, 8), 16),
                                                     (2, (8, 1), 2)])
def test_codebook_round_trip(tmp_path, seed, cb_bits, level_bits):
    net = make_codebook_net(seed, cb_bits, level_bits)
    path = tmp_path / "cb.qnn"
    ir.save(net, path)
    back = ir.load(path)
    assert_same(net, back)
    assert ir.to_bytes(back) == path.read_bytes(), "saving is deterministic"
    first, mid, last = back.layers
    assert [layer.weight_kind for layer in back.layers] == ["codebook", "binary", "codebook"]
    assert mid.codebook is None and mid.weight_levels == (-1, 1)
    top = (1 << (level_bits - 1)) - 1
    for i, bits in ((0, cb_bits[0]), (2, cb_bits[1])):
        layer = back.layers[i]
        assert layer.weight_levels == tuple(net.layers[i].codebook.tolist())
        assert all(type(v) is int and -top <= v <= top for v in layer.weight_levels)
        assert len(layer.weight_levels) == 1 << bits
        assert layer.weight_bits == layer.macs * bits
    assert back.weight_bits == 12 * 9 * cb_bits[0] + 9 * 7 + 7 * 4 * cb_bits[1]
    # widths follow the codebook's largest |level|: fan-in * max|w| * max|a|
    bound = 12 * max(abs(v) for v in first.codebook.tolist()) * 31
    assert first.acc_width == numerics.signed_width(-bound, bound)
    assert first.threshold_width == numerics.signed_width(-bound, bound + 1)
    assert "9x2b(codebook)" in back.summary()


@pytest.fixture
def good_cb():
    return ir.to_bytes(make_codebook_net(0))


def _codebook(i):
    return make_codebook_net(0).layers[i].codebook


def _pop_array(i, name):
    return lambda h: h["layers"][i]["arrays"].pop(name)


CB_HEADER_CASES = [
    (_pop_array(0, "codebook"), "layers[0].codebook: missing (codebook weights need their levels)"),
    (set_(["layers", 1, "arrays", "codebook"], "layers/0/codebook.npy"),
     "layers[1].codebook: expected none for binary weights"),
    (set_(["layers", 1, "weight_kind"], "codebook"), "layers[1].codebook: missing"),
    (set_(["layers", 0, "weight_kind"], "ternary"),
     "layers[0].codebook: expected none for ternary weights"),
    (set_(["layers", 0, "weight_kind"], "Codebook"),
     f"layers[0].weight_kind: expected one of {', '.join(kinds.WEIGHT_KINDS)}, got "
     f"'Codebook'"),
]


@pytest.mark.parametrize("edit,message", CB_HEADER_CASES,
                         ids=[m.split(":")[0] + f"-{i}" for i, (_, m) in
                              enumerate(CB_HEADER_CASES)])
def test_bad_codebook_header(tmp_path, good_cb, edit, message):
    msg = load_bad(tmp_path, rewrite(good_cb, header=edit))
    assert message in msg, f"expected {message!r} in {msg!r}"


def _with(array, index, value):
    out = array.copy()
    out[index] = value
    return out


CB_ARRAY_CASES = [
    ("layers/0/codebook.npy", lambda: _codebook(0)[:3],
     "layers[0].codebook: expected 2**k levels (k = 1..8), got 3"),
    ("layers/0/codebook.npy", lambda: _codebook(0)[:6],
     "layers[0].codebook: expected 2**k levels (k = 1..8), got 6"),
    ("layers/0/codebook.npy", lambda: _codebook(0)[:1],
     "layers[0].codebook: expected 2**k levels (k = 1..8), got 1"),
    ("layers/0/codebook.npy", lambda: np.zeros(0, np.int64),
     "layers[0].codebook: expected 2**k levels (k = 1..8), got 0"),
    ("layers/0/codebook.npy", lambda: np.zeros(512, np.int64),
     "layers[0].codebook: expected 2**k levels (k = 1..8), got 512"),
    ("layers/0/codebook.npy", lambda: _codebook(0).reshape(2, 4),
     "layers[0].codebook: expected a 1-D array of levels, got (2, 4)"),
    ("layers/0/codebook.npy", lambda: _with(_codebook(0), 5, 2 ** 15),
     "layers[0].codebook: values must lie in -32767..32767, got 32768 at index (5,)"),
    ("layers/2/codebook.npy", lambda: _with(_codebook(2), 0, -(2 ** 15)),
     "layers[2].codebook: values must lie in -32767..32767, got -32768 at index (0,)"),
    ("layers/0/codebook.npy", lambda: _codebook(0).astype(np.float64),
     "layers[0].codebook: expected an integer array, got dtype float64"),
    ("layers/2/codebook.npy", lambda: _with(_codebook(2).astype(np.float32), 1, np.nan),
     "layers[2].codebook: expected an integer array, got dtype float32 (NaN/inf"),
    ("layers/0/weights.npy", lambda: _with(make_codebook_net(0).layers[0].weights, (2, 3), 8),
     "layers[0].weights: values must lie in 0..7, got 8 at index (2, 3)"),
    ("layers/2/weights.npy", lambda: _with(make_codebook_net(0).layers[2].weights, (1, 0), -1),
     "layers[2].weights: values must lie in 0..3, got -1 at index (1, 0)"),
    # a shorter (valid) codebook: the stored indices now point past its end
    ("layers/0/codebook.npy", lambda: _codebook(0)[:4],
     "layers[0].weights: values must lie in 0..3"),
]


@pytest.mark.parametrize("member,make,message", CB_ARRAY_CASES,
                         ids=[m.split(":")[0] + f"-{i}" for i, (_, _, m) in
                              enumerate(CB_ARRAY_CASES)])
def test_bad_codebook_array(tmp_path, good_cb, member, make, message):
    msg = load_bad(tmp_path, rewrite(good_cb, arrays={member: make()}))
    assert message in msg, f"expected {message!r} in {msg!r}"


def test_threshold_range_follows_the_codebook(tmp_path):
    """Thresholds are bounded by the codebook's largest level: shrinking the levels makes a
    stored "never" threshold (bound + 1) out of range."""
    net = make_codebook_net(0)
    layer = net.layers[0]
    _, thi = numerics.threshold_bounds(12, 5, layer.weight_levels)
    thr = layer.thresholds.copy()
    thr[0, -1] = thi
    layer.thresholds = thr
    data = ir.to_bytes(net)  # valid as it is
    small = layer.codebook // 4
    assert max(abs(small)) < max(abs(layer.codebook)), "the test needs a smaller codebook"
    new_lo, new_hi = numerics.threshold_bounds(12, 5, small.tolist())
    msg = load_bad(tmp_path, rewrite(data, arrays={"layers/0/codebook.npy": small}))
    assert f"layers[0].thresholds: values must lie in {new_lo}..{new_hi}, got {thi} at index " \
           f"(0, 2)" in msg, msg


# -- float (unquantized) layers -------------------------------------------------------------------

def make_float_net(seed=0):
    """12x5b -> 9x2b (clip 2.5) -> 7x1b -> 4, float32 weights and batch-norm."""
    rng = np.random.default_rng(seed)

    def f32(*shape, lo=-1.0, hi=1.0):
        return rng.uniform(lo, hi, size=shape).astype(np.float32)

    def hidden(n_in, n_out, in_bits, act_bits, clip, name):
        return ir.FloatDenseLayer(in_features=n_in, out_features=n_out, in_bits=in_bits,
                                  weights=f32(n_out, n_in), bn_mean=f32(n_out),
                                  bn_var=f32(n_out, lo=0.1, hi=2.0), bn_weight=f32(n_out),
                                  bn_bias=f32(n_out), bn_eps=1e-5, act_bits=act_bits, clip=clip,
                                  name=name)
    layers = [hidden(12, 9, 5, 2, 2.5, "dense0"), hidden(9, 7, 2, 1, None, "dense1"),
              ir.FloatDenseLayer(in_features=7, out_features=4, in_bits=1, weights=f32(4, 7),
                                 name="dense2")]
    return ir.Network(input_features=12, input_bits=5, layers=layers, classes=list("abcd"),
                      meta={"preset": "float-test", "output_log_scale": -1.25}).validate()


def test_float_round_trip(tmp_path):
    net = make_float_net(0)
    path = tmp_path / "float.qnn"
    ir.save(net, path)
    back = ir.load(path)
    assert_same(net, back)
    assert ir.to_bytes(back) == path.read_bytes()
    assert back.is_float and not make_net(0).is_float
    assert all(type(layer) is ir.FloatDenseLayer for layer in back.layers)
    first, mid, last = back.layers
    assert (first.act_bits, first.clip, first.bn_eps) == (2, 2.5, 1e-5)
    assert (mid.act_bits, mid.clip) == (1, None) and last.is_output and last.act_bits == 0
    assert all(a.dtype == np.float32 for layer in back.layers for a in layer.arrays().values())
    assert back.weight_bits == 32 * back.macs
    assert back.summary() == "12x5b -> 9x2b(float) -> 7x1b(float) -> 4(float)"


def test_require_integer():
    make_net(0).require_integer("sim")  # no error
    make_codebook_net(0).require_integer("sim")
    with pytest.raises(IRError, match=r"^sim needs quantized weights, and this network's weights "
                                      r"are float .* quantize it first, e\.g\. `qnnfab quantize"):
        make_float_net(0).require_integer("sim")


@pytest.fixture
def good_float():
    return ir.to_bytes(make_float_net(0))


def _pop(i, key):
    return lambda h: h["layers"][i].pop(key)


def _drop_bn(i):
    def edit(h):
        for name in ir.FloatDenseLayer.BN_FIELDS:
            h["layers"][i]["arrays"].pop(name)
        h["layers"][i].pop("bn_eps")
    return edit


def _to_float_layer(i):
    def edit(h):
        h["layers"][i].pop("weight_kind")
        h["layers"][i].update(kind="float_dense", act_bits=0)
    return edit


def _to_dense_layer(i):
    def edit(h):
        h["layers"][i].pop("act_bits")
        h["layers"][i].update(kind="dense", weight_kind="binary")
    return edit


FLOAT_HEADER_CASES = [
    (_pop_array(0, "bn_weight"), "layers[0].bn_weight: missing (a hidden layer needs all of "
                                 "bn_mean, bn_var, bn_weight, bn_bias)"),
    (set_(["layers", 2, "arrays", "bn_mean"], "layers/1/bn_mean.npy"), "layers[2].bn_var: missing"),
    (set_(["layers", 2, "act_bits"], 2), "layers[2].bn_mean: missing: a layer with 2-bit "
                                         "activations needs batch-norm"),
    (set_(["layers", 2, "clip"], 1.0), "layers[2].clip: expected none for a layer without "
                                       "activation (act_bits 0), got 1.0"),
    (set_(["layers", 0, "act_bits"], 0), "layers[0].act_bits: expected >= 1, got 0"),
    (set_(["layers", 0, "act_bits"], 9), "layers[0].act_bits: expected <= 8, got 9"),
    (set_(["layers", 0, "act_bits"], 3), "layers[1].in_bits: expected 3 (the previous layer's "
                                         "output bits), got 2"),
    (_pop(0, "act_bits"), "layers[0].act_bits: missing"),
    (_pop(0, "clip"), "layers[0].clip: expected a positive float for 2-bit activations, got None"),
    (set_(["layers", 0, "clip"], -1.0), "layers[0].clip: expected a positive float for 2-bit "
                                        "activations, got -1.0"),
    (set_(["layers", 0, "clip"], 0.0), "layers[0].clip: expected a positive float"),
    (set_(["layers", 0, "clip"], "2.5"), "layers[0].clip: expected a positive float for 2-bit "
                                         "activations, got '2.5'"),
    (set_(["layers", 1, "clip"], 1.0), "layers[1].clip: expected none for 1-bit activations"),
    (set_(["layers", 0, "bn_eps"], 0.0), "layers[0].bn_eps: expected a positive float, got 0.0"),
    (set_(["layers", 1, "bn_eps"], -1e-5), "layers[1].bn_eps: expected a positive float, got "
                                           "-1e-05"),
    (set_(["layers", 0, "weight_kind"], "float"), "layers[0]: unknown field(s) weight_kind"),
    (set_(["layers", 0, "kind"], "float"),
     "layers[0].kind: expected one of dense, float_dense, conv, maxpool, got 'float'"),
    (_to_dense_layer(2), "layers[2].kind: a network is either all float layers or all quantized "
                         "ones; got dense after float_dense"),
]


@pytest.mark.parametrize("edit,message", FLOAT_HEADER_CASES,
                         ids=[m.split(":")[0] + f"-{i}" for i, (_, m) in
                              enumerate(FLOAT_HEADER_CASES)])
def test_bad_float_header(tmp_path, good_float, edit, message):
    msg = load_bad(tmp_path, rewrite(good_float, header=edit))
    assert message in msg, f"expected {message!r} in {msg!r}"


def test_hidden_float_layer_without_batch_norm_names_it(tmp_path, good_float):
    """A hidden layer whose batch-norm arrays are all gone: the message must say batch-norm is
    missing, not talk about "the output layer"."""
    msg = load_bad(tmp_path, rewrite(good_float, header=_drop_bn(1)))
    assert "batch-norm" in msg and "output layer" not in msg, msg


def test_integer_file_with_a_float_layer(tmp_path, good):
    msg = load_bad(tmp_path, rewrite(good, header=_to_float_layer(2)))
    assert "layers[2].kind: a network is either all float layers or all quantized ones; got " \
           "float_dense after dense" in msg, msg


def _float_array(i, name):
    return getattr(make_float_net(0).layers[i], name)


FLOAT_ARRAY_CASES = [
    ("layers/0/weights.npy", lambda: _float_array(0, "weights").astype(np.float64),
     "layers[0].weights: expected float32, got dtype float64"),
    ("layers/2/weights.npy", lambda: np.ones((4, 7), np.int64),
     "layers[2].weights: expected float32, got dtype int64"),
    ("layers/0/weights.npy", lambda: _with(_float_array(0, "weights"), (1, 2), np.nan),
     "layers[0].weights: values must be finite, got nan at index (1, 2)"),
    ("layers/1/bn_var.npy", lambda: _with(_float_array(1, "bn_var"), 3, np.inf),
     "layers[1].bn_var: values must be finite, got inf at index (3,)"),
    ("layers/0/bn_bias.npy", lambda: _with(_float_array(0, "bn_bias"), 0, -np.inf),
     "layers[0].bn_bias: values must be finite, got -inf at index (0,)"),
    ("layers/0/bn_var.npy", lambda: _with(_float_array(0, "bn_var"), 4, -0.5),
     "layers[0].bn_var: must be >= 0"),
    ("layers/0/bn_mean.npy", lambda: _float_array(0, "bn_mean")[:8],
     "layers[0].bn_mean: expected shape (9,), got (8,)"),
    ("layers/1/bn_weight.npy", lambda: _float_array(1, "bn_weight").astype(np.float16),
     "layers[1].bn_weight: expected float32, got dtype float16"),
    ("layers/1/weights.npy", lambda: _float_array(1, "weights").T,
     "layers[1].weights: expected shape (7, 9), got (9, 7)"),
]


@pytest.mark.parametrize("member,make,message", FLOAT_ARRAY_CASES,
                         ids=[m.split(":")[0] + f"-{i}" for i, (_, _, m) in
                              enumerate(FLOAT_ARRAY_CASES)])
def test_bad_float_array(tmp_path, good_float, member, make, message):
    msg = load_bad(tmp_path, rewrite(good_float, arrays={member: make()}))
    assert message in msg, f"expected {message!r} in {msg!r}"


def test_float_validate_in_memory():
    net = make_float_net(0)
    net.layers[2] = make_net(0).layers[2]
    with pytest.raises(IRError, match=r"layers\[2\]\.kind: a network is either all float layers "
                                      r"or all quantized ones; got dense after float_dense"):
        net.validate()

    net = make_net(0)
    net.layers[1] = make_float_net(0).layers[1]
    with pytest.raises(IRError, match=r"layers\[1\]\.kind: .* got float_dense after dense"):
        net.validate()

    net = make_float_net(0)  # a hidden layer without batch-norm or activation
    layer = net.layers[1]
    layer.bn_mean = layer.bn_var = layer.bn_weight = layer.bn_bias = None
    layer.act_bits = 0
    with pytest.raises(IRError, match=r"layers\[1\]\.bn_mean: a hidden layer needs batch-norm"):
        net.validate()

    net = make_float_net(0)  # the last layer with batch-norm and an activation
    last = net.layers[2]
    for name in ir.FloatDenseLayer.BN_FIELDS:
        setattr(last, name, np.ones(4, np.float32))
    last.act_bits = 1
    with pytest.raises(IRError, match=r"layers\[2\]\.bn_mean: the last layer must emit raw "
                                      r"scores \(no activation\)"):
        net.validate()

    net = make_float_net(0)
    net.layers[0].clip = 3  # an int, not a float
    with pytest.raises(IRError, match=r"layers\[0\]\.clip: expected a positive float for 2-bit "
                                      r"activations, got 3"):
        net.validate()

    net = make_float_net(0)
    net.layers[0].weights = net.layers[0].weights.tolist()
    with pytest.raises(IRError, match=r"layers\[0\]\.weights: expected a numpy array, got list"):
        net.validate()
