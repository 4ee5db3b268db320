"""The scripts in ``examples/`` run as a user runs them (a fresh process, cut to one epoch) and
do what their docstrings say."""

import os
import re
import subprocess
import sys

from qnnfab import cli, ir

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def test_train_your_own(tmp_path, capsys):
    """``examples/train_your_own.py``: trains, exports, the golden model agrees with the float
    model on every test image, the .qnn loads and simulates bit-exact."""
    out = tmp_path / "digits.qnn"
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, "train_your_own.py"),
                           "--epochs", "1", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = re.search(r"float (\S+)%, integer (\S+)%, agreement (\S+)%", proc.stdout)
    assert m, proc.stdout
    assert float(m[3]) == 100.0, proc.stdout
    assert float(m[2]) > 50.0, proc.stdout  # one epoch on the digits is far above chance
    net = ir.load(out)
    assert [layer.weight_kind for layer in net.layers] == ["ternary", "ternary"]
    assert net.meta["data"] == {"name": "digits", "split_seed": 0}
    assert cli.main(["sim", str(out), "--vectors", "3", "--quiet"]) == 0
    assert "3/3 vectors bit-exact" in capsys.readouterr().out
