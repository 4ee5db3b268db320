"""The input vector in block RAM on the boards: ``--input-buffer auto`` keeps every network
whose input register fitted as it was, and puts a 28×28 8-bit image in block RAM on the
iCEBreaker, where its 6,272 flip-flops alone are more than the UP5K's cells; with its first
layer's weights in SPRAM the Fashion-MNIST-sized MLP then fits; the refusals name the reason."""

import numpy as np
import pytest

from qnnfab import random_net
from qnnfab.boards.build import FitError, check_fit, plan_build
from qnnfab.boards.registry import BOARDS, board_weights, bram_blocks_for, input_buffer_for


def _mlp(features=(784, 256, 256, 10), input_bits=8):
    return random_net.random_network(np.random.default_rng(0), features=list(features),
                                     input_bits=input_bits)


@pytest.mark.parametrize("board", list(BOARDS))
def test_auto_keeps_small_inputs_in_flip_flops(board):
    assert not input_buffer_for(random_net.random_network(
        np.random.default_rng(0), features=[64, 256, 256, 10], input_bits=5), board)


def test_auto_by_board():
    net = _mlp()
    # 6,272 flip-flops: more than half of the UP5K (5,280), not of the ECP5s.
    assert input_buffer_for(net, "icebreaker")
    assert not input_buffer_for(net, "ulx3s-25f") and not input_buffer_for(net, "ulx3s-85f")
    assert input_buffer_for(net, "ulx3s-85f", "ebr", [(128, 16), (4, 256), (1, 32)])
    assert not input_buffer_for(net, "icebreaker", "ff")
    # A first layer that reads its whole input at once cannot: auto keeps flip-flops.
    assert not input_buffer_for(net, "icebreaker", "auto", [(1, 784), (1, 1), (1, 1)])
    with pytest.raises(ValueError, match=r"--input-buffer ebr: layers\[0\] at folding 1:784 "
                                         r"reads all 784 inputs at once"):
        input_buffer_for(net, "icebreaker", "ebr", [(1, 784), (1, 1), (1, 1)])
    with pytest.raises(ValueError, match=r"input_buffer must be one of ff, ebr, auto, not 'x'"):
        input_buffer_for(net, "icebreaker", "x")


def test_fashion_mnist_mlp_fits_the_icebreaker_with_the_buffer():
    net = _mlp()
    folding, stores, _ = board_weights(net, "icebreaker", "auto")
    assert stores == ["spram", "ebr", "ebr"]
    with pytest.raises(FitError, match=r"an estimated [\d,]+ logic cells > 5,280 available"):
        check_fit(net, "icebreaker", folding, weights_in=stores)
    est = check_fit(net, "icebreaker", folding, weights_in=stores, input_buffer=True)
    assert est["buffer_bits"] == 2 * 784 * 8 and est["lc"] < 0.95 * 5280
    # Two banks of 784 codes (12,544 bits), read 16 codes (128 bits) a cycle: eight 16-bit
    # EBR side by side, beside layer 1 and 2's weights.
    assert folding[0].simd == 16
    blocks = bram_blocks_for(net, folding, "icebreaker", weights_in=stores)
    assert blocks - bram_blocks_for(net, folding, "icebreaker", weights_in=stores,
                                    input_buffer=False) == 8
    assert blocks <= 30


def test_plan_build_takes_it_and_refuses_the_selftest(tmp_path):
    net = _mlp((784, 32, 10))
    plan = plan_build(net, "icebreaker", tmp_path / "b")
    assert plan.input_buffer and plan.top.input_buffer and plan.top.core.input_buffer
    with pytest.raises(FitError, match=r"an estimated [\d,]+ logic cells > 5,280"):
        plan_build(net, "icebreaker", tmp_path / "c", input_buffer="ff")
    with pytest.raises(ValueError, match=r"--selftest: the self-test's stored vectors feed a "
                                         r"network whose input is in flip-flops"):
        plan_build(net, "icebreaker", tmp_path / "d", selftest=4)
