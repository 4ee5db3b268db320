"""An :class:`~qnnfab.rtl.cse.AdderGraph` as pipelined logic: the adders of a constant-weight
layer, with a register after every ``levels_per_stage`` adder levels.

:class:`AdderPipeline` is a builder used inside a component's ``elaborate`` (the unrolled
layers of :mod:`qnnfab.rtl.unrolled_dense`), not a component of its own: the graph's nodes
become signals of the caller's module, so a chain of unrolled layers is one flat pipeline.

Stages. An adder at depth ``d`` (``1 .. levels``) is computed, combinationally from its two
operands, in stage ``(d - 1) // levels_per_stage``; the leaves (the layer's inputs) are in
stage 0. :meth:`AdderPipeline.value` returns a node's value in a later stage through a chain
of registers (made once and shared by every reader), so operands of different depths line up.
Registers carry no reset and no enable: the pipeline always advances (the valid bits and the
back-pressure live beside it, in the caller).

Shared carry chains (``chains=True``; off by default in the unrolled layers, which route
far better without them: see :class:`~qnnfab.rtl.unrolled_dense.UnrolledChain`). On the
ECP5, nextpnr spends about four more LUT4s on every carry chain
than its bits take (its feed-in and feed-out cells; measured: 16 separate 5+5-bit adders,
96 carry LUT4s, pack to 162; one 96-bit adder to 104), which for thousands of small adders is
a third of the design. So the adders of one level, one stage and one kind (sums or
differences) whose results are :data:`CHAIN_MIN_WIDTH` bits or wider are computed as segments
of one long addition (:data:`CHAIN_MAX_BITS` at most), each segment followed by a separator
bit that stops the carry (sums: both operand bits 0) or makes the next segment's ``+1``
(differences, ``A + ~B + 1``: operand bits 1 and 0). The separator bits come from a signal
that is 0 whenever the pipeline computes but not a constant, which would let Yosys split the
addition again at the separators: one flip-flop per chain from the caller's ``separator``
factory (the unrolled chain's: a shift register of the reset, so no net fans out to every
chain), by default the domain's reset itself. Narrower adders are left to the LUT mapper.

Timing: the static timing analysis cannot know that a separator stops the carry, so a path
into a chain runs on through the rest of it; :data:`~qnnfab.rtl.cse.CHAIN_MAX_BITS` bounds
that (measured: with 64-bit chains digits-tnn placed at 41.8 MHz on the ECP5-85F).
"""

import operator

from amaranth.hdl import Cat, Const, ResetSignal, Signal, signed, unsigned

from .cse import CHAIN_MAX_BITS, CHAIN_MIN_WIDTH

__all__ = ["AdderPipeline", "node_shape", "ge_const", "KEEP", "CHAIN_MIN_WIDTH",
           "CHAIN_MAX_BITS"]

#: Attributes of each adder's output signal. ``keep`` stops Yosys (``alumacc``) from merging a
#: chain of adders within a stage into one multi-operand ``$macc``, which it maps to a
#: carry-save tree of full adders in LUTs: on the ECP5 that cost more than one carry chain per
#: adder (measured, digits-tnn's first layer unrolled: 20,567 LUT4s merged, 17,914 kept).
KEEP = {"keep": 1}


def node_shape(graph, node):
    """The shape of ``node``'s value: unsigned when it cannot be negative."""
    width = graph.width(node)
    return signed(width) if graph.lo[node] < 0 else unsigned(width)


def ge_const(value, t):
    """``value >= t`` for a constant ``t`` as a chain of ANDs and ORs, lowest bit first
    (``ge_i = v_i & ge_{i-1}`` where ``t`` has a one, ``v_i | ge_{i-1}`` where it has a zero), not
    as a subtraction: Yosys maps a comparison to a carry chain, ``ceil(w/2)`` ``CCU2C`` cells
    on the ECP5, where the logic packs into about ``(w - 1) / 3`` LUT4s (measured: 16
    comparisons of 12 bits, 172 LUT4s as carry chains, 70 as logic). A signed ``value`` is
    compared with its sign bit flipped (``value + 2**(w-1)``, unsigned). Returns a 1-bit value
    (a constant when ``t`` is out of ``value``'s range)."""
    shape = value.shape()
    w = shape.width
    v = value.as_unsigned()
    if shape.signed:
        v = Cat(v[:w - 1], ~v[w - 1])
        t += 1 << (w - 1)
    if t <= 0:
        return Const(1, 1)
    if t >= 1 << w:
        return Const(0, 1)
    g = None                                   # None: true
    for i in range(w):
        if (t >> i) & 1:
            g = v[i] if g is None else (v[i] & g)
        elif g is not None:
            g = v[i] | g
    return g


def _extend(value, width):
    """``value``'s two's complement bits extended (by its sign) or cut to ``width``."""
    n = len(value)
    if n >= width:
        return value.as_unsigned()[:width]
    top = value.as_unsigned()[n - 1] if value.shape().signed else Const(0, 1)
    return Cat(value.as_unsigned(), top.replicate(width - n))


class AdderPipeline:
    """Builds the logic of ``graph`` into module ``m``.

    Parameters
    ----------
    m : Module
    graph : AdderGraph
    inputs : list of Value
        The input codes (``graph.n_inputs`` of them, unsigned ``graph.in_bits`` bits), valid in
        stage 0 (combinational from the caller's register or input payload).
    levels_per_stage : int
        Adder levels between registers (>= 1).
    name : str
        Prefix of the signals' names.
    chains : bool
        Share carry chains between the adders of a level (see the module docstring).
    separator : callable, optional
        Called once per shared chain for its separator bit: a 1-bit value, 0 while the
        pipeline computes, not a constant (default: the domain's reset signal).

    Members
    -------
    registers : int
        Register bits made so far (pipeline and alignment registers).
    """

    def __init__(self, m, graph, inputs, *, levels_per_stage, name, chains=True,
                 separator=None):
        self.m = m
        self.g = graph
        self.inputs = list(inputs)
        if len(self.inputs) != graph.n_inputs:
            raise ValueError(f"{name}: expected {graph.n_inputs} inputs, got {len(self.inputs)}")
        self.k = operator.index(levels_per_stage)
        if self.k < 1:
            raise ValueError(f"levels_per_stage must be >= 1, not {self.k}")
        self.name = name
        self.registers = 0
        self.chains = 0
        self._values = {}
        self.separator = (lambda: ResetSignal(allow_reset_less=True)) if separator is None \
            else separator
        if chains:
            self._build_chains()

    def stage_of(self, node):
        """The stage ``node`` is computed in (0 for a leaf)."""
        d = self.g.depth[node]
        return 0 if d == 0 else (d - 1) // self.k

    @property
    def out_stage(self):
        """The stage after the deepest adder level (``levels // levels_per_stage``): where a
        consumer at level ``levels + 1`` (the thresholds) reads the roots."""
        return self.g.levels // self.k

    def value(self, node, stage):
        """``node``'s value in ``stage`` (>= its own stage)."""
        key = (node, stage)
        found = self._values.get(key)
        if found is not None:
            return found
        # Walk down to the first cached stage without recursing once per stage.
        home = self.stage_of(node)
        if stage < home:
            raise ValueError(f"{self.name}: node {node} is computed in stage {home}, not "
                             f"available in stage {stage}")
        s = stage
        while s > home and (node, s - 1) not in self._values:
            s -= 1
        if s == home and (node, home) not in self._values:
            self._values[(node, home)] = self._compute(node, home)
        g = self.g
        shape = node_shape(g, node)
        for t in range(max(s, home + 1), stage + 1):
            reg = Signal(shape, name=f"{self.name}_n{node}_s{t}", reset_less=True)
            self.m.d.sync += reg.eq(self._values[(node, t - 1)])
            self.registers += len(reg)
            self._values[(node, t)] = reg
        return self._values[key]

    def _build_chains(self):
        """Compute every adder of :data:`CHAIN_MIN_WIDTH` bits or more in shared carry chains
        (see the module docstring), level by level; the rest stay for :meth:`_compute`."""
        g = self.g
        n_leaves = len(g.leaves)
        by_level = {}
        for k, (a, b, rel) in enumerate(g.adders):
            node = n_leaves + k
            if g.width(node) >= CHAIN_MIN_WIDTH:
                by_level.setdefault((g.depth[node], rel), []).append(node)
        for (depth, rel), nodes in sorted(by_level.items()):
            stage = (depth - 1) // self.k
            group, bits = [], 0
            for node in nodes + [None]:
                width = None if node is None else g.width(node)
                if node is None or (group and bits + width + 1 > CHAIN_MAX_BITS):
                    self._chain(group, stage, rel, self.separator())
                    group, bits = [], 0
                if node is not None:
                    group.append(node)
                    bits += width + 1

    def _chain(self, nodes, stage, rel, rst):
        g = self.g
        n_leaves = len(g.leaves)
        a_parts, b_parts = [], []
        # The separator after each segment: sums stop the carry (0 + 0), differences make the
        # next segment's +1 (1 + ~0); the reset signal is 0 while the pipeline computes.
        sep_a, sep_b = (rst, rst) if rel > 0 else (~rst, rst)
        segments = []
        for node in nodes:
            a, b, _ = g.adders[node - n_leaves]
            width = g.width(node)
            va, vb = self.value(a, stage), self.value(b, stage)
            if rel > 0 and not va.shape().signed and not vb.shape().signed:
                # Zero-extended to ``width`` both operands would have constant 0 + 0 bits,
                # where Yosys splits the chain: sum ``max(len)`` bits and take the carry out
                # from the separator's sum bit instead.
                seg = min(width, max(len(va), len(vb)))
            else:
                seg = width
            a_parts += [_extend(va, seg), sep_a]
            b_parts += [_extend(vb, seg), sep_b]
            segments.append((node, seg))
        a_word, b_word = Cat(*a_parts), Cat(*b_parts)
        word = Signal(len(a_word), name=f"{self.name}_chain{self.chains}", attrs=KEEP)
        self.chains += 1
        self.m.d.comb += word.eq(a_word + b_word if rel > 0 else a_word - b_word)
        pos = 0
        for node, seg in segments:
            width = g.width(node)
            sig = Signal(node_shape(g, node), name=f"{self.name}_n{node}", attrs=KEEP)
            self.m.d.comb += sig.eq(word[pos:pos + min(width, seg + 1)])
            self._values[(node, self.stage_of(node))] = sig
            pos += seg + 1

    def _compute(self, node, stage):
        g = self.g
        n_leaves = len(g.leaves)
        if node < n_leaves:
            i, s = g.leaves[node]
            x = self.inputs[i]
            return x if s == 0 else (x << s)
        a, b, rel = g.adders[node - n_leaves]
        va, vb = self.value(a, stage), self.value(b, stage)
        sig = Signal(node_shape(g, node), name=f"{self.name}_n{node}", attrs=KEEP)
        self.m.d.comb += sig.eq(va + vb if rel > 0 else va - vb)
        return sig

    def root(self, row, stage=None):
        """``(value, sign)`` of row ``row`` in ``stage`` (default :attr:`out_stage`): the row's
        sum is ``sign·value``; a row of zero weights gives ``(Const(0), 1)``."""
        stage = self.out_stage if stage is None else stage
        node, sign = self.g.rows[row]
        if node is None:
            return Const(0, 1), 1
        return self.value(node, stage), sign
