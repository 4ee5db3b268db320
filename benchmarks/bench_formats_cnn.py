"""Benchmark number formats for a float CNN's weights (Nogami et al.): accuracy per method, width.

    python benchmarks/bench_formats_cnn.py [--data digits fashion-mnist] [--seeds 0 1 2]
                                           [--bits 2 3 4 5 6] [--acts float int8]
                                           [--methods float fixed uniform minifloat pow2 kmeans ga]
                                           [--epochs N] [--population N] [--generations N]
                                           [--fitness-images N] [--reuse] [--out build/bench]

For each data set and seed: train a float CNN (:class:`qnnfab.model.ptq_cnn.FloatCNN`,
``c16,p2,c32,p2,d10``, float ReLU activations), then quantize its conv and dense weights to
per-layer codebooks of ``2**bits`` levels with every method
(:func:`qnnfab.model.ptq_cnn.quantize_cnn`; ``ga`` scores the validation split, the first
``--fitness-images`` images of it when given) under both activation variants (``float``: ReLU;
``int8``: unsigned 8-bit codes, steps calibrated on training images), and record the test
accuracy and, per layer, the fixed-point distance of the levels
(:func:`qnnfab.model.ptq_cnn.fixed_point_distance`). Accuracies: mean (min..max) over seeds.

Per data set, defaults (:data:`SETTINGS`) that flags override for every data set of the run:
epochs, batch size, GA population and generations, fitness images. A data set's results are
kept in ``OUT/formats_cnn_<data>.json``; ``--reuse`` reads them back instead of running it
(so data sets can run in separate processes, then one ``--reuse`` run writes the table).

Prints a Markdown table (progress on stderr) and writes ``OUT/formats_cnn.md``,
``OUT/formats_cnn.json`` and the ``formats-cnn`` table of ``docs/results.md`` (``--docs PAGE``;
``--no-docs``: not) atomically.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_quant import Steps, log  # noqa: E402
from doc_tables import add_docs_arguments, check_docs_page, docs_page  # noqa: E402

from qnnfab import ir  # noqa: E402
from qnnfab.model.data import load_dataset  # noqa: E402
from qnnfab.model.ptq_cnn import (ACTIVATIONS, CALIBRATION_IMAGES, METHODS,  # noqa: E402
                                  format_distances, quantize_cnn, train_float_cnn)

#: The tables of docs/results.md this benchmark writes.
DOC_TABLES = ("formats-cnn",)

#: Per data set: training epochs and batch size, GA population and generations, and the
#: validation images the GA scores (None: all). Fashion-MNIST's are cut to fit the run in
#: about an hour on one core.
SETTINGS = {
    "digits": {"epochs": 30, "batch_size": 32, "population": 24, "generations": 30,
               "fitness_images": None},
    "fashion-mnist": {"epochs": 3, "batch_size": 64, "population": 16, "generations": 15,
                      "fitness_images": 1000},
}

#: Method names as the table prints them.
LABELS = {"float": "float weights", "fixed": "fixed", "uniform": "uniform",
          "minifloat": "minifloat", "pow2": "pow2", "kmeans": "k-means", "ga": "GA"}


def settings(data, args):
    """The run settings of ``data``: :data:`SETTINGS` (digits' for unknown sets), overridden by
    the flags given."""
    s = dict(SETTINGS.get(data, SETTINGS["digits"]))
    for key in s:
        value = getattr(args, key)
        if value is not None:
            s[key] = None if key == "fitness_images" and value == 0 else value
    return s


def run_data(data, args, steps):
    """Train and quantize ``data`` for every seed: the results document of one data set."""
    s = settings(data, args)
    floats, rows = [], []
    for seed in args.seeds:
        ds = load_dataset(data, seed=0)
        model = steps.run(f"{data} seed {seed}: train float CNN ({s['epochs']} epochs)",
                          lambda: train_float_cnn(ds, seed=seed, epochs=s["epochs"],
                                                  batch_size=s["batch_size"]))
        for act in args.acts:
            for method in args.methods:
                for bits in (args.bits[:1] if method == "float" else args.bits):
                    q = steps.run(
                        f"{data} seed {seed}: {act} activations, {method}"
                        + ("" if method == "float" else f" {bits}-bit"),
                        lambda: quantize_cnn(model, ds, method, bits, act=act, seed=seed,
                                             population=s["population"],
                                             generations=s["generations"],
                                             fitness_images=s["fitness_images"]))
                    log(f"        test {q.test_accuracy:.2%} (validation {q.val_accuracy:.2%})"
                        + (f", fixed-point distance {np.mean(q.distances):.3f}"
                           if q.distances else ""))
                    row = {"seed": seed, "act": act, "method": method,
                           "bits": None if method == "float" else bits,
                           "test": q.test_accuracy, "val": q.val_accuracy,
                           "distances": q.distances, "distinct": q.distinct,
                           "seconds": round(q.seconds, 2)}
                    if q.books is not None:
                        row["levels"] = [b.levels.tolist() for b in q.books]
                    if q.history:
                        row["ga_best_fitness"] = q.history[-1]["best"]
                    rows.append(row)
                    if method == "float" and act == "float":
                        floats.append(q.test_accuracy)
    return {"data": data, "settings": s, "seeds": list(args.seeds), "float": floats,
            "rows": rows}


def _cell(values, fmt):
    if not values:
        return "-"
    mean, lo, hi = np.mean(values), np.min(values), np.max(values)
    if len(values) == 1:
        return fmt(mean)
    return f"{fmt(mean)} ({fmt(lo)}..{fmt(hi)})"


def _format_cell(rows):
    """Mean :func:`~qnnfab.model.ptq_cnn.format_distances` of the rows' levels (over layers and
    seeds): ``fixed / minifloat / pow2``."""
    found = [format_distances(lv) for r in rows for lv in r.get("levels", [])]
    if not found:
        return "-"
    return " / ".join(f"{np.mean([f[k] for f in found]):.2f}"
                      for k in ("fixed", "minifloat", "pow2"))


def _setting_text(doc):
    s = doc["settings"]
    fit = "all" if s["fitness_images"] is None else f"first {s['fitness_images']:,}"
    return (f"{doc['data']}: {s['epochs']} epochs (batch {s['batch_size']}), GA population "
            f"{s['population']} × {s['generations']} generations, fitness on {fit} validation "
            f"images")


def table(docs, args, seconds):
    """The Markdown table of the data sets' results documents ``docs``."""
    pct = lambda x: f"{100 * x:.2f}"   # noqa: E731
    dist = lambda x: f"{x:.3f}"        # noqa: E731
    seeds = ", ".join(map(str, docs[0]["seeds"]))
    lines = ["Float CNN c16,p2,c32,p2,d10 (3×3 convs with bias, ReLU, 2×2 max pool; no batch "
             "norm) trained per seed, weights of every conv and dense layer quantized "
             "post-training to per-layer codebooks of 2**bits levels; test accuracy %, mean "
             f"(min..max) over seeds {seeds}. Activations: float (ReLU) or int8 (unsigned 8-bit "
             f"codes, steps from {CALIBRATION_IMAGES} training images). Settings: "
             + "; ".join(_setting_text(d) for d in docs) + ".", "",
             "| data | activations | method | " + " | ".join(f"{b} bits" for b in args.bits)
             + " |", "|---|---|---|" + "---|" * len(args.bits)]
    for doc in docs:
        rows = doc["rows"]
        for act in args.acts:
            def pick(method, bits=None):
                return [r for r in rows if r["act"] == act and r["method"] == method
                        and (method == "float" or r["bits"] == bits)]
            for method in args.methods:
                if method == "float":
                    cells = [_cell([r["test"] for r in pick("float")], pct)] * len(args.bits)
                else:
                    cells = [_cell([r["test"] for r in pick(method, b)], pct) for b in args.bits]
                lines.append(f"| {doc['data']} | {act} | {LABELS[method]} | "
                             + " | ".join(cells) + " |")
            for method in ("ga", "kmeans"):
                if method in args.methods:
                    cells = [_cell([float(np.mean(r["distances"])) for r in pick(method, b)],
                                   dist) for b in args.bits]
                    lines.append(f"| {doc['data']} | {act} | {LABELS[method]}: fixed-point "
                                 f"distance d | " + " | ".join(cells) + " |")
            if "ga" in args.methods:
                cells = [_format_cell(pick("ga", b)) for b in args.bits]
                lines.append(f"| {doc['data']} | {act} | GA: distance to fixed / minifloat / "
                             f"pow2 | " + " | ".join(cells) + " |")
    lines += ["", "Fixed-point distance d: RMS distance of a layer's levels to the best-fitting "
              "fixed-point grid of as many levels (two's-complement grid s·j, the step s "
              "fitted), in units of s, averaged over the layers, then mean (min..max) over "
              "seeds; 0 = exactly fixed point (fixed, uniform), ≈ 0.29 = remainders at "
              "random. Distance to fixed / minifloat / pow2: RMS distance of the GA's levels to "
              "each format's grid of as many levels with its best scale, in units of the "
              "levels' mean spacing (max - min)/(2**bits - 1), mean over layers and seeds: the "
              "smallest is the format the GA's levels resemble most.",
              f"Compute time {seconds / 60:.1f} min (the data sets' runs added; one torch "
              f"thread)."]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["digits", "fashion-mnist"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4, 5, 6])
    parser.add_argument("--acts", nargs="+", default=list(ACTIVATIONS), choices=ACTIVATIONS)
    parser.add_argument("--methods", nargs="+",
                        default=["float", "fixed", "uniform", "minifloat", "pow2", "kmeans",
                                 "ga"], choices=list(METHODS))
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--population", type=int)
    parser.add_argument("--generations", type=int)
    parser.add_argument("--fitness-images", type=int, help="GA fitness on the first N "
                        "validation images (0: all)")
    parser.add_argument("--reuse", action="store_true",
                        help="read a data set's results from OUT/formats_cnn_<data>.json when "
                             "present instead of running it")
    parser.add_argument("--out", default="build/bench")
    add_docs_arguments(parser)
    args = parser.parse_args()
    check_docs_page(args, DOC_TABLES)
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)   # small convolutions; the GA is serial

    def path(data):
        return os.path.join(args.out, f"formats_cnn_{data.replace(':', '_').replace('/', '_')}"
                                      f".json")

    todo = [d for d in args.data if not (args.reuse and os.path.exists(path(d)))]
    per_seed = len(args.acts) * sum(1 if m == "float" else len(args.bits)
                                    for m in args.methods)
    steps = Steps(len(todo) * len(args.seeds) * (1 + per_seed))
    docs = []
    for data in args.data:
        if data in todo:
            run_started = time.monotonic()
            doc = run_data(data, args, steps)
            doc["seconds"] = round(time.monotonic() - run_started, 1)
            ir.atomic_write_bytes(path(data), (json.dumps(doc, indent=1) + "\n").encode())
        else:
            with open(path(data)) as f:
                doc = json.load(f)
            log(f"{data}: reused {path(data)}")
        docs.append(doc)
    seconds = sum(d.get("seconds", 0.0) for d in docs)
    text = table(docs, args, seconds)
    print(text, end="")
    ir.atomic_write_bytes(os.path.join(args.out, "formats_cnn.md"), text.encode())
    ir.atomic_write_bytes(os.path.join(args.out, "formats_cnn.json"),
                          (json.dumps({"data": docs, "seconds": round(seconds, 1)}, indent=1)
                           + "\n").encode())
    docs_page(args, {"formats-cnn": text}, log=log)


if __name__ == "__main__":
    main()
