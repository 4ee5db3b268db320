"""`qnnfab infer` (new samples through the golden model) and what `qnnfab sim` shows a user:
the simulated hardware's accuracy beside the golden's, and `--dump` of every answer."""

import csv
import dataclasses
import gzip
import struct

import numpy as np
import pytest

from qnnfab import cli, ir, random_net
from qnnfab.spec import golden


@pytest.fixture
def digits_qnn(tmp_path):
    net = random_net.random_network(np.random.default_rng(1), features=[64, 12, 10],
                                    input_bits=5, hidden_bits=2)
    net = dataclasses.replace(net, meta={"data": {"name": "digits", "split_seed": 0}})
    path = tmp_path / "net.qnn"
    ir.save(net, path)
    return net, path


def test_sim_prints_accuracy_and_dumps_every_answer(digits_qnn, tmp_path, capsys):
    net, path = digits_qnn
    for suffix in (".npz", ".csv"):
        dump = tmp_path / f"answers{suffix}"
        assert cli.main(["sim", str(path), "--vectors", "6", "--quiet", "--dump",
                         str(dump)]) == 0
        out = capsys.readouterr().out
        assert "6/6 vectors bit-exact" in out
        assert "accuracy: hardware " in out and "on 6 labelled vectors (digits test split)" \
            in out
        from qnnfab.model.vectors import test_vectors
        vecs = test_vectors(net, 6)
        trace = golden.forward(net, vecs.codes)
        if suffix == ".npz":
            with np.load(dump) as f:
                assert f["class"].tolist() == trace.classes.tolist()
                assert f["scores"].tolist() == trace.scores.tolist()
                assert f["golden_scores"].tolist() == trace.scores.tolist()
                assert f["label"].tolist() == vecs.labels.tolist()
        else:
            with dump.open() as f:
                rows = list(csv.DictReader(f))
            assert len(rows) == 6
            assert [int(r["class"]) for r in rows] == trace.classes.tolist()
            assert [int(r["score9"]) for r in rows] == trace.scores[:, 9].tolist()
            assert {"label", "golden_class", "golden_score0"} <= set(rows[0])


def test_sim_dump_is_checked_before_simulating(digits_qnn, tmp_path, capsys):
    _, path = digits_qnn
    rc = cli.main(["sim", str(path), "--dump", str(tmp_path / "answers.txt")])
    assert rc == 2 and ".npz or .csv" in capsys.readouterr().err


def write_idx_gz(path, images):
    header = struct.pack(">BBBB", 0, 0, 0x08, images.ndim) + \
        b"".join(struct.pack(">I", d) for d in images.shape)
    path.write_bytes(gzip.compress(header + images.astype(np.uint8).tobytes()))


def test_infer_reads_each_form_and_matches_the_golden_model(digits_qnn, tmp_path, capsys):
    net, path = digits_qnn
    rng = np.random.default_rng(0)
    x = rng.integers(0, 17, size=(30, 8, 8))
    want = golden.forward(net, x.reshape(30, 64)).classes
    y = rng.integers(0, 10, size=30)
    np.savez(tmp_path / "s.npz", x=x, y=y)
    np.save(tmp_path / "s.npy", x)
    (tmp_path / "s.csv").write_text("\n".join([",".join(f"p{i}" for i in range(64))]
                                              + [",".join(map(str, r)) for r in x.reshape(30, 64)]))
    write_idx_gz(tmp_path / "s-idx3-ubyte.gz", x)
    for name in ("s.npz", "s.npy", "s.csv", "s-idx3-ubyte.gz"):
        out = tmp_path / f"{name}.answers.npz"
        assert cli.main(["infer", str(path), "--input", str(tmp_path / name), "--out",
                         str(out), "--show", "3"]) == 0, name
        text = capsys.readouterr().out
        assert f"sample 0: class {want[0]}" in text and "... 27 more" in text, name
        with np.load(out) as f:
            assert f["class"].tolist() == want.tolist(), name
    assert cli.main(["infer", str(path), "--input", str(tmp_path / "s.npz")]) == 0
    acc = float(np.mean(want == y))
    assert f"accuracy {acc:.2%} on 30 labelled samples" in capsys.readouterr().out


def test_infer_reads_a_pgm_image(digits_qnn, tmp_path, capsys):
    net, path = digits_qnn
    net = dataclasses.replace(net, classes=[f"digit {k}" for k in range(10)])
    ir.save(net, path)
    img = np.random.default_rng(2).integers(0, 17, size=(8, 8))
    (tmp_path / "one.pgm").write_bytes(b"P5\n# a digit\n8 8\n16\n" +
                                       img.astype(np.uint8).tobytes())
    assert cli.main(["infer", str(path), "--input", str(tmp_path / "one.pgm")]) == 0
    want = int(golden.forward(net, img.reshape(1, 64)).classes[0])
    assert capsys.readouterr().out.startswith(f"sample 0: class {want} (digit {want})")


@pytest.mark.parametrize("make, words", [
    (lambda p: np.save(p / "x.npy", np.zeros((3, 7, 7))), "the network takes 64 input codes"),
    (lambda p: (p / "x.png").write_bytes(b"\x89PNG...."), "save it as .pgm"),
    (lambda p: np.save(p / "x.npy", np.full((2, 64), 1.5)), "float inputs must lie in [0, 1]"),
    (lambda p: np.save(p / "x.npy", np.full((2, 64), 40)), "code 40 does not fit bits=5"),
    (lambda p: (p / "x.bin").write_bytes(b"hello"), "unknown input form"),
])
def test_infer_errors_name_the_file_and_the_fault(make, words, digits_qnn, tmp_path, capsys):
    _, path = digits_qnn
    make(tmp_path)
    name = next(p for p in tmp_path.iterdir() if p.name.startswith("x."))
    rc = cli.main(["infer", str(path), "--input", str(name)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and str(name) in err[0] and words in err[0], err
