"""The cocotb test module that runs inside the simulator (Verilator or Icarus).

It drives a stream component with the port shape ``qnnfab.rtl.verilog.to_verilog`` produces::

    clk, rst, i__payload, i__valid, i__ready (out), o__payload (out), o__valid (out), o__ready

Nothing here knows about networks: :mod:`qnnfab.sim.runner` packs the input vectors into
``i__payload`` words and unpacks the ``o__payload`` words it gets back. The job is described by
a JSON file whose path is in the environment variable :data:`CONFIG_ENV`::

    {"inputs": ["1f0a", ...],          # i__payload words, hexadecimal
     "results": "/path/results.json",  # written at the end (and on a stall)
     "progress": "/path/progress.txt", # "done total", rewritten now and then (optional)
     "ready_probability": 1.0,         # P(o__ready = 1) each cycle; 1.0 = no back-pressure
     "valid_probability": 1.0,         # P(a waiting input is offered) each cycle
     "seed": 0,                        # for both random choices
     "reset_cycles": 2,
     "stall_limit": 100000}            # cycles without any output before giving up

The results file holds ``{"outputs": [hex words, in order], "cycles": n, "seconds": s,
"error": null or a message}``; ``cycles`` counts clock cycles from the release of reset to the
cycle of the last output transfer, ``seconds`` the wall time of that loop.

Stream rules followed: ``i__valid`` is held with the same payload until ``i__ready`` accepts
it; a transfer happens on a rising edge where valid and ready were both 1 (sampled in the
read-only phase just before the edge, so combinational ready paths have settled).
"""

import json
import os
import random
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from .job_files import write_json, write_progress

__all__ = ["CONFIG_ENV", "run_vectors"]

#: Environment variable holding the path of the job's JSON file.
CONFIG_ENV = "QNNFAB_SIM_CONFIG"


def _is_one(handle):
    return str(handle.value) == "1"



@cocotb.test()
async def run_vectors(dut):
    """Stream every input vector through the DUT and record every output word."""
    with open(os.environ[CONFIG_ENV]) as f:
        cfg = json.load(f)
    inputs = [int(word, 16) for word in cfg["inputs"]]
    total = len(inputs)
    ready_p = float(cfg.get("ready_probability", 1.0))
    valid_p = float(cfg.get("valid_probability", 1.0))
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
    for _ in range(int(cfg.get("reset_cycles", 2))):
        await RisingEdge(clk)
    dut.rst.value = 0

    outputs, sent, cycle, idle, last_cycle = [], 0, 0, 0, 0
    offering = False    # an input is on i__payload waiting to be accepted
    valid_wire = False  # what i__valid is driven to
    ready = False       # what o__ready is driven to
    error = None
    start = time.perf_counter()
    while len(outputs) < total:
        await RisingEdge(clk)
        cycle += 1
        # Drive this cycle's inputs; they settle before the read-only phase below.
        if not offering:
            if sent < total and (valid_p >= 1.0 or rng.random() < valid_p):
                dut.i__payload.value = inputs[sent]
                offering = True
            if offering != valid_wire:
                dut.i__valid.value = int(offering)
                valid_wire = offering
        new_ready = ready_p >= 1.0 or rng.random() < ready_p
        if new_ready != ready or cycle == 1:
            dut.o__ready.value = int(new_ready)
            ready = new_ready
        await ReadOnly()
        # Sample the handshakes that complete on the coming edge.
        if offering and _is_one(dut.i__ready):
            sent += 1
            offering = False
        if ready and _is_one(dut.o__valid):
            value = dut.o__payload.value
            try:
                outputs.append(format(value.to_unsigned(), "x"))
            except ValueError:
                error = (f"output {len(outputs)}: o__payload has X/Z bits at cycle {cycle}: "
                         f"{value}")
                break
            last_cycle = cycle
            idle = 0
            if len(outputs) % progress_every == 0:
                write_progress(progress_path, len(outputs), total)
        else:
            idle += 1
            if idle > stall_limit:
                error = (f"stalled: no output for {stall_limit} cycles after {len(outputs)} of "
                         f"{total} outputs ({sent} inputs accepted) at cycle {cycle}")
                break
    seconds = time.perf_counter() - start
    write_progress(progress_path, len(outputs), total)
    write_json(cfg["results"], {"outputs": outputs, "cycles": last_cycle, "seconds": seconds,
                                 "error": error})
    assert error is None, error
