"""Helpers shared by the qnnfab.rtl components."""

import functools
import operator

__all__ = ["quiet_on_error", "dot_unit_shape"]


def dot_unit_shape(pe, simd, in_bits):
    """``(pe, simd, in_bits)`` of a dot-product unit as ints; ValueError unless ``pe`` and
    ``simd`` are >= 1 (each unit checks its own ``in_bits`` rule)."""
    pe, simd, in_bits = operator.index(pe), operator.index(simd), operator.index(in_bits)
    if pe < 1 or simd < 1:
        raise ValueError(f"pe and simd must be >= 1, not pe={pe} simd={simd}")
    return pe, simd, in_bits


def quiet_on_error(init):
    """Decorate a component's ``__init__``: when it raises (a bad parameter), mark the
    half-built object as used, so Amaranth does not also warn ``UnusedElaboratable`` about it
    when it is garbage-collected."""
    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        try:
            init(self, *args, **kwargs)
        except BaseException:
            self._MustUse__silence = True
            raise
    return wrapper
