"""Automatic folding to a speed target (``--target-ips`` / ``--target-cycles``): the cheapest
folding that meets it on the board, or a refusal with the best reachable figure."""

import numpy as np
import pytest

from qnnfab import cli, ir, random_net
from qnnfab.boards.registry import (TargetUnreachable, board_folding, get_board,
                                    network_interval, target_folding)
from qnnfab.rtl.estimate import estimate


@pytest.fixture(scope="module")
def net():
    return random_net.random_network(np.random.default_rng(0), features=[64, 256, 256, 10],
                                     input_bits=5)


def lc(net, folding):
    return estimate(net, [(f.pe, f.simd) for f in folding])["lc"]


@pytest.mark.parametrize("ips", [20_000, 60_000, 120_000])
def test_target_ips_is_met_by_the_cheapest_folding(net, ips):
    folding, source = target_folding(net, "icebreaker", target_ips=ips)
    clock = get_board("icebreaker").design_clock_mhz * 1e6
    cycles = network_interval(net, folding)
    assert clock / cycles >= ips, (cycles, ips)
    assert f"--target-ips {ips:,} at 36 MHz: {cycles} cycles per inference" in source
    # no faster (and dearer) than it needs to be: cheaper than the board's fastest
    fastest = board_folding(net, "icebreaker")
    assert lc(net, folding) <= lc(net, fastest)


def test_a_slow_target_saves_logic_where_lanes_are_dear():
    # codebook lanes decode and multiply (~35 cells each): a slower target needs fewer
    net = random_net.random_network(np.random.default_rng(0), features=[64, 128, 128, 10],
                                    input_bits=5, hidden_bits=2, weight_kind="codebook")
    fastest = board_folding(net, "icebreaker")
    folding, _ = target_folding(net, "icebreaker", target_ips=20_000)
    assert 36e6 / network_interval(net, folding) >= 20_000
    assert lc(net, folding) < lc(net, fastest)
    assert network_interval(net, folding) > network_interval(net, fastest)


def test_target_cycles_on_a_bigger_board(net):
    folding, _ = target_folding(net, "ulx3s-85f", target_cycles=40)
    assert network_interval(net, folding) <= 40


def test_an_unreachable_target_is_refused_with_the_best_figure(net):
    best = network_interval(net, board_folding(net, "icebreaker"))
    with pytest.raises(TargetUnreachable, match=rf"--target-ips 1,000,000 at 36 MHz: "
                                                rf"unreachable on icebreaker.*runs {best} "
                                                rf"cycles per inference"):
        target_folding(net, "icebreaker", target_ips=1_000_000)
    with pytest.raises(TargetUnreachable, match="less than one cycle"):
        target_folding(net, "icebreaker", target_ips=1e9)


def test_cli_target_options(net, tmp_path, capsys, replace_public):
    path = tmp_path / "n.qnn"
    ir.save(net, path)
    assert cli.main(["verilog", str(path), "--out", str(tmp_path / "v"), "--board",
                     "icebreaker", "--target-ips", "50000"]) == 0
    assert "(--target-ips 50,000 at 36 MHz:" in capsys.readouterr().out
    for argv, words in [
        (["--folding", "1:64,1:256,1:256", "--target-cycles", "9"], "give one of them"),
        (["--target-ips", "5"], "--target-ips needs --board"),
        (["--board", "icebreaker", "--target-ips", "9e6"], "unreachable"),
    ]:
        rc = cli.main(["verilog", str(path), "--out", str(tmp_path / "w"), *argv])
        err = capsys.readouterr().err
        assert rc == 2 and words in err, (argv, err)
    # build passes the target's folding, its source and --baud on to the build
    from qnnfab import flow
    seen = {}

    def fake_build(network, board, out_dir, *, folding=None, baud=None, folding_source=None,
                   **kw):
        seen.update(folding=folding, baud=baud, source=folding_source)
        return {"board": board, "resources": {}, "fmax_mhz": None, "timing_met": True}
    replace_public(flow, "build_board", fake_build)
    assert cli.main(["build", str(path), "--board", "icebreaker", "--out", str(tmp_path / "b"),
                     "--target-cycles", "700", "--baud", "1000000"]) == 0
    assert seen["baud"] == 1_000_000 and seen["source"].startswith("--target-cycles 700")
    assert network_interval(net, seen["folding"]) <= 700
