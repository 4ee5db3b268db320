"""Argument checks shared by the simulation entry points (one wording for each mistake)."""

__all__ = ["check_simulator", "check_progress", "check_probabilities"]


def check_simulator(simulator, allowed, purpose=""):
    """``simulator`` is one of ``allowed``; else ``ValueError`` naming them (``purpose``, e.g.
    ``" for a gate-level simulation"``, goes after the list)."""
    if simulator not in allowed:
        raise ValueError(f"simulator must be one of {', '.join(map(repr, allowed))}{purpose}, "
                         f"not {simulator!r}")
    return simulator


def check_progress(progress):
    """``progress`` is None or a callable(done, total); else ``TypeError``."""
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a callable(done, total) or None, not {progress!r}")
    return progress


def check_probabilities(**probabilities):
    """Each keyword's value is a probability in (0, 1]; else ``ValueError`` naming it."""
    for name, p in probabilities.items():
        if not 0.0 < float(p) <= 1.0:
            raise ValueError(f"{name} must be in (0, 1], not {p!r}")
