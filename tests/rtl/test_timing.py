# amaranth: UnusedElaboratable=no
"""The timing model (qnnfab.rtl.timing) against the components: each component's ``latency``
and ``interval`` are the model's, the network's stages are the model's stages, and where a
figure is new here (a conv unit's latency) it is measured in simulation."""

import numpy as np
import pytest
from amaranth.hdl import Fragment

from qnnfab import random_net
from qnnfab.rtl import timing
from qnnfab.rtl.argmax import Argmax
from qnnfab.rtl.conv import ConvUnit
from qnnfab.rtl.folding import LayerFolding, auto_folding
from qnnfab.rtl.kinds import dot_unit_class
from qnnfab.rtl.learner import LearningNetwork, OnlineLearner
from qnnfab.rtl.maxpool import MaxPool
from qnnfab.rtl.mvu import MatrixVectorUnit
from qnnfab.rtl.network import Network
from qnnfab.rtl.pixels import PixelsToVector, VectorToPixels
from qnnfab.rtl.sliding_window import SlidingWindow
from qnnfab.rtl.threshold import MultiThreshold
from qnnfab.rtl.update_unit import UpdateUnit
from qnnfab.sim.stream_io import run_stream
from qnnfab.spec import learn_rule as lr


def test_formulas():
    assert timing.fold_steps(64, 256, 4, 16) == 4 * 64
    assert timing.mvu(64, 256, 4, 16, 3) == timing.Timing(latency=256 + 2 + 3, interval=256)
    assert timing.mvu(64, 10, 10, 64, 2) == timing.Timing(latency=1 + 2 + 2, interval=2)
    assert timing.argmax(10) == timing.Timing(21, 22)
    assert timing.sliding_window(8, 8, 3, 1) == timing.Timing(2 * 10 + 3, 100)
    assert timing.sliding_window(8, 8, 3, 1, 5).interval == 100 + 64 * 4
    assert timing.sliding_window(8, 8, 3, 0).interval == 64
    conv = timing.conv_unit(8, 8, 3, 1, 9, 16, 2, 9, 1)
    assert conv.interval == 64 * (8 + 1) + 100 - 64 and conv.latency == 23 + 8 + 2 + 1
    assert timing.chained([(timing.Timing(5, 10), True), (timing.Timing(5, 10), True),
                           (timing.Timing(1, 7), False)]) == [10, 11, 7]
    lt = timing.online_learner(7 * 2, 4, item_stages=2, product_stages=1, error_stages=2,
                               update_latency=4)
    assert (lt.latency, lt.inference_interval, lt.interval) == (14 + 4 + 9, 14 + 4 + 10,
                                                                 28 + 4 + 16)
    with pytest.raises(ValueError, match="simd must be >= 1, not 0"):
        timing.fold_steps(4, 4, 1, 0)


def _dense(kind, in_bits, n_in=32, n_out=8, seed=0):
    return random_net.random_dense(np.random.default_rng(seed), in_features=n_in,
                                   out_features=n_out, in_bits=in_bits, out_bits=2,
                                   weight_kind=kind)


@pytest.mark.parametrize("kind, in_bits", [("binary", 1), ("binary", 2), ("ternary", 2),
                                           ("codebook", 3)])
@pytest.mark.parametrize("fold", [(1, 1), (2, 8), (8, 32)])
@pytest.mark.parametrize("pipelined", [True, False])
def test_mvu_properties_are_the_model(kind, in_bits, fold, pipelined):
    layer = _dense(kind, in_bits)
    dut = MatrixVectorUnit(layer, fold, pipelined=pipelined)
    dot = dot_unit_class(layer).pipeline_latency(fold[1], pipelined, in_bits)
    t = timing.mvu(32, 8, *fold, dot)
    assert (dut.latency, dut.interval, dut.steps) == (t.latency, t.interval,
                                                      timing.fold_steps(32, 8, *fold))


def test_pixel_stages_are_the_model():
    for cls, fn in ((VectorToPixels, timing.vector_to_pixels),
                    (PixelsToVector, timing.pixels_to_vector)):
        dut = cls(3, 5, 2, 2)
        assert (dut.latency, dut.interval) == (fn(3, 5).latency, fn(3, 5).interval) == (1, 15)
    pool = MaxPool(4, 6, 2, 2, size=2)
    assert (pool.latency, pool.interval) == (1, 24) == tuple(vars(timing.max_pool(4, 6)).values())
    win = SlidingWindow(6, 5, 2, 2, kernel_size=3, padding=1)
    assert (win.latency, win.interval) == (timing.sliding_window(6, 5, 3, 1).latency,
                                           timing.sliding_window(6, 5, 3, 1).interval)
    assert win.interval_for(4) == timing.sliding_window(6, 5, 3, 1, 4).interval
    arg = Argmax(n=10, width=8)
    assert (arg.latency, arg.interval) == (21, 22)
    tree = Argmax(n=10, width=8, tree=True)
    want = tuple(vars(timing.argmax(10, tree=True)).values())
    assert (tree.latency, tree.interval) == (4, 5) == want
    assert timing.argmax_needs_tree(10, 22) and not timing.argmax_needs_tree(10, 23)
    thr = MultiThreshold(thresholds=np.zeros((4, 1), dtype=np.int64), signs=np.ones(4),
                         pe=2, in_shape=8)
    assert (thr.latency, thr.interval) == (1, 1)
    upd = UpdateUnit(n_lanes=2, in_bits=2, rule=lr.LearnRule())
    assert upd.latency == timing.update_unit().latency == 4
    assert UpdateUnit(n_lanes=2, in_bits=2, rule=lr.LearnRule(), pipelined=False).latency == 0


def _cnn(seed=3, **kw):
    args = dict(height=6, width=6, channels=[2, 4, 4], input_bits=2, pool=(0,), dense=(8,),
                n_outputs=4)
    args.update(kw)
    return random_net.random_cnn(np.random.default_rng(seed), **args)


@pytest.mark.parametrize("net", [
    random_net.random_network(np.random.default_rng(5), features=[16, 32, 8, 4],
                              input_bits=2, hidden_bits=2, weight_kind="ternary"),
    _cnn(),
    _cnn(seed=4, kernels=4, sign=True, pool=()),
], ids=["dense", "cnn", "cnn-kernel-codebook"])
def test_network_stages_are_the_model(net):
    """Every stage Network builds has the latency and interval Network computes without
    building it; the network's interval and latency come from them."""
    for folding in (None, auto_folding(net, max_lanes=4)):
        hw = Network(net, folding)
        stages = hw.stages()
        model = hw._stage_timings()
        assert [name for name, _ in stages] == [name for name, _, _ in model]
        for (_, unit), (name, t, _) in zip(stages, model):
            assert (unit.latency, unit.interval) == (t.latency, t.interval), name
            Fragment.get(unit, None)        # (elaborated: built stages are used)
        assert hw.interval == max(hw.stage_intervals)
        if hw.is_cnn:
            assert hw.latency is None and hw.layer_latencies is None
        else:
            assert hw.latency == sum(unit.latency for _, unit in stages)
            assert hw.layer_latencies == [unit.latency for _, unit in stages[:-1]]


@pytest.mark.parametrize("k, p, fold", [(3, 1, (2, 9)), (3, 0, (1, 18)), (1, 0, (4, 2))])
def test_conv_unit_latency_measured(k, p, fold):
    """A conv unit's first output comes ``latency`` cycles after its first input is offered,
    and its interval is the model's (eager source and sink)."""
    rng = np.random.default_rng(k + p)
    layer = random_net.random_conv(rng, in_channels=2, out_channels=4, height=5, width=5,
                                   in_bits=2, out_bits=2, kernel_size=k, padding=p)
    dut = ConvUnit(layer, LayerFolding(*fold))
    t = timing.conv_unit(5, 5, k, p, layer.in_features, 4, *fold, dut.mvu.dot_latency)
    assert (dut.latency, dut.interval) == (t.latency, t.interval)
    n_img = 2
    pixels = rng.integers(0, 4, size=(n_img * 25, 2))
    _, _, t_out = run_stream(dut, pixels, n_img * layer.positions, seed=0)
    assert t_out[0] == dut.latency      # counted from the first cycle a pixel is offered
    # The second image's first output one interval after the first's, at most.
    assert t_out[layer.positions] - t_out[0] <= dut.interval


def test_learner_timing_is_the_model():
    rule = lr.LearnRule()
    st = lr.init_state(np.random.default_rng(1), 4, 7, rule)
    dut = OnlineLearner(7, 4, 2, rule, st.weights, lanes=2)
    lt = timing.online_learner(7 * 2, 4, item_stages=2, product_stages=1, error_stages=2,
                               update_latency=4)
    assert (dut.latency, dut.interval, dut.inference_interval) == (
        lt.latency, lt.interval, lt.inference_interval)
    net = random_net.random_network(np.random.default_rng(2), features=[16, 8, 4],
                                    input_bits=2, hidden_bits=2)
    st = lr.init_state(np.random.default_rng(1), 4, 8, rule)
    ln = LearningNetwork(net, rule, st.weights)
    assert ln.interval == max(ln.learner.interval, max(ln.frozen.stage_intervals[:-2]))
