"""Randomized equivalence: the golden model, Amaranth's simulator and Verilator agree on random
networks, output by output.

:func:`examples` is a Hypothesis strategy for an :class:`Example`: a random valid network
(dense and convolutional, every weight kind of the registry :data:`qnnfab.kinds.WEIGHT_KINDS`
— binary, ternary, per-weight codebook — kernel codebooks with and without per-kernel signs,
max-pool layers, 1..8-bit activations), a random
folding (any PE that divides the outputs and any allowed SIMD: from fully serial to fully
parallel), and input vectors mixing random codes with the extremes (all zero, all max,
alternating 0/max and max/0), and the layers' styles (:func:`styles`: about half the
networks unroll some or all of their dense layers, weights as constants in the logic,
:mod:`qnnfab.rtl.unrolled_dense`, mixed with folded ones; conv and pool layers stay folded)
and their weight stores (:func:`weight_stores`: about a quarter of the networks keep some
folded dense layers' weights in the UP5K's SPRAM, :mod:`qnnfab.rtl.spram`, as simulated)
and where the input vector is (:func:`input_buffers`: about half the networks that can take
their input code by code into block RAM, :mod:`qnnfab.rtl.input_buffer`: in Amaranth fed code
by code, in bulk Verilator each vector serialized in front, :mod:`qnnfab.sim.vector_fed`).
The network's structure, kinds, widths, folding and styles are drawn by
Hypothesis (so a failure shrinks to a small network); weights, thresholds and random codes come
from a NumPy generator seeded by a drawn integer.

:func:`check` runs one example through the golden model and the given simulators and returns
every disagreement as a :class:`~qnnfab.sim.runner.Mismatch` line; :func:`check_batch` runs
many examples side by side in one bulk Verilator build (:mod:`qnnfab.sim.bulk_network`: one
compile for the batch, the clock loop in C++). :func:`run` draws examples and checks each in
Amaranth one at a time and, with ``batch`` > 1, in Verilator a batch at a time. The tests in
``tests/sim/test_fuzz.py`` run a bounded number of examples; ``make fuzz`` runs the long
campaign on every core (:mod:`qnnfab.sim.fuzz_campaign`)::

    python -m qnnfab.sim.fuzz --networks 10000 --minutes 60

and prints how many networks and vectors were checked and how many mismatches were found.
Hypothesis is a test dependency (``pip install -e .[test]``).
"""

import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from qnnfab import ir, random_net
from qnnfab.kinds import WEIGHT_KINDS
from qnnfab.spec import golden
from qnnfab.rtl.cse import layer_matrix, row_terms
from qnnfab.rtl.folding import divisors, simd_choices

__all__ = ["Example", "Tally", "examples", "networks", "foldings", "styles", "weight_stores",
           "input_buffers",
           "input_codes", "check", "features_of", "run", "main", "MAX_UNROLLED_TERMS"]

#: Input patterns besides uniform random codes.
PATTERNS = ("random", "zero", "max", "alternating", "alternating-inverted")

#: A dense layer is drawn unrolled only if its adder graph sums at most this many terms (the
#: nonzero CSD digits of its weight matrix, :func:`qnnfab.rtl.cse.row_terms`): Amaranth's
#: simulation of such a layer is as quick as the folded one's (a 12x12 layer of 8-bit codebook
#: weights has about 400).
MAX_UNROLLED_TERMS = 600


@dataclass
class Example:
    """One fuzz case: a network, its folding (one ``(pe, simd)`` or None per layer), input
    codes, shape (n, input_features), the layers' styles (``"folded"``/``"unrolled"``
    per layer, :func:`qnnfab.rtl.network.resolve_styles`; None: all folded), weight stores
    (``"ebr"``/``"spram"`` per layer, :func:`qnnfab.rtl.network.resolve_weights_in`; None:
    all ``"ebr"``) and whether the input vector is in block RAM (``input_buffer``,
    :func:`input_buffers`)."""
    network: ir.Network
    folding: list
    codes: np.ndarray
    patterns: tuple = ()
    style: list = None
    weights_in: list = None
    input_buffer: bool = False

    @property
    def styles(self):
        """One style per layer (all ``"folded"`` when :attr:`style` is None)."""
        return list(self.style) if self.style is not None else \
            ["folded"] * len(self.network.layers)

    @property
    def stores(self):
        """One weight store per layer (all ``"ebr"`` when :attr:`weights_in` is None)."""
        return list(self.weights_in) if self.weights_in is not None else \
            ["ebr"] * len(self.network.layers)

    def __repr__(self):  # what Hypothesis prints for a falsifying example
        layers = "; ".join(_describe_layer(layer) for layer in self.network.layers)
        style = f"; style {self.style}" if "unrolled" in self.styles else ""
        if "spram" in self.stores:
            style += f"; weights_in {self.weights_in}"
        if self.input_buffer:
            style += "; input_buffer"
        return (f"Example({self.network.input_features}x{self.network.input_bits}b -> {layers}; "
                f"folding {self.folding}{style}; inputs {list(self.patterns)}; "
                f"codes {self.codes.tolist()})")


def _describe_layer(layer):
    if isinstance(layer, ir.PoolLayer):
        return f"maxpool{layer.size} {layer.height}x{layer.width}x{layer.channels}"
    kind = layer.weight_kind
    if layer.codebook is not None:
        kind += f"[{len(layer.codebook)}]"
    if isinstance(layer, ir.ConvLayer):
        kc = layer.kernel_codebook
        extra = "" if kc is None else \
            f" kernels[{len(kc.kernels)}{'±' if kc.sign is not None else ''}]"
        return (f"conv{layer.kernel_size}p{layer.padding} {layer.height}x{layer.width}x"
                f"{layer.in_channels}->{layer.out_channels} {kind}{extra} in{layer.in_bits}b")
    out = "scores" if layer.thresholds is None else f"{layer.out_bits}b"
    return f"dense {layer.in_features}->{layer.out_features} {kind} in{layer.in_bits}b->{out}"


# --- strategies ---------------------------------------------------------------------------------

@st.composite
def _weight_kind(draw, rng):
    """A weight kind of the registry and, for a table kind (``codebook``), its levels (2..8
    levels of 2..8 bits)."""
    kind = draw(st.sampled_from(tuple(WEIGHT_KINDS)))
    if not WEIGHT_KINDS[kind].table:
        return kind, None
    levels = random_net.random_codebook(rng, bits=draw(st.integers(1, 3)),
                                        level_bits=draw(st.integers(2, 8)))
    return kind, levels


@st.composite
def _dense_layers(draw, rng, features, bits, max_features):
    """Hidden dense layers then the output layer, from ``features`` inputs of ``bits`` bits."""
    layers = []
    for _ in range(draw(st.integers(0, 2))):
        n = draw(st.integers(1, max_features))
        kind, levels = draw(_weight_kind(rng))
        layer = random_net.random_dense(rng, in_features=features, out_features=n, in_bits=bits,
                                        out_bits=draw(st.integers(1, 3)), weight_kind=kind,
                                        codebook=levels)
        layers.append(layer)
        features, bits = n, layer.out_bits
    kind, levels = draw(_weight_kind(rng))
    layers.append(random_net.random_dense(rng, in_features=features,
                                          out_features=draw(st.integers(1, 6)), in_bits=bits,
                                          weight_kind=kind, codebook=levels, output=True))
    return layers


@st.composite
def _conv_layers(draw, rng, shape, bits):
    """1..2 conv layers (each optionally followed by a max-pool) on an image ``shape``
    (height, width, channels); returns the layers and the final (shape, bits)."""
    layers = []
    h, w, c = shape
    for _ in range(draw(st.integers(1, 2))):
        k = draw(st.sampled_from([k for k in (1, 3, 5) if k <= min(h, w) + 2 * (k // 2)]))
        padding = draw(st.integers(max(0, (k - min(h, w) + 1) // 2), k // 2))
        kind, levels = draw(_weight_kind(rng))
        conv = random_net.random_conv(rng, in_channels=c, out_channels=draw(st.integers(1, 4)),
                                      height=h, width=w, in_bits=bits,
                                      out_bits=draw(st.integers(1, 3)), kernel_size=k,
                                      padding=padding, weight_kind=kind, codebook=levels)
        if k > 1 and draw(st.booleans()):
            symmetric = {-v for v in conv.weight_levels} == set(conv.weight_levels)
            sign = symmetric and draw(st.booleans())
            conv.kernel_codebook = random_net.random_kernel_codebook(
                rng, conv, draw(st.integers(1, 4)), sign=sign)
            conv.weights = conv.kernel_codebook.decode(conv.weight_levels)
        layers.append(conv)
        h, w, c, bits = conv.out_height, conv.out_width, conv.out_channels, conv.out_bits
        sizes = [s for s in (2, 3) if h % s == 0 and w % s == 0]
        if sizes and draw(st.booleans()):
            size = draw(st.sampled_from(sizes))
            layers.append(ir.PoolLayer(channels=c, height=h, width=w, size=size, bits=bits))
            h, w = h // size, w // size
    return layers, (h, w, c), bits


@st.composite
def networks(draw, *, max_features=12, spatial=None):
    """A random valid :class:`~qnnfab.ir.Network`; ``spatial``: True for a CNN, False for
    dense layers only, None for either. Returns ``(network, rng)``."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if spatial is None:
        spatial = draw(st.booleans())
    input_bits = draw(st.integers(1, 8))
    if spatial:
        shape = (draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 2)))
        layers, (h, w, c), bits = draw(_conv_layers(rng, shape, input_bits))
        layers += draw(_dense_layers(rng, h * w * c, bits, max_features))
        features = shape[0] * shape[1] * shape[2]
    else:
        features = draw(st.integers(1, max_features))
        layers = draw(_dense_layers(rng, features, input_bits, max_features))
    network = ir.Network(input_features=features, input_bits=input_bits, layers=layers,
                         meta={"random": True, "fuzz": True})
    return network.validate(), rng


@st.composite
def foldings(draw, network):
    """Any valid folding of ``network``: a PE dividing each layer's outputs and a SIMD from
    :func:`~qnnfab.rtl.folding.simd_choices` (None for a max-pool layer)."""
    folding = []
    for layer in network.layers:
        if isinstance(layer, ir.PoolLayer):
            folding.append(None)
            continue
        folding.append((draw(st.sampled_from(divisors(layer.out_features))),
                        draw(st.sampled_from(simd_choices(layer)))))
    return folding


def unrollable(layer):
    """Whether the fuzz may unroll ``layer``: a dense layer whose adder graph is small
    (:data:`MAX_UNROLLED_TERMS`)."""
    return (isinstance(layer, ir.DenseLayer)
            and int(row_terms(layer_matrix(layer)).sum()) <= MAX_UNROLLED_TERMS)


@st.composite
def styles(draw, network):
    """The layers' styles: all folded, or (about half the time) each small dense layer
    (:func:`unrollable`) folded or unrolled by a drawn boolean, so that all-unrolled networks,
    runs of unrolled layers between folded ones and an unrolled last layer (the pipelined
    argmax) all come up. Shrinks towards all folded."""
    if not draw(st.booleans()):
        return ["folded"] * len(network.layers)
    return ["unrolled" if unrollable(layer) and draw(st.booleans()) else "folded"
            for layer in network.layers]


@st.composite
def weight_stores(draw, network, style):
    """The layers' weight stores: all in block RAM (or logic), or (about a quarter of the
    time) each folded dense layer in SPRAM (:mod:`qnnfab.rtl.spram`, its simulation model,
    loaded) by a drawn boolean. Shrinks towards none in SPRAM."""
    if not (draw(st.booleans()) and draw(st.booleans())):
        return ["ebr"] * len(network.layers)
    return ["spram" if isinstance(layer, ir.DenseLayer) and s == "folded" and draw(st.booleans())
            else "ebr" for layer, s in zip(network.layers, style)]


@st.composite
def input_buffers(draw, network, folding, style):
    """Whether the input vector goes into an :class:`~qnnfab.rtl.input_buffer.InputBuffer`
    (codes one per transfer, block RAM): about half the networks that can (an MLP whose folded
    first layer reads fewer inputs per cycle than it has). Shrinks towards not."""
    from qnnfab.rtl.folding import auto_folding
    from qnnfab.rtl.input_buffer import why_no_input_buffer
    if why_no_input_buffer(network, auto_folding(network) if folding is None else folding,
                           style) is not None:
        return False
    return draw(st.booleans())


@st.composite
def input_codes(draw, network, rng, *, max_vectors=6):
    """1..``max_vectors`` input vectors, each random or an extreme pattern. Returns
    ``(codes, patterns)``."""
    top = (1 << network.input_bits) - 1
    n = network.input_features
    patterns = draw(st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=max_vectors))
    rows = []
    for pattern in patterns:
        if pattern == "random":
            rows.append(rng.integers(0, top + 1, size=n))
        elif pattern == "zero":
            rows.append(np.zeros(n, np.int64))
        elif pattern == "max":
            rows.append(np.full(n, top, np.int64))
        else:
            alt = np.arange(n) % 2 * top
            rows.append(alt if pattern == "alternating" else top - alt)
    return np.stack(rows).astype(np.int64), tuple(patterns)


@st.composite
def examples(draw, *, max_features=12, spatial=None, max_vectors=6):
    """A random :class:`Example` (network, folding, inputs, styles)."""
    network, rng = draw(networks(max_features=max_features, spatial=spatial))
    folding = draw(foldings(network))
    codes, patterns = draw(input_codes(network, rng, max_vectors=max_vectors))
    style = draw(styles(network))
    stores = draw(weight_stores(network, style))
    buffered = draw(input_buffers(network, folding, style))
    return Example(network=network, folding=folding, codes=codes, patterns=patterns,
                   style=style if "unrolled" in style else None,
                   weights_in=stores if "spram" in stores else None, input_buffer=buffered)


def features_of(example):
    """The set of feature tags an example exercises (what ``make fuzz`` tallies)."""
    tags = {f"inputs:{p}" for p in example.patterns}
    tags.add(f"input_bits:{example.network.input_bits}")
    folding = example.folding
    if folding is None:
        from qnnfab.rtl.folding import auto_folding
        folding = auto_folding(example.network)
    style = example.styles
    if "unrolled" in style:
        tags.add("style:unrolled" if all(s == "unrolled" or not isinstance(ly, ir.DenseLayer)
                                         for s, ly in zip(style, example.network.layers))
                 else "style:mixed")
        if style[-1] == "unrolled":
            tags.add("unrolled:last")
    if "spram" in example.stores:
        tags.add("weights:spram")
    if example.input_buffer:
        tags.add("input:buffer")
    for layer, fold, s in zip(example.network.layers, folding, style):
        if isinstance(layer, ir.PoolLayer):
            tags.add(f"maxpool{layer.size}")
            continue
        where = "conv" if isinstance(layer, ir.ConvLayer) else "dense"
        if s == "unrolled":
            tags.add(f"unrolled:{layer.weight_kind}")
            tags.add(f"unrolled:in_bits={'1' if layer.in_bits == 1 else 'k'}")
        tags.add(f"{where}:{layer.weight_kind}")
        tags.add(f"{where}:in_bits={'1' if layer.in_bits == 1 else 'k'}")
        if layer.thresholds is not None:
            tags.add(f"{where}:out_bits={layer.out_bits}")
        if any(s < 0 for s in np.atleast_1d(layer.threshold_sign if layer.thresholds is not None
                                            else [])):
            tags.add("threshold_sign:-1")
        if where == "conv":
            tags.add(f"conv:k{layer.kernel_size}p{layer.padding}")
            kc = layer.kernel_codebook
            if kc is not None:
                tags.add("kernel_codebook" + ("+sign" if kc.sign is not None else ""))
        if s == "unrolled":
            continue                     # no folding: every weight at once
        pe, simd = (fold.pe, fold.simd) if hasattr(fold, "pe") else fold
        tags.add("fold:pe=1" if pe == 1 else "fold:pe=all" if pe == layer.out_features
                 else "fold:pe=partial")
        tags.add("fold:simd=1" if simd == 1 else "fold:simd=all" if simd == layer.in_features
                 else "fold:simd=partial")
    return tags


# --- checking -----------------------------------------------------------------------------------

@dataclass
class Tally:
    """What a fuzz run checked: networks and vectors per simulator, mismatches (one line per
    differing output, ``"<simulator>: vector v: layer l output k: expected e, got g"``), the
    failing examples (``"<simulator>: <what went wrong>: <example>"``, one per failing
    network) and feature tags."""
    networks: Counter = field(default_factory=Counter)
    vectors: Counter = field(default_factory=Counter)
    mismatches: list = field(default_factory=list)
    features: Counter = field(default_factory=Counter)
    failures: list = field(default_factory=list)

    def add(self, simulator, example, found):
        self.networks[simulator] += 1
        self.vectors[simulator] += len(example.codes)
        self.mismatches += [f"{simulator}: {m}" for m in found]

    def merge(self, other):
        """Add another :class:`Tally`'s counts and lists to this one (returns self)."""
        self.networks.update(other.networks)
        self.vectors.update(other.vectors)
        self.features.update(other.features)
        self.mismatches += other.mismatches
        self.failures += other.failures
        return self

    def summary(self):
        parts = [f"golden = {sim}: {self.networks[sim]} networks, {self.vectors[sim]} vectors"
                 for sim in self.networks]
        return "; ".join(parts) + f"; {len(self.mismatches)} mismatches"


def check(example, simulators=("amaranth",), *, build_dir=None, tally=None):
    """Run ``example`` in each simulator and compare with the golden model output by output.

    Returns a list of ``(simulator, Mismatch)`` pairs (empty: bit-exact in every simulator);
    each :class:`~qnnfab.sim.runner.Mismatch` names the vector, layer, index, expected and
    got.
    """
    from .runner import compare, simulate
    golden.forward(example.network, example.codes)  # the golden model accepts the example
    found = []
    for simulator in simulators:
        # The cocotb harness (Icarus) feeds whole vectors: no input buffer there.
        result = simulate(example.network, example.codes, simulator=simulator,
                          folding=example.folding, build_dir=build_dir,
                          style=example.styles, weights_in=example.stores,
                          input_buffer=example.input_buffer and simulator != "icarus")
        mismatches = compare(example.network, example.codes, result).mismatches
        found += [(simulator, m) for m in mismatches]
        if tally is not None:
            tally.add(simulator, example, mismatches)
    if tally is not None:
        tally.features.update(features_of(example))
    return found


#: Random stalls of a batch (``ready_probability``, ``valid_probability``): the batches
#: alternate between none (back-to-back transfers) and these.
BATCH_STALLS = (0.6, 0.7)


def check_batch(examples_, *, build_dir=None, tally=None, seed=0, stalls=False):
    """Run several examples side by side in one bulk Verilator build
    (:func:`qnnfab.sim.bulk_network.run_networks`) and compare each with the golden model.

    ``stalls``: random back-pressure and input gaps (:data:`BATCH_STALLS`, seeded by ``seed``)
    instead of none. Returns ``(index, Mismatch)`` pairs, ``index`` into ``examples_``. A
    network that stops answering, or a build that fails, is a failure too: ``(index, message)``
    with the message as a string (``index`` None when the whole batch failed). With ``tally``,
    the networks count under ``"verilator"`` (none of them when the batch failed) and each
    failing example is recorded."""
    from .bulk_network import run_networks
    from .runner import compare
    from .verilator_bulk import BulkStallError, ToolNotFoundError
    examples_ = list(examples_)
    ready, valid = BATCH_STALLS if stalls else (1.0, 1.0)
    found = []
    try:
        runs = run_networks([(e.network, e.folding, e.codes, e.styles, e.stores,
                              e.input_buffer) for e in examples_],
                            build_dir=build_dir, ready_probability=ready,
                            valid_probability=valid, seed=seed, jobs=1)
    except ToolNotFoundError:
        raise
    except BulkStallError as exc:
        lane = _stalled_lane(str(exc))
        found.append((lane, str(exc)))
        runs = None
    except RuntimeError as exc:
        found.append((None, f"batch of {len(examples_)} networks failed: {exc}"))
        runs = None
    for k, example in enumerate(examples_ if runs is not None else ()):
        mismatches = compare(example.network, example.codes, runs[k]).mismatches
        found += [(k, m) for m in mismatches]
        if tally is not None:
            tally.add("verilator", example, mismatches)
            tally.features.update(features_of(example))
            if mismatches:
                tally.failures.append(f"verilator: {len(mismatches)} mismatching outputs: "
                                      f"{example!r}")
    if tally is not None:
        for k, message in found:
            if isinstance(message, str):
                what = "" if k is None else f": {examples_[k]!r}"
                tally.mismatches.append(f"verilator: {message}")
                tally.failures.append(f"verilator: {message.splitlines()[0]}{what}")
    return found


def _stalled_lane(message):
    import re
    match = re.search(r"stalled: lane (\d+):", message)
    return int(match.group(1)) if match else None


def assert_equivalent(example, simulators=("amaranth",), *, build_dir=None, tally=None):
    """:func:`check`, raising AssertionError listing the first mismatches."""
    found = check(example, simulators, build_dir=build_dir, tally=tally)
    if found:
        lines = [f"{simulator}: {m}" for simulator, m in found[:10]]
        raise AssertionError(f"{len(found)} mismatches with the golden model:\n"
                             + "\n".join(lines))


def run(examples_n, simulators, *, seed=None, build_dir=None, tally=None, progress=None,
        max_features=12, max_vectors=6, batch=1, deadline=None, verilator_share=1.0):
    """Check ``examples_n`` Hypothesis examples in ``simulators``; returns the :class:`Tally`.

    A mismatch in a simulator run one example at a time raises AssertionError (after
    Hypothesis shrinks it to a minimal example). ``batch`` > 1 runs ``"verilator"`` on
    ``batch`` examples per build (:func:`check_batch`, every other batch with random stalls);
    its mismatches are recorded in the tally, not raised; ``verilator_share`` < 1 sends only
    that share of the examples there (evenly spread: a Verilator build costs several times an
    Amaranth run). ``deadline`` (a ``time.monotonic()`` value): examples drawn after it are
    skipped (not counted)."""
    tally = Tally() if tally is None else tally
    batched = batch > 1 and "verilator" in simulators
    direct = tuple(s for s in simulators if not (batched and s == "verilator"))
    if not 0.0 < verilator_share <= 1.0:
        raise ValueError(f"verilator_share must be in (0, 1], not {verilator_share!r}")
    pending = []
    state = {"done": 0, "batches": 0, "share": 0.0}

    def flush():
        if pending:
            check_batch(pending, build_dir=build_dir, tally=tally,
                        seed=(seed or 0) + state["batches"], stalls=state["batches"] % 2 == 1)
            state["batches"] += 1
            pending.clear()

    @settings(max_examples=examples_n, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(examples(max_features=max_features, max_vectors=max_vectors))
    def one(example):
        if deadline is not None and time.monotonic() > deadline:
            return
        if direct or not batched:
            assert_equivalent(example, direct, build_dir=build_dir, tally=tally)
        state["share"] += verilator_share
        if batched and state["share"] >= 1.0:
            state["share"] -= 1.0
            pending.append(example)
            if len(pending) >= batch:
                flush()
        state["done"] += 1
        if progress is not None:
            progress(state["done"], examples_n)

    if seed is not None:
        one = hypothesis_seed(seed)(one)
    one()
    flush()
    return tally


def main(argv=None):
    """``python -m qnnfab.sim.fuzz``: the campaign of :mod:`qnnfab.sim.fuzz_campaign` with
    :func:`run` and :class:`Tally`; returns the exit status."""
    from .fuzz_campaign import campaign
    return campaign(argv, run=run, tally_class=Tally)


if __name__ == "__main__":
    sys.exit(main())
