"""Networks in the bulk Verilator simulator (:mod:`qnnfab.sim.verilator_bulk`).

One network (what :func:`qnnfab.sim.runner.simulate` runs for ``simulator="verilator"``)::

    run = run_network(net, codes, folding=None, build_dir=None, seed=0)
    run.classes, run.scores, run.cycles

Many networks side by side in one build, each on its own inputs (what ``make fuzz`` runs: one
Verilator compile for a whole batch instead of one per network)::

    runs = run_networks([(net_a, folding_a, codes_a), (net_b, None, codes_b)], build_dir=tmp)

or built once and run several times (:func:`build_networks`, :func:`run_built`).

The single network is the Verilog of :func:`qnnfab.rtl.verilog.to_verilog` (the same text the
cocotb path and the gate-level flow use, so caches and netlists line up); a batch is one
:class:`NetworkBatch` component, written to Verilog once (one Yosys run for the batch).
Inputs are packed and outputs unpacked in numpy from the port contract of
:class:`qnnfab.rtl.network.Network` (:func:`qnnfab.sim.payload.network_layouts`). Each
network's lane waits at most :func:`qnnfab.sim.network_harness.stall_limit` cycles for an
output.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from amaranth.back import verilog as amaranth_verilog
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import connect, flipped

from qnnfab.spec import golden

from .network_harness import TOPLEVEL, stall_limit
from .payload import network_layouts
from .verilator_bulk import Lane, build_bulk, pack_words, run_bulk, words_field

__all__ = ["NetworkBatch", "NetworkRun", "BatchModel", "BATCH_TOPLEVEL", "SPEED_CYCLES",
           "network_lane", "unpack_network", "choose_optimize", "run_network", "build_networks",
           "run_built", "run_networks", "network_unit"]

#: Module name of a :class:`NetworkBatch` in its Verilog.
BATCH_TOPLEVEL = "qnnfab_batch"


def network_unit(network, folding=None, *, style="folded", weights_in="ebr", input_buffer=False):
    """The component a harness drives for ``network``: :class:`~qnnfab.rtl.network.Network`,
    or with ``input_buffer`` a :class:`~qnnfab.sim.vector_fed.VectorFedNetwork` (the same
    whole-vector interface, each vector serialized into the buffered network's codes)."""
    from qnnfab.rtl.network import Network

    from .vector_fed import VectorFedNetwork
    return (VectorFedNetwork if input_buffer else Network)(network, folding, style=style,
                                                           weights_in=weights_in)


class NetworkBatch(wiring.Component):
    """Several networks' hardware side by side, for one simulator build.

    Parameters
    ----------
    networks : list of qnnfab.ir.Network
    foldings : list, optional
        One folding (or None, the automatic one) per network.
    styles : list, optional
        One style (``"folded"``, ``"unrolled"`` or one per layer,
        :func:`qnnfab.rtl.network.resolve_styles`) per network; default all folded.
    weights_in : list, optional
        One weight placement (``"ebr"``, ``"spram"`` or one per layer,
        :func:`qnnfab.rtl.network.resolve_weights_in`) per network; default all ``"ebr"``.
        SPRAM layers start loaded (their load ports are left idle).
    input_buffers : list of bool, optional
        Per network: its input vector in block RAM (:class:`~qnnfab.sim.vector_fed.
        VectorFedNetwork`: the vector serialized into the network's code stream); default
        none.

    Members
    -------
    n<k>_i, n<k>_o
        Network ``k``'s ``i`` and ``o`` streams (:class:`qnnfab.rtl.network.Network`'s
        signature); the networks share only ``clk`` and ``rst``.
    """

    def __init__(self, networks, foldings=None, styles=None, weights_in=None,
                 input_buffers=None):
        networks = list(networks)
        if not networks:
            raise ValueError("networks: expected at least one network")
        foldings = [None] * len(networks) if foldings is None else list(foldings)
        styles = ["folded"] * len(networks) if styles is None else list(styles)
        weights_in = ["ebr"] * len(networks) if weights_in is None else list(weights_in)
        input_buffers = [False] * len(networks) if input_buffers is None \
            else list(input_buffers)
        for what, given in (("foldings", foldings), ("styles", styles),
                            ("weights_in", weights_in), ("input_buffers", input_buffers)):
            if len(given) != len(networks):
                raise ValueError(f"{what}: expected {len(networks)} (one per network), got "
                                 f"{len(given)}")
        self.units = [network_unit(net, fold, style=style, weights_in=where,
                                   input_buffer=buffered)
                      for net, fold, style, where, buffered in zip(networks, foldings, styles,
                                                                   weights_in, input_buffers)]
        members = {}
        for k, unit in enumerate(self.units):
            members[f"n{k}_i"] = unit.signature.members["i"]
            members[f"n{k}_o"] = unit.signature.members["o"]
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        for k, unit in enumerate(self.units):
            m.submodules[f"n{k}"] = unit
            connect(m, flipped(getattr(self, f"n{k}_i")), unit.i)
            connect(m, unit.o, flipped(getattr(self, f"n{k}_o")))
        return m


@dataclass
class NetworkRun:
    """One network's bulk simulation: ``classes`` (n,) and ``scores`` (n, n_out) int64,
    ``cycles`` (its last output, from the release of reset), ``seconds`` and ``cpu_seconds``
    (wall and CPU time of the whole C++ loop), ``compile_seconds`` (0.0 when the build was
    reused) and ``build_dir``."""
    classes: np.ndarray
    scores: np.ndarray
    cycles: int
    seconds: float
    compile_seconds: float
    build_dir: Path
    cpu_seconds: float = 0.0


def network_lane(network, *, input="i", output="o"):
    """The :class:`~qnnfab.sim.verilator_bulk.Lane` of ``network``'s stream ports."""
    in_layout, out_layout = network_layouts(network)
    return Lane(in_width=in_layout.size, out_width=out_layout.size, input=input, output=output)


def unpack_network(network, words):
    """``(classes, scores)`` int64 arrays from ``o__payload`` words (n, out_words) ``uint32``:
    the ``cls`` and ``scores`` fields of the output layout, read in numpy."""
    _, layout = network_layouts(network)
    cls, scores = layout["cls"], layout["scores"]
    classes = words_field(words, cls.offset, cls.shape.width)[:, 0]
    values = words_field(words, scores.offset, scores.shape.elem_shape.width, signed=True,
                         count=scores.shape.length)
    return classes, values


#: Estimated cycles of a run from which :func:`run_network` compiles for speed (``-O3``, about
#: twice the compile time, three to four times the cycles per second) rather than for a quick
#: build (``-O0``).
SPEED_CYCLES = 2_000_000


def choose_optimize(network, folding, n):
    """``"speed"`` when ``n`` vectors through ``network`` take about :data:`SPEED_CYCLES`
    cycles or more (the slowest layer's issue steps per vector,
    :func:`qnnfab.rtl.folding.network_cycles`), else ``"build"``."""
    from qnnfab.rtl.folding import auto_folding, network_cycles
    fold = auto_folding(network) if folding is None else folding
    return "speed" if n * network_cycles(network, fold) >= SPEED_CYCLES else "build"


def run_network(network, codes, *, folding=None, build_dir=None, ready_probability=1.0,
                valid_probability=1.0, seed=0, progress=None, log=None, toplevel=None,
                optimize=None, style="folded", weights_in="ebr", input_buffer=False):
    """Simulate ``network`` (at ``folding``, its layers in ``style``: ``"folded"``,
    ``"unrolled"`` or one per layer, weights as ``weights_in`` places them, SPRAM layers
    loaded; ``input_buffer``: the input vector in block RAM, each vector serialized into its
    code stream, :class:`~qnnfab.sim.vector_fed.VectorFedNetwork`) on ``codes`` (n,
    input_features); returns a :class:`NetworkRun`. The build is cached in ``build_dir``
    (default cache root) by the Verilog's hash and ``optimize`` (None:
    :func:`choose_optimize`). Other arguments as :func:`qnnfab.sim.verilator_bulk.run_bulk`;
    :class:`~qnnfab.sim.verilator_bulk.BulkStallError` if the hardware stops answering."""
    from qnnfab.rtl.verilog import to_verilog
    codes = golden.check_inputs(network, codes)
    if optimize is None:
        optimize = choose_optimize(network, folding, len(codes))
    toplevel = TOPLEVEL if toplevel is None else toplevel
    if input_buffer:
        text = amaranth_verilog.convert(
            network_unit(network, folding, style=style, weights_in=weights_in,
                         input_buffer=True),
            name=toplevel, emit_src=False)
    else:
        text = to_verilog(network, folding, name=toplevel, style=style, weights_in=weights_in)
    model = build_bulk(text, [network_lane(network)], toplevel=toplevel, build_dir=build_dir,
                       log=log, optimize=optimize)
    run = run_bulk(model, [pack_words(codes, network.input_bits)],
                   stall_limits=[stall_limit(network, ready_probability, valid_probability)],
                   ready_probability=ready_probability, valid_probability=valid_probability,
                   seed=seed, progress=progress)
    classes, scores = unpack_network(network, run.outputs[0])
    return NetworkRun(classes=classes, scores=scores, cycles=run.cycles[0], seconds=run.seconds,
                      compile_seconds=run.compile_seconds, build_dir=run.build_dir,
                      cpu_seconds=run.cpu_seconds)


@dataclass
class BatchModel:
    """A built :class:`NetworkBatch`: the :class:`~qnnfab.sim.verilator_bulk.BulkModel` and
    its networks, in lane order (from :func:`build_networks`)."""
    model: object
    networks: list

    def remove(self):
        """Delete the build folder (for ``cache=False`` builds)."""
        self.model.remove()


def build_networks(networks, foldings=None, *, build_dir=None, log=None, optimize="build",
                   cache=False, jobs=None, styles=None, weights_in=None, input_buffers=None):
    """Build a :class:`NetworkBatch` of ``networks`` (``foldings``, ``styles``,
    ``weights_in``: one per network, or None) for bulk runs; returns a :class:`BatchModel`
    (run it with :func:`run_built`).
    ``cache=True`` keeps and reuses the build like :func:`run_network`'s; ``optimize``:
    ``"build"`` (quick compile) or ``"speed"``."""
    networks = list(networks)
    batch = NetworkBatch(networks, foldings, styles, weights_in, input_buffers)
    text = amaranth_verilog.convert(batch, name=BATCH_TOPLEVEL, emit_src=False)
    lanes = [network_lane(net, input=f"n{k}_i", output=f"n{k}_o")
             for k, net in enumerate(networks)]
    model = build_bulk(text, lanes, toplevel=BATCH_TOPLEVEL, build_dir=build_dir, log=log,
                       optimize=optimize, cache=cache, jobs=jobs)
    return BatchModel(model=model, networks=networks)


def run_built(batch, codes, *, ready_probability=1.0, valid_probability=1.0, seed=0,
              progress=None):
    """Run a :class:`BatchModel`, network ``k`` on ``codes[k]`` (n_k, input_features); returns
    one :class:`NetworkRun` per network (``seconds`` and ``compile_seconds`` are the
    batch's). :class:`~qnnfab.sim.verilator_bulk.BulkStallError` if a network stops answering
    (its message names the lane, i.e. the network's index)."""
    nets = batch.networks
    if len(codes) != len(nets):
        raise ValueError(f"codes: expected one array per network ({len(nets)}), got "
                         f"{len(codes)}")
    codes = [golden.check_inputs(net, c) for net, c in zip(nets, codes)]
    run = run_bulk(batch.model, [pack_words(c, net.input_bits) for net, c in zip(nets, codes)],
                   stall_limits=[stall_limit(net, ready_probability, valid_probability)
                                 for net in nets],
                   ready_probability=ready_probability, valid_probability=valid_probability,
                   seed=seed, progress=progress)
    out = []
    for net, words, cycles in zip(nets, run.outputs, run.cycles):
        classes, scores = unpack_network(net, words)
        out.append(NetworkRun(classes=classes, scores=scores, cycles=cycles,
                              seconds=run.seconds, compile_seconds=run.compile_seconds,
                              build_dir=run.build_dir, cpu_seconds=run.cpu_seconds))
    return out


def run_networks(items, *, build_dir=None, ready_probability=1.0, valid_probability=1.0,
                 seed=0, log=None, optimize="build", cache=False, jobs=None):
    """Simulate several networks in one Verilator build, each on its own inputs
    (:func:`build_networks` then :func:`run_built`).

    ``items``: ``(network, folding, codes)`` triples, or ``(network, folding, codes, style)``
    (the layers' styles, :func:`qnnfab.rtl.network.resolve_styles`; default ``"folded"``), or
    with a fifth entry, the weight stores (:func:`qnnfab.rtl.network.resolve_weights_in`;
    default ``"ebr"``; SPRAM models start loaded) and a sixth, whether the input vector is in
    block RAM (:class:`~qnnfab.sim.vector_fed.VectorFedNetwork`; default False).
    Returns one :class:`NetworkRun` per item, in order. ``cache=False`` (the default: a batch
    is rarely run twice) builds in a fresh folder of ``build_dir`` and deletes it afterwards."""
    items = [(item[0], item[1], golden.check_inputs(item[0], item[2]),
              item[3] if len(item) > 3 else "folded", item[4] if len(item) > 4 else "ebr",
              bool(item[5]) if len(item) > 5 else False)
             for item in items]
    batch = build_networks([item[0] for item in items], [item[1] for item in items],
                           build_dir=build_dir, log=log, optimize=optimize, cache=cache,
                           jobs=jobs, styles=[item[3] for item in items],
                           weights_in=[item[4] for item in items],
                           input_buffers=[item[5] for item in items])
    try:
        return run_built(batch, [item[2] for item in items],
                         ready_probability=ready_probability,
                         valid_probability=valid_probability, seed=seed)
    finally:
        if not cache:
            batch.remove()
