"""Run :class:`qnnfab.rtl.network.Network` in Amaranth's Python simulator."""

from dataclasses import dataclass

import numpy as np

from qnnfab import ir
from qnnfab.spec import golden

from .arguments import check_progress
from .payload import network_layouts, pack_inputs, unpack_outputs
from .stream_io import StreamSink, StreamSource, gaps_per_item, run_streams

__all__ = ["AmaranthRun", "run_amaranth", "measure_timing"]


@dataclass
class AmaranthRun:
    """Results of :func:`run_amaranth`: ``classes`` (n,), ``scores`` (n, n_out), ``cycles``
    (simulated clock cycles from the first input offered to the last output accepted),
    ``in_cycles`` (the cycle each input was first offered), ``out_cycles`` (the cycle of each
    output transfer)."""
    classes: np.ndarray
    scores: np.ndarray
    cycles: int
    in_cycles: list
    out_cycles: list


def run_amaranth(network, codes, folding=None, *, progress=None, ready=None, gaps=None,
                 style="folded", weights_in="ebr", input_buffer=False):
    """Simulate ``network`` on ``codes`` (n, input_features) and return an :class:`AmaranthRun`.

    Parameters
    ----------
    network : ir.Network
    codes : array of int
    folding : passed to :class:`~qnnfab.rtl.network.Network` (None: automatic)
    style : the layers' styles, passed to :class:`~qnnfab.rtl.network.Network`
    weights_in : where the layers keep their weights (``"ebr"``, ``"spram"`` or one per layer),
        passed to :class:`~qnnfab.rtl.network.Network`; SPRAM layers start loaded
    input_buffer : the input vector in block RAM (:class:`~qnnfab.rtl.network.Network`'s
        ``input_buffer``): the codes go in one per transfer; ``in_cycles`` are then the
        cycles each vector's first code was offered
    progress : callable(done, total), optional, called after each output
    ready : callable(cycle) -> bool, optional
        Back-pressure: ``o.ready`` in each cycle (default always ready).
    gaps : callable(k) -> int, optional
        Idle cycles before offering input ``k`` (default 0).
    """
    from qnnfab.rtl.network import Network

    if not isinstance(network, ir.Network):
        raise TypeError(f"network must be a qnnfab.ir.Network, not {network!r}")
    check_progress(progress)
    codes = golden.check_inputs(network, codes)
    n = len(codes)
    dut = Network(network, folding, style=style, weights_in=weights_in,
                  input_buffer=input_buffer)
    in_layout, out_layout = network_layouts(network)
    per_input = 1
    if input_buffer:
        per_input = network.input_features
        packed = codes.reshape(-1).tolist()
    else:
        packed = pack_inputs(in_layout, codes)
    idle = None
    if gaps is not None:
        # Gaps before a vector's first code only (per_input == 1: before each vector).
        idle = gaps_per_item(lambda j: gaps(j // per_input) if j % per_input == 0 else 0)
    source = StreamSource(dut.i, packed, raw=True, idle=idle)
    sink = StreamSink(dut.o, n, raw=True, on_transfer=None if progress is None else
                      (lambda done: progress(done, n)),
                      ready=None if ready is None else (lambda cycle: bool(ready(cycle))))
    run_streams(dut, [source], [sink])
    classes, scores = unpack_outputs(out_layout, sink.payloads)
    in_cycles, out_cycles = source.offered[::per_input], sink.cycles
    cycles = (out_cycles[-1] + 1) if out_cycles else 0
    return AmaranthRun(classes=classes, scores=scores, cycles=cycles, in_cycles=in_cycles,
                       out_cycles=out_cycles)


def measure_timing(network, folding=None, *, n=4, seed=0, style="folded"):
    """Latency and steady-state interval of ``network``'s hardware (its layers in ``style``),
    measured by simulating ``n`` random inputs offered back to back (eager source and sink).

    Returns ``{"latency": cycles from the first input offered to the first output,
    "cycles_per_inference": the largest gap between consecutive outputs}`` -- for a CNN the
    figures a report needs, since :class:`~qnnfab.rtl.network.Network` only bounds them."""
    from qnnfab import random_net

    if n < 2:
        raise ValueError(f"measure_timing: n must be >= 2 (an interval needs two outputs), not {n}")
    codes = random_net.random_inputs(np.random.default_rng(seed), network, n)
    run = run_amaranth(network, codes, folding, style=style)
    gaps = np.diff(run.out_cycles)
    return {"latency": int(run.out_cycles[0] - run.in_cycles[0]),
            "cycles_per_inference": int(gaps.max())}
