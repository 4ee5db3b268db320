"""Benchmark gradient quantization functions: test accuracy against gradient bits.

    python benchmarks/bench_gradquant.py [--presets digits-tnn digits-bnn] [--seeds 0 1 2]
                                         [--methods uniform stochastic dorefa log terngrad]
                                         [--bits 2 3 4 5 6 7 8] [--epochs 30] [--out build/bench]

For each preset (digits-tnn: ternary weights, 2-bit activations; digits-bnn: binary weights
and activations) and seed: train with float gradients (the baseline), with every method of
:data:`qnnfab.model.gradquant.GRAD_QUANTIZERS` at every bit width, and with TernGrad once (two
bits by construction), quantizing both the error signal and the weight gradient of every
layer (:func:`qnnfab.model.gradquant.quantize_gradients`). The accuracy is the integer (golden)
model's on the held-out test split, after the normal export, as ``train()`` reports it.
``--epochs`` (default 30, half the presets' 60) keeps the whole run near a quarter of an hour
on two cores.

Prints a Markdown table per preset (methods × bits, mean over seeds and min..max; progress and
the time of each run on stderr) and writes ``OUT/gradquant.md``, ``OUT/gradquant.json``,
``OUT/gradquant.svg`` (accuracy against bits, one line per method, one panel per preset) and
the ``gradquant`` table of ``docs/results.md`` (``--docs PAGE``; ``--no-docs``: not)
atomically.
"""

import argparse
import json
import math
import os
import sys
import time
from xml.sax.saxutils import escape

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from doc_tables import (add_docs_arguments, check_docs_page, docs_page,  # noqa: E402
                        shift_headings)

from qnnfab import ir  # noqa: E402
from qnnfab.model.gradquant import GRAD_QUANTIZERS, MAX_BITS, MIN_BITS  # noqa: E402
from qnnfab.model.presets import get_preset  # noqa: E402
from qnnfab.model.train import train  # noqa: E402

#: The tables of docs/results.md this benchmark writes.
DOC_TABLES = ("gradquant",)

BASELINE = "float"
#: Line colours of the plot, per method.
COLOURS = {"uniform": "#d0452f", "stochastic": "#3b6fb6", "dorefa": "#2e9a4a", "log": "#9b4fb0",
           "terngrad": "#e08a00", BASELINE: "#444444"}
LABELS = {"uniform": "uniform, round to nearest", "stochastic": "uniform, stochastic rounding",
          "dorefa": "DoReFa (noise + round)", "log": "log / power of two",
          "terngrad": "TernGrad (2 bits)", BASELINE: "float gradients"}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def configs(methods, bits):
    """``(method, bits)`` of every run of one seed: the baseline first, TernGrad once."""
    out = [(BASELINE, None)]
    for method in methods:
        if method == "terngrad":
            out.append(("terngrad", 2))
        else:
            out += [(method, b) for b in bits]
    return out


def stats(values):
    return {"mean": float(np.mean(values)), "min": float(min(values)),
            "max": float(max(values)), "n": len(values)}


def summarize(runs):
    """``{preset: {method: {bits: stats}}}`` of the integer accuracies (bits as str keys)."""
    groups = {}
    for r in runs:
        groups.setdefault(r["preset"], {}).setdefault(r["method"], {}) \
            .setdefault(str(r["bits"]), []).append(r["integer"])
    return {p: {m: {b: stats(v) for b, v in by_bits.items()} for m, by_bits in ms.items()}
            for p, ms in groups.items()}


def cell(st):
    pct = lambda x: f"{100 * x:.2f}"   # noqa: E731
    if st["min"] == st["max"]:
        return pct(st["mean"])
    return f"{pct(st['mean'])} ({pct(st['min'])}..{pct(st['max'])})"


def markdown(summary, args, seconds, run_seconds):
    lines = []
    for preset in args.presets:
        table = summary[preset]
        cols = ["method"] + [f"{b} bits" for b in args.bits]
        lines += [f"### {preset}", "", "| " + " | ".join(cols) + " |",
                  "|" + "---|" * len(cols)]
        base = table[BASELINE]["None"]
        lines.append("| " + " | ".join([f"{LABELS[BASELINE]} (baseline)"]
                                       + [cell(base)] * len(args.bits)) + " |")
        for method in args.methods:
            cells = [LABELS[method]]
            for b in args.bits:
                key = "2" if method == "terngrad" else str(b)
                show = method != "terngrad" or b == 2
                cells.append(cell(table[method][key]) if show and key in table[method]
                             else "-")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        f"Integer (golden) test accuracy in %, mean over seeds {', '.join(map(str, args.seeds))} "
        f"(min..max), {args.epochs} epochs per run. Gradients quantized in every layer: the "
        f"error signal (gradient w.r.t. each layer's accumulator) and the weight gradient "
        f"(w.r.t. the quantized weights), one scale max|g| per tensor. The baseline row "
        f"(float gradients) is one set of runs, repeated in every column; TernGrad is two bits "
        f"by construction (one column).",
        f"Run time {seconds / 60:.1f} min, {np.mean(run_seconds):.1f} s per training run "
        f"(min {min(run_seconds):.1f}, max {max(run_seconds):.1f}).",
    ]
    return "\n".join(lines) + "\n"


def plot_svg(summary, args):
    """Accuracy (%) against gradient bits, one polyline per method (min..max bars), TernGrad a
    marker at 2 bits, the float baseline dashed; one panel per preset."""
    left, width, height, gap, top0 = 70, 520, 260, 70, 40
    legend_w = 230
    b0, b1 = min(args.bits), max(args.bits)

    def x_of(b):
        return left + (b - b0) * width / max(1, b1 - b0)

    total_h = top0 + len(args.presets) * (height + gap)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + legend_w}" '
           f'height="{total_h}" font-family="sans-serif" font-size="12">',
           f'<text x="{left}" y="20" font-size="14">Test accuracy against gradient bits '
           f'({args.epochs} epochs, mean of seeds {escape(" ".join(map(str, args.seeds)))}, '
           f'bars min..max)</text>']
    for i, preset in enumerate(args.presets):
        table = summary[preset]
        top = top0 + i * (height + gap)
        values = [st[k] for m in table.values() for st in m.values() for k in ("min", "max")]
        lo = math.floor(100 * min(values) / 5) * 5
        hi = min(100, math.ceil(100 * max(values) / 5) * 5)
        if hi <= lo:
            lo, hi = hi - 5, hi

        def y_of(v, lo=lo, hi=hi, top=top):
            return top + height * (hi - 100 * v) / (hi - lo)

        out += [f'<text x="{left}" y="{top - 6}" font-size="13">{escape(preset)}</text>',
                f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" '
                f'stroke="#888"/>']
        for t in range(int(lo), int(hi) + 1, 5 if hi - lo <= 40 else 10):
            y = top + height * (hi - t) / (hi - lo)
            out += [f'<line x1="{left}" y1="{y:.1f}" x2="{left + width}" y2="{y:.1f}" '
                    f'stroke="#eee"/>',
                    f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{t}%</text>']
        for b in args.bits:
            out.append(f'<text x="{x_of(b):.1f}" y="{top + height + 16}" '
                       f'text-anchor="middle">{b}</text>')
        out.append(f'<text x="{left + width / 2}" y="{top + height + 34}" '
                   f'text-anchor="middle">gradient bits</text>')
        base = table[BASELINE]["None"]["mean"]
        out.append(f'<line class="{BASELINE}" x1="{left}" y1="{y_of(base):.1f}" '
                   f'x2="{left + width}" y2="{y_of(base):.1f}" stroke="{COLOURS[BASELINE]}" '
                   f'stroke-dasharray="6,4" stroke-width="1.5"/>')
        for method in args.methods:
            colour = COLOURS[method]
            pts = [(b, table[method][str(b)])
                   for b in ([2] if method == "terngrad" else args.bits)]
            for b, st in pts:
                x = x_of(b)
                out.append(f'<line x1="{x:.1f}" y1="{y_of(st["min"]):.1f}" x2="{x:.1f}" '
                           f'y2="{y_of(st["max"]):.1f}" stroke="{colour}" opacity="0.5"/>')
            if method == "terngrad":
                x, y = x_of(2), y_of(pts[0][1]["mean"])
                out.append(f'<path class="terngrad" d="M{x:.1f},{y - 6:.1f} l6,6 l-6,6 l-6,-6 '
                           f'z" fill="{colour}"/>')
                continue
            line = " ".join(f"{x_of(b):.1f},{y_of(st['mean']):.1f}" for b, st in pts)
            out.append(f'<polyline class="{method}" points="{line}" fill="none" '
                       f'stroke="{colour}" stroke-width="2"/>')
            out += [f'<circle cx="{x_of(b):.1f}" cy="{y_of(st["mean"]):.1f}" r="2.5" '
                    f'fill="{colour}"/>' for b, st in pts]
        for j, method in enumerate([BASELINE, *args.methods]):
            y = top + 14 + 18 * j
            dash = ' stroke-dasharray="6,4"' if method == BASELINE else ""
            out += [f'<line x1="{left + width + 15}" y1="{y - 4}" x2="{left + width + 40}" '
                    f'y2="{y - 4}" stroke="{COLOURS[method]}" stroke-width="2"{dash}/>',
                    f'<text x="{left + width + 46}" y="{y}">{escape(LABELS[method])}</text>']
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["digits-tnn", "digits-bnn"])
    parser.add_argument("--methods", nargs="+", default=list(GRAD_QUANTIZERS),
                        choices=list(GRAD_QUANTIZERS))
    parser.add_argument("--bits", type=int, nargs="+", default=list(range(2, 9)))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", default="build/bench")
    add_docs_arguments(parser)
    args = parser.parse_args()
    check_docs_page(args, DOC_TABLES)
    for preset in args.presets:
        try:
            get_preset(preset)
        except ValueError as exc:
            parser.error(f"--presets: {exc}")
    if any(not MIN_BITS <= b <= MAX_BITS for b in args.bits):
        parser.error(f"--bits: expected {MIN_BITS}..{MAX_BITS}, got {args.bits}")
    args.bits = sorted(set(args.bits))
    if any(s < 0 for s in args.seeds):
        parser.error(f"--seeds: expected non-negative integers, got {args.seeds}")
    if args.epochs < 1:
        parser.error(f"--epochs: expected a positive integer, got {args.epochs}")
    os.makedirs(args.out, exist_ok=True)

    todo = [(p, s, m, b) for p in args.presets for s in args.seeds
            for m, b in configs(args.methods, args.bits)]
    log(f"{len(todo)} training runs of {args.epochs} epochs")
    started = time.monotonic()
    runs = []
    for k, (preset, seed, method, bits) in enumerate(todo, 1):
        grad_quant = None if method == BASELINE else (method, bits)
        t = time.monotonic()
        r = train(preset, seed=seed, progress=False, epochs=args.epochs, grad_quant=grad_quant)
        run_s = time.monotonic() - t
        runs.append({"preset": preset, "seed": seed, "method": method, "bits": bits,
                     "integer": r.integer_accuracy, "float": r.float_accuracy,
                     "agreement": r.agreement, "best_epoch": r.best_epoch,
                     "seconds": round(run_s, 2)})
        what = "float gradients" if grad_quant is None else f"{method} {bits}-bit"
        left = (time.monotonic() - started) / k * (len(todo) - k)
        log(f"[{k}/{len(todo)}] {preset} seed {seed} {what}: integer "
            f"{r.integer_accuracy:.2%}, {run_s:.1f} s (about {left / 60:.0f} min left)")
    seconds = time.monotonic() - started

    summary = summarize(runs)
    table = markdown(summary, args, seconds, [r["seconds"] for r in runs])
    print(table, end="")
    ir.atomic_write_bytes(os.path.join(args.out, "gradquant.md"), table.encode())
    ir.atomic_write_bytes(os.path.join(args.out, "gradquant.svg"),
                          plot_svg(summary, args).encode())
    doc = {"presets": args.presets, "methods": args.methods, "bits": args.bits,
           "seeds": args.seeds, "epochs": args.epochs, "targets": ["error", "weight"],
           "seconds": round(seconds, 1), "summary": summary, "runs": runs}
    ir.atomic_write_bytes(os.path.join(args.out, "gradquant.json"),
                          (json.dumps(doc, indent=1) + "\n").encode())
    log(f"wrote {os.path.join(args.out, 'gradquant')}.md/.json/.svg in {seconds / 60:.1f} min")
    docs_page(args, {"gradquant": shift_headings(table, 3)}, log=log)


if __name__ == "__main__":
    main()
