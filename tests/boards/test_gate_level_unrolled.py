"""Gate-level simulation of the unrolled style (issue 23: weights in logic): a network whose
dense layers are constant adder graphs, one mixed with a folded layer, synthesized by Yosys for
each family and simulated with its cell models, compared vector by vector with the golden
model."""

import numpy as np
import pytest

from qnnfab import random_net
from qnnfab.boards import gate_level
from qnnfab.sim import runner

#: 16 2-bit inputs -> 12 (2-bit) -> 10 scores: small enough that a netlist simulates in
#: seconds, both weight kinds whose adder graphs differ (binary: XNOR leaves; ternary: zeros
#: drop inputs).
FEATURES = [16, 12, 10]


def _network(kind, seed):
    return random_net.random_network(np.random.default_rng(seed), features=FEATURES,
                                     input_bits=2, hidden_bits=2, weight_kind=kind)


@pytest.fixture(scope="module")
def cache(shared_build_dir):
    return shared_build_dir("gatecache-unrolled")


@pytest.mark.parametrize("family, kind, style", [
    ("ice40", "ternary", "unrolled"),
    ("ecp5", "binary", "unrolled"),
    ("ecp5", "ternary", ("unrolled", "folded")),
    pytest.param("gowin", "ternary", "unrolled", marks=pytest.mark.slow),
])
def test_unrolled_netlist_is_bit_exact(family, kind, style, cache):
    net = _network(kind, seed=3)
    codes = random_net.random_inputs(np.random.default_rng(5), net, 24)
    style = list(style) if isinstance(style, tuple) else style
    result = gate_level.simulate_gate_level(net, codes, family, folding=[(2, 8), (1, 4)],
                                            build_dir=cache, style=style,
                                            ready_probability=0.6, valid_probability=0.8,
                                            seed=5)
    assert result.simulator == f"verilator ({family} netlist)"
    # Weights in logic: an all-unrolled network keeps no weight memory. Its only memory is the
    # output FIFO of the scores, in LUT RAM on ECP5 and Gowin; the iCE40 has none, so Yosys
    # puts it in block RAM there (16-bit ports: one block per 16 bits of its width).
    if style == "unrolled":
        ram = gate_level.BLOCK_RAM_CELLS[family]
        last = net.layers[-1]
        fifo_width = last.out_features * last.acc_width + (last.out_features - 1).bit_length()
        allowed = -(-fifo_width // 16) if family == "ice40" else 0
        assert result.cells.get(ram, 0) <= allowed, (allowed, result.cells)
    assert not [c for c in result.cells if c.startswith("$")], result.cells
    cmp = runner.compare(net, codes, result)
    assert cmp.ok, f"{family} {kind} {style}: {cmp.report()}"
    assert cmp.summary() == f"{len(codes)}/{len(codes)} vectors bit-exact"
