"""Helpers shared by the qnnfab.rtl components."""

import functools

__all__ = ["quiet_on_error", "mark_used"]


def mark_used(component):
    """Tell Amaranth that ``component`` is not to be reported as "created but never used"
    (``UnusedElaboratable``): for a component refused by its own ``__init__``, built only to
    read its interface or timing, or elaborated by its parent under another name.

    Amaranth 0.5 has no public per-object switch for this (only the warning category, which
    would silence real mistakes too), so this is the one place qnnfab sets its private flag;
    tests use the documented warnings filter instead (``pyproject.toml``)."""
    component._MustUse__silence = True
    return component


def quiet_on_error(init):
    """Decorate a component's ``__init__``: when it raises (a bad parameter), mark the
    half-built object as used, so Amaranth does not also warn ``UnusedElaboratable`` about it
    when it is garbage-collected."""
    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        try:
            init(self, *args, **kwargs)
        except BaseException:
            mark_used(self)
            raise
    return wrapper
