"""Test-suite policy shared by every folder.

Icarus Verilog is optional for users (DESIGN.md: "Icarus where installed"): tests marked
``icarus`` need it. Where ``iverilog`` is missing they are *deselected* — counted and named in the
summary with how to install it, never silently passed — unless ``QNNFAB_REQUIRE_ICARUS=1`` is
set (CI sets it after installing Icarus), in which case they run and fail loudly.

Hypothesis runs derandomized (the same examples on every run, so CI is repeatable) and keeps no
example database; ``HYPOTHESIS_PROFILE=random`` draws new examples each run. ``make fuzz``
(``python -m qnnfab.sim.fuzz``) is the place for long random runs.
"""

import os
import shutil

import pytest
from hypothesis import settings

settings.register_profile("qnnfab", derandomize=True, database=None)
settings.register_profile("random", database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "qnnfab"))

_deselected = []


def pytest_collection_modifyitems(config, items):
    if shutil.which("iverilog") or os.environ.get("QNNFAB_REQUIRE_ICARUS") == "1":
        return
    keep = []
    for item in items:
        (_deselected if item.get_closest_marker("icarus") else keep).append(item)
    if _deselected:
        config.hook.pytest_deselected(items=list(_deselected))
        items[:] = keep


def pytest_terminal_summary(terminalreporter):
    if _deselected:
        terminalreporter.write_line(
            f"{len(_deselected)} Icarus tests deselected: iverilog is not installed "
            f"(apt-get install iverilog, then run again; CI sets QNNFAB_REQUIRE_ICARUS=1)",
            yellow=True)


@pytest.fixture(scope="session")
def shared_build_dir(tmp_path_factory):
    """``shared_build_dir(name)``: a build-cache folder for this test run, the same one for
    every pytest-xdist worker (simulator builds and netlists are locked per design, so each is
    made once), a fresh one per run."""
    def folder(name):
        if os.environ.get("PYTEST_XDIST_WORKER"):
            root = tmp_path_factory.getbasetemp().parent / f"qnnfab-{name}"
            root.mkdir(exist_ok=True)
            return root
        return tmp_path_factory.mktemp(name)
    return folder
