"""Import a script of ``benchmarks/`` as a module, for the tests of its helpers (the scripts
import each other by bare name, so the folder goes on ``sys.path`` for the import only)."""

import importlib
import os
import sys

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "benchmarks")


def load(name):
    """``benchmarks/<name>.py`` as a module."""
    sys.path.insert(0, BENCHMARKS)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)
