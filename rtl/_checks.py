"""Helpers shared by the qnnfab.rtl components."""

import functools

__all__ = ["quiet_on_error"]


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
