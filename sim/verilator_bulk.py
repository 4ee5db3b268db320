"""Bulk simulation in Verilator: the clock loop in C++, vectors in and out through files.

The cocotb path (:func:`qnnfab.sim.runner.run_stream_verilog`) runs Python on every clock
edge (~50,000 cycles/s); here a C++ testbench (the template ``verilator_bulk_tb.cpp``, package
data of ``qnnfab.sim``) is compiled with the design and streams every vector itself, with the
same kind of seeded random stalls, millions of cycles per second::

    lane = Lane(in_width=320, out_width=94)           # ports i__*, o__* of the design
    model = build_bulk(verilog, [lane], toplevel="qnnfab_network")   # cached per design
    run = run_bulk(model, [pack_words(codes, 5)], stall_limits=[100_000],
                   ready_probability=0.5, valid_probability=0.7, seed=3)
    run.outputs[0]                                    # (n, out_words) uint32, o__payload words

A design may hold several independent stream pairs (*lanes*), e.g. many fuzz networks side by
side in one build (:mod:`qnnfab.sim.bulk_network`); every lane has its own source, sink,
random generator and stall limit, and all share ``clk`` and ``rst`` (which the wrapper makes
itself: high for the first :data:`RESET_CYCLES` rising edges, as the cocotb harness drives it).

Lanes
    :class:`Lane` names a lane's ports in ``toplevel`` (``<input>__payload``, ``__valid``,
    ``__ready``; ``<output>__payload`` ...) and their payload widths. The build wraps
    ``toplevel`` in a module ``qnnfab_bulk`` (:func:`wrapper_verilog`) whose ports have fixed
    names the testbench uses (``l<k>_ipay`` ...), so nothing depends on how Verilator mangles
    ``__`` in names.
Words
    A payload of ``w`` bits travels as ``ceil(w / 32)`` little-endian ``uint32`` words, bit
    ``j`` in bit ``j % 32`` of word ``j // 32`` (:func:`pack_words` packs an Amaranth
    ``ArrayLayout`` of unsigned codes this way, :func:`words_field` reads a field back).
Stalls
    Each cycle a waiting input is offered with probability ``valid_probability`` and ``o``'s
    ``ready`` is high with probability ``ready_probability`` (sources drawn first, then sinks,
    as in :mod:`qnnfab.sim.cocotb_streams`; splitmix64 per lane seeded by ``seed`` and the lane
    index, so a lane's stalls do not depend on the other lanes). Not the same random sequence as
    the cocotb path, the same kind of stalls.
Cycles
    Counted from the first rising edge after reset, as the cocotb harness counts them (without
    stalls both report the same cycle of the last output, and so does Amaranth's simulator).
Never hangs
    A lane that waits more than its ``stall_limit`` cycles for its next output ends the run
    with :class:`BulkStallError` (how far each lane got); ``timeout`` bounds the wall time.
Cache
    Builds go in ``<root>/bulk-<hash>`` (``root``: ``build_dir`` or
    :func:`~qnnfab.sim.build_cache.default_cache_dir`); the hash covers the Verilog, the lanes,
    the testbench template, the Verilator and C++ compiler versions and the flags, so a rerun
    reuses the executable. ``cache=False`` builds in a fresh folder and leaves it to the caller
    (:meth:`BulkModel.remove`), for one-off designs such as fuzz batches.

A missing Verilator (or perl/make/a C++ compiler) raises
:class:`~qnnfab.sim.verilator_env.ToolNotFoundError` saying how to get it.
"""

import functools
import hashlib
import importlib.resources
import json
import operator
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .arguments import check_probabilities, check_progress
from .build_cache import STAMP, default_cache_dir, file_lock, log_tail, prune
from .verilator_env import ToolNotFoundError, find_verilator, verilator_env

__all__ = ["Lane", "BulkModel", "BulkRun", "BulkStallError", "WRAPPER", "TEMPLATE",
           "OPTIMIZATION", "RESET_CYCLES", "VERILATOR_ARGS", "wrapper_verilog", "testbench_cpp",
           "build_bulk", "run_bulk", "pack_words", "words_field", "ToolNotFoundError"]

#: Module name of the generated wrapper (C++ class ``Vbulk``).
WRAPPER = "qnnfab_bulk"
#: The C++ testbench template, package data of ``qnnfab.sim``.
TEMPLATE = "verilator_bulk_tb.cpp"
#: Per ``optimize`` setting: the C++ optimization of the model (``OPT_FAST``/``OPT_SLOW``/
#: ``OPT_GLOBAL`` of Verilator's makefile) and Verilator options. ``"speed"`` for long runs;
#: ``"build"`` for designs run for a few thousand cycles (a fuzz batch), where the compile is
#: nearly all the time: ``-O0``, and ``-fno-merge-cond`` (Verilator's conditional merging took
#: 70 of 104 s on a batch of 48 fuzz networks, 9 MB of Verilog).
OPTIMIZATION = {"speed": {"cxx": ("-O3", "-O1", "-O1"), "verilator": ()},
                "build": {"cxx": ("-O0", "-O0", "-O1"), "verilator": ("-fno-merge-cond",)}}
#: Verilator arguments: the lint/style warnings Amaranth's Verilog trips are harmless there;
#: ``--x-assign/--x-initial fast``: Amaranth's Verilog initializes every register itself;
#: ``--no-decoration``: no comments in the C++ (a fifth less to compile).
VERILATOR_ARGS = ("-Wno-fatal", "-Wno-lint", "-Wno-style", "--x-assign", "fast",
                  "--x-initial", "fast", "--no-decoration")
#: Rising edges with ``rst`` high before the vectors (as the cocotb harness).
RESET_CYCLES = 2
#: Bump when the harness changes in a way that invalidates cached builds.
_HARNESS_VERSION = 1
_LANES_MARK = "/*@LANES@*/"
_RESET_MARK = "/*@RESET_CYCLES@*/"


class BulkStallError(RuntimeError):
    """A lane waited longer than its stall limit for an output (the message says which lane,
    how many outputs it produced and how many inputs it accepted); ``run`` is the partial
    :class:`BulkRun` (every output produced before the stall)."""

    def __init__(self, message, run=None):
        super().__init__(message)
        self.run = run


@dataclass(frozen=True)
class Lane:
    """One stream pair of the design: input ports ``<input>__payload/__valid/__ready`` (a
    payload of ``in_width`` bits), output ports ``<output>__payload/__valid/__ready``
    (``out_width`` bits). The design emits one output per input, in order."""
    in_width: int
    out_width: int
    input: str = "i"
    output: str = "o"

    def __post_init__(self):
        for name in ("in_width", "out_width"):
            value = operator.index(getattr(self, name))
            if value < 1:
                raise ValueError(f"Lane.{name} must be >= 1, not {value}")
            object.__setattr__(self, name, value)
        for name in ("input", "output"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).isidentifier():
                raise ValueError(f"Lane.{name} must be a port name prefix, not "
                                 f"{getattr(self, name)!r}")

    @property
    def in_words(self):
        """``uint32`` words per input payload."""
        return (self.in_width + 31) // 32

    @property
    def out_words(self):
        """``uint32`` words per output payload."""
        return (self.out_width + 31) // 32


@dataclass
class BulkModel:
    """A built bulk simulator: ``executable`` in ``build_dir``, for ``lanes``;
    ``compile_seconds`` 0.0 when a cached build was reused."""
    executable: Path
    build_dir: Path
    lanes: tuple
    compile_seconds: float
    cached: bool = True

    def remove(self):
        """Delete the build folder (for ``cache=False`` builds)."""
        shutil.rmtree(self.build_dir, ignore_errors=True)


@dataclass
class BulkRun:
    """What :func:`run_bulk` returned.

    Attributes
    ----------
    outputs : list of ndarray
        Per lane, the output payloads, shape (n, out_words), ``uint32``.
    cycles : list of int
        Per lane, the cycle of its last output (from the release of reset).
    accepted : list of int
        Per lane, inputs the design accepted.
    total_cycles : int
        Cycles simulated (the last lane's last output, or the stall).
    seconds : float
        Wall time of the C++ clock loop (not the process start nor the file I/O).
    compile_seconds : float
    build_dir : Path
    cpu_seconds : float
        CPU time of the clock loop (what ``seconds`` would be on an idle machine).
    """
    outputs: list
    cycles: list
    accepted: list
    total_cycles: int
    seconds: float
    compile_seconds: float
    build_dir: Path
    cpu_seconds: float = 0.0

    @property
    def cycles_per_second(self):
        """Simulated cycles per wall-clock second of the loop (0.0 if not measurable)."""
        return self.total_cycles / self.seconds if self.seconds > 0 else 0.0


# --- generated sources ----------------------------------------------------------------------

def _check_lanes(lanes):
    lanes = tuple(lanes)
    if not lanes or not all(isinstance(lane, Lane) for lane in lanes):
        raise ValueError(f"lanes must be a non-empty sequence of Lane, not {lanes!r}")
    ports = [p for lane in lanes for p in (lane.input, lane.output)]
    if len(set(ports)) != len(ports):
        raise ValueError(f"lanes: each stream may belong to one lane only, got {ports}")
    return lanes


def wrapper_verilog(toplevel, lanes, *, reset_cycles=RESET_CYCLES):
    """Verilog of the module :data:`WRAPPER`: one instance of ``toplevel`` with every lane's
    stream ports brought out as ``l<k>_ipay``, ``l<k>_ivalid``, ``l<k>_iready``,
    ``l<k>_opay``, ``l<k>_ovalid``, ``l<k>_oready``, and ``clk``.

    ``rst`` is made inside: high for the first ``reset_cycles`` rising edges, then low (what the
    cocotb harness drives). Not a port on purpose: Verilator re-evaluates every piece of logic
    that depends on a top-level input at each ``eval()``, and Amaranth's reset reaches nearly
    all of it; a register there makes the simulation about three times faster."""
    lanes = _check_lanes(lanes)
    reset_cycles = operator.index(reset_cycles)
    if reset_cycles < 1:
        raise ValueError(f"reset_cycles must be >= 1, not {reset_cycles}")
    bits = reset_cycles.bit_length()
    ports = ["input wire clk"]
    conns = [".clk(clk)", ".rst(rst)"]
    for k, lane in enumerate(lanes):
        ports += [f"input wire [{lane.in_width - 1}:0] l{k}_ipay", f"input wire l{k}_ivalid",
                  f"output wire l{k}_iready", f"output wire [{lane.out_width - 1}:0] l{k}_opay",
                  f"output wire l{k}_ovalid", f"input wire l{k}_oready"]
        i, o = lane.input, lane.output
        conns += [f".{i}__payload(l{k}_ipay)", f".{i}__valid(l{k}_ivalid)",
                  f".{i}__ready(l{k}_iready)", f".{o}__payload(l{k}_opay)",
                  f".{o}__valid(l{k}_ovalid)", f".{o}__ready(l{k}_oready)"]
    return (f"// Generated by qnnfab.sim.verilator_bulk: {toplevel} with fixed port names and\n"
            f"// {reset_cycles} cycles of reset.\n"
            f"module {WRAPPER}(\n  " + ",\n  ".join(ports) + "\n);\n"
            f"  reg [{bits - 1}:0] rst_count = {bits}'d{reset_cycles};\n"
            f"  wire rst = rst_count != {bits}'d0;\n"
            f"  always @(posedge clk) if (rst) rst_count <= rst_count - {bits}'d1;\n"
            f"  {toplevel} dut(\n    " + ",\n    ".join(conns) + "\n  );\nendmodule\n")


@functools.lru_cache(maxsize=1)
def _template():
    return importlib.resources.files("qnnfab.sim").joinpath(TEMPLATE).read_text()


def testbench_cpp(lanes, *, reset_cycles=RESET_CYCLES):
    """The C++ testbench for ``lanes``: the template with one ``QNNFAB_LANE`` entry per
    lane and the wrapper's reset cycles."""
    lanes = _check_lanes(lanes)
    text = _template()
    for mark in (_LANES_MARK, _RESET_MARK):
        if mark not in text:
            raise RuntimeError(f"the testbench template {TEMPLATE} has no {mark} mark")
    entries = ",\n    ".join(f"QNNFAB_LANE({k}, {lane.in_words}, {lane.out_words})"
                             for k, lane in enumerate(lanes))
    return text.replace(_LANES_MARK, entries).replace(_RESET_MARK,
                                                      str(operator.index(reset_cycles)))


# --- build ----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _compiler_version(cxx):
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60)
    except OSError:
        return "unknown"
    return (out.stdout.splitlines() or ["unknown"])[0]


def build_bulk(verilog, lanes, *, toplevel="qnnfab_network", build_dir=None, log=None,
               optimize="speed", cache=True, extra_sources=(), extra_args=(), jobs=None):
    """Compile ``verilog`` (text defining ``toplevel``) with the C++ testbench for ``lanes``;
    returns a :class:`BulkModel`.

    ``build_dir``: the cache root (default :func:`~qnnfab.sim.build_cache.default_cache_dir`);
    ``optimize``: a key of :data:`OPTIMIZATION`; ``cache=False``: a fresh folder under the root,
    never reused (delete it with :meth:`BulkModel.remove`); ``extra_sources``: more Verilog or
    ``.vlt`` files (e.g. cell models), part of the hash; ``extra_args``: more Verilator
    arguments; ``jobs``: parallel C++ compiles (default 2). ``log(message)`` hears about the
    compile. RuntimeError with the end of the log if the build fails.

    Verilator's runtime (``verilated.o``, ``verilated_threads.o``: about 6 s of the compile) is
    kept in ``<root>/runtime-<hash>`` after the first build and copied into later ones."""
    lanes = _check_lanes(lanes)
    if not isinstance(verilog, str) or f"module {toplevel}" not in verilog:
        raise ValueError(f"verilog: expected Verilog text defining module {toplevel!r}")
    if optimize not in OPTIMIZATION:
        raise ValueError(f"optimize must be one of {', '.join(map(repr, OPTIMIZATION))}, "
                         f"not {optimize!r}")
    install = find_verilator()
    env = verilator_env()
    extra_sources = [Path(path).resolve() for path in extra_sources]
    opts = OPTIMIZATION[optimize]["cxx"]
    args = [*VERILATOR_ARGS, *map(str, extra_args)]
    wrapper = wrapper_verilog(toplevel, lanes)
    tb = testbench_cpp(lanes)
    common = {"tool": install.version, "cxx": _compiler_version(env.get("CXX") or "g++"),
              "args": args, "harness": _HARNESS_VERSION}
    args += OPTIMIZATION[optimize]["verilator"]
    key = _digest({
        **common, "verilog": _digest(verilog), "wrapper": wrapper, "tb": _digest(tb),
        "opt": opts, "verilator_opt": args,
        "extra": [_digest(path.read_bytes()) for path in extra_sources]})
    root = (Path(build_dir) if build_dir is not None else default_cache_dir()).resolve()
    root.mkdir(parents=True, exist_ok=True)
    # The runtime objects depend on the tools, the C++ flags of OPT_GLOBAL and the options
    # that select its features (trace, timing, ...), not on the design nor on -f options.
    job = _Compile(verilog=verilog, wrapper=wrapper, tb=tb, toplevel=toplevel, args=args,
                   extra_sources=extra_sources, env=env, opts=opts,
                   jobs=2 if jobs is None else max(1, operator.index(jobs)),
                   runtime=root / f"runtime-{_digest({**common, 'opt': opts[2]})}", log=log)
    if not cache:
        folder = Path(tempfile.mkdtemp(prefix=f"bulk-{key}-once-", dir=root))
        seconds = job.run(folder)
        return BulkModel(executable=folder / "sim", build_dir=folder, lanes=lanes,
                         compile_seconds=seconds, cached=False)
    folder = root / f"bulk-{key}"
    stamp = folder / STAMP
    with file_lock(root / f"bulk-{key}.lock"):
        if stamp.exists() and (folder / "sim").is_file():
            stamp.touch()  # most recently used: kept by prune
            if log is not None:
                log(f"verilator (bulk): reusing the build in {folder}")
            return BulkModel(executable=folder / "sim", build_dir=folder, lanes=lanes,
                             compile_seconds=0.0)
        if folder.exists():  # a build that failed or was interrupted
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        seconds = job.run(folder)
        stamp.write_text(json.dumps({"simulator": "verilator-bulk", "tool": install.version,
                                     "compile_seconds": seconds}))
    prune(root, keep=folder)
    return BulkModel(executable=folder / "sim", build_dir=folder, lanes=lanes,
                     compile_seconds=seconds)


def _digest(value):
    data = value if isinstance(value, bytes) else \
        value.encode() if isinstance(value, str) else json.dumps(value, sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()[:20]


#: Verilator's runtime objects (and their make dependency files) kept between builds.
_RUNTIME_FILES = ("verilated.o", "verilated.d", "verilated_threads.o", "verilated_threads.d")


@dataclass
class _Compile:
    """One compile: Verilator writes the C++ and its makefile into ``<folder>/obj``, the
    cached runtime objects are copied in (fresh timestamps, so ``make`` keeps them), ``make``
    builds ``<folder>/sim``; a first build stores its runtime objects for the next ones."""
    verilog: str
    wrapper: str
    tb: str
    toplevel: str
    args: list
    extra_sources: list
    env: dict
    opts: tuple
    jobs: int
    runtime: Path
    log: object

    def run(self, folder):
        (folder / f"{self.toplevel}.v").write_text(self.verilog)
        (folder / f"{WRAPPER}.v").write_text(self.wrapper)
        (folder / "tb.cpp").write_text(self.tb)
        build_log = folder / "build.log"
        if self.log is not None:
            self.log(f"verilator (bulk): compiling {len(self.verilog) // 1000} kB of Verilog in "
                     f"{folder} (once per design)")
        opt_fast, opt_slow, opt_global = self.opts
        includes = [f"-I{p}" for p in dict.fromkeys(str(p.parent) for p in self.extra_sources)]
        verilate = ["verilator", "--cc", "--exe", "--top-module", WRAPPER, "--prefix", "Vbulk",
                    "-Mdir", "obj", "-o", "../sim", *self.args, *includes, f"{WRAPPER}.v",
                    f"{self.toplevel}.v", *map(str, self.extra_sources), "tb.cpp"]
        make = ["make", "-C", "obj", "-f", "Vbulk.mk", "-j", str(self.jobs),
                f"OPT_FAST={opt_fast}", f"OPT_SLOW={opt_slow}", f"OPT_GLOBAL={opt_global}"]
        obj = folder / "obj"
        start = time.perf_counter()
        with open(build_log, "w") as out:
            for k, cmd in enumerate((verilate, make)):
                if k == 1:
                    reused = self._restore(obj)
                    how = "reused from" if reused else "built, kept in"
                    out.write(f"# runtime objects: {how} {self.runtime}\n")
                out.write(" ".join(cmd) + "\n")
                out.flush()
                proc = subprocess.run(cmd, cwd=folder, env=self.env, stdout=out,
                                      stderr=subprocess.STDOUT)
                if proc.returncode != 0:
                    break
        seconds = time.perf_counter() - start
        if proc.returncode != 0 or not (folder / "sim").is_file():
            raise RuntimeError(f"verilator (bulk) build in {folder} failed (exit "
                               f"{proc.returncode}); end of {build_log}:\n{log_tail(build_log)}")
        if not reused:
            self._store(obj)
        # Only the executable is needed to run; the generated C++ and the object files are
        # most of the folder's size.
        shutil.rmtree(obj, ignore_errors=True)
        return seconds

    def _restore(self, obj):
        if not all((self.runtime / name).is_file() for name in _RUNTIME_FILES):
            return False
        for name in _RUNTIME_FILES:
            shutil.copyfile(self.runtime / name, obj / name)
        return True

    def _store(self, obj):
        if self.runtime.exists() or not all((obj / n).is_file() for n in _RUNTIME_FILES):
            return
        tmp = Path(tempfile.mkdtemp(prefix=f"{self.runtime.name}-", dir=self.runtime.parent))
        for name in _RUNTIME_FILES:
            shutil.copyfile(obj / name, tmp / name)
        try:
            os.rename(tmp, self.runtime)
        except OSError:  # another process stored it first
            shutil.rmtree(tmp, ignore_errors=True)


# --- run ------------------------------------------------------------------------------------

def pack_words(codes, bits):
    """Rows of unsigned ``bits``-bit codes (n, features) as ``ArrayLayout(unsigned(bits),
    features)`` payloads, element ``j`` at bits ``[j*bits, (j+1)*bits)``: an array (n, words)
    of ``uint32`` (see the module docstring). ValueError on a code out of range."""
    bits = operator.index(bits)
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes: expected a 2-D array (n, features), got shape {codes.shape}")
    if bits < 1 or bits > 63:
        raise ValueError(f"bits must be in 1..63, not {bits}")
    if codes.size and (codes.min() < 0 or codes.max() >= 1 << bits):
        raise ValueError(f"codes: expected values in 0..{(1 << bits) - 1}")
    n, features = codes.shape
    width = features * bits
    words = max(1, (width + 31) // 32)
    shifts = np.arange(bits, dtype=np.uint64)
    matrix = ((codes.astype(np.uint64)[:, :, None] >> shifts) & np.uint64(1)).astype(np.uint8)
    matrix = matrix.reshape(n, width)
    matrix = np.pad(matrix, ((0, 0), (0, words * 32 - width)))
    packed = np.packbits(matrix, axis=1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u4").reshape(n, words).astype(np.uint32)


def words_field(words, offset, width, *, signed=False, count=1):
    """Read ``count`` consecutive fields of ``width`` bits from ``offset`` in each row of
    payload ``words`` (n, w) ``uint32``: an int64 array (n, count) (two's complement when
    ``signed``). ``width`` at most 62."""
    words = np.ascontiguousarray(np.asarray(words, dtype="<u4"))
    n = words.shape[0]
    if not 1 <= width <= 62:
        raise ValueError(f"width must be in 1..62, not {width}")
    bits = np.unpackbits(words.view(np.uint8).reshape(n, -1), axis=1, bitorder="little")
    end = offset + width * count
    if end > bits.shape[1]:
        raise ValueError(f"fields [{offset}, {end}) past the payload's {bits.shape[1]} bits")
    fields = bits[:, offset:end].reshape(n, count, width).astype(np.int64)
    values = fields @ (np.int64(1) << np.arange(width, dtype=np.int64))
    if signed:
        values = np.where(values >= (1 << (width - 1)), values - (1 << width), values)
    return values


def run_bulk(model, inputs, *, stall_limits, ready_probability=1.0, valid_probability=1.0,
             seed=0, progress=None, timeout=None):
    """Stream ``inputs`` (per lane an array (n, in_words) ``uint32``, e.g. from
    :func:`pack_words`) through ``model``; returns a :class:`BulkRun`.

    ``stall_limits``: per lane (or one int for all) the cycles a lane may wait for its next
    output; past it :class:`BulkStallError`. ``ready_probability`` < 1 drives ``o``'s ready
    low at random, ``valid_probability`` < 1 leaves gaps between inputs (seeded by ``seed``).
    ``progress(done, total)`` hears about outputs as they arrive (about a hundred times);
    ``timeout`` (seconds, None: none) bounds the wall time. RuntimeError if the executable
    fails."""
    check_probabilities(ready_probability=ready_probability, valid_probability=valid_probability)
    check_progress(progress)
    lanes = model.lanes
    if len(inputs) != len(lanes):
        raise ValueError(f"inputs: expected one array per lane ({len(lanes)}), got {len(inputs)}")
    arrays = []
    for k, (lane, words) in enumerate(zip(lanes, inputs)):
        words = np.asarray(words)
        if words.ndim != 2 or words.shape[1] != lane.in_words:
            raise ValueError(f"inputs[{k}]: expected shape (n, {lane.in_words}), got "
                             f"{words.shape}")
        arrays.append(np.ascontiguousarray(words, dtype="<u4"))
    if isinstance(stall_limits, int):
        stall_limits = [stall_limits] * len(lanes)
    stall_limits = [operator.index(limit) for limit in stall_limits]
    if len(stall_limits) != len(lanes) or min(stall_limits) < 1:
        raise ValueError(f"stall_limits: expected one positive int per lane, got {stall_limits}")
    counts = [len(a) for a in arrays]
    total = sum(counts)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=model.build_dir))
    try:
        job, in_path, out_path = run_dir / "job.txt", run_dir / "in.bin", run_dir / "out.bin"
        lines = [f"seed {operator.index(seed) & (2**64 - 1)}",
                 f"valid_probability {float(valid_probability)!r}",
                 f"ready_probability {float(ready_probability)!r}"]
        lines += [f"lane {k} {n} {limit}" for k, (n, limit) in
                  enumerate(zip(counts, stall_limits))]
        job.write_text("\n".join(lines) + "\n")
        with open(in_path, "wb") as f:
            for a in arrays:
                f.write(a.tobytes())
        env = dict(os.environ)
        if progress is not None:
            env["QNNFAB_BULK_PROGRESS"] = str(max(1, total // 100))
            progress(0, total)
        status, result, stderr = _execute(model, [str(job), str(in_path), str(out_path)], env,
                                          progress, total, timeout)
        if result is None or (status not in (0, 3)):
            why = (result or {}).get("error") or f"exit status {status}"
            raise RuntimeError(f"verilator (bulk) simulation failed: {why}; executable "
                               f"{model.executable}; stderr:\n{stderr[-2000:]}")
        produced = [int(x) for x in result["produced"]]
        flat = np.fromfile(out_path, dtype="<u4") if out_path.exists() else np.zeros(0, "<u4")
        outputs, at = [], 0
        for lane, n in zip(lanes, produced):
            size = n * lane.out_words
            outputs.append(flat[at:at + size].reshape(n, lane.out_words).astype(np.uint32))
            at += size
        run = BulkRun(outputs=outputs, cycles=[int(c) for c in result["cycles"]],
                      accepted=[int(a) for a in result["accepted"]],
                      total_cycles=int(result["total_cycles"]), seconds=float(result["seconds"]),
                      compile_seconds=model.compile_seconds, build_dir=model.build_dir,
                      cpu_seconds=float(result.get("cpu_seconds", 0.0)))
        if status == 3 or result.get("error"):
            raise BulkStallError(f"verilator (bulk) simulation failed: {result['error']}", run)
        if progress is not None:
            progress(total, total)
        return run
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _execute(model, argv, env, progress, total, timeout):
    """Run the executable; relay ``P <done>`` lines of its stderr to ``progress``. Returns
    ``(exit status, parsed stdout JSON or None, other stderr text)``."""
    if not Path(model.executable).is_file():
        raise RuntimeError(f"verilator (bulk): no executable {model.executable} (was the build "
                           "removed?)")
    deadline = None if timeout is None else time.monotonic() + float(timeout)
    proc = subprocess.Popen([str(model.executable), *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    other = []
    try:
        if progress is not None:
            for line in proc.stderr:
                if line.startswith("P "):
                    progress(min(int(line[2:]), total), total)
                else:
                    other.append(line)
                if deadline is not None and time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(proc.args, timeout)
        stdout, stderr = proc.communicate(
            timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"verilator (bulk) simulation took longer than {timeout} s; "
                           f"killed ({model.executable})") from None
    other.append(stderr or "")
    try:
        result = json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else None
    except ValueError:
        result = None
    return proc.returncode, result, "".join(other)
