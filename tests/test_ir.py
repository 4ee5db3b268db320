"""The network IR: save/load round trip, and bad files rejected with a message naming the field."""

import io
import json
import os
import zipfile

import numpy as np
import pytest

from qnnfab import ir, random_net
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
    (set_(["layers", 0, "kind"], "conv9"), "layers[0].kind: expected one of dense, got 'conv9'"),
    (set_(["layers", 0, "weight_kind"], "quaternary"),
     "layers[0].weight_kind: expected one of binary, ternary"),
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
