"""to_verilog: port names and module name."""

import re

import numpy as np
import pytest

from qnnfab import random_net
from qnnfab.rtl.verilog import to_verilog


def test_ports_and_name():
    net = random_net.random_network(np.random.default_rng(2), features=[8, 4, 3], input_bits=2)
    text = to_verilog(net, [(2, 4), (3, 2)], name="top_x")
    header = re.search(r"module top_x\(([^)]*)\);", text)
    assert header, text[:500]
    ports = {p.strip() for p in header.group(1).split(",")}
    assert ports == {"clk", "rst", "i__payload", "i__valid", "i__ready", "o__payload",
                     "o__valid", "o__ready"}
    assert re.search(r"input \[15:0\] i__payload;", text)
    # cls: 2 bits, scores: 3 × signed(acc_width of 4 inputs × ±1 = 4 bits)
    assert re.search(r"output \[13:0\] o__payload;", text)


def test_bad_name():
    net = random_net.random_network(np.random.default_rng(2), features=[8, 4, 3])
    with pytest.raises(ValueError, match="name must be a Verilog identifier, not 'a b'"):
        to_verilog(net, name="a b")
