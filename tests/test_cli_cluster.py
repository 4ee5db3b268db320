"""``qnnfab cluster``: clustered files, statistics, one-line errors, the fine-tuning default."""

import numpy as np
import pytest

from qnnfab import cli, ir, random_net


@pytest.fixture
def cnn_qnn(tmp_path):
    rng = np.random.default_rng(5)
    net = random_net.random_cnn(rng, height=6, width=6, channels=[1, 4, 8], input_bits=3,
                                pool=(0,))
    path = tmp_path / "cnn.qnn"
    ir.save(net, path)
    return path, net


def test_cluster_writes_a_valid_clustered_network(cnn_qnn, capsys):
    path, net = cnn_qnn
    out = path.parent / "c.qnn"
    assert cli.main(["cluster", str(path), "--kernels", "5", "--scale", "--out", str(out)]) == 0
    text = capsys.readouterr()
    assert "clustering without fine-tuning" in text.err  # no cnn.pt beside cnn.qnn
    got = ir.load(out)
    convs = [layer for layer in got.layers if isinstance(layer, ir.ConvLayer)]
    assert all(c.kernel_codebook is not None and c.kernel_codebook.size <= 5 for c in convs)
    assert all(c.kernel_codebook.sign is not None for c in convs)
    kernels = 1 * 4 + 4 * 8
    assert f"for {kernels} kernels" in text.out and "test accuracy (integer): n/a" in text.out
    assert got.meta["clustering"]["total"]["kernels"] == kernels


def test_cluster_errors_are_one_line(cnn_qnn, tmp_path, capsys):
    path, _ = cnn_qnn
    out = tmp_path / "c.qnn"
    assert cli.main(["cluster", str(path), "--kernels", "4", "--finetune", "2",
                     "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qnnfab: error: --finetune 2 needs the float model ")
    assert "cnn.pt" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    mlp = tmp_path / "mlp.qnn"
    ir.save(random_net.random_network(np.random.default_rng(0), features=[8, 4, 2]), mlp)
    assert cli.main(["cluster", str(mlp), "--kernels", "4", "--out", str(out)]) == 2
    assert "has no conv layers to cluster" in capsys.readouterr().err
    assert not out.exists()
