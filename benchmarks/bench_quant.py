"""Benchmark the quantization presets: accuracy, stored weight bits, iCEBreaker cost and speed.

    python benchmarks/bench_quant.py [--presets digits-bnn digits-tnn digits-sq] [--seeds 0 1 2]
                                     [--mnist DIR] [--epochs N] [--out build/bench]

For each preset and seed: train (the preset's data set, held-out test split), record float and
integer (golden) test accuracy, the average stored bits per weight
(``network.weight_bits / network.n_weights``, i.e. Σ code bits / Σ weights) and the weight memory
(``network.weight_bits``), and the weight kind of each layer (for Smart Quantization presets the
depths it chose, ``meta["sq"]["depth"]``). Accuracy is the mean over seeds, with min..max.

For seed 0 of each preset: the iCEBreaker (iCE40 UP5K) bitstream at the board's folding
(:func:`qnnfab.boards.registry.board_folding`), whose ``report.json`` gives logic cells, EBR,
fmax, the design clock, cycles and inferences per second; and the same network at the same
folding in Verilator on the whole test split, compared with the golden model (N/N bit-exact).

``--mnist DIR`` adds one row per preset trained on MNIST (``mnist:DIR``): accuracy and bits only;
784 8-bit inputs do not fit the UP5K, so there is no build and no Verilator run for them.

Prints a Markdown table (progress on stderr) and writes ``OUT/quant.md``, ``OUT/quant.json``
and the ``quant`` table of ``docs/results.md`` (``--docs PAGE``; ``--no-docs``: not)
atomically; builds go to ``OUT/quant/<preset>/icebreaker``. Exits 1 if a build or simulation
failed or was not bit-exact (the table is written anyway). Not part of ``make test``: it trains
seeds × presets networks and runs a full place-and-route per preset (about a minute each).
"""

import argparse
import json
import os
import sys
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from doc_tables import add_docs_arguments, check_docs_page, docs_page  # noqa: E402

from qnnfab import ir  # noqa: E402
from qnnfab.boards.registry import board_folding  # noqa: E402
from qnnfab.flow import build_board, folding_text, simulate_and_compare  # noqa: E402
from qnnfab.model.presets import get_preset  # noqa: E402
from qnnfab.model.train import train  # noqa: E402

#: The tables of docs/results.md this benchmark writes.
DOC_TABLES = ("quant",)

BOARD = "icebreaker"
KIND_LETTER = {"binary": "B", "ternary": "T"}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Steps:
    """``[k/N] what ...`` lines on stderr, then the step's time."""

    def __init__(self, total):
        self.total, self.done = total, 0

    def run(self, what, fn):
        self.done += 1
        log(f"[{self.done}/{self.total}] {what} ...")
        start = time.monotonic()
        out = fn()
        log(f"        done in {time.monotonic() - start:.1f} s")
        return out


def layer_kinds(network):
    """Weight kind per layer: the Smart Quantization depths if recorded, else the IR's kinds."""
    sq = network.meta.get("sq") if isinstance(network.meta, dict) else None
    stored = [layer.weight_kind for layer in network.layers]
    kinds = list(sq["depth"]) if sq and "depth" in sq else stored
    if kinds != stored:
        raise RuntimeError(f"meta['sq']['depth'] {kinds} differs from the layers' weight kinds "
                           f"{stored}")
    return kinds


def shape_text(network):
    """``64x4b -> 128x2b -> 128x2b -> 10``: sizes and activation bits (kinds have a column)."""
    parts = [f"{network.input_features}x{network.input_bits}b"]
    for layer in network.layers:
        parts.append(f"{layer.out_features}" + ("" if layer.is_output else f"x{layer.out_bits}b"))
    return " -> ".join(parts)


def seed_row(preset, seed, data, epochs, steps):
    label = preset if data is None else f"{preset} on {data}"
    result = steps.run(f"train {label} seed {seed}",
                       lambda: train(preset, seed=seed, progress=False, data=data,
                                     epochs=epochs))
    net = result.network
    row = {"seed": seed, "float": result.float_accuracy, "integer": result.integer_accuracy,
           "agreement": result.agreement, "kinds": layer_kinds(net),
           "weight_bits": int(net.weight_bits), "macs": int(net.macs),
           "bits_per_weight": net.weight_bits / net.n_weights, "train_s": round(result.seconds, 1),
           "best_epoch": result.best_epoch, "summary": net.summary()}
    log(f"        {net.summary()}: float {result.float_accuracy:.2%}, integer "
        f"{result.integer_accuracy:.2%}, {row['bits_per_weight']:.3f} bits/weight")
    return row, net


def hardware(preset, network, out, steps):
    """Build seed 0's bitstream and check it in Verilator; a dict (``error`` set on failure)."""
    folder = os.path.join(out, "quant", preset)
    os.makedirs(folder, exist_ok=True)
    ir.save(network, os.path.join(folder, "network.qnn"))
    folding = board_folding(network, BOARD)
    hw = {"folding": folding_text(folding), "errors": []}
    log(f"        folding (PE:SIMD per layer) {hw['folding']}")

    def build():
        start = time.monotonic()
        report = build_board(network, BOARD, os.path.join(folder, BOARD), folding=None,
                             progress=True)
        report["_seconds"] = time.monotonic() - start
        return report
    try:
        report = steps.run(f"build {BOARD} bitstream for {preset} seed 0", build)
        res = report["resources"]
        hw.update({
            "lc": res["lut"]["used"], "lc_total": res["lut"]["total"],
            "ebr": res["bram"]["used"], "ebr_total": res["bram"]["total"],
            "ff": res["ff"]["used"], "dsp": res["dsp"]["used"], "dsp_total": res["dsp"]["total"],
            "fmax_mhz": report["fmax_mhz"],
            "clock_mhz": report["clock_mhz"], "timing_met": report["timing_met"],
            "cycles_per_inference": report["cycles_per_inference"],
            "inferences_per_s": report["inferences_per_s"],
            "build_s": round(report["_seconds"], 1), "report": os.path.join(folder, BOARD,
                                                                           "report.json")})
        log(f"        {hw['lc']}/{hw['lc_total']} LC, {hw['ebr']}/{hw['ebr_total']} EBR, fmax "
            f"{hw['fmax_mhz']:.1f} MHz at {hw['clock_mhz']:g} MHz, "
            f"{hw['cycles_per_inference']} cycles/inference")
    except Exception as exc:  # record and go on: the other presets still get measured
        log(traceback.format_exc())
        hw["errors"].append(f"build: {type(exc).__name__}: {exc}")

    def verilate():
        start = time.monotonic()
        cmp = simulate_and_compare(network, simulator="verilator", folding=folding,
                                   progress=False)
        return cmp, time.monotonic() - start
    try:
        cmp, seconds = steps.run(f"Verilator, {preset} seed 0, whole test split", verilate)
        hw.update({"verilator_checked": cmp.checked, "verilator_bit_exact": cmp.bit_exact,
                   "verilator_s": round(seconds, 1)})
        log(f"        {cmp.summary()}")
        if not cmp.ok:
            log(cmp.report())
            hw["errors"].append(f"verilator: {cmp.summary()}")
    except Exception as exc:
        log(traceback.format_exc())
        hw["errors"].append(f"verilator: {type(exc).__name__}: {exc}")
    return hw


def spread(values, fmt):
    """``mean (min..max)`` of ``values``, or the one value if all are equal."""
    lo, hi = min(values), max(values)
    if lo == hi:
        return fmt(lo)
    return f"{fmt(float(np.mean(values)))} ({fmt(lo)}..{fmt(hi)})"


def per_seed(values):
    """The value if every seed has it, else ``s0: a; s1: b; ...``."""
    texts = [v for _, v in values]
    if len(set(texts)) == 1:
        return texts[0]
    return "; ".join(f"s{seed}: {v}" for seed, v in values)


def preset_row(preset, dataset, seeds, shape, hw):
    return {
        "preset": preset, "dataset": dataset, "seeds": seeds, "network": shape,
        "float_mean": float(np.mean([s["float"] for s in seeds])),
        "integer_mean": float(np.mean([s["integer"] for s in seeds])),
        "float_min": min(s["float"] for s in seeds), "float_max": max(s["float"] for s in seeds),
        "integer_min": min(s["integer"] for s in seeds),
        "integer_max": max(s["integer"] for s in seeds),
        "bits_per_weight_mean": float(np.mean([s["bits_per_weight"] for s in seeds])),
        "hardware": hw,
    }


def markdown(rows, args, seconds):
    pct = lambda x: f"{100 * x:.2f}"   # noqa: E731
    cols = ["preset", "network", "weights per layer", "float acc %", "integer acc %",
            "avg weight bits", "weight memory bits", "LC used/total", "EBR used/total",
            "fmax MHz", "clock MHz", "cycles/inf", "inf/s", "Verilator bit-exact"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        seeds = row["seeds"]
        kinds = per_seed([(s["seed"], "/".join(KIND_LETTER.get(k, k) for k in s["kinds"]))
                          for s in seeds])
        name = row["preset"] + ("" if row["dataset"] is None else " (MNIST)")
        cells = [name, row["network"], kinds,
                 spread([s["float"] for s in seeds], pct),
                 spread([s["integer"] for s in seeds], pct),
                 spread([s["bits_per_weight"] for s in seeds], "{:.3f}".format),
                 per_seed([(s["seed"], f"{s['weight_bits']:,}") for s in seeds])]
        hw = row["hardware"]
        if hw is None:
            cells += ["no build: 784 inputs do not fit the UP5K"] + ["-"] * 6
        else:
            def get(key, fmt):
                return fmt(hw[key]) if hw.get(key) is not None else "failed"
            cells += [get("lc", lambda v: f"{v}/{hw['lc_total']}"),
                      get("ebr", lambda v: f"{v}/{hw['ebr_total']}"),
                      get("fmax_mhz", lambda v: f"{v:.1f}" + ("" if hw["timing_met"]
                                                              else " (timing NOT met)")),
                      get("clock_mhz", "{:g}".format),
                      get("cycles_per_inference", str),
                      get("inferences_per_s", "{:,.0f}".format),
                      get("verilator_bit_exact", lambda v: f"{v}/{hw['verilator_checked']}")]
        lines.append("| " + " | ".join(cells) + " |")
    seed_list = ", ".join(map(str, args.seeds))
    notes = [
        "",
        f"Seeds {seed_list}; accuracy on the held-out test split, mean over seeds "
        f"(min..max). Weights per layer: B binary (1 bit), T ternary (2 bits); avg weight "
        f"bits = stored weight bits / weights. Hardware columns: seed 0 on {BOARD} (iCE40 "
        f"UP5K) at the board's folding and design clock; Verilator bit-exact = test vectors "
        f"matching the golden model / vectors checked (whole test split, same folding).",
    ]
    if any(r["dataset"] is not None for r in rows):
        notes.append("MNIST rows: accuracy and bits only; 784 8-bit inputs do not fit the "
                     "UP5K, so no icebreaker build and no Verilator run.")
    notes.append(f"Run time {seconds / 60:.1f} min.")
    return "\n".join(lines + notes) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["digits-bnn", "digits-tnn", "digits-sq"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--mnist", metavar="DIR",
                        help="also train each preset on the MNIST files in DIR (no build)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="override every preset's epochs (quick checks only)")
    parser.add_argument("--out", default="build/bench")
    add_docs_arguments(parser)
    args = parser.parse_args()
    check_docs_page(args, DOC_TABLES)
    for preset in args.presets:
        try:
            get_preset(preset)
        except ValueError as exc:
            parser.error(f"--presets: {exc}")
    if any(s < 0 for s in args.seeds):
        parser.error(f"--seeds: expected non-negative integers, got {args.seeds}")
    if args.mnist is not None and not os.path.isdir(args.mnist):
        parser.error(f"--mnist: {args.mnist!r} is not a folder")
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs: expected a positive integer, got {args.epochs}")
    os.makedirs(args.out, exist_ok=True)
    started = time.monotonic()

    datasets = [None] + ([f"mnist:{args.mnist}"] if args.mnist else [])
    n_train = len(args.presets) * len(args.seeds) * len(datasets)
    steps = Steps(n_train + 2 * len(args.presets))
    rows = []
    for dataset in datasets:
        for preset in args.presets:
            seeds, first = [], None
            for seed in args.seeds:
                row, net = seed_row(preset, seed, dataset, args.epochs, steps)
                seeds.append(row)
                first = net if first is None else first
            hw = hardware(preset, first, args.out, steps) if dataset is None else None
            rows.append(preset_row(preset, dataset, seeds, shape_text(first), hw))
    seconds = time.monotonic() - started

    table = markdown(rows, args, seconds)
    print(table, end="")
    ir.atomic_write_bytes(os.path.join(args.out, "quant.md"), table.encode())
    doc = {"board": BOARD, "presets": args.presets, "seeds": args.seeds, "mnist": args.mnist,
           "epochs": args.epochs, "seconds": round(seconds, 1), "rows": rows}
    ir.atomic_write_bytes(os.path.join(args.out, "quant.json"),
                          (json.dumps(doc, indent=1, default=float) + "\n").encode())
    log(f"wrote {os.path.join(args.out, 'quant.md')} and quant.json in {seconds / 60:.1f} min")
    docs_page(args, {"quant": table}, log=log)
    failed = [f"{r['preset']}: {e}" for r in rows if r["hardware"] for e in r["hardware"]["errors"]]
    if failed:
        log("FAILED:\n  " + "\n  ".join(failed))
        sys.exit(1)


if __name__ == "__main__":
    main()
