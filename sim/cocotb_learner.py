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
     "stall_limit": 100000}              # cycles without any transfer before giving up

Results: ``{"outputs": [hex], "trace": [hex], "cycles": n, "seconds": s, "error": ...}``;
``cycles`` counts from the release of reset to the last transfer. Transfers are sampled in
the read-only phase before a rising edge, as in :mod:`qnnfab.sim.cocotb_network`.
"""

import json
import os
import random
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from .job_files import write_json, write_progress

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
    ready_p = float(cfg.get("ready_probability", 1.0))
    valid_p = float(cfg.get("valid_probability", 1.0))
    trace_p = float(cfg.get("trace_ready_probability", 1.0))
    stall_limit = int(cfg.get("stall_limit", 100_000))
    progress_path = cfg.get("progress")
    progress_every = max(1, total // 100)
    rng = random.Random(cfg.get("seed", 0))

    clk = dut.clk
    Clock(clk, 10, unit="ns").start()
    dut.rst.value = 1
    dut.i__valid.value = 0
    dut.i__payload.value = 0
    dut.o__ready.value = 0
    dut.trace__ready.value = 0
    for _ in range(int(cfg.get("reset_cycles", 2))):
        await RisingEdge(clk)
    dut.rst.value = 0

    outputs, traces = [], []
    sent, cycle, idle, last_cycle = 0, 0, 0, 0
    offering = valid_wire = False
    o_ready = t_ready = None
    error = None
    start = time.perf_counter()
    while len(outputs) < total or len(traces) < n_trace:
        await RisingEdge(clk)
        cycle += 1
        if not offering:
            if sent < total and (valid_p >= 1.0 or rng.random() < valid_p):
                dut.i__payload.value = inputs[sent]
                offering = True
            if offering != valid_wire:
                dut.i__valid.value = int(offering)
                valid_wire = offering
        r = ready_p >= 1.0 or rng.random() < ready_p
        if r != o_ready:
            dut.o__ready.value = int(r)
            o_ready = r
        r = trace_p >= 1.0 or rng.random() < trace_p
        if r != t_ready:
            dut.trace__ready.value = int(r)
            t_ready = r
        await ReadOnly()
        moved = False
        if offering and dut.i__ready.value == 1:
            sent += 1
            offering = False
            moved = True
        try:
            if o_ready and dut.o__valid.value == 1:
                outputs.append(format(dut.o__payload.value.to_unsigned(), "x"))
                moved = True
                if len(outputs) % progress_every == 0:
                    write_progress(progress_path, len(outputs), total)
            if t_ready and dut.trace__valid.value == 1:
                traces.append(format(dut.trace__payload.value.to_unsigned(), "x"))
                moved = True
        except ValueError:
            error = f"X/Z bits on an output payload at cycle {cycle}"
            break
        if moved:
            last_cycle, idle = cycle, 0
        else:
            idle += 1
            if idle > stall_limit:
                error = (f"stalled: nothing moved for {stall_limit} cycles after {len(outputs)} "
                         f"of {total} outputs and {len(traces)} of {n_trace} trace words "
                         f"({sent} samples accepted) at cycle {cycle}")
                break
    seconds = time.perf_counter() - start
    write_progress(progress_path, len(outputs), total)
    write_json(cfg["results"], {"outputs": outputs, "trace": traces, "cycles": last_cycle,
                                 "seconds": seconds, "error": error})
    assert error is None, error
