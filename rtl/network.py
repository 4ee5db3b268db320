"""A whole network in hardware: one :class:`~qnnfab.rtl.mvu.MatrixVectorUnit` per dense layer,
chained by streams, then an :class:`~qnnfab.rtl.argmax.Argmax`; a CNN's conv and pool layers
before them work on pixel streams (:class:`~qnnfab.rtl.conv.ConvUnit`,
:class:`~qnnfab.rtl.maxpool.MaxPool`), between a pixel serializer and a flatten.

Each dense layer has a *style*: ``folded`` (the matrix-vector unit, weights in memory) or
``unrolled`` (weights as constants in the logic, one input per clock:
:mod:`qnnfab.rtl.unrolled_dense`). Consecutive unrolled layers form one
:class:`~qnnfab.rtl.unrolled_dense.UnrolledChain`, with the pipelined argmax when it ends the
network. :func:`resolve_styles` turns ``"folded"``, ``"unrolled"``, ``"auto"`` (unroll what
fits a logic budget, by the fit estimate) or a list into one style per layer."""

from dataclasses import dataclass

from amaranth.hdl import Module, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out, connect, flipped

from qnnfab import ir

from ._checks import mark_used, quiet_on_error
from .argmax import Argmax, argmax_layout
from .conv import ConvUnit
from . import estimate as _estimate
from . import timing
from .cse import UnrollError, layer_matrix, tree_depth
from .folding import LayerFolding, auto_folding, check_folding, layer_cycles
from .input_buffer import why_no_input_buffer
from .maxpool import MaxPool
from .mvu import MatrixVectorUnit, dot_unit_class, weight_code_bits, weight_words
from .pixels import PixelsToVector, VectorToPixels
from .spram import SPRAM_DEPTH, load_signature, spram_blocks, spram_words
from .unrolled_dense import DEFAULT_LEVELS_PER_STAGE, UnrolledChain

__all__ = ["Network", "STYLES", "resolve_styles", "UnrollError", "WEIGHT_STORES",
           "resolve_weights_in", "check_input_buffer"]

#: The per-layer styles; ``style=`` also takes ``"auto"`` (see :func:`resolve_styles`).
STYLES = ("folded", "unrolled")

#: Where a folded dense layer keeps its weights: ``"ebr"`` (a ``lib.memory.Memory`` with the
#: weights as init: block RAM or logic) or ``"spram"`` (:mod:`qnnfab.rtl.spram`, loaded after
#: configuration).
WEIGHT_STORES = ("ebr", "spram")


def resolve_weights_in(network, weights_in="ebr", styles=None):
    """One weight store per layer of ``network``, ``"ebr"`` or ``"spram"``.

    ``weights_in``: ``"ebr"`` (every layer), ``"spram"`` (every folded dense layer; the others
    keep ``"ebr"``, which for them means weights in logic or their own memories) or a list,
    one entry per layer (``"spram"`` on a conv, pool or unrolled layer raises ValueError
    naming it). ``styles``: the layers' styles (None: all folded)."""
    layers = network.layers
    styles = ["folded"] * len(layers) if styles is None else list(styles)

    def spram_ok(k):
        return isinstance(layers[k], ir.DenseLayer) and styles[k] == "folded"
    if isinstance(weights_in, str):
        if weights_in == "ebr":
            return ["ebr"] * len(layers)
        if weights_in == "spram":
            return ["spram" if spram_ok(k) else "ebr" for k in range(len(layers))]
        raise ValueError(f"weights_in must be one of ebr, spram or a list of one per layer, "
                         f"not {weights_in!r}")
    try:
        stores = list(weights_in)
    except TypeError:
        raise TypeError(f"weights_in must be a string or a list, not {weights_in!r}") from None
    if len(stores) != len(layers):
        raise ValueError(f"weights_in: expected {len(layers)} entries (one per layer), got "
                         f"{len(stores)}")
    for k, s in enumerate(stores):
        if s not in WEIGHT_STORES:
            raise ValueError(f"weights_in[{k}]: expected one of {', '.join(WEIGHT_STORES)}, "
                             f"got {s!r}")
        if s == "spram" and not spram_ok(k):
            what = "unrolled" if styles[k] == "unrolled" else type(layers[k]).__name__
            raise ValueError(f"weights_in[{k}]: only folded dense layers keep their weights in "
                             f"SPRAM; layers[{k}] is {what}")
    return stores


def resolve_styles(network, style="folded", *, folding=None, budget_lc=None, lane_scale=None,
                   levels_per_stage=DEFAULT_LEVELS_PER_STAGE, cse=True):
    """One style per layer of ``network``, ``"folded"`` or ``"unrolled"``.

    Parameters
    ----------
    style : str or list of str
        ``"folded"``: every layer folded. ``"unrolled"``: every dense layer unrolled (conv and
        pool layers stay folded). A list: one entry per layer (``"unrolled"`` on a conv or
        pool layer raises :class:`~qnnfab.rtl.cse.UnrollError` naming it). ``"auto"``: start
        folded and unroll dense layers, the slowest first (most folded cycles per input),
        while the fit estimate (:func:`qnnfab.rtl.estimate.estimate` with ``styles``) stays
        within ``budget_lc``, stopping at the first that does not fit (unrolling a faster
        layer would cost logic and not shorten the interval); needs ``budget_lc``.
    folding : the folding of the folded layers (default :func:`auto_folding`), for ``auto``
    budget_lc : int, the logic cells / LUT4s ``auto`` may use (e.g. a share of a device's)
    lane_scale : passed to the estimate (a family's lane costs)
    levels_per_stage, cse : the unrolled layers' parameters (the estimate depends on them)
    """
    if not isinstance(network, ir.Network):
        raise TypeError(f"network must be a qnnfab.ir.Network, not {network!r}")
    layers = network.layers
    if isinstance(style, str):
        if style == "folded":
            return ["folded"] * len(layers)
        if style == "unrolled":
            return ["unrolled" if isinstance(ly, ir.DenseLayer) else "folded" for ly in layers]
        if style == "auto":
            return _auto_styles(network, folding, budget_lc, lane_scale, levels_per_stage, cse)
        raise ValueError(f"style must be one of folded, unrolled, auto or a list of one style "
                         f"per layer, not {style!r}")
    try:
        styles = list(style)
    except TypeError:
        raise TypeError(f"style must be a string or a list of styles, not {style!r}") from None
    if len(styles) != len(layers):
        raise ValueError(f"style: expected {len(layers)} entries (one per layer), got "
                         f"{len(styles)}")
    for k, (layer, s) in enumerate(zip(layers, styles)):
        if s not in STYLES:
            raise ValueError(f"style[{k}]: expected one of {', '.join(STYLES)}, got {s!r}")
        if s == "unrolled":
            layer_matrix(layer, f"layers[{k}]")     # UnrollError for conv and pool layers
    return styles


def _auto_styles(network, folding, budget_lc, lane_scale, levels_per_stage, cse):
    if budget_lc is None:
        raise ValueError("style='auto' needs budget_lc, the logic cells (LUT4s) the design may "
                         "use (e.g. a share of the device's)")
    folding = check_folding(network, auto_folding(network) if folding is None else folding)
    pairs = [(f.pe, f.simd) for f in folding]
    styles = ["folded"] * len(network.layers)

    def fits(trial):
        est = _estimate.estimate(network, pairs, lane_scale=lane_scale, styles=trial,
                                 levels_per_stage=levels_per_stage, cse=cse)
        return est["lc"] <= budget_lc
    order = sorted((k for k, ly in enumerate(network.layers) if isinstance(ly, ir.DenseLayer)),
                   key=lambda k: (-layer_cycles(network.layers[k], folding[k]), k))
    for k in order:
        trial = list(styles)
        trial[k] = "unrolled"
        if not fits(trial):
            # A faster layer unrolled would not shorten the interval (this one stays folded).
            break
        styles = trial
    return styles


class Network(wiring.Component):
    """The hardware of a quantized network.

    Parameters
    ----------
    network : ir.Network
    folding : list of LayerFolding or (pe, simd), optional
        One per layer; ``None`` uses :func:`~qnnfab.rtl.folding.auto_folding`. A PE that does
        not divide ``out_features`` or a SIMD that does not divide ``in_features`` raises
        :class:`~qnnfab.rtl.folding.FoldingError`.
    pipelined : bool
        Pipeline registers inside the dot-product units (default; off only for experiments).
    style : str or list of str
        ``"folded"`` (default), ``"unrolled"``, ``"auto"`` or one style per layer
        (:func:`resolve_styles`; ``auto`` needs ``budget_lc``). The folding entries of
        unrolled layers are not used (:attr:`folding` reports them as ``(out, in)``, every
        weight at once).
    levels_per_stage : int
        Unrolled layers: adder levels between pipeline registers.
    cse : bool
        Unrolled layers: share partial sums between neurons (:mod:`qnnfab.rtl.cse`).
    budget_lc, lane_scale
        For ``style="auto"`` (:func:`resolve_styles`).
    weights_in : str or list of str
        ``"ebr"`` (default: weights as memory init), ``"spram"`` or one per layer
        (:func:`resolve_weights_in`): where each folded dense layer keeps its weights.
    weights_loaded : bool
        SPRAM layers' simulation models start with their weights (default: the state after a
        load, so network simulations need no load) or with zeros (``False``: a board right
        after configuration; on an iCE40 SPRAM always starts unknown).
    input_buffer : bool
        The input vector in block RAM (:class:`~qnnfab.rtl.input_buffer.InputBuffer`, two
        banks) instead of flip-flops: ``i`` takes one code per transfer. Needs a folded dense
        first layer with SIMD below its inputs (:func:`check_input_buffer`).

    Members
    -------
    i : In(stream.Signature(ArrayLayout(unsigned(input_bits), input_features)))
        One input vector per transfer; element ``j`` at bits ``[j*bits, (j+1)*bits)``. With
        ``input_buffer``: ``In(stream.Signature(unsigned(input_bits)))``, the vector's codes
        one per transfer, element 0 first (``input_features`` transfers per inference).
    restart : In(1), only with ``input_buffer``
        Drop the codes of an incomplete vector: the next code is element 0 again.
    o : Out(stream.Signature(StructLayout({"cls": unsigned(max(1, ceil_log2(n_out))),
        "scores": ArrayLayout(signed(last.acc_width), n_out)})))
        The class (first index of the largest score) and the scores.
    load : In(load_signature(spram_words)), only when some layer's weights are in SPRAM
        Weight loading, one 16-bit word per cycle with ``en`` (:func:`qnnfab.rtl.spram.
        load_signature`), while the network is idle. The address space (:attr:`spram_layout`)
        is the SPRAM layers' in layer order, each ``blocks · steps`` words, block-major: word
        ``base + b·steps + row`` is bits ``[16·b, 16·b + 16)`` of the layer's weight memory
        word ``row`` (:func:`~qnnfab.rtl.mvu.weight_words`); :meth:`load_words` gives them.

    Timing (:mod:`qnnfab.rtl.timing`): :attr:`interval` is the steady-state interval between
    inputs (about the slowest layer's steps per vector, 1 when every layer is unrolled; a
    report's ``cycles_per_inference``);
    :attr:`latency` the cycles from the first cycle an input is offered (network idle) to
    ``o.valid``, without back-pressure. ``i.ready`` rises
    when the first layer has read the last slice of the input, not when it starts: hold
    ``i.payload`` until then, as the stream rules require (with ``input_buffer`` the codes go
    in one per cycle while a bank is free, ``input_features`` cycles of the latency and at
    least as many of the interval).
    """

    @quiet_on_error
    def __init__(self, network, folding=None, *, pipelined=True, style="folded",
                 levels_per_stage=DEFAULT_LEVELS_PER_STAGE, cse=True, budget_lc=None,
                 lane_scale=None, weights_in="ebr", weights_loaded=True, input_buffer=False):
        if not isinstance(network, ir.Network):
            raise TypeError(f"network must be a qnnfab.ir.Network, not {network!r}")
        network.validate()
        network.require_integer("hardware")
        self.network = network
        if folding is None:
            folding = auto_folding(network)
        self._folding = check_folding(network, folding)
        self.pipelined = bool(pipelined)
        self.levels_per_stage = levels_per_stage
        self.cse = bool(cse)
        self._styles = resolve_styles(network, style, folding=self._folding,
                                      budget_lc=budget_lc, lane_scale=lane_scale,
                                      levels_per_stage=levels_per_stage, cse=self.cse)
        # Sub-components are built in elaborate(); the timing comes from the same model.
        self._cycles = [1 if s == "unrolled" else layer_cycles(layer, f)
                        for layer, f, s in zip(network.layers, self._folding, self._styles)]
        self._levels = [tree_depth(layer_matrix(layer)) if s == "unrolled" else None
                        for layer, s in zip(network.layers, self._styles)]
        self.is_cnn = network.input_shape is not None
        self.input_buffer = bool(input_buffer)
        if self.input_buffer:
            check_input_buffer(network, self._folding, self._styles)
        self._timings = self._stage_timings()
        self._weights_in = resolve_weights_in(network, weights_in, self._styles)
        self.weights_loaded = bool(weights_loaded)
        last = network.layers[-1]
        members = {
            "i": In(stream.Signature(data.ArrayLayout(unsigned(network.input_bits),
                                                      network.input_features))),
            "o": Out(stream.Signature(argmax_layout(last.out_features, last.acc_width))),
        }
        if self.input_buffer:
            members["i"] = In(stream.Signature(unsigned(network.input_bits)))
            members["restart"] = In(1)
        self._spram_layout = self._make_spram_layout()
        if self._spram_layout:
            members["load"] = In(load_signature(self.spram_words))
        super().__init__(members)
        # A Network is often built only to read its folding and timing (reports, fit checks):
        # do not warn (UnusedElaboratable) when it is never elaborated.
        mark_used(self)

    @property
    def folding(self):
        """The folding used, one :class:`~qnnfab.rtl.folding.LayerFolding` per layer; an
        unrolled layer's is ``(out_features, in_features)``: every weight at once."""
        return [LayerFolding(ly.out_features, ly.in_features) if s == "unrolled" else f
                for ly, f, s in zip(self.network.layers, self._folding, self._styles)]

    @property
    def styles(self):
        """The style of each layer, ``"folded"`` or ``"unrolled"``."""
        return list(self._styles)

    @property
    def weights_in(self):
        """Where each layer keeps its weights, ``"ebr"`` or ``"spram"``."""
        return list(self._weights_in)

    def _make_spram_layout(self):
        layout, base = [], 0
        for k, store in enumerate(self._weights_in):
            if store != "spram":
                continue
            layer, f = self.network.layers[k], self._folding[k]
            width = f.pe * f.simd * weight_code_bits(layer)
            depth = layer_cycles(layer, f)
            if depth > SPRAM_DEPTH:
                raise ValueError(f"weights_in[{k}]: layers[{k}] at folding {f.pe}:{f.simd} "
                                 f"has {depth} weight words, more than an SPRAM's "
                                 f"{SPRAM_DEPTH}: raise its PE or SIMD")
            words = spram_words(width, depth)
            layout.append(SPRAMRegion(layer=k, base=base, words=words,
                                      blocks=spram_blocks(width), depth=depth, width=width))
            base += words
        return layout

    @property
    def spram_layout(self):
        """The load address space: one :class:`SPRAMRegion` (``layer``, ``base``, ``words``,
        ``blocks``, ``depth``, ``width``) per SPRAM layer, in layer order."""
        return list(self._spram_layout)

    @property
    def spram_words(self):
        """16-bit words of the load address space (0 without SPRAM layers)."""
        return sum(r.words for r in self._spram_layout)

    @property
    def spram_blocks(self):
        """SPRAMs (``SB_SPRAM256KA``) the network takes: ``ceil(width / 16)`` per SPRAM
        layer."""
        return sum(r.blocks for r in self._spram_layout)

    def load_words(self):
        """The 16-bit words to write through :attr:`load`, address 0 first (empty without
        SPRAM layers)."""
        out = []
        for r in self._spram_layout:
            f = self._folding[r.layer]
            rows = weight_words(self.network.layers[r.layer], f.pe, f.simd)
            for b in range(r.blocks):
                out += [(w >> (16 * b)) & 0xFFFF for w in rows]
        return out

    def _groups(self):
        """The layers in stage order: ``("layer", k)`` for a folded (or pool) layer,
        ``("chain", [k, ...])`` for a run of unrolled layers."""
        groups = []
        for k, s in enumerate(self._styles):
            if s == "unrolled":
                if groups and groups[-1][0] == "chain" and groups[-1][1][-1] == k - 1:
                    groups[-1][1].append(k)
                else:
                    groups.append(("chain", [k]))
            else:
                groups.append(("layer", k))
        return groups

    @property
    def _argmax_unrolled(self):
        return self._styles[-1] == "unrolled"

    @staticmethod
    def _chain_name(ks):
        return f"unrolled{ks[0]}" if len(ks) == 1 else f"unrolled{ks[0]}_{ks[-1]}"

    def _stage_timings(self):
        """``(name, Timing, reads_vector)`` per stage of :meth:`stages`, from the IR alone (no
        component is built): see :func:`qnnfab.rtl.timing.chained`."""
        net = self.network
        out = []
        if self.is_cnn:
            h, w, _ = net.input_shape
            out.append(("pixels", timing.vector_to_pixels(h, w), False))
        prev = None
        last = len(net.layers) - 1
        for kind, ks in self._groups():
            if kind == "chain":
                layer = net.layers[ks[0]]
                if isinstance(prev, ir.SPATIAL_KINDS):
                    h, w, _ = prev.out_shape
                    out.append(("flatten", timing.pixels_to_vector(h, w), True))
                n = net.layers[last].out_features if ks[-1] == last else None
                t = timing.unrolled_chain([self._levels[k] for k in ks], self.levels_per_stage,
                                          n)
                out.append((self._chain_name(ks), t, True))
                prev = net.layers[ks[-1]]
                continue
            k = ks
            layer, f = net.layers[k], self._folding[k]
            if isinstance(layer, ir.PoolLayer):
                out.append((f"layer{k}", timing.max_pool(layer.height, layer.width), False))
                prev = layer
                continue
            dot = dot_unit_class(layer).pipeline_latency(f.simd, self.pipelined, layer.in_bits)
            if isinstance(layer, ir.ConvLayer):
                t = timing.conv_unit(layer.height, layer.width, layer.kernel_size,
                                     layer.padding, layer.in_features, layer.out_features,
                                     f.pe, f.simd, dot)
                out.append((f"layer{k}", t, False))
            else:
                if isinstance(prev, ir.SPATIAL_KINDS):
                    h, w, _ = prev.out_shape
                    out.append(("flatten", timing.pixels_to_vector(h, w), True))
                t = timing.mvu(layer.in_features, layer.out_features, f.pe, f.simd, dot)
                if k == 0 and self.input_buffer:
                    t = timing.fed_by_input_buffer(t, layer.in_features)
                out.append((f"layer{k}", t, True))
            prev = layer
        if not self._argmax_unrolled:
            # The tree argmax where the sequential one would set the pace (fast layers).
            slowest = max((t.interval for _, t, _ in out), default=1)
            self._argmax_tree = timing.argmax_needs_tree(net.n_outputs, slowest)
            out.append(("argmax", timing.argmax(net.n_outputs, tree=self._argmax_tree), True))
        return out

    def _stage_refills(self):
        """Per stage of :meth:`stages`: whether its output register refills only the cycle
        after a transfer (False for an unrolled chain's FIFO; :func:`timing.chained`)."""
        return [not name.startswith("unrolled") for name, _, _ in self._timings]

    @property
    def interval(self):
        """Steady-state cycles between inferences with an eager source and sink (a report's
        ``cycles_per_inference``): the largest of :attr:`stage_intervals` (see
        :func:`qnnfab.rtl.timing.chained`: a layer's steps per vector, plus one for a layer
        that reads its whole input at once, ``simd == in_features``, plus one for a layer fed
        by another layer; at least the argmax's interval).

        For a CNN (:attr:`is_cnn`) an estimate, and a lower bound: stages hand pixels over
        through one-deep registers, so a bursty producer (a conv unit's window generator pauses
        at each row's padding) can stall the next one: simulate for the exact figure
        (:func:`qnnfab.sim.amaranth_sim.measure_timing`, which reports use)."""
        return max(self.stage_intervals)

    @property
    def latency(self):
        """Cycles from the first cycle an input is offered (network idle) to ``o.valid``: the
        sum of the stages' latencies; None for a CNN (not modelled: simulate it)."""
        if self.is_cnn:
            return None
        return sum(t.latency for _, t, _ in self._timings)

    @property
    def stage_intervals(self):
        """Cycles per input of each stage of :meth:`stages` in the chain, with an eager source
        and sink (:func:`qnnfab.rtl.timing.chained`): the pixel serializer and the flatten
        (``H·W``), each conv unit (its ``interval``), max-pool (``H·W``), dense unit and the
        argmax (their ``interval``, plus one when fed by another stage)."""
        return timing.chained([(t, reads, refills) for (_, t, reads), refills
                               in zip(self._timings, self._stage_refills())])

    @property
    def layer_cycles(self):
        """Issue steps per input of each layer (:func:`~qnnfab.rtl.folding.layer_cycles`):
        ``(in/simd)·(out/pe)``, times the windows for a conv layer, ``H·W`` for max-pool; 1
        for an unrolled layer."""
        return list(self._cycles)

    @property
    def layer_latencies(self):
        """Latency of each layer's unit (see ``MatrixVectorUnit.latency``); for an unrolled
        layer its pipeline registers (:func:`qnnfab.rtl.timing.unrolled_registers`; its
        chain's output FIFO and argmax tree are not in it); None for a CNN."""
        if self.is_cnn:
            return None
        folded = {name: t.latency for name, t, _ in self._timings}
        return [timing.unrolled_registers(self._levels[k], self.levels_per_stage)
                if s == "unrolled" else folded[f"layer{k}"]
                for k, s in enumerate(self._styles)]

    @property
    def unrolled_levels(self):
        """Adder levels of each unrolled layer's graph (None for a folded layer)."""
        return list(self._levels)

    def stages(self, *, argmax=True):
        """The chain of stream components, input to output (built anew on each call): a
        pixel serializer before the first spatial layer, a :class:`ConvUnit` per conv layer,
        a :class:`MaxPool` per pool layer, a flatten before the first dense layer after them,
        a :class:`MatrixVectorUnit` per folded dense layer and an :class:`UnrolledChain` per
        run of unrolled ones, then the :class:`Argmax` (unless ``argmax`` is false, or the
        last layer is unrolled: its chain ends with the pipelined argmax, unless ``argmax``
        is false)."""
        net = self.network
        stages = []
        if self.is_cnn:
            h, w, c = net.input_shape
            stages.append(("pixels", VectorToPixels(h, w, c, net.input_bits)))
        prev = None
        last = len(net.layers) - 1
        for kind, ks in self._groups():
            if kind == "chain":
                if isinstance(prev, ir.SPATIAL_KINDS):
                    h, w, c = prev.out_shape
                    stages.append(("flatten", PixelsToVector(h, w, c, prev.out_bits)))
                chain = UnrolledChain([net.layers[k] for k in ks],
                                      argmax=argmax and ks[-1] == last,
                                      levels_per_stage=self.levels_per_stage, cse=self.cse,
                                      names=[f"layers[{k}]" for k in ks])
                stages.append((self._chain_name(ks), chain))
                prev = net.layers[ks[-1]]
                continue
            k = ks
            layer, f = net.layers[k], self._folding[k]
            if isinstance(layer, ir.ConvLayer):
                unit = ConvUnit(layer, f, pipelined=self.pipelined)
            elif isinstance(layer, ir.PoolLayer):
                unit = MaxPool(layer.height, layer.width, layer.channels, layer.bits,
                               size=layer.size)
            else:
                if isinstance(prev, ir.SPATIAL_KINDS):
                    h, w, c = prev.out_shape
                    stages.append(("flatten", PixelsToVector(h, w, c, prev.out_bits)))
                unit = MatrixVectorUnit(layer, f, pipelined=self.pipelined,
                                        weight_store=self._weights_in[k],
                                        weights_loaded=self.weights_loaded,
                                        input_buffer=self.input_buffer and k == 0)
            stages.append((f"layer{k}", unit))
            prev = layer
        if argmax and not self._argmax_unrolled:
            last = net.layers[-1]
            stages.append(("argmax", Argmax(n=last.out_features, width=last.acc_width,
                                            tree=self._argmax_tree)))
        return stages

    def elaborate(self, platform):
        m = Module()
        stages = self.stages()
        for name, unit in stages:
            m.submodules[name] = unit
        units = [unit for _, unit in stages]
        connect(m, flipped(self.i), units[0].i)
        if self.input_buffer:
            m.d.comb += units[0].restart.eq(self.restart)
        for k, (a, b) in enumerate(zip(units, units[1:])):
            if handover_fifo(a, b):
                # The window generator pauses at each row's end; without room for a few
                # pixels the pool before it stalls the conv before that, and the CNN ran
                # ~11-19 % slower than its slowest stage (digits-cnn: 1335 cycles per
                # inference on the iCEBreaker's folding, 1124 with this FIFO, the model's).
                width = a.o.payload.shape().size
                fifo = SyncFIFOBuffered(width=width, depth=_estimate.HANDOVER_FIFO_DEPTH)
                m.submodules[f"handover{k}"] = fifo
                m.d.comb += [fifo.w_data.eq(a.o.payload), fifo.w_en.eq(a.o.valid),
                             a.o.ready.eq(fifo.w_rdy), b.i.payload.eq(fifo.r_data),
                             b.i.valid.eq(fifo.r_rdy), fifo.r_en.eq(b.i.ready)]
            else:
                connect(m, a.o, b.i)
        connect(m, units[-1].o, flipped(self.o))
        if self._spram_layout:
            named = dict(stages)
            for r in self._spram_layout:
                port = named[f"layer{r.layer}"].load
                m.d.comb += [port.addr.eq(self.load.addr - r.base),
                             port.data.eq(self.load.data),
                             port.en.eq(self.load.en & (self.load.addr >= r.base)
                                        & (self.load.addr < r.base + r.words))]
        return m


@dataclass(frozen=True)
class SPRAMRegion:
    """One SPRAM layer's part of :attr:`Network.spram_layout`: layer index, first word,
    16-bit words (``blocks · depth``), SPRAMs, depth (weight words) and word width."""
    layer: int
    base: int
    words: int
    blocks: int
    depth: int
    width: int


def check_input_buffer(network, folding, styles):
    """Raise ValueError unless ``network``'s first layer can read its input from an
    :class:`~qnnfab.rtl.input_buffer.InputBuffer`
    (:func:`~qnnfab.rtl.input_buffer.why_no_input_buffer`)."""
    why = why_no_input_buffer(network, folding, styles)
    if why is not None:
        raise ValueError(f"input buffer: {why}")


def handover_fifo(a, b):
    """Whether stage ``b`` gets a FIFO of :data:`~qnnfab.rtl.estimate.HANDOVER_FIFO_DEPTH`
    pixels from ``a``: a conv
    unit fed by a conv or pool unit (not by the pixel serializer, which waits anyway)."""
    return isinstance(b, ConvUnit) and isinstance(a, (ConvUnit, MaxPool))
