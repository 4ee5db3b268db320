"""The registry of weight kinds (``qnnfab.kinds``) and everything that must follow it: a kind
added to the registry without a dot unit, a lane cost, a training quantizer or fuzz coverage
fails here, naming the kind."""

import dataclasses

import numpy as np
import pytest
import torch
from amaranth.hdl import Fragment
from hypothesis import HealthCheck, find, settings

from qnnfab import ir, kinds, numerics, random_net
from qnnfab.kinds import WEIGHT_KINDS, WeightKind, weight_kind
from qnnfab.model.layers import WEIGHT_MODES, QuantLinear
from qnnfab.model.quantizers import WEIGHT_QUANTIZERS, weight_codes, weight_quantizer
from qnnfab.rtl import kinds as rtl_kinds
from qnnfab.rtl.codebook_dot import codebook_lane_cells
from qnnfab.rtl.dot_unit import CONV_LANE_FACTOR, DotUnit
from qnnfab.sim import fuzz

KINDS = list(WEIGHT_KINDS)
PROTOCOL = ("pipeline_latency", "sum_shape", "scale_for", "offsets", "lane_cells")


def _layers(kind, in_bits, seed=0):
    """A dense layer and a conv layer of ``kind`` (random weights, valid)."""
    rng = np.random.default_rng(seed)
    dense = random_net.random_dense(rng, in_features=8, out_features=4, in_bits=in_bits,
                                    weight_kind=kind)
    conv = random_net.random_conv(rng, in_channels=2, out_channels=3, height=4, width=4,
                                  in_bits=in_bits, weight_kind=kind)
    return dense, conv


# -- the registry itself -------------------------------------------------------------------------

def test_registry_entries():
    assert KINDS == ["binary", "ternary", "codebook"]
    for name, kind in WEIGHT_KINDS.items():
        assert isinstance(kind, WeightKind) and kind.name == name and kind.doc
    assert weight_kind("binary").levels == (-1, 1) and weight_kind("binary").code_bits() == 1
    assert weight_kind("ternary").levels == (0, 1, -1)
    assert weight_kind("ternary").code_bits() == 2 and weight_kind("ternary").code_range() == (0, 2)
    cb = weight_kind("codebook")
    assert cb.table and cb.levels is None
    assert cb.levels_of(np.array([-3, 1, 0, 7])) == (-3, 1, 0, 7)
    assert cb.code_bits([0] * 16) == 4 and cb.code_range([0] * 8) == (0, 7)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cb.name = "other"


def test_unknown_kind_lists_known():
    with pytest.raises(ValueError, match=r"unknown weight kind 'quinary' \(known: binary, "
                                         r"ternary, codebook\)"):
        weight_kind("quinary")


def test_levels_or_table_not_both():
    with pytest.raises(ValueError, match="binary weights have fixed levels"):
        weight_kind("binary").levels_of([1, 2])
    with pytest.raises(ValueError, match="codebook weights need the layer's table"):
        weight_kind("codebook").code_bits()


@pytest.mark.parametrize("n,bits", [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (256, 8)])
def test_code_bits_rule(n, bits):
    assert kinds.code_bits(n) == bits


def test_core_derives_from_the_registry():
    assert numerics.WEIGHT_LEVELS == {n: k.levels for n, k in WEIGHT_KINDS.items() if not k.table}
    assert ir.WEIGHT_KINDS == tuple(WEIGHT_KINDS)
    assert ir.WEIGHT_CODE_RANGE == {n: k.code_range() for n, k in WEIGHT_KINDS.items()
                                    if not k.table}
    with pytest.raises(ValueError, match="codebook weights have per-layer levels"):
        numerics.weight_levels("codebook")


# -- every kind has a dot unit and a lane cost ------------------------------------------------

def test_every_kind_has_a_dot_unit():
    assert list(rtl_kinds.DOT_UNITS) == KINDS, "rtl.kinds.DOT_UNITS must follow the registry"


@pytest.mark.parametrize("in_bits", [1, 3])
@pytest.mark.parametrize("kind", KINDS)
def test_dot_unit_implements_the_protocol(kind, in_bits):
    dense, conv = _layers(kind, in_bits)
    cls = rtl_kinds.dot_unit_class(dense)
    assert issubclass(cls, DotUnit) and issubclass(rtl_kinds.dot_unit_class(conv), DotUnit)
    for name in PROTOCOL:
        defined_by = next(k for k in cls.__mro__ if name in vars(k))
        assert defined_by is not DotUnit, f"{cls.__name__} lacks the protocol's {name}"
    assert cls.pipeline_latency(4, True, in_bits) >= 1
    assert cls.pipeline_latency(4, False, in_bits) == 0
    assert cls.scale_for(in_bits) >= 1
    assert cls.sum_shape(8, in_bits).width >= 1
    assert cls.offsets(dense).shape == (dense.out_features,)
    assert cls.lane_cells(dense) > 0 and cls.lane_cells(conv) > 0
    unit = cls(pe=2, simd=4, in_bits=in_bits)
    assert unit.latency == cls.pipeline_latency(4, True, in_bits)
    assert unit.scale == cls.scale_for(in_bits)
    Fragment.get(unit, None)


@pytest.mark.parametrize("in_bits", [1, 2, 5])
@pytest.mark.parametrize("kind", KINDS)
def test_lane_cells_are_the_estimate_numbers(kind, in_bits):
    """The numbers the fit estimate used before the registry: ``in_bits`` per binary or
    ternary lane (``4.5·in_bits`` in a conv layer), the measured model for codebooks."""
    dense, conv = _layers(kind, in_bits)
    if kind == "codebook":
        expected = {id(layer): codebook_lane_cells(layer.weight_levels, in_bits)
                    for layer in (dense, conv)}
    else:
        expected = {id(dense): in_bits, id(conv): 4.5 * in_bits}
    assert CONV_LANE_FACTOR == 4.5
    for layer in (dense, conv):
        assert rtl_kinds.lane_cells(layer) == expected[id(layer)], layer.kind


def test_dot_unit_class_names_known_kinds():
    dense, _ = _layers("binary", 1)
    dense.weight_kind = "quinary"
    with pytest.raises(ValueError, match=r"no dot-product unit for weight kind 'quinary' "
                                         r"\(known: binary, ternary, codebook\)"):
        rtl_kinds.dot_unit_class(dense)


def test_base_class_protocol_names_the_subclass():
    class Half(DotUnit):
        @staticmethod
        def pipeline_latency(simd, pipelined, in_bits):
            return 0

    assert Half.pipeline_latency(4, True, 1) == 0
    for name, args in [("sum_shape", (4, 1)), ("scale_for", (1,)), ("offsets", (None,)),
                       ("lane_cells", (None,))]:
        with pytest.raises(NotImplementedError, match=rf"Half does not implement the dot-unit "
                                                      rf"protocol's {name}\(\)"):
            getattr(Half, name)(*args)


# -- every kind has a training quantizer --------------------------------------------------------

def test_every_kind_has_a_quantizer():
    assert list(WEIGHT_QUANTIZERS) == KINDS, "model.quantizers.WEIGHT_QUANTIZERS must follow " \
                                             "the registry"
    with pytest.raises(ValueError, match=r"no weight quantizer for kind 'quinary' \(known: "):
        weight_quantizer("quinary")


@pytest.mark.parametrize("kind", KINDS)
def test_quantizer_gives_the_kinds_levels(kind):
    torch.manual_seed(0)
    q = weight_quantizer(kind)
    if q.trainable:
        # Trainable: a layer of the kind, whose values are the kind's levels and export to codes.
        assert kind in WEIGHT_MODES
        lin = QuantLinear(6, 5, kind)
        assert lin.kind == kind
        values = lin.weight_values()
        levels = weight_kind(kind).levels
        assert set(values.detach().unique().tolist()) <= set(levels)
        codes = weight_codes(values, kind)
        assert np.array_equal(np.asarray(levels)[codes], values.detach().numpy())
    else:
        # A table kind: levels set after training (post-training quantization).
        assert weight_kind(kind).table and kind not in WEIGHT_MODES
        lin = QuantLinear(3, 2, "float")
        idx = np.array([[0, 1, 2], [3, 2, 1]])
        lin.set_codebook(idx, np.array([-4, -1, 1, 4]), 0.5)
        assert lin.kind == kind
        assert lin.weight_values().tolist() == [[-4, -1, 1], [4, 1, -1]]


# -- every kind is fuzzed ------------------------------------------------------------------------

@pytest.mark.parametrize("spatial", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_fuzz_draws_every_kind(kind, spatial):
    where = ir.ConvLayer if spatial else ir.DenseLayer
    found, _ = find(fuzz.networks(spatial=spatial),
                    lambda drawn: any(type(layer) is where and layer.weight_kind == kind
                                      for layer in drawn[0].layers),
                    settings=settings(database=None, max_examples=500,
                                      suppress_health_check=list(HealthCheck)))
    assert any(layer.weight_kind == kind for layer in found.layers)
