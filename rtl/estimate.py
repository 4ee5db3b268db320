"""The resource model: logic cells and block RAMs of a network's hardware under a folding,
before anything is built. The folding search (:mod:`qnnfab.rtl.folding`), the board registry's
fit loop (:func:`qnnfab.boards.registry.board_folding`) and the build's fit check
(:func:`qnnfab.boards.build.check_fit`) all use this one module.

* :func:`lane_cells`: cells of one lane (one weight × one input per cycle) of a layer's dot
  unit, the unit's own :meth:`~qnnfab.rtl.dot_unit.DotUnit.lane_cells`;
* :func:`folding_cost`: what the folding search ranks a layer's foldings by;
* :func:`estimate`: the whole design's cells (and weight bits) for the fit check;
* :func:`bram_blocks_for`: block RAMs the weight memories need;
* :data:`BLOCK_RAM_MIN_BITS`: memories from this size on are marked for block RAM;
* :func:`unrolled_cells`, :func:`unrolled_chain_cells`: the unrolled style (weights in logic,
  :mod:`qnnfab.rtl.unrolled_dense`), from the layer's adder graph (:mod:`qnnfab.rtl.cse`).

Kernel-codebook slots are :attr:`qnnfab.ir.KernelCodebook.slot_bits`.
"""

import math

from qnnfab import ir, numerics

from .binary_weight_dot import BinaryWeightDot
from .cse import adder_cost, cached_graph
from .input_buffer import input_buffer_bits, why_no_input_buffer
from .kinds import dot_unit_class
from .kinds import lane_cells as _unit_lane_cells
from .ternary_dot import TernaryDot
from .xnor_popcount import XnorPopcount

__all__ = ["BLOCK_RAM_MIN_BITS", "TOP_OVERHEAD_LC", "SEARCH_TREE_CELLS_PER_BIT", "lane_cells",
           "search_lane_cells", "folding_cost", "estimate", "spatial_cells", "bram_blocks_for",
           "unrolled_cells", "unrolled_chain_cells", "UNROLLED_SCALE", "comparator_cells",
           "FAMILY_UNROLLED_SCALE", "spram_blocks_for"]

#: Memories (weights, kernel indices, the learner's) of at least this many bits are marked
#: ``ram_style = "block"`` (iCE40 EBR).
BLOCK_RAM_MIN_BITS = 2048

#: A crude logic-cell count for the UART, framing FSM and glue of the board top.
TOP_OVERHEAD_LC = 150

#: Cells of an :class:`~qnnfab.rtl.input_buffer.InputBuffer` beside its word shift register:
#: lane and word counters, bank flags, address adders.
INPUT_BUFFER_LC = 40

#: The folding search counts a lane of an adder-tree unit (:data:`ADDER_TREE_UNITS`: binary and
#: ternary weights) at this many cells per input bit, in dense and conv layers alike: the
#: tree's synthesized cost. The fit estimate's :func:`lane_cells` for those units is calibrated
#: to packed builds instead (``in_bits`` in a dense layer, a lower bound; ``4.5·in_bits`` in a
#: conv layer, which carries the window hardware's share). The search keeps its own weight so
#: that it ranks foldings as it always has: with :func:`lane_cells` the default folding of the
#: 64-256-256-10 network on the ULX3S-85F would change (last layer 5:32 to 1:256).
SEARCH_TREE_CELLS_PER_BIT = 3

#: The dot units whose lanes are adder trees (see :data:`SEARCH_TREE_CELLS_PER_BIT`).
ADDER_TREE_UNITS = (XnorPopcount, BinaryWeightDot, TernaryDot)


def lane_cells(layer):
    """Estimated logic cells of one lane of ``layer``'s dot unit, as the fit estimate counts
    them: :meth:`DotUnit.lane_cells <qnnfab.rtl.dot_unit.DotUnit.lane_cells>` of the unit
    :func:`~qnnfab.rtl.kinds.dot_unit_class` chooses (binary and ternary: ``in_bits`` dense,
    ``4.5·in_bits`` conv; codebook: :func:`~qnnfab.rtl.codebook_dot.codebook_lane_cells`)."""
    return _unit_lane_cells(layer)


def search_lane_cells(layer):
    """The per-lane cost the folding search ranks foldings by: :func:`lane_cells`, except for
    an adder-tree unit, counted at :data:`SEARCH_TREE_CELLS_PER_BIT` cells per input bit."""
    if issubclass(dot_unit_class(layer), ADDER_TREE_UNITS):
        return SEARCH_TREE_CELLS_PER_BIT * layer.in_bits
    return lane_cells(layer)


def folding_cost(layer, folding):
    """A rough logic-cell estimate of a layer's unit under ``folding`` (a ``LayerFolding``),
    used to choose among foldings that meet the same cycle target: the lanes
    (:func:`search_lane_cells` each), the ``in/simd``-way input multiplexer (~1 cell per 3
    inputs per bit), and per-PE accumulator and comparator (~2 cells per accumulator bit)."""
    sf = layer.in_features // folding.simd
    trees = folding.pe * folding.simd * search_lane_cells(layer)
    mux = folding.simd * layer.in_bits * (sf - 1) / 3
    per_pe = folding.pe * 2 * layer.acc_width
    return trees + mux + per_pe


#: Factor from the unrolled style's modelled cells (:func:`unrolled_cells`: the adder graph's
#: :func:`~qnnfab.rtl.cse.adder_cost` plus the comparators) to what nextpnr places, fitted to
#: measured builds (yowasp nextpnr-ecp5, ``TRELLIS_COMB`` after packing):
#:
#: * digits-tnn (64x5b-128-128-10, ternary, 2-bit activations) all unrolled behind the UART
#:   board top on the ULX3S-85F, carry chains of at most 32 bits: 52,310 LUT4s where the
#:   unscaled model says 53,142 for its layers and 1,009 for the rest (0.965); with 64-bit
#:   chains 48,290 (0.958);
#: * its layers alone, 64-bit chains (``nextpnr-ecp5 --pack-only``): the first 20,314 (model
#:   21,175, 0.96), the last with the argmax 2,853 (model 2,739, 1.04).
UNROLLED_SCALE = 0.965

#: Factor on the unrolled style's cells per FPGA family (a family's ``lane_scale`` entry
#: ``"unrolled"``; the model above counts adders as segments of shared carry chains, which the
#: unrolled layers no longer build by default: see
#: :class:`~qnnfab.rtl.unrolled_dense.UnrolledChain`'s ``shared_chains``).
#:
#: * ECP5, one carry chain per adder: digits-tnn all unrolled behind the board top on the
#:   ULX3S-85F packed to 62,697 ``TRELLIS_COMB`` where the model (with :data:`UNROLLED_SCALE`)
#:   says 52,256 (1.20); digits-tnn(d32,d10) on the ULX3S-25F 8,864 where it says 7,681 (1.15).
#: * iCE40: no LUT5-7 muxes, flip-flops that do not pair with a LUT take a cell of their own,
#:   and no shared chains either. Measured on the UP5K with the board top: digits-tnn with an
#:   8-wide hidden layer (64x5b-8-10) unrolled, 3,799 ``ICESTORM_LC`` where the model says
#:   2,928 (1.30); with a 16-wide one 6,104 (shared chains; model 4,748).
FAMILY_UNROLLED_SCALE = {"ice40": 1.3, "ecp5": 1.2}


def comparator_cells(width):
    """LUT4s of a comparison of a ``width``-bit value with a constant, as
    :func:`~qnnfab.rtl.adder_tree.ge_const` writes it (a chain of ANDs and ORs that packs
    three bits and the chain into each LUT4)."""
    return max(1, -(-(width - 1) // 3))


def unrolled_cells(layer, *, cse=True):
    """Modelled logic cells of an unrolled dense layer (weights in logic): its adder graph's
    :attr:`~qnnfab.rtl.cse.AdderGraph.cost`, the constant comparators of a hidden layer
    (:func:`comparator_cells` of the tree's output width per threshold, and the code's sum of
    the comparison bits) or the scores' offset adders of an output layer, times
    :data:`UNROLLED_SCALE`. Flip-flops (pipeline registers) pack beside the LUTs and are not
    counted."""
    g = cached_graph(layer, cse=cse)
    cells = g.cost
    for node, _ in g.rows:
        width = 1 if node is None else g.width(node)
        if layer.is_output:
            cells += adder_cost(layer.acc_width)
        else:
            cells += layer.n_thresholds * comparator_cells(width)
            cells += layer.out_bits if layer.n_thresholds > 1 else 0
    return cells * UNROLLED_SCALE


def unrolled_chain_cells(out_width, registers, *, argmax_n=None, acc_width=None):
    """Cells of an unrolled chain besides its layers: the output FIFO (``out_width`` bits of
    ``registers + 3`` entries in distributed RAM, 16x4 bits per two LUT4s, and its read
    multiplexing) and, with ``argmax_n``, the comparator tree (``n - 1`` comparisons and
    multiplexers of ``acc_width``-bit scores)."""
    depth = registers + 3
    cells = 2 * -(-out_width // 4) * -(-depth // 16) + 16
    if argmax_n is not None:
        cells += (argmax_n - 1) * (adder_cost(acc_width) + acc_width + 4)
    return cells


def _pairs(network, folding):
    """``[(pe, simd), ...]`` per layer from ``LayerFolding``s or pairs; one lane per layer for
    None. The folding is taken as checked (``qnnfab.rtl.folding.check_folding``)."""
    if folding is None:
        return [(1, 1)] * len(network.layers)
    if len(folding) != len(network.layers):
        raise ValueError(f"folding: expected {len(network.layers)} entries (one per layer), "
                         f"got {len(folding)}")
    return [(1, 1) if f is None else (f.pe, f.simd) if hasattr(f, "pe") else tuple(f)
            for f in folding]


def input_buffered(network, folding=None, styles=None, input_buffer=False):
    """Whether the input vector is in block RAM: ``input_buffer`` asked and the network can
    (:func:`~qnnfab.rtl.input_buffer.why_no_input_buffer` at ``folding``, ``styles``)."""
    return bool(input_buffer) and why_no_input_buffer(
        network, None if folding is None else _pairs(network, folding), styles) is None


def estimate(network, folding=None, *, lane_scale=None, styles=None, levels_per_stage=2,
             cse=True, input_buffer=False):
    """Crude resource needs: ``{"weight_bits", "buffer_bits", "lc"}``; without a folding, one
    lane per layer. ``input_buffer``: the input vector in block RAM
    (:class:`~qnnfab.rtl.input_buffer.InputBuffer`, where the network can: see
    :func:`input_buffered`) instead of the top's register and the first layer's slice
    multiplexer; its bits are ``buffer_bits`` (0 otherwise).
    ``styles``: one per layer (``"folded"``, ``"unrolled"``; None: all folded): an unrolled
    layer is counted by :func:`unrolled_cells` (times ``lane_scale["unrolled"]`` when given,
    see :data:`FAMILY_UNROLLED_SCALE`) instead of its lanes, its weights are not in
    block RAM (not in ``weight_bits``), a run of them adds :func:`unrolled_chain_cells`, and
    an unrolled last layer replaces the sequential argmax with the tree.
    ``folding``: ``LayerFolding``s or ``(pe, simd)`` pairs, already checked. ``lane_scale``:
    weight kind → factor on its :func:`lane_cells` (a number, or a function of the layer),
    for a device whose LUT mapping of a lane differs from the iCE40 builds the lane costs
    were fitted to (an FPGA family's ``lane_scale``, e.g. ECP5's codebook and adder-tree
    lanes).

    ``lc`` counts, in logic cells:

    * the top: its UART/FSM (:data:`TOP_OVERHEAD_LC`), input vector register (with
      ``input_buffer``: the buffer's word shift register and :data:`INPUT_BUFFER_LC`) and
      response byte multiplexer;
    * per layer, its lanes, :func:`lane_cells` each: one cell per input bit for binary and
      ternary weights (a lower bound: their trees cost about three), for codebook weights
      :func:`qnnfab.rtl.codebook_dot.codebook_lane_cells` (Yosys/nextpnr counts of one unit:
      a lane decodes an index and multiplies or shifts a level, e.g. ~35 cells for 2-bit and
      ~90 for 5-bit inputs with 3-bit indices into 8-bit levels);
    * per PE, the accumulator and the threshold comparators, ``acc_width`` cells each;
    * the input-slice multiplexer and register when ``simd < in_features``: ``in/simd`` cells
      per slice bit (an ``n``-way multiplexer takes about ``n - 1`` LUT4s);
    * the output vector (raw ``acc_width``-bit scores for the last layer), twice when
      ``out/pe > 1``: the result shift register and the output register, flip-flops that
      pack with no LUT (the next layer reads the latter and keeps no copy);
    * a CNN's pixel-stream hardware (:func:`spatial_cells`), the flatten's register and the
      pixel serializer;
    * the argmax: its ``n_out``-way score multiplexer, comparator and registers,
      ``(n_out + 2)·acc_width``.

    Checked against ``nextpnr-ice40 --pack-only`` on the board top: the 64x5b-128x2b-128x2b-10
    network with 3-bit codebooks packs to 4622 / 5867 cells at 16 / 32 lanes with 8-bit levels
    (estimate 4579 / 5871), 4216 / 5245 with 6-bit levels (4113 / 5101), 4420 / 5584 at
    32 / 64 lanes with ±2**e levels (4275 / 5495). Binary and ternary networks come out lower
    (the default network: 4230 cells, estimate 2892). A design can pass this check and still
    not place; nextpnr's message then names the overfull cell type."""
    pairs = _pairs(network, folding)
    styles = ["folded"] * len(network.layers) if styles is None else list(styles)
    if len(styles) != len(network.layers):
        raise ValueError(f"styles: expected {len(network.layers)} entries (one per layer), "
                         f"got {len(styles)}")
    buffered = input_buffered(network, pairs, styles, input_buffer)
    if buffered:
        lc = TOP_OVERHEAD_LC + pairs[0][1] * network.input_bits + INPUT_BUFFER_LC
    else:
        lc = TOP_OVERHEAD_LC + network.input_features * network.input_bits
    last = network.layers[-1]
    lc += 8 * (2 + last.out_features * math.ceil(last.acc_width / 8))  # response register
    if styles[-1] != "unrolled":
        lc += (last.out_features + 2) * last.acc_width                  # argmax
    weight_bits = 0
    prev = None
    chain_regs = 0
    for k, (layer, (pe, simd)) in enumerate(zip(network.layers, pairs)):
        if isinstance(layer, ir.SPATIAL_KINDS):
            lc += spatial_cells(layer, pe, simd)
            if isinstance(layer, ir.ConvLayer) and isinstance(prev, ir.SPATIAL_KINDS):
                h, w, c = prev.out_shape          # the hand-over FIFO before this conv unit
                lc += c * prev.out_bits * HANDOVER_FIFO_DEPTH + HANDOVER_FIFO_CONTROL_LC
        elif isinstance(prev, ir.SPATIAL_KINDS):
            lc += layer.in_features * layer.in_bits  # the flatten's register
        prev = layer
        if isinstance(layer, ir.PoolLayer):
            continue
        if styles[k] == "unrolled":
            lc += unrolled_cells(layer, cse=cse) * (lane_scale or {}).get("unrolled", 1)
            levels = cached_graph(layer, cse=cse).levels
            chain_regs += levels // levels_per_stage + 1
            if k + 1 == len(styles) or styles[k + 1] != "unrolled":   # the chain ends here
                if layer.is_output:
                    n = layer.out_features
                    out_width = n * layer.acc_width + max(1, (n - 1).bit_length())
                    chain_regs += (n - 1).bit_length()
                    lc += unrolled_chain_cells(out_width, chain_regs, argmax_n=n,
                                               acc_width=layer.acc_width)
                else:
                    lc += unrolled_chain_cells(layer.out_features * layer.out_bits,
                                               chain_regs)
                chain_regs = 0
            continue
        weight_bits += int(layer.weight_bits)
        pe, simd = min(pe, layer.out_features), min(simd, layer.in_features)
        n_thr = 0 if layer.is_output else layer.thresholds.shape[1]
        scale = (lane_scale or {}).get(layer.weight_kind, 1)
        if callable(scale):
            scale = scale(layer)
        lc += pe * simd * lane_cells(layer) * scale + pe * layer.acc_width * (1 + n_thr)
        sf = layer.in_features // simd
        if sf > 1 and not (buffered and k == 0):    # a buffer's read port is the multiplexer
            lc += simd * layer.in_bits * sf
        out_width = layer.acc_width if layer.is_output else layer.out_bits
        lc += layer.out_features * out_width * (2 if layer.out_features > pe else 1)
    if network.input_shape is not None:
        h, w, c = network.input_shape
        lc += h * w * c * network.input_bits + c * network.input_bits  # pixel serializer
    buffer_bits = input_buffer_bits(network.input_features, network.input_bits) \
        if buffered else 0
    return {"weight_bits": int(weight_bits), "buffer_bits": buffer_bits, "lc": int(lc)}


#: Entries of the FIFO before a conv unit fed by another pixel stage
#: (:func:`qnnfab.rtl.network.handover_fifo`): measured on digits-cnn, 4 brings the interval to
#: the model's (2: 5 % above it); its cells, one per stored bit plus the control's.
HANDOVER_FIFO_DEPTH = 4
HANDOVER_FIFO_CONTROL_LC = 12


def spatial_cells(layer, pe, simd):
    """Cells of a CNN layer's pixel-stream hardware beside its MVU: a conv unit's window
    registers (``C_in·k²·bits`` flip-flops), line-buffer wrappers and control, and
    kernel-codebook decoders (half a LUT per code bit per lane, one with signs); a max-pool
    unit's row buffer, running maximum, comparators and output register. Fitted, with the
    conv lanes' ``4.5·in_bits`` cells, to two ``nextpnr-ice40`` builds of digits-cnn on the
    UP5K: 5284 cells at folding 2:9,-,1:144,-,1:4 and 4850 with a 16-kernel codebook with
    signs at 1:9,-,1:72,-,1:2."""
    if isinstance(layer, ir.PoolLayer):
        pixel = layer.channels * layer.bits
        cells = pixel * (2 * (layer.width // layer.size) + 5)
    else:
        k2 = layer.kernel_size ** 2
        # window registers, line-buffer wrappers and control (fitted: ~130 cells)
        cells = layer.in_channels * k2 * layer.in_bits + 130
        kc = layer.kernel_codebook
        if kc is not None:  # mostly absorbed into the lanes' LUTs by Yosys
            wbits = (len(layer.weight_levels) - 1).bit_length()
            cells += pe * simd * wbits * (1 if kc.sign is not None else 0.5)
    return int(cells)


def bram_blocks_for(network, folding, port_bits, block_bits, *, weights_in=None,
                    input_buffer=False):
    """Block RAMs a folding needs at least when each layer reads its ``pe * simd`` weights per
    cycle from block RAM of ``port_bits``-wide read ports and ``block_bits`` bits a block:
    ``ceil(weight bits per cycle / port_bits)`` per layer, at least
    ``ceil(weight bits / block_bits)`` (measured: the 64-256-256-10 net at 512 lanes asked
    the UP5K for 45 EBR). A kernel-codebook layer reads the slots
    (:attr:`~qnnfab.ir.KernelCodebook.slot_bits`) of whole kernels. ``folding``:
    ``LayerFolding``s or ``(pe, simd)`` pairs. ``weights_in``: one entry per layer
    (``"ebr"``/``"spram"``, :func:`qnnfab.rtl.network.resolve_weights_in`); SPRAM layers are
    not counted (:func:`spram_blocks_for` counts them). ``input_buffer``: the input vector in
    block RAM where the network can (:func:`input_buffered`): two banks, one ``simd``-code
    slice a word."""
    total = 0
    if input_buffered(network, folding, None, input_buffer):
        simd = _pairs(network, folding)[0][1]
        width = -(-simd * network.input_bits // port_bits)
        total += max(width, -(-input_buffer_bits(network.input_features, network.input_bits)
                              // block_bits))
    stores = ["ebr"] * len(network.layers) if weights_in is None else list(weights_in)
    for layer, (pe, simd), store in zip(network.layers, _pairs(network, folding), stores):
        if isinstance(layer, ir.PoolLayer) or store == "spram":
            continue
        kc = getattr(layer, "kernel_codebook", None)
        if kc is not None:  # indices (and sign bits) of whole kernels
            per_cycle = pe * simd // layer.kernel_size ** 2 * kc.slot_bits
        else:
            per_cycle = pe * simd * numerics.weight_code_bits(layer.weight_levels)
        width = -(-per_cycle // port_bits)
        total += max(width, -(-layer.weight_bits // block_bits))
    return total


def spram_blocks_for(network, folding, weights_in):
    """SPRAMs (iCE40 UP5K ``SB_SPRAM256KA``, 16384 × 16 bits) the SPRAM layers of
    ``weights_in`` take at ``folding``: ``ceil(pe·simd·wbits / 16)`` each (one word of the
    weight memory across blocks side by side, :class:`qnnfab.rtl.spram.SPRAMWeightStore`)."""
    total = 0
    for layer, (pe, simd), store in zip(network.layers, _pairs(network, folding), weights_in):
        if store == "spram":
            total += -(-pe * simd * numerics.weight_code_bits(layer.weight_levels) // 16)
    return total
