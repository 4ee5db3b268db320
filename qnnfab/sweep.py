"""``qnnfab sweep SPEC.toml --out DIR``: a design-space sweep, each point a job on a local
process pool or a Dask cluster (:mod:`qnnfab.sweep_executor`).

The spec (TOML; ``docs/sweeps.md``, ``examples/sweep.toml``)::

    name = "digits: weights x activation bits"   # optional, the title of tables and plots
    stages = ["train", "quantize", "sim", "build"] # train first; any of the others

    [axes]                  # each a non-empty list: the points are their cartesian product
    preset = ["digits-bnn", "digits-tnn"]
    seed = [0, 1]

    [fixed]                 # single values, the same for every point
    board = "icebreaker"
    epochs = 20

A key (:data:`POINT_KEYS`) goes in ``[axes]`` or in ``[fixed]``, not both. A point is a dict
of those keys plus ``stages``; :func:`run_point` — one pure function, the same code on every
executor — trains it (:func:`qnnfab.model.train.train`), quantizes a float network
(:func:`qnnfab.model.ptq.quantize`), simulates it against the golden model
(:func:`qnnfab.flow.simulate_and_compare`) and builds it in a temporary folder of the worker
(:func:`qnnfab.flow.build_board`); the files the caller keeps (``network.qnn``,
``report.json``, the bitstream) come back as bytes inside the result.

:func:`run_sweep` keys each point by a hash of its inputs (:func:`point_key`: the point, the
contents of data files it names, qnnfab's version and the versions of the tools that run it),
skips the points ``DIR/results.jsonl`` already holds a finished result for, appends one line
per finished point (:class:`qnnfab.sweep_results.ResultLog`) and rewrites ``results.md``,
``results.csv`` and a Pareto plot per board (``pareto-BOARD.svg``). A failing point records its
error and the others go on; Ctrl-C stops the jobs and keeps every finished result.
"""

import dataclasses
import hashlib
import itertools
import json
import math
import os
import re
import threading
import time
import tomllib
from contextlib import closing, contextmanager

from . import __version__
from .sweep_results import ResultLog, latest, write_tables

__all__ = ["SpecError", "Spec", "STAGES", "POINT_KEYS", "load_spec", "parse_spec", "point_key",
           "point_label", "run_point", "run_sweep", "SweepSummary", "add_arguments", "run"]

#: The stages a spec may list, in the order they run.
STAGES = ("train", "quantize", "sim", "build")

#: Keys of a point used only by the quantize stage (dropped where it does not run).
QUANTIZE_KEYS = ("method", "bits", "level_bits", "population", "generations")


class SpecError(ValueError):
    """A bad sweep spec; the message names the file, the key and what is expected."""


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _int_range(lo, hi=None):
    want = f"an integer >= {lo}" if hi is None else f"an integer {lo}..{hi}"
    return want, (lambda v: _is_int(v) and v >= lo and (hi is None or v <= hi))


_FOLDING_RE = re.compile(r"\s*(-|\d+\s*:\s*\d+)(\s*,\s*(-|\d+\s*:\s*\d+))*\s*")


def _point_keys():
    """``{key: (what is expected, check)}`` of every key a point may have. The preset, board
    and method names come from their registries."""
    from qnnfab import ir
    from qnnfab.boards.registry import BOARDS
    from qnnfab.model.presets import PRESETS
    from qnnfab.model.ptq import METHODS

    def one_of(names):
        names = list(names)
        return f"one of {', '.join(repr(n) for n in names)}", (lambda v: v in names)

    def text(want):
        return want, (lambda v: isinstance(v, str) and v.strip() != "")
    return {
        "preset": one_of(PRESETS),
        "arch": text('an --arch text such as "d256,d256,d10" or "c16,p2,c32,p2,d10"'),
        "weights": text('binary|ternary|adaptive|float, or one per layer ("ternary,binary,'
                        'ternary")'),
        "act_bits": ("an integer 1..8 or one per hidden layer (\"2,2,1\")",
                     lambda v: (_is_int(v) and 1 <= v <= 8)
                     or (isinstance(v, str) and re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*", v))),
        "input_shape": text('an image shape "HxWxC" such as "28x28x1"'),
        "data": text("a data set: digits, mnist:DIR, fashion-mnist, npz:FILE[,bits=K] or "
                     "csv:FILE[,...] (see `qnnfab train --help`)"),
        "epochs": _int_range(1),
        "seed": _int_range(0),
        "method": one_of(METHODS),
        "bits": _int_range(1, ir.MAX_CODEBOOK_BITS),
        "level_bits": _int_range(2, ir.MAX_LEVEL_BITS),
        "population": _int_range(2),
        "generations": _int_range(1),
        "board": one_of(BOARDS),
        "folding": ('PE:SIMD per layer such as "8:16,2:64" ("-" for a max-pool layer)',
                    lambda v: isinstance(v, str) and _FOLDING_RE.fullmatch(v) is not None),
        "target_ips": ("a number of inferences/s > 0", lambda v: _is_number(v) and v > 0),
        "clock_mhz": ("a clock in MHz > 0", lambda v: _is_number(v) and v > 0),
        "vectors": _int_range(1),
        "simulator": one_of(("amaranth", "verilator", "icarus")),
        "pnr_seed": _int_range(0),
    }


#: The keys a point may have, in the order points show them (see ``docs/sweeps.md``).
POINT_KEYS = ("preset", "arch", "weights", "act_bits", "input_shape", "data", "epochs", "seed",
              "method", "bits", "level_bits", "population", "generations", "board", "folding",
              "target_ips", "clock_mhz", "vectors", "simulator", "pnr_seed")

_TOP_KEYS = ("name", "stages", "axes", "fixed")


def _toml_repr(value):
    return json.dumps(value) if isinstance(value, (str, list, dict)) else repr(value)


@dataclasses.dataclass
class Spec:
    """A checked sweep spec.

    Attributes
    ----------
    path : str, the file (for messages)
    name : str, the title of the tables and plots
    stages : tuple of str, in :data:`STAGES` order
    axes : dict, key → list of values (file order)
    fixed : dict, key → value
    points : list of dict, the cartesian product of the axes with the fixed values and
        ``stages``, without keys no stage uses, duplicates dropped (first kept)
    labels : list of str, one per point: its values on the axes of more than one value
    """
    path: str
    name: str
    stages: tuple
    axes: dict
    fixed: dict
    points: list
    labels: list

    @property
    def varying(self):
        """The axes with more than one value (what tells the points apart)."""
        return [k for k, v in self.axes.items() if len(v) > 1]


def load_spec(path):
    """Read and check the sweep spec in ``path`` (:func:`parse_spec`)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a folder; give the spec file (SPEC.toml)") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from None
    return parse_spec(data, path)


def parse_spec(data, path="<spec>"):
    """Check a spec (the dict ``tomllib`` read) and expand its points; :class:`SpecError`
    naming ``path``, the key and what is expected otherwise."""
    def fail(msg):
        raise SpecError(f"{path}: {msg}")
    if not isinstance(data, dict):
        fail("expected a TOML table")
    unknown = [k for k in data if k not in _TOP_KEYS]
    if unknown:
        fail(f"unknown key {unknown[0]!r} (known: {', '.join(_TOP_KEYS)}; the sweep's keys go "
             f"in [axes] or [fixed])")
    name = data.get("name", os.path.splitext(os.path.basename(path))[0])
    if not isinstance(name, str):
        fail(f"name: expected a text, got {_toml_repr(name)}")
    stages = data.get("stages")
    if stages is None:
        fail(f"stages: missing; expected a list of stages from {', '.join(STAGES)}, e.g. "
             f'stages = ["train", "sim"]')
    if not isinstance(stages, list) or not stages or \
            not all(isinstance(s, str) and s in STAGES for s in stages):
        fail(f"stages: expected a non-empty list of stages from {', '.join(STAGES)}, got "
             f"{_toml_repr(stages)}")
    if len(set(stages)) != len(stages):
        fail(f"stages: each stage once, got {_toml_repr(stages)}")
    if "train" not in stages:
        fail(f"stages: expected \"train\" (every point starts by training), got "
             f"{_toml_repr(stages)}")
    stages = tuple(s for s in STAGES if s in stages)

    keys = _point_keys()
    axes, fixed = {}, {}
    for table, store in (("axes", axes), ("fixed", fixed)):
        got = data.get(table, {})
        if not isinstance(got, dict):
            fail(f"{table}: expected a table ([{table}]), got {_toml_repr(got)}")
        for key, value in got.items():
            if key not in keys:
                fail(f"{table}.{key}: unknown key (known: {', '.join(POINT_KEYS)})")
            want, ok = keys[key]
            if table == "axes":
                if not isinstance(value, list) or not value:
                    fail(f"axes.{key}: expected a non-empty list of {want}, got "
                         f"{_toml_repr(value)} (a single value goes in [fixed])")
                for i, v in enumerate(value):
                    if not ok(v):
                        fail(f"axes.{key}[{i}]: expected {want}, got {_toml_repr(v)}")
                seen = set()
                for v in value:
                    if json.dumps(v) in seen:
                        fail(f"axes.{key}: {_toml_repr(v)} appears twice")
                    seen.add(json.dumps(v))
            elif not ok(value):
                fail(f"fixed.{key}: expected {want}, got {_toml_repr(value)}")
            store[key] = value
    both = [k for k in axes if k in fixed]
    if both:
        fail(f"{both[0]}: in both [axes] and [fixed]; give it in one of them")
    given = set(axes) | set(fixed)
    if "folding" in given and "target_ips" in given:
        fail("folding and target_ips: give one of them (a folding, or the speed it is "
             "chosen for)")
    if "target_ips" in given and "board" not in given:
        fail("target_ips needs a board (axes.board or fixed.board): the speed is reached "
             "at its clock and within its size")
    if "build" in stages and "board" not in given:
        fail('stages: "build" needs a board (axes.board or fixed.board)')
    if any(k in given for k in QUANTIZE_KEYS) and "quantize" not in stages:
        k = next(k for k in QUANTIZE_KEYS if k in given)
        fail(f'{"axes" if k in axes else "fixed"}.{k}: a quantize option, but stages has no '
             f'"quantize"')
    if "simulator" in given and "sim" not in stages:
        fail('simulator: stages has no "sim"')
    spec = Spec(path=path, name=name, stages=stages, axes=axes, fixed=fixed, points=[],
                labels=[])
    _expand(spec, fail)
    return spec


def _preset_of(point):
    """The :class:`~qnnfab.model.presets.Preset` a point trains (as ``qnnfab train`` would
    for its ``--preset``/``--arch``/``--weights``/``--act-bits``/``--input-shape``)."""
    from qnnfab.model.presets import customize
    return customize(point.get("preset"), arch=point.get("arch"), weights=point.get("weights"),
                     act_bits=point.get("act_bits"), input_shape=point.get("input_shape"))


def _is_float(preset):
    kinds = (preset.weights,) if isinstance(preset.weights, str) else tuple(preset.weights)
    return set(kinds) == {"float"}


def point_label(point, varying):
    """``preset=digits-bnn seed=1``: the point's values on the ``varying`` axes."""
    parts = [f"{k}={point[k]}" for k in varying if k in point]
    return " ".join(parts) or "point"


def _expand(spec, fail):
    names = list(spec.axes)
    presets = {}
    seen = set()
    for values in itertools.product(*(spec.axes[k] for k in names)):
        raw = {**dict(zip(names, values)), **spec.fixed}
        point = {k: raw[k] for k in POINT_KEYS if k in raw}
        label = point_label(point, spec.varying)
        where = f"point {label}" if spec.varying else "the point"
        model_keys = tuple(point.get(k) for k in ("preset", "arch", "weights", "act_bits",
                                                  "input_shape"))
        if model_keys not in presets:
            try:
                presets[model_keys] = _preset_of(point)
            except (ValueError, TypeError) as exc:
                fail(f"{where}: {exc}")
        is_float = _is_float(presets[model_keys])
        if is_float and ("sim" in spec.stages or "build" in spec.stages) \
                and "quantize" not in spec.stages:
            fail(f"stages: {where} trains float weights ({presets[model_keys].name}): "
                 f'add "quantize" before "sim"/"build"')
        if not is_float:   # integer weights: nothing to quantize, the options do not matter
            for k in QUANTIZE_KEYS:
                point.pop(k, None)
        point["stages"] = list(spec.stages)
        ident = json.dumps(point, sort_keys=True)
        if ident in seen:
            continue
        seen.add(ident)
        spec.points.append(point)
        spec.labels.append(point_label(point, spec.varying))


# -- keys ------------------------------------------------------------------------------------

def _package_version(name):
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


_digests = {}


def _data_digest(data):
    """sha256 of the file (or folder of files) a data spec names (``npz:FILE``,
    ``csv:FILE``, ``mnist:DIR``); None for a named data set or a missing file."""
    if not data or ":" not in data:
        return None
    kind, _, rest = data.partition(":")
    path = rest.split(",")[0] if kind in ("npz", "csv") else rest
    if path in _digests:
        return _digests[path]
    h = hashlib.sha256()
    if os.path.isfile(path):
        files = [path]
    elif os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path)
                       if os.path.isfile(os.path.join(path, f)))
    else:
        return None
    for name in files:
        h.update(os.path.basename(name).encode() + b"\0")
        with open(name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    _digests[path] = h.hexdigest()
    return _digests[path]


def _versions(point):
    """The versions a point's result depends on: qnnfab's, torch's, numpy's, Amaranth's, and
    the simulator's and the build tools' where those stages run."""
    out = {"qnnfab": __version__}
    for package in ("torch", "numpy", "amaranth"):
        out[package] = _package_version(package)
    if "sim" in point["stages"] and point.get("simulator") == "verilator":
        out["verilator"] = _package_version("verilator")
    if "build" in point["stages"]:
        from qnnfab.boards.families import get_family
        from qnnfab.boards.registry import get_board
        family = get_family(get_board(point["board"]).family)
        for package in ("amaranth-boards", *dict.fromkeys(t.package for t in family.tools)):
            out[package] = _package_version(package)
    return out


def point_key(point):
    """The key of a point: sha256 (16 hex digits) of the point, its data file's contents and
    the versions it runs with (:func:`_versions`). The same key: the same result."""
    ident = {"point": point, "data_sha256": _data_digest(point.get("data")),
             "versions": _versions(point)}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


# -- the job ---------------------------------------------------------------------------------

#: One job at a time per process: training seeds torch's global generator, so two jobs in
#: threads of one Dask worker would disturb each other (start workers with --nthreads 1).
_JOB_LOCK = threading.Lock()


def _plain(value):
    """``value`` as JSON data (numpy numbers, tuples)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, str, bytes)) or value is None:
        return value
    if hasattr(value, "__index__"):
        return int(value)
    if isinstance(value, float) or hasattr(value, "__float__"):
        value = float(value)
        return value if math.isfinite(value) else None
    return repr(value)


def _parse_folding(text):
    out = []
    for part in text.split(","):
        part = part.strip()
        out.append(None if part == "-" else tuple(int(v) for v in part.split(":")))
    return out


def run_point(point):
    """Run one design point (a dict: :data:`POINT_KEYS` and ``stages``); the job function of
    every executor. Never raises for a failing point: the result says ``status: "error"``, the
    ``error`` (stage, type, message) and keeps what the earlier stages measured.

    Returns a dict: ``status``, ``error``, ``traceback``, ``point``, ``preset`` (its name),
    ``accuracy`` (``float``, ``integer``, ``hardware``), ``network`` (``summary``,
    ``weight_bits``, ``weights``, ``macs``), ``quantize``, ``folding`` (``PE:SIMD,...``),
    ``folding_source``, ``cycles_per_inference``, ``estimate`` (``lut``, ``bram``,
    ``inferences_per_s`` at the design clock), ``vectors`` (``checked``, ``bit_exact``,
    ``simulator``), ``build`` (``lut``, ``lut_total``, ``ff``, ``bram``, ``bram_total``,
    ``dsp``, ``fmax_mhz``, ``clock_mhz``, ``timing_met``, ``cycles_per_inference``,
    ``inferences_per_s``), ``seconds`` per stage and ``total``, ``worker`` (host:pid) and
    ``files`` (name → bytes: ``network.qnn``; ``report.json`` and the bitstream after a
    build).
    """
    with _JOB_LOCK:
        return _run_point(dict(point))


def _run_point(point):
    import socket
    import traceback
    started = time.monotonic()
    stages = point.get("stages", ["train"])
    result = {"status": "ok", "error": None, "point": point, "seconds": {}, "files": {},
              "worker": f"{socket.gethostname()}:{os.getpid()}"}
    at = {"stage": "train"}   # what the point was doing, for its error

    @contextmanager
    def timed(name):
        """Step ``name``: its errors are named after it; timed into ``seconds`` if it is a
        stage."""
        at["stage"] = name
        start = time.monotonic()
        try:
            yield
        finally:
            if name in STAGES:
                result["seconds"][name] = round(time.monotonic() - start, 3)
    try:
        _stages(point, stages, result, timed)
    except Exception as exc:  # noqa: BLE001 -- a failing point records its error
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        result["status"] = "error"
        result["error"] = f"{at['stage']}: {type(exc).__name__}" + (f": {text}" if text else "")
        result["traceback"] = traceback.format_exc()[-4000:]
    result["seconds"]["total"] = round(time.monotonic() - started, 3)
    files = result.pop("files")
    out = _plain(result)
    out["files"] = files
    return out


def _stages(point, stages, result, timed):
    import numpy as np

    from qnnfab import ir
    from qnnfab.flow import build_board, folding_text, simulate_and_compare, test_accuracy
    from qnnfab.model.train import train

    with timed("train"):
        preset = _preset_of(point)
        result["preset"] = preset.name
        trained = train(preset, seed=point.get("seed", 0), epochs=point.get("epochs"),
                        data=point.get("data"), progress=False)
        network = trained.network
        result["accuracy"] = {"float": trained.float_accuracy,
                              "integer": trained.integer_accuracy}
    if network.is_float and "quantize" in stages:
        from qnnfab.model.ptq import quantize
        with timed("quantize"):
            method, bits = point.get("method", "ga"), point.get("bits", 3)
            q = quantize(network, method, bits, seed=point.get("seed", 0),
                         level_bits=point.get("level_bits", 8),
                         population=point.get("population", 24),
                         generations=point.get("generations", 30), progress=False)
            network = q.network
            result["accuracy"]["integer"] = test_accuracy(network)
            result["quantize"] = {"method": method, "bits": bits,
                                  "val_accuracy": q.val_accuracy}
    result["network"] = {"summary": network.summary(), "weight_bits": network.weight_bits,
                         "weights": network.n_weights, "macs": network.macs}
    result["files"]["network.qnn"] = ir.to_bytes(network)
    if network.is_float:
        return
    board = point.get("board")
    with timed("folding"):
        folding, source = _folding(network, point)
        result["folding"], result["folding_source"] = folding_text(folding), source
        if board is not None:
            from qnnfab.boards.build import estimate
            from qnnfab.boards.registry import bram_blocks_for, get_board, network_interval
            b = get_board(board)
            cycles = network_interval(network, folding)
            clock = point.get("clock_mhz", b.design_clock_mhz)
            result["cycles_per_inference"] = cycles
            result["estimate"] = {"lut": estimate(network, folding, family=b.family)["lc"],
                                  "bram": bram_blocks_for(network, folding, b),
                                  "inferences_per_s": clock * 1e6 / cycles}
    vecs = comparison = None
    if "sim" in stages:
        from qnnfab.model.vectors import test_vectors
        with timed("sim"):
            vecs = test_vectors(network, point.get("vectors"))
            comparison = simulate_and_compare(network, simulator=point.get("simulator",
                                                                           "amaranth"),
                                              codes=vecs.codes, folding=folding,
                                              progress=False)
            result["vectors"] = {"checked": comparison.checked,
                                 "bit_exact": comparison.bit_exact,
                                 "simulator": comparison.simulator or point.get("simulator",
                                                                                "amaranth")}
            if vecs.labels is not None:
                result["accuracy"]["hardware"] = float(
                    np.mean(np.asarray(comparison.result.classes) == vecs.labels))
            if comparison.mismatches:
                result["mismatches"] = [str(m) for m in comparison.mismatches[:10]]
    if "build" in stages:
        import tempfile
        with timed("build"), tempfile.TemporaryDirectory(prefix="qnnfab-sweep-") as tmp:
            extra = {"accuracy": dict(result["accuracy"]),
                     "network": {"file": "network.qnn", "summary": network.summary(),
                                 "weight_bits": network.weight_bits,
                                 "preset": result.get("preset")}}
            if comparison is not None:
                extra["vectors"] = dict(result["vectors"])
            report = build_board(network, board, tmp, folding=folding,
                                 clock_mhz=point.get("clock_mhz"),
                                 seed=point.get("pnr_seed", 0), progress=False, extra=extra,
                                 folding_source=None if source.startswith(("given", "board"))
                                 else source)
            res = report.get("resources") or {}

            def used(k):
                return (res.get(k) or {}).get("used")

            def total(k):
                return (res.get(k) or {}).get("total")
            result["build"] = {"lut": used("lut"), "lut_total": total("lut"), "ff": used("ff"),
                               "bram": used("bram"), "bram_total": total("bram"),
                               "dsp": used("dsp"), "fmax_mhz": report.get("fmax_mhz"),
                               "clock_mhz": report.get("clock_mhz"),
                               "timing_met": report.get("timing_met"),
                               "cycles_per_inference": report.get("cycles_per_inference"),
                               "inferences_per_s": report.get("inferences_per_s")}
            result["files"]["report.json"] = (json.dumps(report, indent=1) + "\n").encode()
            with open(os.path.join(tmp, report["bitstream"]), "rb") as f:
                result["files"][report["bitstream"]] = f.read()


def _folding(network, point):
    """``(folding, source)`` of a point, as ``qnnfab sim``/``build`` resolve theirs: the
    given ``folding``; else the cheapest meeting ``target_ips`` on the board; else the board's;
    else the automatic one."""
    board = point.get("board")
    if point.get("folding"):
        from qnnfab.rtl.folding import check_folding
        return check_folding(network, _parse_folding(point["folding"])), "given (folding)"
    if point.get("target_ips") is not None:
        from qnnfab.boards.registry import target_folding
        return target_folding(network, board, target_ips=point["target_ips"],
                              clock_mhz=point.get("clock_mhz"))
    if board is not None:
        from qnnfab.boards.registry import board_folding
        return board_folding(network, board), f"board {board} default"
    from qnnfab.rtl.folding import auto_folding
    return auto_folding(network), "automatic"


# -- the sweep -------------------------------------------------------------------------------

@dataclasses.dataclass
class SweepSummary:
    """What :func:`run_sweep` did: ``points`` in the spec, ``skipped`` (finished before),
    ``ran``, ``failed`` (of those ran and skipped together: the points whose latest result
    is an error), ``not_exact`` (simulated, not bit-exact), ``results`` (the latest result of
    each point, spec order; None for a point without one), ``written`` (table and plot
    files), ``seconds``."""
    points: int
    skipped: int
    ran: int
    failed: int
    not_exact: int
    results: list
    written: list
    seconds: float

    @property
    def ok(self):
        return self.failed == 0 and self.not_exact == 0 and None not in self.results


def _log(msg):
    from .progress import write_line
    write_line(msg)


def _count(n, word):
    return f"{n} {word}{'s' * (n != 1)}"


def _slug(label, key):
    text = re.sub(r"[^A-Za-z0-9.=_-]+", "_", label).strip("_")[:60]
    return f"{text}-{key[:8]}" if text and text != "point" else key[:12]


def _line(n, total, label, result):
    """The line printed for a finished point."""
    if result.get("status") != "ok":
        return f"[{n}/{total}] {label}: FAILED: {result.get('error')}"
    acc = result.get("accuracy") or {}
    parts = [f"{k} {acc[k]:.2%}" for k in ("float", "integer", "hardware")
             if acc.get(k) is not None]
    vec = result.get("vectors")
    if vec:
        parts.append(f"{vec['bit_exact']}/{vec['checked']} bit-exact")
    build = result.get("build")
    if build:
        fmax = build.get("fmax_mhz")
        parts.append(f"LUT {build['lut']}, EBR {build['bram']}, "
                     + (f"fmax {fmax:.1f} MHz" if fmax is not None else "no fmax")
                     + ("" if build.get("timing_met") else " (timing NOT met)")
                     + f", {build['inferences_per_s']:,.0f} inf/s")
    parts.append(f"{(result.get('seconds') or {}).get('total', 0):.1f} s")
    return f"[{n}/{total}] {label}: " + ", ".join(parts)


def _lock(out_dir):
    import fcntl
    fd = os.open(out_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RuntimeError(f"{out_dir}: another sweep is writing this folder; wait for it or "
                           f"choose another --out") from None
    return fd


def _error_result(exc):
    return {"status": "error", "error": f"executor: {type(exc).__name__}: {exc}".strip(),
            "seconds": {}, "files": {}}


def run_sweep(spec, out_dir, *, executor=None, workers=None, scheduler=None, progress=True,
              log=_log, job=None):
    """Run the points of ``spec`` (a :class:`Spec` or a spec file) not yet finished in
    ``out_dir`` on ``executor`` (else one from ``workers`` / ``scheduler``,
    :func:`qnnfab.sweep_executor.make_executor`, closed at the end); returns a
    :class:`SweepSummary`.

    ``progress``: one bar for the sweep (:func:`qnnfab.progress.progress_bar`) and a line per
    finished point, through ``log``. ``job``: the job function (default :func:`run_point`;
    tests put a stand-in). Each finished point: its files into ``out_dir/points/<label>-<key>/``,
    then its line into ``results.jsonl``, then the tables. KeyboardInterrupt stops the jobs
    (the executor ends them), writes the tables and plots of what finished, and goes on up.
    """
    from .progress import progress_bar
    from .sweep_executor import make_executor
    started = time.monotonic()
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    job = run_point if job is None else job
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    lock = _lock(out_dir)
    say = log if progress else (lambda msg: None)
    try:
        keys = [point_key(p) for p in spec.points]
        store = ResultLog(os.path.join(out_dir, "results.jsonl"))
        before = latest(store.load())
        if store.repaired:
            log(f"{store.path}: cut off a torn last line ({store.repaired} bytes) left by an "
                f"interrupted write")
        finished = {k: before[k] for k in keys if k in before}
        todo = [i for i, k in enumerate(keys)
                if k not in finished or finished[k].get("status") != "ok"]
        skipped = len(spec.points) - len(todo)
        retried = sum(1 for i in todo if keys[i] in finished)
        own = executor is None
        if own and todo:
            executor = make_executor(workers=workers, scheduler=scheduler)
        say(f"sweep {spec.name!r}: {_count(len(spec.points), 'point')} "
            f"({', '.join(spec.stages)}); "
            + (f"{skipped} finished before, skipped; " if skipped else "")
            + (f"{retried} failed before, run again; " if retried else "")
            + (f"{len(todo)} to run on {executor.describe()}" if todo else "nothing to run"))
        axes = list(spec.varying) or list(spec.axes)

        def tables(plots):
            results = [finished[k] for k in keys if k in finished]
            return write_tables(out_dir, results, axes, title=spec.name, plots=plots)
        written = tables(plots=not todo)
        bar = progress_bar(len(todo), "sweep", unit="point", enabled=progress and bool(todo))
        ran = 0
        try:
            if todo:
                jobs = executor.imap_unordered(job, [(spec.points[i],) for i in todo],
                                               keys=[f"qnnfab-sweep-{keys[i]}" for i in todo])
                with closing(jobs):
                    for n, outcome in jobs:
                        i = todo[n]
                        result = outcome if isinstance(outcome, dict) else _error_result(outcome)
                        _finish(out_dir, store, result, spec.points[i], keys[i], spec.labels[i])
                        finished[keys[i]] = result
                        ran += 1
                        tables(plots=False)
                        bar.update(1)
                        say(_line(ran, len(todo), spec.labels[i], result))
        except KeyboardInterrupt:
            log(f"interrupted: {ran} of {_count(len(todo), 'point')} finished and kept in "
                f"{store.path}; run the same command again to do the rest")
            raise
        finally:
            bar.close()
            written = tables(plots=True)
            if own and executor is not None:
                executor.close()
    finally:
        os.close(lock)
    results = [finished.get(k) for k in keys]
    failed = sum(1 for r in results if r is not None and r.get("status") != "ok")
    not_exact = sum(1 for r in results if r is not None and r.get("vectors")
                    and r["vectors"]["bit_exact"] != r["vectors"]["checked"])
    return SweepSummary(points=len(spec.points), skipped=skipped, ran=ran, failed=failed,
                        not_exact=not_exact, results=results, written=written,
                        seconds=time.monotonic() - started)


def _finish(out_dir, store, result, point, key, label):
    """Keep one finished point: its files, then its line in ``results.jsonl``."""
    from qnnfab import ir
    files = result.pop("files", None) or {}
    result.update(key=key, label=label, point=point)
    result.setdefault("status", "error")
    if files:
        folder = os.path.join("points", _slug(label, key))
        os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
        for name, data in files.items():
            ir.atomic_write_bytes(os.path.join(out_dir, folder, os.path.basename(name)), data)
        result["dir"] = folder
        result["files"] = sorted(os.path.basename(n) for n in files)
    store.append(_plain(result))


# -- the command -------------------------------------------------------------------------------

def add_arguments(parser):
    """The options of ``qnnfab sweep`` on an argparse (sub)parser."""
    from .sweep_executor import add_executor_arguments
    parser.add_argument("spec", metavar="SPEC.toml",
                        help="the sweep: its axes and stages (docs/sweeps.md, "
                             "examples/sweep.toml)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder: results.jsonl, results.md, results.csv, "
                             "pareto-BOARD.svg, points/ (a rerun skips finished points)")
    add_executor_arguments(parser, what="design points",
                           default_help="one per CPU on this machine")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the points and their keys, run nothing")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar and no line per point; only the summary")


def run(args):
    """``qnnfab sweep``: 0 when every point finished bit-exact, 1 when some failed or are not
    bit-exact; SpecError (a ValueError) for a bad spec, MissingDask for ``--scheduler``
    without Dask."""
    if args.workers is not None and args.workers < 0:
        raise ValueError(f"--workers: expected >= 0, got {args.workers}")
    spec = load_spec(args.spec)
    if args.dry_run:
        print(f"{_count(len(spec.points), 'point')} ({', '.join(spec.stages)}):")
        for point, label in zip(spec.points, spec.labels):
            print(f"  {point_key(point)}  {label}")
        return 0
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"{args.out}: not a folder (a file of that name exists)")
    summary = run_sweep(spec, args.out, workers=args.workers, scheduler=args.scheduler,
                        progress=not args.quiet)
    print(f"sweep {spec.name!r}: {_count(summary.points, 'point')}: {summary.ran} ran, "
          f"{summary.skipped} finished before (skipped), {summary.failed} failed"
          + (f", {summary.not_exact} not bit-exact" if summary.not_exact else "")
          + f"; {summary.seconds:.0f} s")
    for path in summary.written:
        print(f"wrote {path}")
    return 0 if summary.ok else 1
