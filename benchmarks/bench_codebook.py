"""Benchmark post-training codebook quantization: accuracy per method and width, GA hardware.

    python benchmarks/bench_codebook.py [--seeds 0 1 2] [--bits 2 3 4]
                                        [--methods ga kmeans fixed uniform minifloat pow2]
                                        [--hw-bits 3] [--out build/bench]

For each seed: train the float network (preset ``digits-mlp``: float weights, 2-bit
activations), then quantize its weights with every method at every width
(:func:`qnnfab.model.ptq.quantize`) and record the *integer* (golden) accuracy on the held-out
test split, the validation accuracy the GA optimized, and the weight memory (index bits; the
per-layer level tables are a few bytes beside the datapath). Accuracies are means over seeds.

For seed 0's GA network at ``--hw-bits`` (3 by default): the iCEBreaker (iCE40 UP5K) build at
the board's folding — logic cells, EBR, DSP, fmax, cycles/inference — and Verilator on the
whole test split against the golden model (``bench_quant.hardware``).

Prints a Markdown table (progress on stderr) and writes ``OUT/codebook.md``,
``OUT/codebook.json`` and the ``codebook`` table of ``docs/results.md`` (``--docs PAGE``;
``--no-docs``: not) atomically. Exits 1 if the build or the simulation failed.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_quant import Steps, hardware, log  # noqa: E402
from doc_tables import add_docs_arguments, check_docs_page, docs_page  # noqa: E402

from qnnfab import ir  # noqa: E402
from qnnfab.model.ptq import METHODS, quantize  # noqa: E402
from qnnfab.model.train import train  # noqa: E402

PRESET = "digits-mlp"
#: The tables of docs/results.md this benchmark writes.
DOC_TABLES = ("codebook",)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--hw-bits", type=int, default=3,
                        help="index bits of the GA network that is built (0: no build)")
    parser.add_argument("--out", default="build/bench")
    add_docs_arguments(parser)
    args = parser.parse_args()
    check_docs_page(args, DOC_TABLES)
    os.makedirs(args.out, exist_ok=True)
    started = time.monotonic()
    n_q = len(args.seeds) * len(args.bits) * len(args.methods)
    steps = Steps(len(args.seeds) + n_q + (2 if args.hw_bits else 0))

    floats, results, hw_net = [], {}, None
    for seed in args.seeds:
        trained = steps.run(f"train {PRESET} seed {seed}",
                            lambda: train(PRESET, seed=seed, progress=False))
        floats.append(trained.float_accuracy)
        log(f"        float accuracy {trained.float_accuracy:.2%}")
        for bits in args.bits:
            for method in args.methods:
                q = steps.run(f"quantize seed {seed}: {method} {bits}-bit",
                              lambda: quantize(trained.network, method, bits, seed=seed,
                                               progress=False))
                log(f"        test {q.test_accuracy:.2%} (validation {q.val_accuracy:.2%})")
                results.setdefault((method, bits), []).append(
                    {"seed": seed, "test": q.test_accuracy, "val": q.val_accuracy,
                     "agreement": q.agreement, "weight_bits": int(q.network.weight_bits),
                     "seconds": round(q.seconds, 2)})
                if method == "ga" and bits == args.hw_bits and hw_net is None:
                    hw_net = q.network
    hw = None
    if hw_net is not None:
        hw = hardware(f"{PRESET}-ga{args.hw_bits}", hw_net, args.out, steps)
    seconds = time.monotonic() - started

    pct = lambda x: f"{100 * x:.2f}"   # noqa: E731
    float_mean = float(np.mean(floats))
    lines = [f"Float network ({PRESET}, 64x5b -> 128x2b -> 128x2b -> 10): test accuracy "
             f"{pct(float_mean)} % (mean of seeds {', '.join(map(str, args.seeds))}).", "",
             "| bits | method | integer test acc % (mean) | per seed | Δ vs float | "
             "GA val acc % | weight memory bits |", "|---|---|---|---|---|---|---|"]
    rows = []
    for bits in args.bits:
        for method in args.methods:
            r = results[(method, bits)]
            mean = float(np.mean([x["test"] for x in r]))
            rows.append({"bits": bits, "method": method, "test_mean": mean, "seeds": r})
            val = pct(float(np.mean([x["val"] for x in r]))) if method == "ga" else "-"
            lines.append(f"| {bits} | {method} | {pct(mean)} | "
                         f"{' / '.join(pct(x['test']) for x in r)} | "
                         f"{100 * (mean - float_mean):+.2f} | {val} | "
                         f"{r[0]['weight_bits']:,} |")
    if hw is not None:
        def get(key, fmt=str):
            return fmt(hw[key]) if hw.get(key) is not None else "failed"
        lines += ["", f"GA {args.hw_bits}-bit network (seed 0) on icebreaker, folding "
                  f"{hw['folding']}: LC {get('lc')}/{hw.get('lc_total', '?')}, EBR "
                  f"{get('ebr')}/{hw.get('ebr_total', '?')}, DSP {get('dsp')}/"
                  f"{hw.get('dsp_total', '?')}, fmax {get('fmax_mhz', '{:.1f}'.format)} MHz "
                  f"(clock {get('clock_mhz', '{:g}'.format)} MHz), "
                  f"{get('cycles_per_inference')} cycles/inference, "
                  f"{get('inferences_per_s', '{:,.0f}'.format)} inferences/s; Verilator "
                  f"{get('verilator_bit_exact')}/{hw.get('verilator_checked', '?')} bit-exact."]
    lines.append(f"Run time {seconds / 60:.1f} min.")
    table = "\n".join(lines) + "\n"
    print(table, end="")
    ir.atomic_write_bytes(os.path.join(args.out, "codebook.md"), table.encode())
    doc = {"preset": PRESET, "seeds": args.seeds, "float": floats, "rows": rows,
           "hardware": hw, "seconds": round(seconds, 1)}
    ir.atomic_write_bytes(os.path.join(args.out, "codebook.json"),
                          (json.dumps(doc, indent=1, default=float) + "\n").encode())
    docs_page(args, {"codebook": table}, log=log)
    if hw is not None and hw["errors"]:
        log("FAILED:\n  " + "\n  ".join(hw["errors"]))
        sys.exit(1)


if __name__ == "__main__":
    main()
