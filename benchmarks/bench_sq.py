"""Smart Quantization against its baselines: all-binary, all-ternary, SQ (regularizer), SQ (rule).

    python benchmarks/bench_sq.py [--seeds 0 1 2] [--models mlp cnn] [--cost MU]
                                  [--sweep MU ...] [--no-exhaustive] [--fmnist]
                                  [--fmnist-models mlp cnn] [--fmnist-seeds S ...]
                                  [--fmnist-cnn-seeds S ...] [--fmnist-cnn-epochs N]
                                  [--epochs N]
                                  [--reuse] [--out build/bench]

On digits, for the MLP of ``digits-sq`` (64x5b -> 128x2b -> 128x2b -> 10) and the CNN of
``digits-cnn`` (c16,p2,c32,p2,d10, 2-bit activations), each with its preset's training settings
and seeds ``--seeds``, trains:

* **all-binary** and **all-ternary**: every layer's kind fixed (the level penalty of its kind);
* **SQ (regularizer)**: adaptive layers, ``SQConfig(method="regularizer", cost=--cost)``: the
  depth gates decide (:mod:`qnnfab.model.sq`);
* **SQ (rule)**: adaptive layers, ``SQConfig(method="rule", bit_budget=1.5)``: the zero-gain
  rule with the bit budget decides;
* **exhaustive** (unless ``--no-exhaustive``): every one of the ``2^L`` binary/ternary depth
  assignments trained, the one with the best validation accuracy (ties: the lower validation
  loss, then fewer bits) kept: what choosing depths by search costs.

Each row: integer (golden-model) test accuracy and average stored bits per weight, mean over
seeds with min..max, the depth per layer each seed ended with, and the trainings one result
needs. A second table sweeps the regularizer's memory cost ``μ`` (``--sweep``): bits per weight
and accuracy as ``μ`` grows. ``--fmnist`` adds Fashion-MNIST rows (no exhaustive search, no
sweep) for the networks of ``--fmnist-models`` (default both): ``mlp``, a 784-256-256-10 MLP
(2-bit activations, 5 epochs, seeds ``--fmnist-seeds``), and ``cnn``, digits-cnn's network
(c16,p2,c32,p2,d10, 2-bit activations, its training settings) on the 28x28x1 images for
``--fmnist-cnn-epochs`` epochs, seeds ``--fmnist-cnn-seeds`` (default ``--fmnist-seeds``).

Prints both tables (progress on stderr), writes ``OUT/sq.md`` and ``OUT/sq.json`` and the ``sq``
and ``sq-cost`` tables of ``docs/results.md`` (``--docs PAGE``; ``--no-docs``: not). Every
training's outcome is kept in ``OUT/sq_runs.json``; ``--reuse`` takes finished ones from there
(same settings), so an interrupted run continues.
"""

import argparse
import dataclasses
import itertools
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from doc_tables import add_docs_arguments, check_docs_page, docs_page  # noqa: E402

from qnnfab import ir  # noqa: E402
from qnnfab.model.presets import Preset, get_preset  # noqa: E402
from qnnfab.model.sq import SQConfig  # noqa: E402
from qnnfab.model.train import train  # noqa: E402

#: The tables of docs/results.md this benchmark writes.
DOC_TABLES = ("sq", "sq-cost")

#: The networks: label -> (preset whose shape and training settings are used, data, arch or
#: None for the preset's own, epochs or None for the preset's).
MODELS = {
    "mlp": ("MLP", "digits-sq", "digits", None, None),
    "cnn": ("CNN", "digits-cnn", "digits", None, None),
    "fmnist-mlp": ("MLP 784-256-256-10", "digits-sq", "fashion-mnist", "d256,d256,d10", 5),
    "fmnist-cnn": ("CNN c16,p2,c32,p2,d10", "digits-cnn", "fashion-mnist", None, None),
}
#: The Fashion-MNIST networks (``--fmnist-models`` name -> :data:`MODELS` key): no
#: exhaustive search and no cost sweep for them.
FMNIST = {"mlp": "fmnist-mlp", "cnn": "fmnist-cnn"}
#: Epochs of the Fashion-MNIST CNN (``--fmnist-cnn-epochs``): digits-cnn's 80 epochs of 1,437
#: images would be hours on 54,000.
FMNIST_CNN_EPOCHS = 2
METHODS = ("all-binary", "all-ternary", "SQ (regularizer)", "SQ (rule)")
LETTER = {"binary": "B", "ternary": "T"}
RULE_BUDGET = 1.5


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def preset_for(model, weights, sq):
    """The preset of ``model`` (a :data:`MODELS` key) with ``weights`` and Smart Quantization
    settings ``sq``."""
    _, base_name, _, arch, epochs = MODELS[model]
    base = get_preset(base_name)
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(Preset)
              if f.name not in ("name", "model", "conv", "hidden", "outputs")}
    fields.update(weights=weights, sq=sq)
    if epochs is not None:
        fields["epochs"] = epochs
    if arch is None:
        return dataclasses.replace(base, name=f"{base.name}[{weights}]", weights=weights, sq=sq,
                                   epochs=fields["epochs"])
    return Preset.from_arch(f"{base.name}[{arch}, {weights}]", arch, **fields)


def n_layers(model):
    p = get_preset(MODELS[model][1]) if MODELS[model][3] is None else \
        preset_for(model, "binary", SQConfig())
    return len(p.conv) + len(p.hidden) + 1


def run_key(model, name, weights, sq, seed, epochs, data):
    """The cache key of one training. Layers of a fixed kind see only the level penalty, so
    for them the depth settings (method, cost, rule) are left out of the key."""
    settings = dataclasses.asdict(sq)
    if weights != "adaptive":
        settings = {k: settings[k] for k in ("lambda_start", "lambda_end")}
    return json.dumps([model, name, settings, seed, epochs, data], sort_keys=True)


class Runs:
    """Every training's outcome, kept in ``OUT/sq_runs.json`` (``--reuse`` reads it back)."""

    def __init__(self, path, reuse, total):
        self.path, self.done, self.total = path, 0, total
        self.cache, self.used = {}, set()
        if reuse and os.path.exists(path):
            with open(path) as f:
                self.cache = json.load(f)

    def train(self, model, weights, sq, seed, epochs):
        preset = preset_for(model, weights, sq)
        data = MODELS[model][2]
        key = run_key(model, preset.name, weights, sq, seed, epochs, data)
        self.done += 1
        self.used.add(key)
        what = f"[{self.done}/{self.total}] {data} {MODELS[model][0]} {weights}" + \
            (f" ({sq.method}{f', cost {sq.cost:g}' if sq.method == 'regularizer' else ''})"
             if weights == "adaptive" else "") + f" seed {seed}"
        if key in self.cache:
            log(f"{what}: reused")
            return self.cache[key]
        start = time.monotonic()
        r = train(preset, seed=seed, progress=False, data=data, epochs=epochs)
        net = r.network
        meta = net.meta.get("sq", {})
        row = {"seed": seed, "integer": r.integer_accuracy, "float": r.float_accuracy,
               "val": r.history[r.best_epoch - 1]["val_accuracy"],
               "val_loss": r.history[r.best_epoch - 1]["val_loss"],
               "bits_per_weight": net.weight_bits / net.n_weights,
               "depth": [layer.weight_kind for layer in net.layers
                         if layer.weight_kind in LETTER],
               "gate": meta.get("gate"), "decided_at": meta.get("decided_at"),
               "gate_history": [h["gate"] for h in meta.get("history", []) if "gate" in h],
               "seconds": round(time.monotonic() - start, 1)}
        log(f"{what}: integer {row['integer']:.2%}, {row['bits_per_weight']:.3f} bits/weight, "
            f"{depth_text(row['depth'])}" + (f", gates {row['gate']}" if row["gate"] else "")
            + f", {row['seconds']:.0f} s")
        self.cache[key] = row
        ir.atomic_write_bytes(self.path, (json.dumps(self.cache, indent=1) + "\n").encode())
        return row


def depth_text(depth):
    return "/".join(LETTER[k] for k in depth)


def spread(values, scale=100.0, digits=2):
    v = np.asarray(values, dtype=float) * scale
    return f"{v.mean():.{digits}f} ({v.min():.{digits}f}..{v.max():.{digits}f})"


def depths_text(rows):
    """``T/B/T ×3`` or ``T/B/T ×2, B/B/T ×1``: each seed's depths, most frequent first."""
    counts = {}
    for r in rows:
        counts[depth_text(r["depth"])] = counts.get(depth_text(r["depth"]), 0) + 1
    return ", ".join(f"{d} ×{n}" for d, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def exhaustive_choice(rows):
    """The validation-best of one seed's ``2^L`` trainings (ties: lower validation loss, then
    fewer bits)."""
    return max(rows, key=lambda r: (r["val"], -r["val_loss"], -r["bits_per_weight"]))


def seeds_of(model, args):
    if model == "fmnist-cnn" and args.fmnist_cnn_seeds:
        return args.fmnist_cnn_seeds
    if model in FMNIST.values() and args.fmnist_seeds:
        return args.fmnist_seeds
    return args.seeds


def train_epochs(model, args):
    """The ``epochs`` a training of ``model`` is given (None: the preset's): ``--epochs``, and
    for the Fashion-MNIST CNN ``--fmnist-cnn-epochs`` unless ``--epochs`` overrides it (so its
    cache key holds its epochs)."""
    if model == "fmnist-cnn":
        return args.epochs or args.fmnist_cnn_epochs
    return args.epochs


def models_of(args):
    return list(args.models) + ([FMNIST[m] for m in args.fmnist_models] if args.fmnist else [])


def run(args):
    models = models_of(args)
    plan = 0
    for m in models:
        exhaustive = not args.no_exhaustive and m not in FMNIST.values()
        per_seed = (2 ** n_layers(m) + 2) if exhaustive else 4
        sweep = set(args.sweep) | {args.cost} if m not in FMNIST.values() else ()
        plan += len(seeds_of(m, args)) * (per_seed + len(sweep))
    runs = Runs(os.path.join(args.out, "sq_runs.json"), args.reuse, plan)
    fixed = SQConfig(method="rule")
    regularizer = SQConfig(method="regularizer", cost=args.cost)
    rule = SQConfig(method="rule", bit_budget=RULE_BUDGET)
    table, sweep_rows = [], []
    for m in models:
        label, _, data, _, _ = MODELS[m]
        L = n_layers(m)
        results = {k: [] for k in METHODS}
        results["exhaustive"] = []
        n_epochs = train_epochs(m, args)
        for seed in seeds_of(m, args):
            one = {"all-binary": runs.train(m, "binary", fixed, seed, n_epochs),
                   "all-ternary": runs.train(m, "ternary", fixed, seed, n_epochs),
                   "SQ (regularizer)": runs.train(m, "adaptive", regularizer, seed, n_epochs),
                   "SQ (rule)": runs.train(m, "adaptive", rule, seed, n_epochs)}
            for k, r in one.items():
                results[k].append(r)
            if not args.no_exhaustive and m not in FMNIST.values():
                every = []
                for kinds in itertools.product(("binary", "ternary"), repeat=L):
                    if len(set(kinds)) == 1:
                        every.append(one[f"all-{kinds[0]}"])
                    else:
                        every.append(runs.train(m, tuple(kinds), fixed, seed, args.epochs))
                results["exhaustive"].append(exhaustive_choice(every))
        trainings = {"all-binary": 1, "all-ternary": 1, "SQ (regularizer)": 1, "SQ (rule)": 1,
                     "exhaustive": 2 ** L}
        for method in (*METHODS, "exhaustive"):
            rows = results[method]
            if not rows:
                continue
            table.append({"data": data, "model": label, "method": method,
                          "trainings": trainings[method],
                          "integer": [r["integer"] for r in rows],
                          "bits": [r["bits_per_weight"] for r in rows],
                          "depths": depths_text(rows), "seeds": [r["seed"] for r in rows],
                          "runs": rows})
        if m in FMNIST.values():
            continue
        for cost in sorted(set(args.sweep) | {args.cost}):
            cfg = SQConfig(method="regularizer", cost=cost)
            rows = [runs.train(m, "adaptive", cfg, seed, args.epochs) for seed in args.seeds]
            sweep_rows.append({"data": data, "model": label, "cost": cost,
                               "integer": [r["integer"] for r in rows],
                               "bits": [r["bits_per_weight"] for r in rows],
                               "depths": depths_text(rows),
                               "gates": [r["gate"] for r in rows], "runs": rows})
    return table, sweep_rows, sum(runs.cache[k]["seconds"] for k in runs.used)


def epochs(model, args):
    return (train_epochs(model, args) or MODELS[model][4]
            or get_preset(MODELS[model][1]).epochs)


def fmnist_note(args):
    """The notes' sentence on the Fashion-MNIST networks run."""
    if not args.fmnist:
        return ""
    parts = []
    for name in args.fmnist_models:
        m = FMNIST[name]
        seeds = ", ".join(map(str, seeds_of(m, args)))
        if m == "fmnist-mlp":
            parts.append(f"Fashion-MNIST MLP: 784 -> 256x2b -> 256x2b -> 10, "
                         f"{epochs(m, args)} epochs, seeds {seeds}")
        else:
            parts.append(f"Fashion-MNIST CNN: digits-cnn's network and training settings "
                         f"(c16,p2,c32,p2,d10 on 28x28x1, 2-bit activations) for "
                         f"{epochs(m, args)} epochs, seeds {seeds}")
    return "; " + "; ".join(parts)


def markdown(table, sweep_rows, args, seconds):
    seeds = ", ".join(map(str, args.seeds))
    lines = ["| data | network | method | trainings | integer test acc % | bits/weight | "
             "depth per layer (seeds) |", "|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['data']} | {r['model']} | {r['method']} | {r['trainings']} | "
                     f"{spread(r['integer'])} | {spread(r['bits'], 1.0, 3)} | {r['depths']} |")
    notes = [
        "",
        f"Seeds {seeds}; integer (golden-model) accuracy on the held-out test split, mean "
        f"(min..max) over seeds; bits/weight = stored weight bits / weights (B 1 bit, T 2 bits); "
        f"depth per layer: the kinds each seed ended with (×seeds). MLP: digits-sq's network "
        f"(64x5b -> 128x2b -> 128x2b -> 10, {epochs('mlp', args)} epochs); CNN: digits-cnn's "
        f"(c16,p2,c32,p2,d10, 2-bit activations, {epochs('cnn', args)} epochs)"
        + fmnist_note(args)
        + f". SQ (regularizer): memory cost μ = {args.cost:g}; "
        f"SQ (rule): ρ = 0.3, bit budget {RULE_BUDGET}; exhaustive: all 2^L depth assignments "
        f"trained, the best validation accuracy kept. Every row uses the same level penalty "
        f"schedule (λ 1e-4 → 1e-2).",
        f"Training time {seconds / 60:.1f} min in all (the sum over every training this table "
        f"uses, `make bench-sq`, `benchmarks/bench_sq.py`).",
    ]
    main = "\n".join(lines + notes) + "\n"
    lines = ["| data | network | memory cost μ | integer test acc % | bits/weight | "
             "depth per layer (seeds) | gates p at the read-off (seed " f"{args.seeds[0]}) |",
             "|---|---|---|---|---|---|---|"]
    for r in sweep_rows:
        gate = r["gates"][0]
        gate = "/".join(f"{g:.2f}" for g in gate) if gate else ""
        lines.append(f"| {r['data']} | {r['model']} | {r['cost']:g} | {spread(r['integer'])} | "
                     f"{spread(r['bits'], 1.0, 3)} | {r['depths']} | {gate} |")
    lines += ["", f"SQ (regularizer) with memory cost μ swept, seeds {seeds}; gates: "
              f"p = sigmoid(s) per layer when the depths were read off (ternary where p >= 0.5)."]
    return main, "\n".join(lines) + "\n"


def parse_args(argv=None):
    """The options, checked (``parser.error`` names the option at fault)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", choices=["mlp", "cnn"], default=["mlp", "cnn"])
    parser.add_argument("--cost", type=float, default=SQConfig().cost,
                        help="the regularizer's memory cost μ (default: SQConfig's)")
    parser.add_argument("--sweep", type=float, nargs="*", default=[0.0, 0.005, 0.02, 0.05, 0.1],
                        help="further costs μ for the sweep table")
    parser.add_argument("--no-exhaustive", action="store_true",
                        help="skip the exhaustive search over depth assignments")
    parser.add_argument("--fmnist", action="store_true",
                        help="add Fashion-MNIST rows for --fmnist-models (minutes per training)")
    parser.add_argument("--fmnist-models", nargs="+", choices=list(FMNIST),
                        default=None, help="the Fashion-MNIST networks of --fmnist: mlp "
                        "(784-256-256-10), cnn (digits-cnn's c16,p2,c32,p2,d10 on 28x28x1) "
                        "(default: both)")
    parser.add_argument("--fmnist-seeds", type=int, nargs="+", default=None,
                        help="seeds of the Fashion-MNIST rows (default: --seeds)")
    parser.add_argument("--fmnist-cnn-seeds", type=int, nargs="+", default=None,
                        help="seeds of the Fashion-MNIST CNN rows (default: --fmnist-seeds)")
    parser.add_argument("--fmnist-cnn-epochs", type=int, default=FMNIST_CNN_EPOCHS,
                        help=f"epochs of the Fashion-MNIST CNN (default {FMNIST_CNN_EPOCHS}; "
                             f"--epochs overrides it)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="override every network's epochs (quick checks only)")
    parser.add_argument("--reuse", action="store_true",
                        help="take finished trainings from OUT/sq_runs.json")
    parser.add_argument("--out", default="build/bench")
    add_docs_arguments(parser)
    args = parser.parse_args(argv)
    for option in ("seeds", "fmnist_seeds", "fmnist_cnn_seeds"):
        seeds = getattr(args, option)
        if seeds is not None and any(s < 0 for s in seeds):
            parser.error(f"--{option.replace('_', '-')}: expected non-negative integers, "
                         f"got {seeds}")
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs: expected a positive integer, got {args.epochs}")
    if args.fmnist_cnn_epochs < 1:
        parser.error(f"--fmnist-cnn-epochs: expected a positive integer, got "
                     f"{args.fmnist_cnn_epochs}")
    if not args.fmnist and (args.fmnist_models or args.fmnist_seeds or args.fmnist_cnn_seeds):
        parser.error("--fmnist-models, --fmnist-seeds, --fmnist-cnn-seeds: only with --fmnist")
    if args.fmnist_models is None:
        args.fmnist_models = list(FMNIST)
    args.fmnist_models = list(dict.fromkeys(args.fmnist_models))
    if not (args.cost >= 0 and all(c >= 0 for c in args.sweep)):
        parser.error("--cost, --sweep: expected costs >= 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    check_docs_page(args, DOC_TABLES)
    os.makedirs(args.out, exist_ok=True)
    started = time.monotonic()
    table, sweep_rows, train_seconds = run(args)
    seconds = time.monotonic() - started
    main_md, sweep_md = markdown(table, sweep_rows, args, train_seconds)
    print(main_md + "\n" + sweep_md, end="")
    ir.atomic_write_bytes(os.path.join(args.out, "sq.md"), (main_md + "\n" + sweep_md).encode())
    doc = {"seeds": args.seeds, "cost": args.cost, "epochs": args.epochs,
           "fmnist": {name: {"seeds": seeds_of(FMNIST[name], args),
                             "epochs": epochs(FMNIST[name], args)}
                      for name in (args.fmnist_models if args.fmnist else ())},
           "seconds": round(seconds, 1), "rows": table, "sweep": sweep_rows}
    ir.atomic_write_bytes(os.path.join(args.out, "sq.json"),
                          (json.dumps(doc, indent=1, default=float) + "\n").encode())
    log(f"wrote {os.path.join(args.out, 'sq.md')} and sq.json in {seconds / 60:.1f} min")
    docs_page(args, {"sq": main_md, "sq-cost": sweep_md}, log=log)


if __name__ == "__main__":
    main()
