"""The ``--arch`` language (:mod:`qnnfab.model.arch`): parsing, canonical text, shapes, and the
errors, each naming the bad token and what was expected."""

import pytest

from qnnfab.model.arch import (Arch, ArchError, Conv, parse_act_bits, parse_arch,
                               parse_input_shape, parse_weights)


@pytest.mark.parametrize("text,convs,hidden,outputs,canonical", [
    ("d256,d256,d10", (), (256, 256), 10, "d256,d256,d10"),
    ("d10", (), (), 10, "d10"),
    ("c16,p2,c32,p2,d10", (Conv(16, 3, 1, 2), Conv(32, 3, 1, 2)), (), 10, "c16,p2,c32,p2,d10"),
    ("c16,p2,c32,p2,d128,d10", (Conv(16, pool=2), Conv(32, pool=2)), (128,), 10,
     "c16,p2,c32,p2,d128,d10"),
    ("c32k5,p2,c64k3p0,d256,d10", (Conv(32, 5, 2, 2), Conv(64, 3, 0, 0)), (256,), 10,
     "c32k5,p2,c64p0,d256,d10"),
    ("c8k1,c8k7p3,p3,d4", (Conv(8, 1, 0), Conv(8, 7, 3, 3)), (), 4, "c8k1,c8k7,p3,d4"),
    (" C16 , P2 , D10 ", (Conv(16, pool=2),), (), 10, "c16,p2,d10"),
])
def test_parse(text, convs, hidden, outputs, canonical):
    arch = parse_arch(text)
    assert arch == Arch(convs=convs, hidden=hidden, outputs=outputs)
    assert str(arch) == canonical and parse_arch(canonical) == arch
    assert arch.n_weight_layers == len(convs) + len(hidden) + 1
    assert arch.n_hidden_layers == arch.n_weight_layers - 1


@pytest.mark.parametrize("text,message", [
    ("", "--arch: empty; expected comma-separated layers"),
    ("c16,x,d10", "--arch 'c16,x,d10': layer 2 of 3: 'x': expected cN[kK][pP] (convolution"),
    ("c16,,d10", "layer 2 of 3: empty token; expected cN[kK][pP]"),
    ("c16", "the last layer is 'c16'; it must be a dense layer dN, the output"),
    ("c16,p2", "the last layer is 'p2'; it must be a dense layer dN"),
    ("d1", "the output layer d1 needs at least 2 outputs"),
    ("p2,d10", "layer 1 of 2: 'p2': a max-pool must follow a convolution directly, not start"),
    ("c16,p2,p2,d10", "layer 3 of 4: 'p2': a max-pool must follow a convolution directly, "
                      "not 'p2'"),
    ("d64,p2,d10", "layer 2 of 3: 'p2': a max-pool must follow a convolution directly, "
                   "not 'd64'"),
    ("d64,c16,d10", "layer 2 of 3: 'c16': a convolution after the dense layer d64; "
                    "convolutions (and pools) come first"),
    ("c16k4,d10", "'c16k4': the kernel size K must be odd (1, 3, 5, 7), got 4"),
    ("c16k9,d10", "'c16k9': the kernel size K must be 1..7, got 9"),
    ("c16k3p2,d10", "'c16k3p2': the padding P must be 0..1, got 2"),
    ("c0,d10", "'c0': the channel count N must be >= 1, got 0"),
    ("c16,p1,d10", "'p1': the pool size S must be >= 2, got 1"),
    ("d0,d10", "'d0': the width N must be >= 1, got 0"),
    ("c16p,d10", "'c16p': expected cN[kK][pP]"),
    ("dense10", "'dense10': expected"),
])
def test_parse_errors(text, message):
    with pytest.raises(ArchError) as info:
        parse_arch(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_parse_rejects_non_strings():
    with pytest.raises(TypeError, match="--arch must be a string"):
        parse_arch(["d10"])


def test_shapes_and_describe():
    arch = parse_arch("c16,p2,c32k5p0,d64,d10")
    assert arch.shapes((12, 12, 1)) == [("c16", (12, 12, 16)), ("p2", (6, 6, 16)),
                                        ("c32k5p0", (2, 2, 32)), ("d64", (64,)), ("d10", (10,))]
    assert arch.describe((12, 12, 1)) == \
        "12x12x1 -> c16 12x12x16 -> p2 6x6x16 -> c32k5p0 2x2x32 -> d64 -> d10"
    assert parse_arch("d256,d10").describe(input_features=784) == "784 -> d256 -> d10"


@pytest.mark.parametrize("text,shape,message", [
    ("c16,p2,c32,p2,d10", (6, 6, 1), "p2 after c32: the 3x3x32 output of c32 is not divisible "
                                     "by the pool size 2"),
    ("c16k7p0,d10", (5, 5, 1), "c16k7p0: its 7x7 kernel (padding 0) does not fit the 5x5x1 "
                               "input it gets"),
])
def test_shape_errors_name_the_token(text, shape, message):
    with pytest.raises(ArchError, match="^--arch ") as info:
        parse_arch(text).shapes(shape)
    assert message in str(info.value)


def test_weights():
    arch = parse_arch("c16,p2,c32,p2,d128,d10")
    assert parse_weights("ternary", arch) == "ternary"
    assert parse_weights("ternary, binary,ternary,binary", arch) == \
        ("ternary", "binary", "ternary", "binary")
    assert parse_weights("float", arch) == "float"
    assert parse_weights("adaptive,binary") == ("adaptive", "binary")  # no arch: any count


@pytest.mark.parametrize("text,message", [
    ("ternary,binary", "--weights 'ternary,binary': 2 values; expected one for every layer or 4, "
                       "one per layer (c16, c32, d128, d10)"),
    ("tern", "--weights 'tern': 'tern': expected binary|ternary|adaptive|float"),
    ("binary,ternary,x,binary", "(value 3 of 4): 'x': expected binary|ternary|adaptive|float"),
    ("float,binary,binary,binary", "float is for every layer or none"),
])
def test_weights_errors(text, message):
    with pytest.raises(ArchError) as info:
        parse_weights(text, parse_arch("c16,p2,c32,p2,d128,d10"))
    assert message in str(info.value)


def test_act_bits():
    arch = parse_arch("c16,p2,d128,d10")
    assert parse_act_bits("2", arch) == 2 and parse_act_bits(3, arch) == 3
    assert parse_act_bits("1,2", arch) == (1, 2)


@pytest.mark.parametrize("text,message", [
    ("9", "--act-bits '9': '9': expected 1..8 bits, got 9"),
    ("0", "expected 1..8 bits, got 0"),
    ("two", "'two': expected an integer 1..8"),
    ("1,2,2", "3 values; expected one for every layer or 2, one per layer (c16, d128)"),
])
def test_act_bits_errors(text, message):
    with pytest.raises(ArchError) as info:
        parse_act_bits(text, parse_arch("c16,p2,d128,d10"))
    assert message in str(info.value)


def test_input_shape():
    assert parse_input_shape("28x28x1") == (28, 28, 1)
    assert parse_input_shape("8X8") == (8, 8, 1)
    assert parse_input_shape(" 32 x 32 x 3 ") == (32, 32, 3)
    for bad in ("28", "28x28x1x1", "axb", "0x28x1"):
        with pytest.raises(ArchError, match="--input-shape"):
            parse_input_shape(bad)
