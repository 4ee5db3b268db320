"""Networks with unrolled layers: all unrolled, mixed with folded ones (the hand-over under
back-pressure both ways), a CNN's dense tail; the styles, ``auto`` and the estimate."""

import numpy as np
import pytest
from amaranth.hdl import Fragment

from qnnfab import random_net
from qnnfab.rtl import estimate, timing
from qnnfab.rtl.folding import LayerFolding, auto_folding
from qnnfab.rtl.network import Network, UnrollError, resolve_styles
from qnnfab.sim.payload import network_layouts, pack_inputs, unpack_outputs
from qnnfab.sim.stream_io import StreamSink, StreamSource, chance, run_streams
from qnnfab.spec import golden

MIXED = dict(features=[16, 32, 32, 8, 10], input_bits=5, hidden_bits=[2, 1, 3],
             weight_kind=["ternary", "binary", "ternary", "binary"])


def _run(dut, net, codes, *, seed, gap_p=0.0, ready_p=1.0):
    in_layout, out_layout = network_layouts(net)
    rng = np.random.default_rng(seed)
    src = StreamSource(dut.i, pack_inputs(in_layout, codes), raw=True, idle=chance(gap_p, rng))
    snk = StreamSink(dut.o, len(codes), raw=True,
                     ready=chance(ready_p, np.random.default_rng(seed + 1)))
    run_streams(dut, [src], [snk], limit=50000, what=f"seed {seed}")
    classes, scores = unpack_outputs(out_layout, snk.payloads)
    trace = golden.forward(net, codes)
    for v, k in zip(*np.nonzero(scores != trace.scores)):
        raise AssertionError(f"seed {seed}: vector {v} score {k}: expected {trace.scores[v, k]}, "
                             f"got {scores[v, k]}")
    for v in np.flatnonzero(classes != trace.classes):
        raise AssertionError(f"seed {seed}: vector {v} class: expected {trace.classes[v]}, "
                             f"got {classes[v]}")
    return src, snk


STYLES = [
    ["unrolled"] * 4,
    ["folded", "unrolled", "unrolled", "folded"],
    ["unrolled", "folded", "unrolled", "folded"],
    ["folded", "unrolled", "folded", "unrolled"],
]
FOLDINGS = [None, None, [(4, 4), (2, 8), (2, 4), (5, 2)], [(4, 16), (32, 32), (2, 32), (10, 8)]]


@pytest.mark.parametrize("styles, folding", list(zip(STYLES, FOLDINGS)),
                         ids=["all", "FUUF", "UFUF", "FUFU"])
def test_mixed_network_bit_exact_timing_and_stalls(styles, folding):
    """Golden-exact with an eager source and sink (first output after ``latency``, then one per
    ``interval``, both from the timing model) and with random stalls on both sides, so
    folded -> unrolled and unrolled -> folded hand-overs see back-pressure."""
    seed = 40 + sum(len(s) * (k + 1) for k, s in enumerate(styles))
    rng = np.random.default_rng(seed)
    net = random_net.random_network(rng, **MIXED)
    dut = Network(net, folding, style=styles)
    assert dut.styles == styles
    codes = random_net.random_inputs(rng, net, 6)
    codes[0] = 31
    codes[1] = 0
    src, snk = _run(dut, net, codes, seed=seed)
    assert snk.cycles[0] - src.offered[0] == dut.latency
    assert set(np.diff(snk.cycles).tolist()) == {dut.interval}
    _run(dut, net, codes[::-1], seed=seed, gap_p=0.3, ready_p=0.3)
    if styles == ["unrolled"] * 4:
        assert dut.interval == 1
        assert dut.folding == [LayerFolding(ly.out_features, ly.in_features)
                               for ly in net.layers]


def test_stages_are_the_model():
    """Each stage built for a mixed network has the latency and interval the network computes
    without building it."""
    net = random_net.random_network(np.random.default_rng(5), **MIXED)
    hw = Network(net, style=["folded", "unrolled", "unrolled", "folded"])
    stages = hw.stages()
    model = hw._stage_timings()
    assert [name for name, _ in stages] == ["layer0", "unrolled1_2", "layer3", "argmax"]
    assert [name for name, _ in stages] == [name for name, _, _ in model]
    for (_, unit), (name, t, _) in zip(stages, model):
        assert (unit.latency, unit.interval) == (t.latency, t.interval), name
        Fragment.get(unit, None)
    assert hw.latency == sum(unit.latency for _, unit in stages)
    chain = stages[1][1]
    assert hw.layer_latencies[1:3] == [timing.unrolled_registers(d, 2) for d in chain.levels]


def test_cnn_dense_tail_unrolled():
    """``style="unrolled"`` unrolls a CNN's dense layers and leaves its conv and pool layers
    folded; the flatten hands over to the chain."""
    rng = np.random.default_rng(9)
    net = random_net.random_cnn(rng, height=4, width=4, channels=[1, 2], pool=(0,),
                                dense=(6,), n_outputs=3)
    hw = Network(net, style="unrolled")
    assert hw.styles == ["folded", "folded", "unrolled", "unrolled"]
    codes = random_net.random_inputs(rng, net, 4)
    _run(hw, net, codes, seed=9, ready_p=0.5)
    with pytest.raises(UnrollError, match=r"^layers\[0\]: only dense layers are unrolled, not "
                                          r"ConvLayer"):
        Network(net, style=["unrolled", "folded", "unrolled", "unrolled"])


def test_resolve_styles_and_errors():
    net = random_net.random_network(np.random.default_rng(1), **MIXED)
    assert resolve_styles(net) == ["folded"] * 4
    assert resolve_styles(net, "unrolled") == ["unrolled"] * 4
    with pytest.raises(ValueError, match=r"^style must be one of folded, unrolled, auto or a "
                                         r"list of one style per layer, not 'fast'$"):
        resolve_styles(net, "fast")
    with pytest.raises(ValueError, match=r"^style: expected 4 entries \(one per layer\), got 2$"):
        resolve_styles(net, ["folded", "unrolled"])
    with pytest.raises(ValueError, match=r"^style\[2\]: expected one of folded, unrolled, got "
                                         r"'auto'$"):
        resolve_styles(net, ["folded", "unrolled", "auto", "folded"])
    with pytest.raises(ValueError, match=r"^style='auto' needs budget_lc"):
        Network(net, style="auto")


def test_auto_unrolls_what_fits():
    """``auto`` unrolls the slowest layers first while the estimate stays in the budget."""
    net = random_net.random_network(np.random.default_rng(2), **MIXED)
    fold = auto_folding(net, max_lanes=8)
    pairs = [(f.pe, f.simd) for f in fold]
    folded = estimate.estimate(net, pairs)["lc"]
    everything = estimate.estimate(net, pairs, styles=["unrolled"] * 4)["lc"]
    assert resolve_styles(net, "auto", folding=fold, budget_lc=folded - 1) == ["folded"] * 4
    assert resolve_styles(net, "auto", folding=fold, budget_lc=10 * everything) == \
        ["unrolled"] * 4
    some = resolve_styles(net, "auto", folding=fold, budget_lc=(folded + everything) // 2)
    assert "unrolled" in some and "folded" in some
    assert estimate.estimate(net, pairs, styles=some)["lc"] <= (folded + everything) // 2
    slowest = max(range(4), key=lambda k: net.layers[k].macs // fold[k].pe // fold[k].simd)
    hw = Network(net, fold, style="auto", budget_lc=10 * everything)
    assert hw.interval == 1 and hw.styles[slowest] == "unrolled"


def test_estimate_with_styles():
    net = random_net.random_network(np.random.default_rng(3), **MIXED)
    pairs = [(f.pe, f.simd) for f in auto_folding(net)]
    assert estimate.estimate(net, pairs) == estimate.estimate(net, pairs, styles=["folded"] * 4)
    mixed = estimate.estimate(net, pairs, styles=["unrolled", "folded", "folded", "unrolled"])
    assert mixed["weight_bits"] == net.layers[1].weight_bits + net.layers[2].weight_bits
    assert estimate.unrolled_cells(net.layers[0]) > 0
    unrolled = estimate.estimate(net, pairs, styles=["unrolled"] * 4)["lc"]
    scaled = estimate.estimate(net, pairs, styles=["unrolled"] * 4,
                               lane_scale={"unrolled": 1.5})["lc"]
    cells = sum(estimate.unrolled_cells(ly) for ly in net.layers)
    assert scaled - unrolled == pytest.approx(0.5 * cells, abs=1)
    with pytest.raises(ValueError, match=r"^styles: expected 4 entries"):
        estimate.estimate(net, pairs, styles=["folded"])


def test_chained_intervals_with_a_fifo_source():
    """A stage fed by an unrolled chain's FIFO takes no refill cycle."""
    t = timing.Timing(latency=3, interval=5)
    assert timing.chained([(t, True), (t, True)]) == [5, 6]
    assert timing.chained([(t, True, False), (t, True)]) == [5, 5]
    assert timing.unrolled_chain([6, 7], 2, argmax_n=10) == timing.Timing(
        latency=(3 + 1) + (3 + 1) + 4 + 2, interval=1)
