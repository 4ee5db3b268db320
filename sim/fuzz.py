"""Randomized equivalence: the golden model, Amaranth's simulator and Verilator agree on random
networks, output by output.

:func:`examples` is a Hypothesis strategy for an :class:`Example`: a random valid network
(dense and convolutional, every weight kind of the registry :data:`qnnfab.kinds.WEIGHT_KINDS`
— binary, ternary, per-weight codebook — kernel codebooks with and without per-kernel signs,
max-pool layers, 1..8-bit activations), a random
folding (any PE that divides the outputs and any allowed SIMD: from fully serial to fully
parallel), and input vectors mixing random codes with the extremes (all zero, all max,
alternating 0/max and max/0). The network's structure, kinds, widths and folding are drawn by
Hypothesis (so a failure shrinks to a small network); weights, thresholds and random codes come
from a NumPy generator seeded by a drawn integer.

:func:`check` runs one example through the golden model and the given simulators and returns
every disagreement as a :class:`~qnnfab.sim.runner.Mismatch` line. The tests in
``tests/sim/test_fuzz.py`` run a bounded number of examples; ``make fuzz`` runs many more::

    python -m qnnfab.sim.fuzz --examples 300 --verilator-examples 12

and prints how many networks and vectors were checked and how many mismatches were found.
Hypothesis is a test dependency (``pip install -e .[test]``).
"""

import argparse
import os
import sys
import tempfile
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
from qnnfab.rtl.folding import divisors, simd_choices

__all__ = ["Example", "Tally", "examples", "networks", "input_codes", "check", "features_of",
           "run", "main"]

#: Input patterns besides uniform random codes.
PATTERNS = ("random", "zero", "max", "alternating", "alternating-inverted")


@dataclass
class Example:
    """One fuzz case: a network, its folding (one ``(pe, simd)`` or None per layer) and input
    codes, shape (n, input_features)."""
    network: ir.Network
    folding: list
    codes: np.ndarray
    patterns: tuple = ()

    def __repr__(self):  # what Hypothesis prints for a falsifying example
        layers = "; ".join(_describe_layer(layer) for layer in self.network.layers)
        return (f"Example({self.network.input_features}x{self.network.input_bits}b -> {layers}; "
                f"folding {self.folding}; inputs {list(self.patterns)}; "
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
    """A random :class:`Example` (network, folding, inputs)."""
    network, rng = draw(networks(max_features=max_features, spatial=spatial))
    folding = draw(foldings(network))
    codes, patterns = draw(input_codes(network, rng, max_vectors=max_vectors))
    return Example(network=network, folding=folding, codes=codes, patterns=patterns)


def features_of(example):
    """The set of feature tags an example exercises (what ``make fuzz`` tallies)."""
    tags = {f"inputs:{p}" for p in example.patterns}
    tags.add(f"input_bits:{example.network.input_bits}")
    for layer, fold in zip(example.network.layers, example.folding):
        if isinstance(layer, ir.PoolLayer):
            tags.add(f"maxpool{layer.size}")
            continue
        where = "conv" if isinstance(layer, ir.ConvLayer) else "dense"
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
        pe, simd = fold
        tags.add("fold:pe=1" if pe == 1 else "fold:pe=all" if pe == layer.out_features
                 else "fold:pe=partial")
        tags.add("fold:simd=1" if simd == 1 else "fold:simd=all" if simd == layer.in_features
                 else "fold:simd=partial")
    return tags


# --- checking -----------------------------------------------------------------------------------

@dataclass
class Tally:
    """What a fuzz run checked: networks and vectors per simulator, mismatches, feature tags."""
    networks: Counter = field(default_factory=Counter)
    vectors: Counter = field(default_factory=Counter)
    mismatches: list = field(default_factory=list)
    features: Counter = field(default_factory=Counter)

    def add(self, simulator, example, found):
        self.networks[simulator] += 1
        self.vectors[simulator] += len(example.codes)
        self.mismatches += [f"{simulator}: {m}" for m in found]

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
        result = simulate(example.network, example.codes, simulator=simulator,
                          folding=example.folding, build_dir=build_dir)
        mismatches = compare(example.network, example.codes, result).mismatches
        found += [(simulator, m) for m in mismatches]
        if tally is not None:
            tally.add(simulator, example, mismatches)
    if tally is not None:
        tally.features.update(features_of(example))
    return found


def assert_equivalent(example, simulators=("amaranth",), *, build_dir=None, tally=None):
    """:func:`check`, raising AssertionError listing the first mismatches."""
    found = check(example, simulators, build_dir=build_dir, tally=tally)
    if found:
        lines = [f"{simulator}: {m}" for simulator, m in found[:10]]
        raise AssertionError(f"{len(found)} mismatches with the golden model:\n"
                             + "\n".join(lines))


def run(examples_n, simulators, *, seed=None, build_dir=None, tally=None, progress=None,
        max_features=12, max_vectors=6):
    """Check ``examples_n`` Hypothesis examples in ``simulators``; returns the :class:`Tally`.
    A mismatch raises AssertionError (after Hypothesis shrinks it to a minimal example)."""
    tally = Tally() if tally is None else tally
    done = [0]

    @settings(max_examples=examples_n, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(examples(max_features=max_features, max_vectors=max_vectors))
    def one(example):
        assert_equivalent(example, simulators, build_dir=build_dir, tally=tally)
        done[0] += 1
        if progress is not None:
            progress(done[0], examples_n)

    if seed is not None:
        one = hypothesis_seed(seed)(one)
    one()
    return tally


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m qnnfab.sim.fuzz",
        description="Check golden = Amaranth = Verilator on random networks (Hypothesis).")
    parser.add_argument("--examples", type=int, default=300,
                        help="networks checked in Amaranth's simulator (default 300)")
    parser.add_argument("--verilator-examples", type=int, default=12,
                        help="networks also checked in Verilator, each compiled (~20 s each; "
                             "default 12; 0 to skip)")
    parser.add_argument("--seed", type=int, default=None,
                        help="Hypothesis seed, to repeat a run (default: a new random seed, "
                             "printed)")
    parser.add_argument("--max-features", type=int, default=12,
                        help="largest layer width drawn (default 12)")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "little")
    print(f"seed {args.seed} (repeat this run with --seed {args.seed})", file=sys.stderr)
    tally = Tally()
    start = time.monotonic()

    def progress(what):
        def report(done, total):
            step = max(1, total // 20)
            if done % step == 0 or done == total:
                print(f"  {what}: {done}/{total} networks ({time.monotonic() - start:.0f} s)",
                      file=sys.stderr, flush=True)
        return report

    try:
        print(f"golden = amaranth on {args.examples} random networks", file=sys.stderr)
        run(args.examples, ("amaranth",), seed=args.seed, tally=tally,
            progress=progress("amaranth"), max_features=args.max_features)
        if args.verilator_examples:
            print(f"golden = amaranth = verilator on {args.verilator_examples} random networks",
                  file=sys.stderr)
            with tempfile.TemporaryDirectory(prefix="qnnfab-fuzz-") as build_dir:
                run(args.verilator_examples, ("amaranth", "verilator"),
                    seed=args.seed + 1, build_dir=build_dir,
                    tally=tally, progress=progress("verilator"),
                    max_features=args.max_features, max_vectors=32)
    except AssertionError as exc:
        print(tally.summary())
        print(f"MISMATCH: {exc}")
        return 1
    print(f"features exercised: {', '.join(sorted(tally.features))}")
    print(tally.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
