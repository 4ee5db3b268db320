"""benchmarks/bench_sq.py and bench_cluster.py with the Fashion-MNIST CNN: which trainings run
with which seeds and epochs, the table notes, the fine-tuning subset, the table each data set
writes, and the command lines' errors."""

import numpy as np
import pytest

from qnnfab.model.data import Dataset
from qnnfab.model.sq import SQConfig

from .benchmark_modules import load

bc = load("bench_cluster")
bs = load("bench_sq")


# -- bench_sq ---------------------------------------------------------------------------------

def test_sq_fmnist_models_seeds_and_epochs():
    args = bs.parse_args(["--fmnist", "--fmnist-seeds", "0", "1", "--fmnist-cnn-seeds", "4",
                          "--fmnist-cnn-epochs", "3", "--no-docs"])
    assert bs.models_of(args) == ["mlp", "cnn", "fmnist-mlp", "fmnist-cnn"]
    assert bs.seeds_of("fmnist-cnn", args) == [4] and bs.seeds_of("fmnist-mlp", args) == [0, 1]
    assert bs.seeds_of("cnn", args) == [0, 1, 2]
    # the CNN's epochs go into its trainings (and so into their cache keys); the others keep
    # theirs (None: the preset's / MODELS')
    assert bs.train_epochs("fmnist-cnn", args) == 3 and bs.train_epochs("fmnist-mlp", args) is None
    assert bs.epochs("fmnist-mlp", args) == 5 and bs.epochs("cnn", args) == 80
    note = bs.fmnist_note(args)
    assert "Fashion-MNIST MLP" in note and "5 epochs, seeds 0, 1" in note
    assert "Fashion-MNIST CNN" in note and "c16,p2,c32,p2,d10 on 28x28x1" in note
    assert "3 epochs, seeds 4" in note
    only = bs.parse_args(["--fmnist", "--fmnist-models", "cnn", "--epochs", "1", "--no-docs"])
    assert bs.models_of(only) == ["mlp", "cnn", "fmnist-cnn"]
    assert bs.train_epochs("fmnist-cnn", only) == 1      # --epochs overrides it
    assert bs.models_of(bs.parse_args(["--no-docs"])) == ["mlp", "cnn"]
    assert bs.fmnist_note(bs.parse_args(["--no-docs"])) == ""


def test_sq_fmnist_cnn_preset():
    p = bs.preset_for("fmnist-cnn", "adaptive", SQConfig(method="regularizer", cost=0.02))
    assert p.conv[0].channels == 16 and p.conv[1].channels == 32 and p.hidden == ()
    assert (p.weights, p.act_bits, p.sq.method, p.sq.cost) == ("adaptive", 2, "regularizer",
                                                                0.02)
    assert bs.n_layers("fmnist-cnn") == 3 and bs.MODELS["fmnist-cnn"][2] == "fashion-mnist"
    # cache keys differ from the digits CNN's and between epochs
    keys = {bs.run_key("fmnist-cnn", p.name, "adaptive", p.sq, 0, e, "fashion-mnist")
            for e in (2, 3)} | {bs.run_key("cnn", p.name, "adaptive", p.sq, 0, 2, "digits")}
    assert len(keys) == 3


@pytest.mark.parametrize("argv, words", [
    (["--fmnist-models", "cnn"], ["--fmnist-models", "only with --fmnist"]),
    (["--fmnist-cnn-seeds", "1"], ["--fmnist-cnn-seeds", "only with --fmnist"]),
    (["--fmnist", "--fmnist-cnn-epochs", "0"], ["--fmnist-cnn-epochs", "positive"]),
    (["--fmnist", "--fmnist-cnn-seeds", "-1"], ["--fmnist-cnn-seeds", "non-negative"]),
    (["--fmnist", "--fmnist-models", "resnet"], ["--fmnist-models", "invalid choice"]),
])
def test_sq_bad_options(capsys, argv, words):
    with pytest.raises(SystemExit) as exc:
        bs.parse_args([*argv, "--no-docs"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err, (w, err)


# -- bench_cluster ----------------------------------------------------------------------------

def _dataset(n):
    x = np.arange(n * 4, dtype=np.int64).reshape(n, 4) % 256
    y = np.arange(n) % 3
    return Dataset(name="toy", seed=0, input_bits=8, classes=("a", "b", "c"),
                   x_train=x, y_train=y, x_val=x[:5], y_val=y[:5], x_test=x[:7], y_test=y[:7])


def test_finetune_subset():
    ds = _dataset(50)
    small = bc.finetune_subset(ds, 20, seed=1)
    assert len(small.y_train) == 20 and len(set(small.x_train[:, 0].tolist())) == 20
    assert set(small.x_train[:, 0].tolist()) <= set(ds.x_train[:, 0].tolist())
    # the rows keep their labels; validation and test untouched; the seed decides the draw
    assert np.array_equal(small.y_train, ds.y_train[small.x_train[:, 0] // 4])
    assert small.x_test is ds.x_test and small.y_val is ds.y_val
    assert np.array_equal(bc.finetune_subset(ds, 20, seed=1).x_train, small.x_train)
    assert not np.array_equal(bc.finetune_subset(ds, 20, seed=2).x_train, small.x_train)
    assert bc.finetune_subset(ds, None, seed=0) is ds and bc.finetune_subset(ds, 50, 0) is ds


def test_cluster_data_sets_write_their_own_table():
    args = bc.parse_args(["--data", "fashion-mnist", "--no-docs"])
    assert (args.table, args.epochs) == ("cluster-fmnist", 2)
    args = bc.parse_args(["--data", "fashion-mnist", "--epochs", "5", "--no-docs"])
    assert args.epochs == 5
    args = bc.parse_args(["--no-docs"])
    assert (args.table, args.epochs, args.data) == ("cluster", None, "digits")
    assert set(bc.DOC_TABLES) == {"cluster", "cluster-fmnist"}


def _result(data, **extra):
    row = {"path": "integer", "K": 64, "mode": "per-layer ±", "K_used": [80], "kernels": 528,
           "reduction": 1 - 80 / 528, "bits_before": 9504, "bits_after": [5104], "ratio": 1.86,
           "clustered": 0.9, "clustered_min": 0.9, "clustered_max": 0.9, "accuracy": 0.95,
           "accuracy_min": 0.95, "accuracy_max": 0.95, "drop": 0.01, "finetuned": True,
           "paper_point": True}
    return {"preset": "digits-cnn", "seeds": [0], "finetune_epochs": 1, "baseline": [0.96],
            "baseline_mean": 0.96, "float_baseline": [0.97], "float_ptq_baseline": [0.5],
            "codebook_bits": 0, "float_codebook_baseline": [], "rows": [row], "hardware": {},
            "seconds": 60.0, "data": data, **extra}


def test_cluster_markdown_names_the_data():
    fm = bc.markdown(_result("fashion-mnist", network=bc.DATA["fashion-mnist"][2],
                             test_images=10000, epochs=2, finetune_images=10000))
    assert fm.startswith("Unclustered digits-cnn's network (c16,p2,c32,p2,d10) on fashion-mnist")
    assert "both networks trained 2 epochs" in fm
    assert "fashion-mnist test split (10,000 images)" in fm
    assert "fine-tuning 1 epochs on 10,000 training images (drawn by the seed)" in fm
    assert "| 84.8 % ◆ |" in fm
    digits = bc.markdown(_result("digits", network="digits-cnn", test_images=360, epochs=None,
                                 finetune_images=None))
    assert digits.startswith("Unclustered digits-cnn, seeds 0:")
    assert "held-out digits test split (360 images), mean" in digits
    assert "trained" not in digits.split("Seeds 0;")[1][:30]
    assert "training images" not in digits


@pytest.mark.parametrize("argv, words", [
    (["--data", "mnist"], ["--data", "invalid choice"]),
    (["--finetune-images", "0"], ["--finetune-images", "positive"]),
    (["--kernels", "0", "8"], ["--kernels", "positive"]),
    (["--finetune", "-1"], ["--finetune", ">= 0"]),
    (["--epochs", "0"], ["--epochs", "positive"]),
    (["--seeds", "0", "0"], ["--seeds", "distinct"]),
])
def test_cluster_bad_options(capsys, argv, words):
    with pytest.raises(SystemExit) as exc:
        bc.parse_args([*argv, "--no-docs"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err, (w, err)
