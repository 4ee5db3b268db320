"""``qnnfab train --sq-method rule|regularizer --sq-cost MU``: who chooses the depth of adaptive
layers, and every misuse one line naming the option."""

import pytest

from qnnfab import cli, ir


def _train(tmp_path, *args):
    out = tmp_path / "n.qnn"
    return cli.main(["train", *args, "--epochs", "1", "--quiet", "--out", str(out)]), out


def test_regularizer_from_the_command_line(tmp_path, capsys):
    code, out = _train(tmp_path, "--arch", "d16,d10", "--weights", "adaptive",
                       "--sq-method", "regularizer", "--sq-cost", "0.05")
    assert code == 0, capsys.readouterr().err
    meta = ir.load(out).meta
    assert meta["sq"]["method"] == "regularizer"
    assert meta["sq"]["config"]["cost"] == 0.05
    assert "sq=regularizer, sq_cost=0.05" in meta["preset"]


def test_preset_options(capsys):
    from argparse import Namespace
    base = dict(preset="digits-sq", arch=None, weights=None, act_bits=None, input_shape=None)
    p = cli.train_preset(Namespace(**base, sq_method=None, sq_cost=0.02))
    assert (p.sq.method, p.sq.cost, p.sq.bit_budget) == ("regularizer", 0.02, 1.5)
    p = cli.train_preset(Namespace(**base, sq_method="rule", sq_cost=None))
    assert p.sq.method == "rule" and p.name == "digits-sq(sq=rule)"
    p = cli.train_preset(Namespace(**base, sq_method=None, sq_cost=None))
    assert p.name == "digits-sq"


@pytest.mark.parametrize("args, words", [
    (["--preset", "digits-tnn", "--sq-method", "regularizer"],
     ["--sq-method", "adaptive", "ternary", "--weights adaptive"]),
    (["--arch", "d16,d10", "--sq-cost", "0.1"], ["--sq-cost", "adaptive", "binary"]),
    (["--preset", "digits-sq", "--sq-method", "rule", "--sq-cost", "0.1"],
     ["--sq-cost", "rule", "regularizer"]),
    (["--preset", "digits-sq", "--sq-cost", "-1"], ["--sq-cost", ">= 0", "-1"]),
    (["--preset", "digits-sq", "--sq-cost", "nan"], ["--sq-cost", ">= 0"]),
])
def test_misuse_is_one_line(tmp_path, capsys, args, words):
    code, out = _train(tmp_path, *args)
    err = capsys.readouterr().err
    assert code != 0 and not out.exists()
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for w in words:
        assert w in err, (w, err)


def test_bad_method_names_the_option(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--preset", "digits-sq", "--sq-method", "gates",
                  "--out", str(tmp_path / "n.qnn")])
    assert exc.value.code == 2
    assert "--sq-method" in capsys.readouterr().err
