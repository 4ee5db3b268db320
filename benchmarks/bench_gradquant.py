"""Benchmark gradient quantization: test accuracy by function, bits, optimizer and target.

    python benchmarks/bench_gradquant.py [--presets digits-tnn digits-cnn fmnist-tnn]
        [--methods uniform stochastic dorefa log terngrad] [--bits 2 3 4 6 8]
        [--optimizers adam sgd momentum] [--targets both error weight] [--seeds 0 1 2]
        [--epochs 15 fmnist-tnn=2] [--schedule cosine] [--lr-grid -7 ... 2] [--lr sgd=0.5]
        [--out build/bench] [--resume] [--merge]

For each network (a preset of :mod:`qnnfab.model.presets`, or ``fmnist-tnn``: digits-tnn's
settings on a 784-256-256-10 ternary MLP with 2-bit activations, trained on Fashion-MNIST), each
optimizer and seed: train with float gradients (the baseline), with every method of
:data:`qnnfab.model.gradquant.GRAD_QUANTIZERS` at every bit width (TernGrad once: two bits by
construction) and for every target: ``both`` (the error signal and the weight gradient of every
layer, the paper's fully quantized backward pass), ``error`` only or ``weight`` only
(:func:`qnnfab.model.gradquant.quantize_gradients`). The accuracy is the integer (golden)
model's on the held-out test split, after the normal export, as ``train()`` reports it.

Optimizers (``train(optimizer=...)``): ``adam`` at the preset's learning rate (chosen on
validation when the preset was made), ``sgd`` (plain) and ``momentum`` (SGD, momentum 0.9).
Adam divides each parameter's step by a running RMS of its gradient, which undoes much of what
a quantizer does to a gradient's scale; SGD applies the quantized gradient as it is. Every
optimizer uses the same schedule (``--schedule``; default ``cosine``, the presets' decay to 1 %
of the peak rate), so the update rule is the only difference. The SGD learning rates are chosen
by this benchmark on the validation split, never the test split: each power of two of
``--lr-grid`` trained once per ``--lr-seeds`` seed with float gradients, the rate with the best
validation accuracy (at its best epoch, mean over those seeds; ties: lower validation loss)
kept for every run of that network (``--lr sgd=RATE`` skips the search).

Prints a Markdown report per network (the exact settings in its heading; a table of optimizer ×
target × method rows and bit-width columns, mean over seeds and min..max; the lowest bit width
against each optimizer's float baseline; the learning-rate search) and notes computed from the
numbers, writes ``OUT/gradquant.md``, ``OUT/gradquant.json`` (every run),
``OUT/gradquant.svg`` (accuracy against bits for the ``both`` target, one panel per network and
optimizer) and the ``gradquant`` table of ``docs/results.md`` (``--docs PAGE``; ``--no-docs``:
not). ``--resume`` reuses finished runs of the same settings from ``OUT/gradquant-runs.jsonl``
(every run is appended there as it ends); ``--merge`` keeps the networks of the previous
``OUT/gradquant.json`` that this run does not train (networks run with different settings in
separate calls; each keeps its own heading). Progress and the time of each run go to stderr.
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
from qnnfab.model.gradquant import (GRAD_QUANTIZERS, MAX_BITS, MIN_BITS,  # noqa: E402
                                    STOCHASTIC, NonFiniteGradient)
from qnnfab.model.presets import customize, get_preset  # noqa: E402
from qnnfab.model.train import OPTIMIZERS, SCHEDULES, train  # noqa: E402

#: The tables of docs/results.md this benchmark writes.
DOC_TABLES = ("gradquant",)

BASELINE = "float"
#: ``--targets`` names -> ``quantize_gradients(targets=...)``.
TARGETS = {"both": ("error", "weight"), "error": ("error",), "weight": ("weight",)}
TARGET_LABELS = {"both": "error + weight", "error": "error only", "weight": "weight only"}
OPT_LABELS = {"adam": "Adam", "sgd": "SGD", "momentum": "SGD + momentum 0.9"}
#: The functions the project uses: unbiased stochastic rounding on the uniform grid, and
#: TernGrad at two bits.
CHOICE = ("stochastic", "terngrad")
#: Networks this benchmark defines besides the presets: name -> (base preset, arch, data).
NETWORKS = {"fmnist-tnn": ("digits-tnn", "d256,d256,d10", "fashion-mnist")}
#: Epochs when ``--epochs`` does not say: Fashion-MNIST has 30 times digits' training images.
DEFAULT_EPOCHS = {"fmnist-tnn": 2}
DIGITS_EPOCHS = 15
#: Line colours of the plot, per method.
COLOURS = {"uniform": "#d0452f", "stochastic": "#3b6fb6", "dorefa": "#2e9a4a", "log": "#9b4fb0",
           "terngrad": "#e08a00", BASELINE: "#444444"}
LABELS = {"uniform": "uniform, round to nearest", "stochastic": "uniform, stochastic rounding",
          "dorefa": "DoReFa (noise + round)", "log": "log / power of two",
          "terngrad": "TernGrad (2 bits)", BASELINE: "float gradients"}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def network(name):
    """``(preset, data)`` of a ``--presets`` name (data None: the preset's own)."""
    if name in NETWORKS:
        base, arch, data = NETWORKS[name]
        return customize(base, arch=arch), data
    return get_preset(name), None


def configs(methods, bits, targets):
    """``(method, bits, target)`` of every run of one network, optimizer and seed: the
    baseline first, TernGrad once per target (when 2 is one of ``bits``)."""
    out = [(BASELINE, None, None)]
    for target in targets:
        for method in methods:
            if method == "terngrad":
                out += [("terngrad", 2, target)] if 2 in bits else []
            else:
                out += [(method, b, target) for b in bits]
    return out


def run_key(r):
    return json.dumps([r["network"], r["epochs"], r["seed"], r["optimizer"], r["lr"],
                       r["schedule"], r["method"], r["bits"], r["target"]])


class Runner:
    """Trains (or, with ``--resume``, reuses) runs; appends each to ``OUT/gradquant-runs.jsonl``."""

    def __init__(self, args):
        self.path = os.path.join(args.out, "gradquant-runs.jsonl")
        self.cache = {}
        if args.resume and os.path.exists(self.path):
            with open(self.path) as f:
                for line in f:
                    if line.strip():
                        r = json.loads(line)
                        self.cache[run_key(r)] = r
        self.started = time.monotonic()
        self.done = self.trained = 0
        self.total = 0

    def run(self, name, epochs, seed, optimizer, lr, schedule, method, bits, target):
        r = {"network": name, "epochs": epochs, "seed": seed, "optimizer": optimizer, "lr": lr,
             "schedule": schedule, "method": method, "bits": bits, "target": target}
        self.done += 1
        key = run_key(r)
        if key in self.cache:
            return self.cache[key]
        preset, data = network(name)
        grad_quant = None if method == BASELINE else (method, bits, TARGETS[target])
        t = time.monotonic()
        try:
            res = train(preset, seed=seed, progress=False, epochs=epochs, data=data,
                        grad_quant=grad_quant,
                        optimizer={"name": optimizer, "lr": lr, "schedule": schedule})
        except NonFiniteGradient:
            # A result, not a failure of the benchmark: the training blew up (a gradient to
            # quantize turned NaN or inf). Kept, so --resume does not train it again.
            r.update(integer=None, float=None, agreement=None, best_epoch=None,
                     val_accuracy=None, val_loss=None,
                     seconds=round(time.monotonic() - t, 2), diverged=True)
        else:
            best = res.history[res.best_epoch - 1]
            r.update(integer=res.integer_accuracy, float=res.float_accuracy,
                     agreement=res.agreement, best_epoch=res.best_epoch,
                     val_accuracy=best["val_accuracy"], val_loss=best["val_loss"],
                     seconds=round(time.monotonic() - t, 2),
                     meta={k: res.network.meta.get(k) for k in ("optimizer", "grad_quant")})
        self.cache[key] = r
        with open(self.path, "a") as f:
            f.write(json.dumps(r) + "\n")
        self.trained += 1
        what = "float gradients" if grad_quant is None else \
            f"{method} {bits}-bit, {TARGET_LABELS[target]}"
        elapsed = time.monotonic() - self.started
        left = elapsed / self.trained * max(0, self.total - self.done)
        result = ("diverged (a gradient turned NaN or inf)" if r.get("diverged") else
                  f"val {r['val_accuracy']:.2%} test {r['integer']:.2%}")
        log(f"[{self.done}/{self.total}] {name} {optimizer} lr {lr:g} seed {seed} {what}: "
            f"{result}, {r['seconds']:.1f} s (about {left / 60:.0f} min left)")
        return r


def choose_lr(runner, name, epochs, optimizer, args):
    """``(lr, search)``: the rate of ``--lr`` or the grid point with the best validation
    accuracy (float gradients); ``search`` lists every grid point's mean validation accuracy
    and loss (None when ``--lr`` gave the rate)."""
    if optimizer in args.lr:
        return args.lr[optimizer], None
    if optimizer == "adam":
        return network(name)[0].lr, None
    search = []
    for e in args.lr_grid:
        rs = [runner.run(name, epochs, s, optimizer, 2.0 ** e, args.schedule, BASELINE, None,
                         None) for s in args.lr_seeds]
        search.append({"exponent": e, "lr": 2.0 ** e,
                       "val_accuracy": float(np.mean([r["val_accuracy"] for r in rs])),
                       "val_loss": float(np.mean([r["val_loss"] for r in rs])),
                       "seconds": round(sum(r["seconds"] for r in rs), 2)})
    best = max(search, key=lambda s: (s["val_accuracy"], -s["val_loss"]))
    return best["lr"], search


def stats(values):
    """Mean, min and max over the runs that finished (None: diverged), with ``n`` runs in all
    and how many ``diverged``; the three figures are None when every run diverged."""
    done = [v for v in values if v is not None]
    if not done:
        return {"mean": None, "min": None, "max": None, "n": len(values),
                "diverged": len(values)}
    return {"mean": float(np.mean(done)), "min": float(min(done)), "max": float(max(done)),
            "n": len(values), "diverged": len(values) - len(done)}


def usable(st):
    """A cell every seed of which finished: the only kind the comparisons use."""
    return st is not None and not st.get("diverged")


def summarize(runs):
    """``{optimizer: {target: {method: {bits: stats}}}}`` of the integer accuracies (bits and
    target as str keys; the baseline under target ``"-"`` and bits ``"None"``)."""
    groups = {}
    for r in runs:
        groups.setdefault(r["optimizer"], {}).setdefault(str(r["target"] or "-"), {}) \
            .setdefault(r["method"], {}).setdefault(str(r["bits"]), []).append(r["integer"])
    return {o: {t: {m: {b: stats(v) for b, v in bb.items()} for m, bb in ms.items()}
                for t, ms in ts.items()} for o, ts in groups.items()}


def pct(x):
    return f"{100 * x:.2f}"


def cell(st):
    if st is None:
        return "-"
    if st["mean"] is None:
        return f"diverged ({st['n']} of {st['n']})"
    text = pct(st["mean"]) if st["min"] == st["max"] else \
        f"{pct(st['mean'])} ({pct(st['min'])}..{pct(st['max'])})"
    if st.get("diverged"):
        text += f", {st['diverged']} of {st['n']} diverged"
    return text


def lr_text(lr):
    e = math.log2(lr)
    return f"2^{int(e)}" if e == int(e) else f"{lr:g}"


def get(summary, opt, target, method, bits):
    key = "2" if method == "terngrad" else str(bits)
    return summary.get(opt, {}).get(target, {}).get(method, {}).get(key)


def heading(sec):
    s = sec["settings"]
    lrs = ", ".join(f"{OPT_LABELS[o]} lr {lr_text(s['lr'][o])}"
                    + (" (preset)" if o == "adam" and o not in s["lr_given"] else
                       " (given)" if o in s["lr_given"] else " (validation)")
                    for o in s["optimizers"])
    return (f"{s['network']} ({s['arch']}, {s['weights']} weights, {s['act_bits']}-bit "
            f"activations, {s['data']}): {s['epochs']} epochs, seeds "
            f"{' '.join(map(str, s['seeds']))}, {s['schedule']} schedule; {lrs}; bits "
            f"{' '.join(map(str, s['bits']))}; targets {', '.join(s['targets'])}")


def network_report(sec):
    s, summary = sec["settings"], sec["summary"]
    bits, methods = s["bits"], s["methods"]
    lines = [f"### {heading(sec)}", ""]
    cols = ["optimizer", "quantized", "function"] + [f"{b} bits" for b in bits]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for opt in s["optimizers"]:
        base = get(summary, opt, "-", BASELINE, None)
        lines.append("| " + " | ".join([OPT_LABELS[opt], "nothing", LABELS[BASELINE]]
                                       + [cell(base)] * len(bits)) + " |")
        for target in s["targets"]:
            for method in methods:
                cells = [OPT_LABELS[opt], TARGET_LABELS[target], LABELS[method]]
                for b in bits:
                    show = method != "terngrad" or b == 2
                    cells.append(cell(get(summary, opt, target, method, b)) if show else "-")
                lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    # The lowest bit width against each optimizer's float baseline.
    low = bits[0]
    pairs = [(o, t) for o in s["optimizers"] for t in s["targets"]]
    lines += [f"{low} bits, points against the same optimizer's float gradients "
              f"(mean over seeds):", ""]
    cols = ["function"] + [f"{OPT_LABELS[o]}, {TARGET_LABELS[t]}" for o, t in pairs]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for method in methods:
        if method == "terngrad" and low != 2:
            continue
        cells = [LABELS[method]]
        for o, t in pairs:
            st, base = get(summary, o, t, method, low), get(summary, o, "-", BASELINE, None)
            cells.append("-" if st is None or base is None else "diverged" if not usable(st)
                         else f"{100 * (st['mean'] - base['mean']):+.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for opt, search in sec["lr_search"].items():
        if search:
            best = s["lr"][opt]
            pts = ", ".join(("**" if p["lr"] == best else "") + f"{lr_text(p['lr'])} "
                            f"{pct(p['val_accuracy'])}" + ("**" if p["lr"] == best else "")
                            for p in search)
            lines.append(f"{OPT_LABELS[opt]} learning rate, validation accuracy % with float "
                         f"gradients (seeds {' '.join(map(str, s['lr_seeds']))}): {pts}.")
    lines += ["", *bias_notes(sec), *choice_notes(sec), ""]
    return lines


def bias_notes(sec):
    """Per target: the mean change at the lowest bit width of the biased functions (round to
    nearest, log) and of the unbiased ones (stochastic rounding, DoReFa, TernGrad), for each
    optimizer: does the optimizer hide what the quantizer does?"""
    s, summary = sec["settings"], sec["summary"]
    low = s["bits"][0]
    groups = {"biased": [m for m in s["methods"] if m not in STOCHASTIC],
              "unbiased": [m for m in s["methods"] if m in STOCHASTIC
                           and (m != "terngrad" or low == 2)]}
    groups = {k: v for k, v in groups.items() if v}
    out = []
    for t in s["targets"]:
        parts = []
        for o in s["optimizers"]:
            base = get(summary, o, "-", BASELINE, None)
            cells = []
            for ms in groups.values():
                d = [get(summary, o, t, m, low) for m in ms]
                cells.append("-" if base is None or None in d else
                             "diverged" if not all(map(usable, d)) else
                             f"{100 * (np.mean([x['mean'] for x in d]) - base['mean']):+.2f}")
            parts.append(f"{OPT_LABELS[o]} {' / '.join(cells)}")
        out.append(f"Mean change at {low} bits, {TARGET_LABELS[t]}, "
                   + " / ".join(f"{k} ({', '.join(v)})" for k, v in groups.items())
                   + f" functions, points: {'; '.join(parts)}.")
    return out


def choice_notes(sec, tol=1.0):
    """Sentences checking the project's choice (:data:`CHOICE`) against the numbers: at the
    lowest bit width, per optimizer and target, is one of them the best function or within
    ``tol`` points of it?"""
    s, summary = sec["settings"], sec["summary"]
    low = s["bits"][0]
    chosen = [m for m in CHOICE if m in s["methods"] and (m != "terngrad" or low == 2)]
    others = [m for m in s["methods"] if m not in chosen and (m != "terngrad" or low == 2)]
    if not chosen or not others:
        return []
    ok, misses = 0, []
    for o in s["optimizers"]:
        for t in s["targets"]:
            mine = {m: get(summary, o, t, m, low) for m in chosen}
            theirs = {m: get(summary, o, t, m, low) for m in others}
            if any(v is None for v in [*mine.values(), *theirs.values()]):
                continue
            # A function with a diverged seed competes with nothing: it is not the best
            # other function, and a chosen one that diverged does not count as the choice.
            mine = {m: v for m, v in mine.items() if usable(v)}
            theirs = {m: v for m, v in theirs.items() if usable(v)}
            if not mine:
                misses.append(f"{OPT_LABELS[o]}, {TARGET_LABELS[t]}: the chosen functions "
                              f"diverged")
                continue
            if not theirs:
                ok += 1
                continue
            m_best = max(mine, key=lambda m: mine[m]["mean"])
            o_best = max(theirs, key=lambda m: theirs[m]["mean"])
            gap = 100 * (theirs[o_best]["mean"] - mine[m_best]["mean"])
            if gap <= tol:
                ok += 1
            else:
                misses.append(f"{OPT_LABELS[o]}, {TARGET_LABELS[t]}: {LABELS[o_best]} "
                              f"{pct(theirs[o_best]['mean'])} against {LABELS[m_best]} "
                              f"{pct(mine[m_best]['mean'])}")
    n = ok + len(misses)
    text = (f"The project's choice, {' and '.join(LABELS[m] for m in chosen)}: at {low} bits "
            f"one of them is the best function or within {tol:g} point of the best in {ok} of "
            f"{n} optimizer × target settings")
    return [text + (f"; not in: {'; '.join(misses)}." if misses else ".")]


def markdown(sections, seconds):
    lines = []
    for sec in sections.values():
        lines += network_report(sec)
    runs = [r for sec in sections.values() for r in sec["runs"]]
    secs = [r["seconds"] for r in runs]
    search = [p for sec in sections.values() for ps in sec["lr_search"].values() if ps
              for p in ps]
    n_search = sum(len(sec["settings"]["lr_seeds"]) * len(ps) for sec in sections.values()
                   for ps in sec["lr_search"].values() if ps)
    total = sum(secs) + sum(p.get("seconds", 0) for p in search)
    lines += [
        "Integer (golden) test accuracy in %, mean over seeds (min..max). Quantized: the error "
        "signal (gradient w.r.t. each layer's accumulator) and/or the weight gradient (w.r.t. "
        "the quantized weights) of every layer, one scale max|g| per tensor; \"nothing\" is "
        "the float-gradient baseline of that optimizer, repeated in every column. TernGrad is "
        "two bits by construction (one column). The stochastic functions are seeded with the "
        "run's seed. The SGD learning rates were chosen on the validation split (see each "
        "network); Adam keeps the preset's.",
        f"Training time {total / 60:.1f} min (wall, on a shared machine) for the {len(runs)} "
        f"runs listed and {n_search} learning-rate search runs, {np.mean(secs):.1f} s per "
        f"listed run (min {min(secs):.1f}, max {max(secs):.1f}); {seconds / 60:.1f} min of "
        f"it in the last call (the others reused with --resume or kept with --merge).",
    ]
    return "\n".join(lines) + "\n"


def plot_svg(sections):
    """Accuracy (%) against gradient bits, one polyline per method (min..max bars), TernGrad a
    marker at 2 bits, the float baseline dashed; one panel per network and optimizer, target
    ``both`` (else the first one run)."""
    left, width, height, gap, top0 = 70, 520, 240, 70, 40
    legend_w = 230
    panels = [(sec, o) for sec in sections.values() for o in sec["settings"]["optimizers"]]
    total_h = top0 + len(panels) * (height + gap)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + legend_w}" '
           f'height="{total_h}" font-family="sans-serif" font-size="12">',
           f'<text x="{left}" y="20" font-size="14">Test accuracy against gradient bits '
           f'(mean of seeds, bars min..max)</text>']
    for i, (sec, opt) in enumerate(panels):
        s, summary = sec["settings"], sec["summary"]
        target = "both" if "both" in s["targets"] else s["targets"][0]
        bits, methods = s["bits"], s["methods"]
        b0, b1 = min(bits), max(bits)

        def x_of(b, b0=b0, b1=b1):
            return left + (b - b0) * width / max(1, b1 - b0)

        top = top0 + i * (height + gap)
        table = {m: [(b, get(summary, opt, target, m, b))
                     for b in ([2] if m == "terngrad" else bits)] for m in methods}
        table = {m: [(b, st) for b, st in pts if st is not None and st["mean"] is not None]
                 for m, pts in table.items()}
        base = get(summary, opt, "-", BASELINE, None)
        values = [st[k] for pts in table.values() for _, st in pts for k in ("min", "max")]
        values += [base["mean"]] if base else []
        if not values:
            continue
        lo = math.floor(100 * min(values) / 5) * 5
        hi = min(100, math.ceil(100 * max(values) / 5) * 5)
        if hi <= lo:
            lo, hi = hi - 5, hi

        def y_of(v, lo=lo, hi=hi, top=top):
            return top + height * (hi - 100 * v) / (hi - lo)

        title = f"{s['network']}, {OPT_LABELS[opt]} (lr {lr_text(s['lr'][opt])}), " \
                f"{TARGET_LABELS[target]}, {s['epochs']} epochs"
        out += [f'<text x="{left}" y="{top - 6}" font-size="13">{escape(title)}</text>',
                f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" '
                f'stroke="#888"/>']
        for t in range(int(lo), int(hi) + 1, 5 if hi - lo <= 40 else 10):
            y = top + height * (hi - t) / (hi - lo)
            out += [f'<line x1="{left}" y1="{y:.1f}" x2="{left + width}" y2="{y:.1f}" '
                    f'stroke="#eee"/>',
                    f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{t}%</text>']
        for b in bits:
            out.append(f'<text x="{x_of(b):.1f}" y="{top + height + 16}" '
                       f'text-anchor="middle">{b}</text>')
        out.append(f'<text x="{left + width / 2}" y="{top + height + 34}" '
                   f'text-anchor="middle">gradient bits</text>')
        if base:
            y = y_of(base["mean"])
            out.append(f'<line class="{BASELINE}" x1="{left}" y1="{y:.1f}" '
                       f'x2="{left + width}" y2="{y:.1f}" stroke="{COLOURS[BASELINE]}" '
                       f'stroke-dasharray="6,4" stroke-width="1.5"/>')
        for method, pts in table.items():
            colour = COLOURS[method]
            for b, st in pts:
                x = x_of(b)
                out.append(f'<line x1="{x:.1f}" y1="{y_of(st["min"]):.1f}" x2="{x:.1f}" '
                           f'y2="{y_of(st["max"]):.1f}" stroke="{colour}" opacity="0.5"/>')
            if method == "terngrad":
                for b, st in pts:
                    x, y = x_of(b), y_of(st["mean"])
                    out.append(f'<path class="terngrad" d="M{x:.1f},{y - 6:.1f} l6,6 l-6,6 '
                               f'l-6,-6 z" fill="{colour}"/>')
                continue
            line = " ".join(f"{x_of(b):.1f},{y_of(st['mean']):.1f}" for b, st in pts)
            out.append(f'<polyline class="{method}" points="{line}" fill="none" '
                       f'stroke="{colour}" stroke-width="2"/>')
            out += [f'<circle cx="{x_of(b):.1f}" cy="{y_of(st["mean"]):.1f}" r="2.5" '
                    f'fill="{colour}"/>' for b, st in pts]
        for j, method in enumerate([BASELINE, *methods]):
            y = top + 14 + 18 * j
            dash = ' stroke-dasharray="6,4"' if method == BASELINE else ""
            out += [f'<line x1="{left + width + 15}" y1="{y - 4}" x2="{left + width + 40}" '
                    f'y2="{y - 4}" stroke="{COLOURS[method]}" stroke-width="2"{dash}/>',
                    f'<text x="{left + width + 46}" y="{y}">{escape(LABELS[method])}</text>']
    out.append("</svg>")
    return "\n".join(out) + "\n"


def parse_epochs(values, parser):
    """``--epochs`` values: ``N`` (every network) and ``NAME=N`` -> ``(default, {name: N})``."""
    default, per = None, {}
    for v in values:
        name, _, n = v.rpartition("=")
        try:
            n = int(n)
        except ValueError:
            parser.error(f"--epochs: expected N or NAME=N, got {v!r}")
        if n < 1:
            parser.error(f"--epochs: expected a positive number of epochs, got {v!r}")
        if name:
            per[name] = n
        else:
            default = n
    return default, per


def parse_lr(values, parser):
    out = {}
    for v in values:
        name, _, lr = v.partition("=")
        try:
            lr = float(lr)
        except ValueError:
            lr = None
        if name not in OPTIMIZERS or lr is None or not 0 < lr < math.inf:
            parser.error(f"--lr: expected OPTIMIZER=RATE (optimizers: {', '.join(OPTIMIZERS)}; "
                         f"a positive rate), got {v!r}")
        out[name] = lr
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["digits-tnn"],
                        help=f"networks: presets or {', '.join(NETWORKS)} (default digits-tnn)")
    parser.add_argument("--methods", nargs="+", default=list(GRAD_QUANTIZERS),
                        choices=list(GRAD_QUANTIZERS), metavar="METHOD",
                        help=f"gradient quantizers (default: all: {' '.join(GRAD_QUANTIZERS)})")
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4, 6, 8],
                        help="gradient bit widths (default 2 3 4 6 8; TernGrad runs at 2)")
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS),
                        choices=list(OPTIMIZERS), metavar="OPTIMIZER",
                        help=f"default: all: {' '.join(OPTIMIZERS)}")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS),
                        metavar="TARGET", help="what is quantized: both (error signal and "
                                               "weight gradient), error, weight (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="training seeds (default 0 1 2)")
    parser.add_argument("--epochs", nargs="+", default=[],
                        help=f"N (every network) and/or NAME=N (default: {DIGITS_EPOCHS}; "
                             + ", ".join(f"{k} {v}" for k, v in DEFAULT_EPOCHS.items()) + ")")
    parser.add_argument("--schedule", default="cosine", choices=SCHEDULES,
                        help="learning-rate schedule of every optimizer (default: cosine, the "
                             "presets')")
    parser.add_argument("--lr-grid", type=int, nargs="+", default=list(range(-7, 3)),
                        metavar="EXP", help="SGD learning rates searched, as powers of two "
                                            "(default -7 .. 2)")
    parser.add_argument("--lr-seeds", type=int, nargs="+", default=[0],
                        help="seeds of the learning-rate search (default 0)")
    parser.add_argument("--lr", nargs="+", default=[], metavar="OPTIMIZER=RATE",
                        help="fixed learning rates (no search for these optimizers)")
    parser.add_argument("--out", default="build/bench",
                        help="folder of gradquant.md/.json/.svg and the run log")
    parser.add_argument("--resume", action="store_true",
                        help="reuse finished runs from OUT/gradquant-runs.jsonl")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other networks of the previous OUT/gradquant.json")
    add_docs_arguments(parser)
    args = parser.parse_args()
    check_docs_page(args, DOC_TABLES)
    for name in args.presets:
        try:
            network(name)
        except ValueError as exc:
            parser.error(f"--presets: {exc}; or {', '.join(NETWORKS)}")
    if any(not MIN_BITS <= b <= MAX_BITS for b in args.bits):
        parser.error(f"--bits: expected {MIN_BITS}..{MAX_BITS}, got {args.bits}")
    args.bits = sorted(set(args.bits))
    if any(s < 0 for s in args.seeds + args.lr_seeds):
        parser.error(f"--seeds/--lr-seeds: expected non-negative integers, got "
                     f"{args.seeds} / {args.lr_seeds}")
    default_epochs, per_epochs = parse_epochs(args.epochs, parser)
    unknown = set(per_epochs) - set(args.presets)
    if unknown:
        parser.error(f"--epochs: {', '.join(sorted(unknown))} not in --presets")
    args.lr = parse_lr(args.lr, parser)
    args.methods = list(dict.fromkeys(args.methods))
    args.optimizers = list(dict.fromkeys(args.optimizers))
    args.targets = list(dict.fromkeys(args.targets))
    os.makedirs(args.out, exist_ok=True)

    def epochs_of(name):
        return per_epochs.get(name, default_epochs or DEFAULT_EPOCHS.get(name, DIGITS_EPOCHS))

    runner = Runner(args)
    n_search = sum(len(args.lr_grid) * len(args.lr_seeds) for o in args.optimizers
                   if o != "adam" and o not in args.lr)
    runner.total = len(args.presets) * (n_search + len(args.optimizers) * len(args.seeds)
                                        * len(configs(args.methods, args.bits, args.targets)))
    log(f"{runner.total} training runs")
    started = time.monotonic()
    sections = {}
    for name in args.presets:
        epochs = epochs_of(name)
        preset, data = network(name)
        lrs, searches = {}, {}
        for opt in args.optimizers:
            lrs[opt], searches[opt] = choose_lr(runner, name, epochs, opt, args)
            if searches[opt]:
                log(f"{name}: {opt} lr {lr_text(lrs[opt])} (best validation accuracy)")
        runs = [runner.run(name, epochs, seed, opt, lrs[opt], args.schedule, m, b, t)
                for opt in args.optimizers for seed in args.seeds
                for m, b, t in configs(args.methods, args.bits, args.targets)]
        settings = {"network": name, "preset": preset.name, "data": data or preset.dataset,
                    "arch": str(preset.arch), "weights": str(preset.weights),
                    "act_bits": str(preset.act_bits),
                    "epochs": epochs, "seeds": args.seeds, "schedule": args.schedule,
                    "optimizers": args.optimizers, "lr": lrs,
                    "lr_given": sorted(set(args.lr) & set(args.optimizers)),
                    "lr_grid": args.lr_grid, "lr_seeds": args.lr_seeds,
                    "methods": args.methods, "bits": args.bits, "targets": args.targets,
                    "stochastic": sorted(STOCHASTIC & set(args.methods))}
        sections[name] = {"settings": settings, "lr_search": searches, "runs": runs,
                          "summary": summarize(runs)}
    seconds = time.monotonic() - started

    json_path = os.path.join(args.out, "gradquant.json")
    if args.merge and os.path.exists(json_path):
        with open(json_path) as f:
            old = json.load(f).get("networks", {})
        kept = {k: v for k, v in old.items() if k not in sections}
        if kept:
            log(f"--merge: keeping {', '.join(kept)} from {json_path}")
        # The previous order, this run's networks in their places (new ones last).
        sections = {**{k: sections.get(k, v) for k, v in old.items()},
                    **{k: v for k, v in sections.items() if k not in old}}
    table = markdown(sections, seconds)
    print(table, end="")
    ir.atomic_write_bytes(os.path.join(args.out, "gradquant.md"), table.encode())
    ir.atomic_write_bytes(os.path.join(args.out, "gradquant.svg"), plot_svg(sections).encode())
    doc = {"seconds": round(seconds, 1), "networks": sections}
    ir.atomic_write_bytes(json_path, (json.dumps(doc, indent=1) + "\n").encode())
    log(f"wrote {os.path.join(args.out, 'gradquant')}.md/.json/.svg; {runner.trained} runs "
        f"trained in {seconds / 60:.1f} min")
    docs_page(args, {"gradquant": shift_headings(table, 3)}, log=log)


if __name__ == "__main__":
    main()
