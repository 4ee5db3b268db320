"""The cocotb test module that runs the learner's Verilog inside the simulator.

It drives a component with the ports of :class:`qnnfab.rtl.learner.OnlineLearner` (and
:class:`~qnnfab.rtl.learner.LearningNetwork`)::

    clk, rst, i__payload, i__valid, i__ready (out),
    o__payload (out), o__valid (out), o__ready, trace__payload (out), trace__valid (out),
    trace__ready

:mod:`qnnfab.sim.learn_sim` packs the samples and decodes the words. The job is a JSON file
whose path is in :data:`CONFIG_ENV`::

    {"inputs": ["1f0a", ...],            # i__payload words, hexadecimal
     "n_trace": 12800,                   # trace words to expect (learning steps x n_in)
     "results": "/path/results.json",
     "progress": "/path/progress.txt",   # "done total" (outputs), optional
     "ready_probability": 1.0,           # P(o__ready = 1) each cycle
     "valid_probability": 1.0,           # P(a waiting sample is offered) each cycle
     "trace_ready_probability": 1.0,     # P(trace__ready = 1) each cycle
     "seed": 0, "reset_cycles": 2,
     "stall_limit": 100000}              # cycles without an output or trace word

Results: ``{"outputs": [hex], "trace": [hex], "cycles": n, "seconds": s, "error": ...}``;
``cycles`` counts from the release of reset to the last output or trace transfer. The streams
are driven by :mod:`qnnfab.sim.cocotb_streams`, as in :mod:`qnnfab.sim.cocotb_network`.
"""

import json
import os
import random
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

from .cocotb_streams import StreamDriver, StreamMonitor, chance, drive_streams
from .job_files import progress_writer, write_json, write_progress

__all__ = ["CONFIG_ENV", "run_learner"]

#: Environment variable holding the path of the job's JSON file.
CONFIG_ENV = "QNNFAB_LEARN_CONFIG"


@cocotb.test()
async def run_learner(dut):
    """Stream every sample through the learner; record every output and trace word."""
    with open(os.environ[CONFIG_ENV]) as f:
        cfg = json.load(f)
    inputs = [int(word, 16) for word in cfg["inputs"]]
    total, n_trace = len(inputs), int(cfg["n_trace"])
    progress_path = cfg.get("progress")
    rng = random.Random(cfg.get("seed", 0))
    offer = chance(cfg.get("valid_probability", 1.0), rng)
    source = StreamDriver(dut, "i", inputs, idle=lambda k: not offer(), what="sample")
    outputs = StreamMonitor(
        dut, "o", total, ready=chance(cfg.get("ready_probability", 1.0), rng), what="output",
        on_transfer=progress_writer(progress_path, total))
    traces = StreamMonitor(dut, "trace", n_trace, what="trace word",
                           ready=chance(cfg.get("trace_ready_probability", 1.0), rng))

    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    for stream in (source, outputs, traces):
        stream.reset()
    for _ in range(int(cfg.get("reset_cycles", 2))):
        await RisingEdge(dut.clk)
    dut.rst.value = 0

    start = time.perf_counter()
    cycles, error = await drive_streams(dut.clk, [source], [outputs, traces],
                                        stall_limit=int(cfg.get("stall_limit", 100_000)))
    seconds = time.perf_counter() - start
    write_progress(progress_path, len(outputs.words), total)
    write_json(cfg["results"], {"outputs": [format(w, "x") for w in outputs.words],
                                "trace": [format(w, "x") for w in traces.words],
                                "cycles": cycles, "seconds": seconds, "error": error})
    assert error is None, error
