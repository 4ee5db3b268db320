"""``qnnfab learn``: the device model learns the last layer; every update step is compared with
the integer rule; the plot is written; bad input is one line."""

import numpy as np
import pytest

from qnnfab import cli, ir, random_net


@pytest.fixture(scope="module")
def tnn(tmp_path_factory):
    path = tmp_path_factory.mktemp("learn") / "tnn.qnn"
    assert cli.main(["train", "--preset", "digits-tnn", "--epochs", "3", "--quiet",
                     "--out", str(path)]) == 0
    return path


def test_learn_climbs_and_is_bit_exact(tnn, capsys):
    plot = tnn.parent / "learn.svg"
    assert cli.main(["learn", str(tnn), "--samples", "40", "--plot", str(plot),
                     "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "40/40 update steps bit-exact (amaranth" in out
    before, after = (float(v.split("%")[0]) for v in
                     (out.split("test accuracy ")[1], out.split("% after")[0].split(", ")[-1]))
    assert after > before + 20, out        # from a random last layer: well above chance
    svg = plot.read_text()
    assert svg.startswith("<svg") and "hardware rule (integer, shifts)" in svg


def test_learn_errors_are_one_line(tmp_path, capsys):
    net = random_net.random_network(np.random.default_rng(0), features=[8, 4, 2])
    path = tmp_path / "r.qnn"
    ir.save(net, path)  # no data set in meta: nothing to learn from
    assert cli.main(["learn", str(path), "--samples", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"qnnfab: error: {path}: no data set recorded") and err.count("\n") == 1


def test_png_plot_without_matplotlib_says_so(tnn, tmp_path, capsys):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert cli.main(["learn", str(tnn), "--samples", "2", "--quiet",
                         "--plot", str(tmp_path / "p.png")]) == 2
        assert "needs matplotlib (`pip install matplotlib`)" in capsys.readouterr().err
    else:
        assert cli.main(["learn", str(tnn), "--samples", "2", "--quiet",
                         "--plot", str(tmp_path / "p.png")]) == 0
        assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
