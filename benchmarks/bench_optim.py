"""Benchmark the multiplier-free optimizers against SGD, SGD+momentum and Adam.

    python benchmarks/bench_optim.py [--seeds 0 1 2] [--grid 2 1 ... -9] [--epochs 15]
                                     [--target 0.95] [--fn-grid 2 ... -12] [--iters 10000]
                                     [--tol 1e-6] [--mnist DIR] [--out build/bench]

Optimizers (:mod:`qnnfab.model.log_optim` and torch): LogQuantSGD with ``floor`` (the published
rule) and ``nearest`` rounding, ShiftAdaMax (betas ``1 - 2**-3``, ``1 - 2**-10``), SGD,
SGD+momentum (0.9) and Adam (0.9, 0.999). The same learning-rate budget for all: each picks its
best learning rate from the *same* grid of powers of two (``2**e`` for each exponent given).

1. **Benchmark functions** (float64, 2-D, three fixed starts each): Rosenbrock, a quadratic of
   condition number 100 rotated by 30 degrees (so the axes are not its eigenvectors) and Beale.
   Iterations (gradient steps) until ``f < --tol`` (every minimum is 0), at most ``--iters``; a
   start *diverges* when ``f`` becomes non-finite or exceeds 1e10. Best learning rate: most
   starts reaching the tolerance, then fewest mean iterations.
2. **Training** (``--preset``, default ``digits-tnn``: ternary weights, 2-bit activations, the
   Smart Quantization regularizer; digits, and MNIST when ``--mnist DIR`` is given): a minimal
   loop like :mod:`qnnfab.model.train`'s (same model, loss, label smoothing, regularizer,
   ``constrain_()`` after each step, batch size, data order from the seed) but with a
   *constant* learning rate, the optimizer under test and ``--epochs`` epochs. Validation
   accuracy is measured ``--evals-per-epoch`` times per epoch; *epochs to target* is the first
   such point (in epochs, fractional) where it reaches ``--target``. Best learning rate, chosen
   on validation only: most seeds reaching the target, then fewest mean epochs, then the best
   mean final validation accuracy. At that learning rate the test accuracy is reported for the
   final model and for the best-validation one, each both as float (torch) and as integer
   (exported to the IR, :func:`qnnfab.spec.golden.forward`).

The goal checked (qnnfab issue #6): LogQuantSGD (floor) needs at least 2x fewer epochs than SGD
to reach the target, each at its best learning rate of the grid.

Prints Markdown (progress on stderr) and writes ``OUT/optim.md``, ``OUT/optim.json``,
``OUT/optim.svg`` (validation accuracy against epochs per optimizer, mean over seeds at the best
learning rate; ``OUT/optim-mnist.svg`` too with ``--mnist``) and the ``optim`` table of
``docs/results.md`` (``--docs PAGE``; ``--no-docs``: not) atomically.
"""

import argparse
import copy
import json
import math
import os
import sys
import time
from xml.sax.saxutils import escape

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from doc_tables import (add_docs_arguments, check_docs_page, docs_page,  # noqa: E402
                        shift_headings)

from qnnfab import ir  # noqa: E402
from qnnfab.spec import golden  # noqa: E402
from qnnfab.model.data import load_dataset  # noqa: E402
from qnnfab.model.export import export  # noqa: E402
from qnnfab.model.log_optim import LogQuantSGD, ShiftAdaMax  # noqa: E402
from qnnfab.model.presets import get_preset  # noqa: E402
from qnnfab.model.sq import SQController  # noqa: E402
from qnnfab.model.train import build_model, predict  # noqa: E402

#: The tables of docs/results.md this benchmark writes.
DOC_TABLES = ("optim", "optim-state")

#: name -> factory(params or param groups, lr).
OPTIMIZERS = {
    "LogQuantSGD floor": lambda params, lr: LogQuantSGD(params, lr, rounding="floor"),
    "LogQuantSGD nearest": lambda params, lr: LogQuantSGD(params, lr, rounding="nearest"),
    "ShiftAdaMax": lambda params, lr: ShiftAdaMax(params, lr),
    "SGD": lambda params, lr: torch.optim.SGD(params, lr=lr),
    "SGD+momentum": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9),
    "Adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
}
COLOURS = {"LogQuantSGD floor": "#d0452f", "LogQuantSGD nearest": "#f0a030",
           "ShiftAdaMax": "#8e44ad", "SGD": "#3b6fb6", "SGD+momentum": "#2aa198",
           "Adam": "#555555"}
LOGQ, SGD = "LogQuantSGD floor", "SGD"
BLOWUP = 1e10


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def lr_text(e):
    return f"2^{e}"


# -- benchmark functions ------------------------------------------------------------------------

def rosenbrock(z):
    x, y = z[..., 0], z[..., 1]
    return (1 - x) ** 2 + 100 * (y - x ** 2) ** 2


_T = math.radians(30)
_R = torch.tensor([[math.cos(_T), -math.sin(_T)], [math.sin(_T), math.cos(_T)]],
                  dtype=torch.float64)
_A = _R @ torch.diag(torch.tensor([1.0, 100.0], dtype=torch.float64)) @ _R.T


def quadratic(z):
    return 0.5 * ((z @ _A) * z).sum(-1)


def beale(z):
    x, y = z[..., 0], z[..., 1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y ** 2) ** 2 + (2.625 - x + x * y ** 3) ** 2


#: name -> (f, starts, what); every minimum is 0.
FUNCTIONS = {
    "Rosenbrock": (rosenbrock, [(-1.2, 1.0), (-0.5, 1.5), (1.5, 1.5)],
                   "(1-x)^2 + 100 (y-x^2)^2, minimum at (1, 1)"),
    "quadratic k=100": (quadratic, [(1.0, 1.0), (-2.0, 1.0), (1.5, -0.5)],
                        "z^T A z / 2, eigenvalues 1 and 100, eigenvectors rotated 30 deg"),
    "Beale": (beale, [(1.0, 1.0), (2.0, 0.0), (4.0, 1.0)],
              "Beale's function, minimum at (3, 0.5)"),
}


def run_function(fn, starts, make, lrs, *, max_iters, tol):
    """Minimize ``fn`` from every start with every learning rate (one parameter group per lr,
    each a ``(starts, 2)`` tensor: the optimizers are element-wise, so the starts do not
    interact). Returns ``(hit, diverged)``: ``(lrs, starts)`` arrays, ``hit`` the iteration
    where ``f < tol`` first held (-1: never)."""
    params = [torch.tensor(starts, dtype=torch.float64, requires_grad=True) for _ in lrs]
    opt = make([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)], lrs[0])
    hit = np.full((len(lrs), len(starts)), -1)
    diverged = np.zeros((len(lrs), len(starts)), dtype=bool)
    active = list(range(len(lrs)))
    for it in range(max_iters + 1):
        f = fn(torch.stack([params[i] for i in active]))
        fd = f.detach().numpy()
        h, d = hit[active], diverged[active]
        open_ = (h < 0) & ~d
        with np.errstate(invalid="ignore"):
            blown = open_ & ~(np.isfinite(fd) & (fd <= BLOWUP))
            h[open_ & ~blown & (fd < tol)] = it
        d |= blown
        hit[active], diverged[active] = h, d
        done = ((h >= 0) | d).all(axis=1)
        if it == max_iters or done.all():
            break
        opt.zero_grad(set_to_none=True)
        f[torch.as_tensor(~done)].sum().backward()
        for i, finished in zip(active, done):
            if finished:
                params[i].grad = None
        opt.step()
        active = [i for i, finished in zip(active, done) if not finished]
    return hit, diverged


def function_benchmark(exponents, max_iters, tol):
    lrs = [2.0 ** e for e in exponents]
    out = {}
    for fname, (fn, starts, what) in FUNCTIONS.items():
        rows = {}
        for oname, make in OPTIMIZERS.items():
            t = time.monotonic()
            hit, div = run_function(fn, starts, make, lrs, max_iters=max_iters, tol=tol)
            per_lr = [{"exponent": e, "iterations": [int(v) if v >= 0 else None for v in h],
                       "diverged": int(d.sum())} for e, h, d in zip(exponents, hit, div)]

            def key(r):
                reached = [v for v in r["iterations"] if v is not None]
                return (-len(reached), np.mean(reached) if reached else math.inf)
            best = min(per_lr, key=key)
            if all(v is None for v in best["iterations"]):
                best = None
            rows[oname] = {
                "best": best,
                "lrs_diverging": [r["exponent"] for r in per_lr if r["diverged"]],
                "lrs_reaching_all": [r["exponent"] for r in per_lr
                                     if all(v is not None for v in r["iterations"])],
                "per_lr": per_lr}
            b = "none" if best is None else \
                f"{lr_text(best['exponent'])}: {best['iterations']}"
            log(f"  {fname:16s} {oname:20s} best {b}; diverging at "
                f"{len(rows[oname]['lrs_diverging'])}/{len(lrs)} lrs "
                f"({time.monotonic() - t:.1f} s)")
        out[fname] = {"what": what, "starts": starts, "rows": rows}
    return out


# -- training --------------------------------------------------------------------------------------

def train_run(preset, ds, make, lr, *, seed, epochs, evals_per_epoch, target):
    """Train ``preset``'s model on ``ds`` with ``make(params, lr)`` at a constant ``lr``.
    Returns the curve, epochs to target and the final and best-validation state dicts."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(preset, ds)
        controller = SQController(model.quant_linears(), preset.sq, epochs) \
            if preset.sq is not None else None
        opt = make(model.parameters(), lr)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=preset.label_smoothing)
        gen = torch.Generator().manual_seed(seed)
        x = torch.as_tensor(ds.x_train, dtype=torch.float32)
        y = torch.as_tensor(ds.y_train)
        n, bs = len(y), preset.batch_size
        starts = list(range(0, n, bs))
        total = max(1, epochs * len(starts))
        marks = {round(j * len(starts) / evals_per_epoch) - 1
                 for j in range(1, evals_per_epoch + 1)}
        curve, best, best_acc, reached, diverged, step = [], None, -1.0, None, False, 0
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(n, generator=gen)
            for b, start in enumerate(starts):
                idx = order[start:start + bs]
                if len(idx) >= 2:  # batch-norm needs two samples
                    loss = loss_fn(model(x[idx]), y[idx])
                    if controller is not None:
                        loss = loss + controller.regularizer(step, total)
                    if not torch.isfinite(loss):
                        diverged = True
                        break
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    step += 1
                    model.constrain_()
                if b in marks:
                    _, pred = predict(model, ds.x_val)
                    acc = float(np.mean(pred == ds.y_val))
                    at = round(epoch + (b + 1) / len(starts), 4)
                    curve.append((at, acc))
                    if reached is None and acc >= target:
                        reached = at
                    if acc > best_acc:
                        best_acc, best = acc, copy.deepcopy(model.state_dict())
            if diverged:
                break
            if controller is not None:
                controller.end_epoch(epoch + 1)
    return {"curve": curve, "epochs_to_target": reached, "diverged": diverged,
            "final_val": curve[-1][1] if curve else None, "best_val": best_acc,
            "final_state": copy.deepcopy(model.state_dict()), "best_state": best,
            "model": model}


def test_accuracies(model, state, ds, preset, seed):
    """``(float, integer)`` test accuracy of ``model`` with ``state``."""
    model.load_state_dict(state)
    model.eval()
    _, pred = predict(model, ds.x_test)
    net = export(model, meta={"preset": preset.name, "seed": seed}, classes=list(ds.classes))
    int_pred = golden.forward(net, ds.x_test).classes
    return float(np.mean(pred == ds.y_test)), float(np.mean(int_pred == ds.y_test))


def training_benchmark(preset, data, exponents, seeds, epochs, evals_per_epoch, target):
    ds = load_dataset(data, seed=preset.split_seed)
    runs = {}
    for oname, make in OPTIMIZERS.items():
        t = time.monotonic()
        per_lr = []
        for e in exponents:
            seeds_out = [train_run(preset, ds, make, 2.0 ** e, seed=s, epochs=epochs,
                                   evals_per_epoch=evals_per_epoch, target=target)
                         for s in seeds]
            per_lr.append((e, seeds_out))
        runs[oname] = per_lr
        log(f"  {data} {oname}: {len(exponents)} lrs x {len(seeds)} seeds "
            f"({time.monotonic() - t:.0f} s)")

    results = {}
    for oname, per_lr in runs.items():
        table = []
        for e, seeds_out in per_lr:
            ok = [r["epochs_to_target"] for r in seeds_out
                  if r["epochs_to_target"] is not None and not r["diverged"]]
            table.append({
                "exponent": e, "epochs_to_target": [r["epochs_to_target"] for r in seeds_out],
                "seeds_reaching": len(ok), "mean_epochs": float(np.mean(ok)) if ok else None,
                "diverged": sum(r["diverged"] for r in seeds_out),
                "final_val": [r["final_val"] for r in seeds_out],
                "best_val": [r["best_val"] for r in seeds_out]})

        def key(row):
            vals = [v for v in row["final_val"] if v is not None]
            return (-row["seeds_reaching"],
                    row["mean_epochs"] if row["mean_epochs"] is not None else math.inf,
                    -(np.mean(vals) if vals else 0.0))
        best_i = min(range(len(table)), key=lambda i: key(table[i]))
        best = table[best_i]
        tests = []
        for s, r in zip(seeds, runs[oname][best_i][1]):
            final = test_accuracies(r["model"], r["final_state"], ds, preset, s)
            best_model = test_accuracies(r["model"], r["best_state"], ds, preset, s) \
                if r["best_state"] is not None else (None, None)
            tests.append({"seed": s, "final_float": final[0], "final_integer": final[1],
                          "bestval_float": best_model[0], "bestval_integer": best_model[1]})
        curves = [r["curve"] for r in runs[oname][best_i][1]]
        results[oname] = {"best": best, "per_lr": table, "test": tests,
                          "curve": mean_curve(curves)}
        log(f"  {oname}: best {lr_text(best['exponent'])}, epochs to target "
            f"{best['epochs_to_target']}, final integer test "
            f"{[round(t['final_integer'], 4) for t in tests]}")
    return {"data": ds.name, "n_val": int(len(ds.y_val)), "n_test": int(len(ds.y_test)),
            "results": results}


def mean_curve(curves):
    """Mean validation accuracy at each evaluation point over seeds (points all share)."""
    n = min(len(c) for c in curves)
    return [(curves[0][i][0], float(np.mean([c[i][1] for c in curves]))) for i in range(n)]


def goal(results, epochs):
    """The issue's check: SGD's epochs over LogQuantSGD (floor)'s, each at its best lr; and the
    same ratio at every lr of the grid where LogQuantSGD reaches the target on every seed
    (``same_lr``: exponent -> ratio, or ``"> x"`` when SGD does not reach it on every seed)."""
    same_lr = {}
    for lq_row, sgd_row in zip(results[LOGQ]["per_lr"], results[SGD]["per_lr"]):
        n = len(lq_row["epochs_to_target"])
        if lq_row["seeds_reaching"] < n:
            continue
        if sgd_row["seeds_reaching"] == n:
            same_lr[lq_row["exponent"]] = sgd_row["mean_epochs"] / lq_row["mean_epochs"]
        else:
            same_lr[lq_row["exponent"]] = f"> {epochs / lq_row['mean_epochs']:.2f}"
    lq, sgd = results[LOGQ]["best"], results[SGD]["best"]
    if lq["seeds_reaching"] < len(lq["epochs_to_target"]):
        return {"met": False, "ratio": None, "same_lr": same_lr,
                "text": f"{LOGQ} did not reach the target on every seed "
                        f"({lq['seeds_reaching']}/{len(lq['epochs_to_target'])})"}
    if sgd["seeds_reaching"] < len(sgd["epochs_to_target"]):
        bound = epochs / lq["mean_epochs"]
        return {"met": bound >= 2, "ratio": None, "ratio_lower_bound": bound, "same_lr": same_lr,
                "text": f"SGD did not reach the target on every seed within {epochs} epochs at "
                        f"any lr: ratio > {bound:.2f}"}
    ratio = sgd["mean_epochs"] / lq["mean_epochs"]
    return {"met": ratio >= 2, "ratio": ratio, "same_lr": same_lr,
            "text": f"SGD {sgd['mean_epochs']:.2f} epochs ({lr_text(sgd['exponent'])}) / "
                    f"{LOGQ} {lq['mean_epochs']:.2f} epochs ({lr_text(lq['exponent'])}) = "
                    f"{ratio:.2f}x"}


# -- plot -----------------------------------------------------------------------------------------

def curves_svg(curves, *, target, title, y_lo=0.5):
    """An SVG (text) of validation accuracy against epochs, one polyline per optimizer
    (``curves``: name -> [(epoch, accuracy), ...]); values below ``y_lo`` are drawn on the
    bottom edge. No plotting library needed."""
    points = [p for c in curves.values() for p in c]
    if not points:
        raise ValueError("curves_svg: no points")
    x1 = max(p[0] for p in points)
    left, top, width, height = 60, 40, 600, 300

    def x_of(e):
        return left + e * width / x1

    def y_of(a):
        return top + height * (1.0 - max(y_lo, min(1.0, a))) / (1.0 - y_lo)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 200}" '
           f'height="{top + height + 60}" font-family="sans-serif" font-size="12">',
           f'<text x="{left}" y="20" font-size="14">{escape(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" '
           f'stroke="#888"/>']
    for k in range(round(y_lo * 10), 11):
        a = k / 10
        out.append(f'<line x1="{left}" y1="{y_of(a):.1f}" x2="{left + width}" '
                   f'y2="{y_of(a):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 35}" y="{y_of(a) + 4:.1f}">{a:.1f}</text>')
    tick = max(1, math.ceil(x1 / 10))
    for e in range(0, int(x1) + 1, tick):
        out.append(f'<text x="{x_of(e) - 4:.1f}" y="{top + height + 16}">{e}</text>')
    out.append(f'<line class="target" x1="{left}" y1="{y_of(target):.1f}" x2="{left + width}" '
               f'y2="{y_of(target):.1f}" stroke="#000" stroke-dasharray="4 4"/>')
    for i, (name, curve) in enumerate(curves.items()):
        colour = COLOURS.get(name, "#000")
        pts = " ".join(f"{x_of(e):.1f},{y_of(a):.1f}" for e, a in curve)
        out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" '
                   f'stroke-width="2"><title>{escape(name)}</title></polyline>')
        ly = top + 10 + 18 * i
        out.append(f'<line x1="{left + width + 10}" y1="{ly}" x2="{left + width + 30}" '
                   f'y2="{ly}" stroke="{colour}" stroke-width="3"/>')
        out.append(f'<text x="{left + width + 35}" y="{ly + 4}">{escape(name)}</text>')
    out.append(f'<text x="{left}" y="{top + height + 36}">epoch; dashed: target '
               f'{target:.0%}; accuracies below {y_lo:.1f} drawn at the bottom edge</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


# -- report ---------------------------------------------------------------------------------------

def pct(x):
    return "-" if x is None else f"{100 * x:.2f}"


def fmt_epochs(v):
    return "-" if v is None else f"{v:g}"


def markdown(result):
    a = result["args"]
    lines = ["# Multiplier-free optimizers: log-quantized SGD and shift-based AdaMax", "",
             f"Same learning-rate budget: every optimizer picks its best lr from the same grid "
             f"of powers of two. Run time {result['seconds'] / 60:.1f} min.", ""]
    if result.get("functions"):
        grid = ", ".join(map(str, a["fn_grid"]))
        lines += ["## Benchmark functions", "",
                  f"Iterations until f < {a['tol']:g} (at most {a['iters']}), float64, three "
                  f"fixed starts each; lr grid 2^e, e in {{{grid}}} ({len(a['fn_grid'])} "
                  f"values). *Diverging lrs*: how many of the grid blow up (f non-finite or "
                  f"> {BLOWUP:g}) from at least one start.", "",
                  "| function | optimizer | best lr | iterations per start | mean | lrs "
                  "reaching from all starts | lrs diverging |", "|---|---|---|---|---|---|---|"]
        for fname, fres in result["functions"].items():
            for oname, r in fres["rows"].items():
                b = r["best"]
                n = len(a["fn_grid"])
                if b is None:
                    lines.append(f"| {fname} | {oname} | none reaches | - | - | 0/{n} "
                                 f"| {len(r['lrs_diverging'])}/{n} |")
                    continue
                its = [v for v in b["iterations"] if v is not None]
                lines.append(
                    f"| {fname} | {oname} | {lr_text(b['exponent'])} | "
                    f"{', '.join('-' if v is None else str(v) for v in b['iterations'])} | "
                    f"{np.mean(its):.0f} | {len(r['lrs_reaching_all'])}/{n} | "
                    f"{len(r['lrs_diverging'])}/{n} |")
        lines += ["", "Starts: " + "; ".join(
            f"{f}: {', '.join(str(tuple(s)) for s in fr['starts'])} ({fr['what']})"
            for f, fr in result["functions"].items()) + ".", ""]
    for section in result.get("training", []):
        res = section["results"]
        grid = a["grid"]
        lines += [f"## Training {a['preset']} on {section['label']}", "",
                  f"Constant lr, {section['epochs']} epochs, validation accuracy measured "
                  f"{a['evals_per_epoch']}x per epoch ({section['n_val']} images); target "
                  f"{pct(a['target'])} % validation accuracy; seeds "
                  f"{', '.join(map(str, section['seeds']))}. Test: {section['n_test']} images, "
                  f"final model and best-validation model, float and integer (golden).", "",
                  "| optimizer | best lr | epochs to target per seed | mean | final val % "
                  "| final test % float / integer | best-val model test % integer |",
                  "|---|---|---|---|---|---|---|"]
        for oname, r in res.items():
            b, t = r["best"], r["test"]
            bestval = [x["bestval_integer"] for x in t if x["bestval_integer"] is not None]
            lines.append(
                f"| {oname} | {lr_text(b['exponent'])} | "
                f"{', '.join(fmt_epochs(v) for v in b['epochs_to_target'])} | "
                f"{fmt_epochs(None if b['mean_epochs'] is None else round(b['mean_epochs'], 2))}"
                f" | {pct(np.mean(b['final_val']))} | "
                f"{pct(np.mean([x['final_float'] for x in t]))} / "
                f"{pct(np.mean([x['final_integer'] for x in t]))} | "
                f"{pct(np.mean(bestval) if bestval else None)} |")
        g = section["goal"]
        same = ", ".join(f"{lr_text(int(e))}: " + (f"{r:.2f}x" if isinstance(r, float) else r)
                         for e, r in g["same_lr"].items())
        lines += ["", f"**Goal (>= 2x fewer epochs than SGD): {'met' if g['met'] else 'NOT met'}"
                      f"** -- {g['text']} (each at its best lr). At the same lr, SGD's epochs "
                      f"over {LOGQ}'s: {same or 'no lr where it reaches the target on every seed'}"
                      ".", "",
                  "Mean epochs to target at every lr of the grid (seeds reaching it in "
                  "parentheses when not all; `-`: none; `div`: a seed diverged):", "",
                  "| optimizer | " + " | ".join(lr_text(e) for e in grid) + " |",
                  "|---|" + "---|" * len(grid)]
        for oname, r in res.items():
            cells = []
            for row in r["per_lr"]:
                c = "-" if row["mean_epochs"] is None else f"{row['mean_epochs']:.2f}"
                if row["mean_epochs"] is not None and row["seeds_reaching"] < len(section["seeds"]):
                    c += f" ({row['seeds_reaching']})"
                if row["diverged"]:
                    c += " div"
                cells.append(c)
            lines.append(f"| {oname} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def strip(result):
    """``result`` without models and state dicts (JSON)."""
    return json.loads(json.dumps(result, default=lambda o: None))


def state_bits_table():
    """Bits stored per learned parameter: the weight and the optimizer's state. The float
    optimizers as PyTorch keeps them (float32 each); the on-chip learner's from its rule
    (:class:`qnnfab.spec.learn_rule.LearnRule`: the momentum stored as logq of itself)."""
    from qnnfab.spec.learn_rule import DEFAULT_RULE as rule
    rows = [("SGD (float32)", 32, 0, "none"),
            ("SGD + momentum (float32)", 32, 32, "momentum"),
            ("Adam (float32)", 32, 64, "first and second moments"),
            ("LogQuantSGD in PyTorch (float32)", 32, 32, "logq(momentum), held as a float"),
            ("on-chip learner, 16-bit momentum (before)", rule.weight_bits,
             rule.momentum_bits, "momentum, two's complement"),
            ("on-chip learner (qnnfab)", rule.weight_bits, rule.momentum_code_bits,
             f"logq(momentum): sign, non-zero, {rule.momentum_exp_bits}-bit exponent")]
    lines = ["| optimizer | weight bits | state bits | bits per parameter | state |",
             "|---|---|---|---|---|"]
    for name, w, st, what in rows:
        lines.append(f"| {name} | {w} | {st} | {w + st} | {what} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--grid", type=int, nargs="+", default=list(range(2, -10, -1)),
                        help="lr exponents for training (lr = 2**e)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--evals-per-epoch", type=int, default=4)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--preset", default="digits-tnn")
    parser.add_argument("--fn-grid", type=int, nargs="+", default=list(range(2, -13, -1)),
                        help="lr exponents for the benchmark functions")
    parser.add_argument("--iters", type=int, default=10000)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--mnist", metavar="DIR", help="also train on MNIST in DIR")
    parser.add_argument("--mnist-epochs", type=int, default=5)
    parser.add_argument("--mnist-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--skip-functions", action="store_true")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--state-only", action="store_true",
                        help="only the table of stored bits per parameter (seconds)")
    parser.add_argument("--out", default="build/bench")
    add_docs_arguments(parser)
    args = parser.parse_args()
    check_docs_page(args, DOC_TABLES)
    state = state_bits_table()
    if args.state_only:
        print(state)
        docs_page(args, {"optim-state": state}, log=log)
        return 0
    os.makedirs(args.out, exist_ok=True)
    started = time.monotonic()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    preset = get_preset(args.preset)
    result = {"args": {**vars(args), "optimizers": list(OPTIMIZERS)}, "functions": None,
              "training": []}
    try:
        if not args.skip_functions:
            log("benchmark functions ...")
            result["functions"] = function_benchmark(args.fn_grid, args.iters, args.tol)
        jobs = [] if args.skip_training else [(preset.dataset, preset.dataset, args.epochs,
                                                 args.seeds, "optim.svg")]
        if args.mnist and not args.skip_training:
            jobs.append((f"mnist:{args.mnist}", "MNIST", args.mnist_epochs, args.mnist_seeds,
                         "optim-mnist.svg"))
        for data, label, epochs, seeds, svg_name in jobs:
            log(f"training {preset.name} on {label} ...")
            section = training_benchmark(preset, data, args.grid, seeds, epochs,
                                         args.evals_per_epoch, args.target)
            section.update(label=label, epochs=epochs, seeds=seeds, svg=svg_name,
                           goal=goal(section["results"], epochs))
            result["training"].append(section)
            curves = {o: r["curve"] for o, r in section["results"].items()}
            svg = curves_svg(curves, target=args.target,
                             title=f"{preset.name} on {label}: validation accuracy, mean of "
                                   f"{len(seeds)} seeds, each optimizer at its best lr")
            ir.atomic_write_bytes(os.path.join(args.out, svg_name), svg.encode())
    finally:
        torch.set_num_threads(threads)
    result["seconds"] = round(time.monotonic() - started, 1)
    text = markdown(result)
    print(text)
    ir.atomic_write_bytes(os.path.join(args.out, "optim.md"), text.encode())
    ir.atomic_write_bytes(os.path.join(args.out, "optim.json"),
                          json.dumps(strip(result), indent=1).encode())
    log(f"wrote {args.out}/optim.md, optim.json, "
        + ", ".join(s["svg"] for s in result["training"]) + f" ({result['seconds'] / 60:.1f} min)")
    print(state)
    docs_page(args, {"optim": shift_headings(text, 3), "optim-state": state}, log=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
