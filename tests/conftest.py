"""Test-suite policy shared by every folder.

Icarus Verilog is optional for users (DESIGN.md: "Icarus where installed"): tests marked
``icarus`` need it. Where ``iverilog`` is missing they are *deselected* — counted and named in the
summary with how to install it, never silently passed — unless ``QNNFAB_REQUIRE_ICARUS=1`` is
set (CI sets it after installing Icarus), in which case they run and fail loudly.

Tests marked ``fashion_mnist`` need Fashion-MNIST's files in
``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``); the same
policy, with ``QNNFAB_REQUIRE_FASHION_MNIST=1``.

Hypothesis runs derandomized (the same examples on every run, so CI is repeatable) and keeps no
example database; ``HYPOTHESIS_PROFILE=random`` draws new examples each run. ``make fuzz``
(``python -m qnnfab.sim.fuzz``) is the place for long random runs.
"""

import os
import shutil
import sys

import pytest
from hypothesis import settings

settings.register_profile("qnnfab", derandomize=True, database=None)
settings.register_profile("random", database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "qnnfab"))

_deselected = []
_deselected_fashion = []


def _fashion_mnist_installed():
    from qnnfab.model.data import fashion_mnist_folder
    try:
        fashion_mnist_folder()
    except ValueError:
        return False
    return True


def _deselect(config, items, marker, into):
    keep = []
    for item in items:
        (into if item.get_closest_marker(marker) else keep).append(item)
    if into:
        config.hook.pytest_deselected(items=list(into))
        items[:] = keep


def pytest_collection_modifyitems(config, items):
    if not (shutil.which("iverilog") or os.environ.get("QNNFAB_REQUIRE_ICARUS") == "1"):
        _deselect(config, items, "icarus", _deselected)
    if not (os.environ.get("QNNFAB_REQUIRE_FASHION_MNIST") == "1"
            or not any(item.get_closest_marker("fashion_mnist") for item in items)
            or _fashion_mnist_installed()):
        _deselect(config, items, "fashion_mnist", _deselected_fashion)


def pytest_terminal_summary(terminalreporter):
    if _deselected:
        terminalreporter.write_line(
            f"{len(_deselected)} Icarus tests deselected: iverilog is not installed "
            f"(apt-get install iverilog, then run again; CI sets QNNFAB_REQUIRE_ICARUS=1)",
            yellow=True)
    if _deselected_fashion:
        from qnnfab.model.data import FASHION_MNIST_DIR
        terminalreporter.write_line(
            f"{len(_deselected_fashion)} Fashion-MNIST tests deselected: its files are not in "
            f"{FASHION_MNIST_DIR} (apt-get install dataset-fashion-mnist, then run again; CI "
            f"sets QNNFAB_REQUIRE_FASHION_MNIST=1)", yellow=True)


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


@pytest.fixture
def replace_public(monkeypatch):
    """``replace_public(module, name, fake)``: stand ``fake`` in for the public function
    ``module.name`` (it must be listed in ``module.__all__``) for this test, wherever the
    package looks it up: in ``module`` itself and in every loaded ``qnnfab`` module that bound
    the same function with ``from module import name`` at import time. So a test depends on
    the public API only, not on whether the code under test imports at the top of its module
    or inside a function."""
    def replace(module, name, fake):
        assert name in getattr(module, "__all__", ()), \
            f"{module.__name__}.{name} is not public (not in __all__); test through public seams"
        original = getattr(module, name)
        monkeypatch.setattr(module, name, fake)
        for other in list(sys.modules.values()):
            if other is not module and getattr(other, "__name__", "").startswith("qnnfab") \
                    and getattr(other, name, None) is original:
                monkeypatch.setattr(other, name, fake)
    return replace


@pytest.fixture
def small_qnn(tmp_path):
    """A small random network (12x5b -> 8 -> 4, binary) saved as ``tmp_path/small.qnn``: the
    path, for CLI tests (a test module may define its own ``small_qnn`` for another shape)."""
    import numpy as np

    from qnnfab import ir, random_net
    net = random_net.random_network(np.random.default_rng(3), features=[12, 8, 4], input_bits=5)
    path = tmp_path / "small.qnn"
    ir.save(net, path)
    return path
