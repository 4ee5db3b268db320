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

The streams are driven by :mod:`qnnfab.sim.cocotb_streams` (stream rules, when transfers are
sampled, the order of the random draws).
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

__all__ = ["CONFIG_ENV", "run_vectors"]

#: Environment variable holding the path of the job's JSON file.
CONFIG_ENV = "QNNFAB_SIM_CONFIG"


@cocotb.test()
async def run_vectors(dut):
    """Stream every input vector through the DUT and record every output word."""
    with open(os.environ[CONFIG_ENV]) as f:
        cfg = json.load(f)
    inputs = [int(word, 16) for word in cfg["inputs"]]
    total = len(inputs)
    progress_path = cfg.get("progress")
    rng = random.Random(cfg.get("seed", 0))
    offer = chance(cfg.get("valid_probability", 1.0), rng)
    source = StreamDriver(dut, "i", inputs, idle=lambda k: not offer(), what="input")
    sink = StreamMonitor(
        dut, "o", total, ready=chance(cfg.get("ready_probability", 1.0), rng), what="output",
        on_transfer=progress_writer(progress_path, total))

    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    if hasattr(dut, "load__en"):            # SPRAM layers (loaded models): the load port idle
        dut.load__en.value = 0
    source.reset()
    sink.reset()
    for _ in range(int(cfg.get("reset_cycles", 2))):
        await RisingEdge(dut.clk)
    dut.rst.value = 0

    start = time.perf_counter()
    cycles, error = await drive_streams(dut.clk, [source], [sink],
                                        stall_limit=int(cfg.get("stall_limit", 100_000)))
    seconds = time.perf_counter() - start
    write_progress(progress_path, len(sink.words), total)
    write_json(cfg["results"], {"outputs": [format(w, "x") for w in sink.words],
                                "cycles": cycles, "seconds": seconds, "error": error})
    assert error is None, error
