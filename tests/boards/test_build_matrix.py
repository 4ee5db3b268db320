"""The build matrix in the slow tests: every preset built, and each FPGA family's smallest board
(iCEBreaker for iCE40, ULX3S-12F for ECP5) building every weight kind, at the board's default
folding and clock. Each build must leave a bitstream and ``report.json`` and meet timing.
``make bench-boards`` runs every preset on every board (``benchmarks/bench_boards.py``).

To keep CI within its time, each preset is built on one board, chosen for what it exercises,
and digits-cnn on both: digits-bnn on the 12F (on the iCEBreaker it is built by
``test_build.py``, ``test_flow.py`` and ``test_determinism.py``), digits-tnn on the iCEBreaker
(all 30 of its EBR), digits-sq (binary and ternary layers) and digits-mlp (codebooks) on the
12F, digits-cnn on both (the iCEBreaker's fullest logic; Yosys's ABC9 fallback on the 12F).

Training is shortened (``EPOCHS``): the hardware of a preset depends on its shapes and kinds,
not on how well it learned."""

import json

import pytest

from qnnfab.boards.build import build
from qnnfab.boards.report import build_problems
from qnnfab.flow import preset_network
from qnnfab.model.presets import PRESETS

EPOCHS = 2
#: One board of each family, the smallest.
BOARDS = ("icebreaker", "ulx3s-12f")

_networks = {}


def network_of(preset):
    if preset not in _networks:
        _networks[preset] = preset_network(preset, seed=0, epochs=EPOCHS)
    return _networks[preset]


#: (preset, board) pairs built here; see the module docstring.
MATRIX = [("digits-bnn", "ulx3s-12f"), ("digits-tnn", "icebreaker"), ("digits-sq", "ulx3s-12f"),
          ("digits-mlp", "ulx3s-12f"), ("digits-cnn", "icebreaker"), ("digits-cnn", "ulx3s-12f")]


def test_the_matrix_covers_every_preset_and_both_families():
    assert {p for p, _ in MATRIX} == set(PRESETS)
    assert {b for _, b in MATRIX} == set(BOARDS)


@pytest.mark.slow
@pytest.mark.parametrize("preset, board", MATRIX)
def test_preset_builds_on_board(preset, board, tmp_path):
    net = network_of(preset)
    report = build(net, board, tmp_path, progress=lambda step: None)
    assert build_problems(report, tmp_path) == [], f"{preset} on {board}"
    assert json.loads((tmp_path / "report.json").read_text())["board"] == board
    assert report["resources"]["lut"]["used"] > 0 and report["cycles_per_inference"] > 0
