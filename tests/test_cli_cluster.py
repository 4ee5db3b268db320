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


def test_train_cluster_finetune_sim_end_to_end(tmp_path, capsys):
    """digits-cnn for 2 epochs, its checkpoint, clustering with fine-tuning, then the
    clustered hardware against the golden model."""
    cnn, out = tmp_path / "cnn.qnn", tmp_path / "c.qnn"
    assert cli.main(["train", "--preset", "digits-cnn", "--epochs", "2", "--quiet",
                     "--out", str(cnn)]) == 0
    assert (tmp_path / "cnn.pt").exists()
    assert "2.00 weight bits/weight" in capsys.readouterr().out  # ternary: 2-bit codes
    assert cli.main(["cluster", str(cnn), "--kernels", "4", "--scale", "--per-layer",
                     "--finetune", "1", "--quiet", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "8 representative kernels for 528 kernels (reduction 98.5%)" in text
    assert "after 1 epochs of fine-tuning" in text
    net = ir.load(out)
    assert net.meta["kernel_finetune"]["epochs"] == 1
    assert cli.main(["sim", str(out), "--vectors", "4", "--quiet"]) == 0
    assert "4/4 vectors bit-exact" in capsys.readouterr().out


def test_cluster_defaults_are_per_layer_with_a_sign():
    args = cli.build_parser().parse_args(["cluster", "x.qnn", "--kernels", "4", "--out",
                                          "y.qnn"])
    assert args.per_layer is True and args.scale is True
    args = cli.build_parser().parse_args(["cluster", "x.qnn", "--kernels", "4", "--out",
                                          "y.qnn", "--no-per-layer", "--no-scale"])
    assert args.per_layer is False and args.scale is False
