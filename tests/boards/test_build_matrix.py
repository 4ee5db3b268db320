"""The build matrix in the slow tests: every preset on one board of each FPGA family (the
smallest: iCEBreaker for iCE40, ULX3S-12F for ECP5), at the board's default folding and clock.
Each build must leave a bitstream and ``report.json`` and meet timing. ``make bench-boards``
runs every preset on every board (``benchmarks/bench_boards.py``).

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


@pytest.mark.slow
@pytest.mark.parametrize("board", BOARDS)
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_builds_on_board(preset, board, tmp_path):
    net = network_of(preset)
    report = build(net, board, tmp_path, progress=lambda step: None)
    assert build_problems(report, tmp_path) == [], f"{preset} on {board}"
    assert json.loads((tmp_path / "report.json").read_text())["board"] == board
    assert report["resources"]["lut"]["used"] > 0 and report["cycles_per_inference"] > 0
