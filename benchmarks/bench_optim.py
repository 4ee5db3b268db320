"""Benchmark the multiplier-free optimizers against SGD, SGD+momentum and Adam.

    python benchmarks/bench_optim.py [--seeds 0 1 2] [--grid 2 1 ... -9] [--epochs 15]
                                     [--evals-per-epoch 20] [--target 0.95]
                                     [--fn-grid 2 ... -12] [--iters 10000] [--tol 1e-6]
                                     [--extra-data DATA | --mnist DIR] [--extra-epochs 5]
                                     [--extra-seeds 0] [--extra-target T]
                                     [--extra-evals-per-epoch N]
                                     [--extra-grid E ... | --extra-window K]
                                     [--jobs 1] [--out build/bench] [--docs PAGE | --no-docs]
    python benchmarks/bench_optim.py --from-json build/bench/optim.json   # tables again, no runs

    # the run of docs/results.md: digits (the defaults) and Fashion-MNIST
    python benchmarks/bench_optim.py --extra-data fashion-mnist --extra-window 1 \
        --extra-epochs 4 --extra-seeds 0 1 2 --extra-target 0.85 --extra-evals-per-epoch 10 \
        --jobs 2

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
   Smart Quantization regularizer) on the preset's data set (digits) and, with ``--extra-data``
   (any name :func:`qnnfab.model.data.load_dataset` takes: ``fashion-mnist``, ``mnist:DIR``...),
   on a second one with its own epochs, seeds, target, evaluation rate and lr grid: a minimal
   loop like :mod:`qnnfab.model.train`'s (same model, loss, label smoothing, regularizer,
   ``constrain_()`` after each step, batch size, data order from the seed) but with a
   *constant* learning rate and the optimizer under test. Validation accuracy (the whole
   validation split) is measured ``--evals-per-epoch`` times per epoch, evenly over its batches
   (:func:`eval_marks`; digits-tnn on digits has 20 batches, so the default 20 measures after
   every batch); *epochs to target* is the first such point (in epochs, fractional) where it
   reaches ``--target`` (:func:`epochs_to_target`; no interpolation). Best learning rate, chosen
   on validation only: most seeds reaching the target, then fewest mean epochs, then the best
   mean final validation accuracy. The second data set's grid is ``--extra-grid`` (the same for
   every optimizer) or ``--extra-window K``: each optimizer's best exponent on the first data
   set and the ``K`` on either side of it (a smaller budget, the same size for each). At the
   best learning rate the test accuracy is reported for the final model and for the
   best-validation one, each both as float (torch) and as integer (exported to the IR,
   :func:`qnnfab.spec.golden.forward`). ``--jobs N`` shares the runs among ``N`` forked
   processes; every run is seeded on its own, so the results do not depend on ``N``.

The goal checked (qnnfab issues #6 and #18): LogQuantSGD (floor) needs at least 2x fewer epochs
than SGD to reach the target, each at its best learning rate; when SGD misses the target on a
seed within the epoch budget, the ratio is a lower bound (that seed counted at the budget).

Prints Markdown (progress on stderr) and writes ``OUT/optim.md`` (every table, per seed),
``OUT/optim.json``, ``OUT/optim.svg`` (validation accuracy against epochs per optimizer, mean
over seeds at the best learning rate; ``OUT/optim-<data>.svg`` for the second data set) and,
atomically, the ``optim`` table of ``docs/results.md`` (:func:`docs_markdown`: one row per
optimizer, every data set's columns and SGD's epochs over its own, then each section's settings,
goal and epochs at every lr) and the ``optim-state`` table (``--docs PAGE``; ``--no-docs``:
not).
"""

import argparse
import copy
import json
import math
import multiprocessing
import operator
import os
import sys
import time
from xml.sax.saxutils import escape

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from doc_tables import add_docs_arguments, check_docs_page, docs_page  # noqa: E402

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

def eval_marks(n_batches, evals_per_epoch):
    """The batches of an epoch (0-based indices, ascending) after which validation accuracy
    is measured: ``evals_per_epoch`` points spread evenly over the ``n_batches`` batches, the
    last batch always among them; every batch when ``evals_per_epoch >= n_batches``."""
    n_batches, evals_per_epoch = operator.index(n_batches), operator.index(evals_per_epoch)
    if n_batches < 1 or evals_per_epoch < 1:
        raise ValueError(f"eval_marks: need n_batches >= 1 and evals_per_epoch >= 1, not "
                         f"{n_batches!r} and {evals_per_epoch!r}")
    return sorted({max(0, round(j * n_batches / evals_per_epoch) - 1)
                   for j in range(1, evals_per_epoch + 1)})


def epochs_to_target(curve, target):
    """The first point of ``curve`` (``[(epochs, accuracy), ...]``, epochs ascending) whose
    accuracy reaches ``target``: its epoch (fractional), or None when none does. No
    interpolation between points: the first crossing lies at most one evaluation interval
    before the epoch returned."""
    for at, acc in curve:
        if acc >= target:
            return at
    return None


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
        marks = set(eval_marks(len(starts), evals_per_epoch))
        curve, best, best_acc, diverged, step = [], None, -1.0, False, 0
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
                    if acc > best_acc:
                        best_acc, best = acc, copy.deepcopy(model.state_dict())
            if diverged:
                break
            if controller is not None:
                controller.end_epoch(epoch + 1)
    return {"curve": curve, "epochs_to_target": epochs_to_target(curve, target),
            "diverged": diverged,
            "final_val": curve[-1][1] if curve else None, "best_val": best_acc,
            "final_state": copy.deepcopy(model.state_dict()), "best_state": best,
            "model": model}


def test_accuracies(model, state, ds, preset, seed):
    """``(float, integer)`` test accuracy of ``model`` with ``state``."""
    model.load_state_dict(state)
    model.eval()
    _, pred = predict(model, ds.x_test)
    net = export(model, meta={"preset": preset.name, "seed": seed}, classes=list(ds.classes))
    int_pred = golden.classify(net, ds.x_test)
    return float(np.mean(pred == ds.y_test)), float(np.mean(int_pred == ds.y_test))


#: What the workers of :func:`training_benchmark` train on (set before they fork).
_POOL = {}


def _pool_run(task):
    oname, e, seed = task
    torch.set_num_threads(1)
    p = _POOL
    return train_run(p["preset"], p["ds"], OPTIMIZERS[oname], 2.0 ** e, seed=seed,
                     epochs=p["epochs"], evals_per_epoch=p["evals"], target=p["target"])


def training_benchmark(preset, data, grids, seeds, epochs, evals_per_epoch, target, *, jobs=1):
    """Train every optimizer of :data:`OPTIMIZERS` on ``data`` at each lr exponent of its
    grid (``grids``: name -> exponents) for every seed; pick each one's best lr on validation.
    ``jobs`` > 1: that many forked worker processes share the runs (each run is seeded on its
    own, so the results do not depend on ``jobs``)."""
    ds = load_dataset(data, seed=preset.split_seed)
    tasks = [(o, e, s) for o in OPTIMIZERS for e in grids[o] for s in seeds]
    t = time.monotonic()
    _POOL.update(preset=preset, ds=ds, epochs=epochs, evals=evals_per_epoch, target=target)
    try:
        if jobs > 1:
            with multiprocessing.get_context("fork").Pool(jobs) as pool:
                outs = []
                for i, out in enumerate(pool.imap(_pool_run, tasks)):
                    outs.append(out)
                    if (i + 1) % len(seeds) == 0:
                        o, e, _ = tasks[i]
                        log(f"  {data} {o} {lr_text(e)} ({time.monotonic() - t:.0f} s)")
        else:
            outs = [_pool_run(task) for task in tasks]
    finally:
        _POOL.clear()
    done = dict(zip(tasks, outs))
    runs = {o: [(e, [done[o, e, s] for s in seeds]) for e in grids[o]] for o in OPTIMIZERS}
    log(f"  {data}: {len(tasks)} runs ({time.monotonic() - t:.0f} s)")

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
    return {"data": ds.name, "n_train": int(len(ds.y_train)), "n_val": int(len(ds.y_val)),
            "n_test": int(len(ds.y_test)),
            "n_batches": math.ceil(len(ds.y_train) / preset.batch_size), "results": results}


def mean_curve(curves):
    """Mean validation accuracy at each evaluation point over seeds (points all share)."""
    n = min(len(c) for c in curves)
    return [(curves[0][i][0], float(np.mean([c[i][1] for c in curves]))) for i in range(n)]


def ratio_vs_sgd(row, sgd_row, epochs):
    """SGD's mean epochs to target over ``row``'s (two per-lr rows, over the same seeds):
    ``(ratio, bound)``. ``ratio`` when both reach the target on every seed. When ``row`` does
    and SGD misses it on some seed (needing more than ``epochs`` there), ``ratio`` is None and
    ``bound`` the lower bound that follows: each seed that SGD misses counted as ``epochs``.
    ``(None, None)`` when ``row`` misses the target on some seed."""
    n = len(row["epochs_to_target"])
    if row["seeds_reaching"] < n or row["diverged"]:
        return None, None
    if sgd_row["seeds_reaching"] == len(sgd_row["epochs_to_target"]) and not sgd_row["diverged"]:
        return sgd_row["mean_epochs"] / row["mean_epochs"], None
    sgd_lower = sum(epochs if v is None else v for v in sgd_row["epochs_to_target"]) / n
    return None, sgd_lower / row["mean_epochs"]


def ratio_text(ratio, bound):
    """``"1.71x"``, ``"> 2.30x"`` (a lower bound) or ``"-"`` (see :func:`ratio_vs_sgd`)."""
    if ratio is not None:
        return f"{ratio:.2f}x"
    return "-" if bound is None else f"> {bound:.2f}x"


def goal(results, epochs):
    """The issue's check: SGD's epochs over LogQuantSGD (floor)'s, each at its best lr; and the
    same ratio at every lr both tried where LogQuantSGD reaches the target on every seed
    (``same_lr``: exponent -> text of :func:`ratio_text`). ``met``: True, False, or None when
    SGD misses the target within the epoch budget and the lower bound is under 2 (undecided)."""
    sgd_rows = {row["exponent"]: row for row in results[SGD]["per_lr"]}
    same_lr = {}
    for lq_row in results[LOGQ]["per_lr"]:
        sgd_row = sgd_rows.get(lq_row["exponent"])
        if sgd_row is None:   # SGD did not try this lr (per-optimizer grids)
            continue
        ratio, bound = ratio_vs_sgd(lq_row, sgd_row, epochs)
        if ratio is not None or bound is not None:
            same_lr[lq_row["exponent"]] = ratio_text(ratio, bound)
    lq, sgd = results[LOGQ]["best"], results[SGD]["best"]
    ratio, bound = ratio_vs_sgd(lq, sgd, epochs)
    if ratio is None and bound is None:
        return {"met": False, "ratio": None, "same_lr": same_lr,
                "text": f"{LOGQ} did not reach the target on every seed "
                        f"({lq['seeds_reaching']}/{len(lq['epochs_to_target'])})"}
    if ratio is None:
        return {"met": True if bound >= 2 else None, "ratio": None, "ratio_lower_bound": bound,
                "same_lr": same_lr,
                "text": f"SGD did not reach the target on every seed within {epochs} epochs at "
                        f"any lr of its grid: ratio > {bound:.2f}x "
                        f"({LOGQ} {lq['mean_epochs']:.2f} epochs at "
                        f"{lr_text(lq['exponent'])})"}
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


def target_text(target):
    """``0.95`` -> ``"95"`` (percent, no trailing zeros)."""
    return f"{100 * target:.4g}"


def fmt_epochs(v):
    return "-" if v is None else f"{v:g}"


def markdown(result):
    """The full report (``OUT/optim.md``): every function row, and per training section the
    best lr of each optimizer with per-seed epochs and test accuracies, the goal, and the
    epochs to target at every lr tried."""
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
        lines += [f"## Training {a['preset']} on {section['label']}", "",
                  section_settings(section, a["preset"]) + " Test: "
                  f"{section['n_test']} images, final model and best-validation model, float "
                  f"and integer (golden).", "",
                  "| optimizer | best lr | epochs to target per seed | mean | SGD's epochs / "
                  "its | final val % | final test % float / integer | best-val model test % "
                  "integer |", "|---|---|---|---|---|---|---|---|"]
        for oname, r in res.items():
            b, t = r["best"], r["test"]
            bestval = [x["bestval_integer"] for x in t if x["bestval_integer"] is not None]
            lines.append(
                f"| {oname} | {best_lr_text(section, oname)} | "
                f"{', '.join(fmt_epochs(v) for v in b['epochs_to_target'])} | "
                f"{fmt_epochs(None if b['mean_epochs'] is None else round(b['mean_epochs'], 2))}"
                f" | {sgd_ratio_cell(section, oname)} | {pct(np.mean(b['final_val']))} | "
                f"{pct(np.mean([x['final_float'] for x in t]))} / "
                f"{pct(np.mean([x['final_integer'] for x in t]))} | "
                f"{pct(np.mean(bestval) if bestval else None)} |")
        lines += ["", EDGE_NOTE, "", goal_text(section), ""] + per_lr_table(section) + [""]
    return "\n".join(lines) + "\n"


def section_settings(section, preset):
    """One paragraph of a training section's settings."""
    epochs = section["epochs"]
    return (f"{preset} on {section['label']}, constant lr, {epochs} epoch"
            f"{'s' if epochs != 1 else ''} of {section['n_batches']} batches, seeds "
            f"{', '.join(map(str, section['seeds']))}; validation accuracy "
            f"({section['n_val']} images, the whole validation split) measured "
            f"{section['evals']} times per epoch (every {1 / section['evals']:.3g} epoch; "
            f"epochs to target is the first measurement at or above "
            f"{target_text(section['target'])} %); lr grid: {section['grid_text']}; best lr "
            f"chosen on validation only (most seeds reaching the target, then fewest mean "
            f"epochs, then best final validation accuracy).")


EDGE_NOTE = ("*(edge)*: the best lr is the largest or smallest of those tried for that "
             "optimizer, so a wider grid might do better.")


def best_lr_text(section, oname):
    """The best lr of ``oname``, with "(edge)" when it is the first or last of its grid."""
    e = section["results"][oname]["best"]["exponent"]
    grid = section["grids"][oname]
    return lr_text(e) + (" (edge)" if len(grid) > 1 and e in (max(grid), min(grid)) else "")


def sgd_ratio_cell(section, oname):
    """SGD's mean epochs to target over ``oname``'s, each at its best lr (:func:`ratio_vs_sgd`)."""
    res = section["results"]
    return ratio_text(*ratio_vs_sgd(res[oname]["best"], res[SGD]["best"], section["epochs"]))


def epochs_cell(best, n_seeds):
    """Mean epochs to target at the best lr: ``"1.42"``, ``"4.75 (2 of 3 seeds)"``, ``"never"``."""
    if best["mean_epochs"] is None:
        return "never"
    text = f"{best['mean_epochs']:.2f}"
    if best["seeds_reaching"] < n_seeds:
        text += f" ({best['seeds_reaching']} of {n_seeds} seeds)"
    return text


def goal_text(section):
    g = section["goal"]
    same = ", ".join(f"{lr_text(int(e))}: {r}" for e, r in g["same_lr"].items())
    verdict = {True: "met", False: "NOT met", None: "undecided"}[g["met"]]
    return (f"**{section['label']}: goal (>= 2x fewer epochs than SGD) {verdict}** -- "
            f"{g['text']} (each at its best lr). At the same lr, SGD's epochs over {LOGQ}'s: "
            f"{same or 'no lr both tried where it reaches the target on every seed'}.")


def per_lr_table(section):
    """Mean epochs to target at every lr tried, one row per optimizer (lines)."""
    res = section["results"]
    exps = sorted({e for g in section["grids"].values() for e in g}, reverse=True)
    lines = [f"{section['label']}: mean epochs to {target_text(section['target'])} % at every "
             f"lr tried (seeds reaching it in parentheses when not all; `-`: none; `div`: a seed "
             f"diverged; blank: not tried):", "",
             "| optimizer | " + " | ".join(lr_text(e) for e in exps) + " |",
             "|---|" + "---|" * len(exps)]
    for oname, r in res.items():
        rows = {row["exponent"]: row for row in r["per_lr"]}
        cells = []
        for e in exps:
            row = rows.get(e)
            if row is None:
                cells.append("")
                continue
            c = "-" if row["mean_epochs"] is None else f"{row['mean_epochs']:.2f}"
            if row["mean_epochs"] is not None and row["seeds_reaching"] < len(section["seeds"]):
                c += f" ({row['seeds_reaching']})"
            if row["diverged"]:
                c += " div"
            cells.append(c)
        lines.append(f"| {oname} | " + " | ".join(cells) + " |")
    return lines


def docs_markdown(result):
    """The ``optim`` table of docs/results.md: one row per optimizer with the benchmark
    functions' mean iterations and, per training section, the best lr, epochs to target, SGD's
    epochs over its own and the final integer test accuracy; then each section's settings, goal
    and epochs at every lr."""
    a = result["args"]
    sections = result.get("training", [])
    fns = result.get("functions") or {}
    head = ["optimizer"] + list(fns)
    if fns:
        head.append("lrs diverging (" + ", ".join(f[0] for f in fns) + f", of "
                    f"{len(a['fn_grid'])})")
    for s in sections:
        lab, tgt = s["label"], target_text(s["target"])
        head += [f"{lab}: best lr", f"{lab}: epochs to {tgt} %", f"{lab}: SGD's epochs / its",
                 f"{lab}: final test % (integer)"]
    lines = [f"Written by `benchmarks/bench_optim.py` (run time {result['seconds'] / 60:.0f} "
             f"min; per-seed tables in `{a['out']}/optim.md`). Every optimizer at its best "
             f"learning rate 2^e of the grid it was given.", "",
             "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for oname in OPTIMIZERS:
        cells = [oname]
        for fres in fns.values():
            b = fres["rows"][oname]["best"]
            its = [] if b is None else [v for v in b["iterations"] if v is not None]
            cell = "never" if not its else f"{np.mean(its):.0f}"
            if its and len(its) < len(b["iterations"]):
                cell += f" ({len(its)}/{len(b['iterations'])} starts)"
            cells.append(cell)
        if fns:
            cells.append(", ".join(str(len(fres["rows"][oname]["lrs_diverging"]))
                                   for fres in fns.values()))
        for s in sections:
            r = s["results"][oname]
            cells += [best_lr_text(s, oname), epochs_cell(r["best"], len(s["seeds"])),
                      sgd_ratio_cell(s, oname),
                      pct(np.mean([x["final_integer"] for x in r["test"]]))]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", EDGE_NOTE, ""]
    if fns:
        lines += [f"Functions: mean iterations until f < {a['tol']:g} (at most {a['iters']}) "
                  f"from 3 fixed starts, float64, lr grid 2^{max(a['fn_grid'])} ... "
                  f"2^{min(a['fn_grid'])}; *lrs diverging*: lrs of the grid where f blows up "
                  f"from some start.", ""]
    for s in sections:
        lines += [section_settings(s, a["preset"]) + f" Test: {s['n_test']} images, final "
                  f"model, integer (golden) inference.", "", goal_text(s), ""]
        lines += per_lr_table(s) + [""]
    return "\n".join(lines)


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


def data_label(data):
    """A training section's name in the tables: ``digits``, ``MNIST``, ``Fashion-MNIST``..."""
    if data.startswith("mnist:"):
        return "MNIST"
    return {"fashion-mnist": "Fashion-MNIST"}.get(data, data)


def grid_text(grid):
    """``"2^2 ... 2^-9 (12 values)"`` for a list of exponents."""
    if len(grid) > 2 and sorted(grid) == list(range(min(grid), max(grid) + 1)):
        return f"2^{max(grid)} ... 2^{min(grid)} ({len(grid)} values)"
    return ", ".join(lr_text(e) for e in grid) + f" ({len(grid)} values)"


def window_grids(results, window):
    """Per optimizer, the exponents within ``window`` of its best in ``results`` (a training
    section's), descending: ``{name: [e + window, ..., e - window]}``."""
    return {o: [r["best"]["exponent"] + k for k in range(window, -window - 1, -1)]
            for o, r in results.items()}


def parse_args(argv=None):
    """The command line, checked (``parser.error``, exit status 2, on a bad combination)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--grid", type=int, nargs="+", default=list(range(2, -10, -1)),
                        help="lr exponents for training (lr = 2**e)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--evals-per-epoch", type=int, default=20,
                        help="validation measurements per epoch (default 20: every batch of "
                             "digits-tnn on digits)")
    parser.add_argument("--target", type=float, default=0.95,
                        help="validation accuracy to reach (fraction)")
    parser.add_argument("--preset", default="digits-tnn")
    parser.add_argument("--fn-grid", type=int, nargs="+", default=list(range(2, -13, -1)),
                        help="lr exponents for the benchmark functions")
    parser.add_argument("--iters", type=int, default=10000)
    parser.add_argument("--tol", type=float, default=1e-6)
    extra = parser.add_argument_group(
        "second data set", "train on a second data set after the preset's own")
    which = extra.add_mutually_exclusive_group()
    which.add_argument("--extra-data", metavar="DATA",
                       help="a data set name of qnnfab.model.data.load_dataset, e.g. "
                            "fashion-mnist or mnist:DIR")
    which.add_argument("--mnist", metavar="DIR", help="same as --extra-data mnist:DIR")
    extra.add_argument("--extra-epochs", "--mnist-epochs", dest="extra_epochs", type=int,
                       default=5)
    extra.add_argument("--extra-seeds", "--mnist-seeds", dest="extra_seeds", type=int,
                       nargs="+", default=[0])
    extra.add_argument("--extra-target", type=float,
                       help="validation accuracy to reach there (default: --target)")
    extra.add_argument("--extra-evals-per-epoch", type=int,
                       help="validation measurements per epoch there (default: "
                            "--evals-per-epoch)")
    grid = extra.add_mutually_exclusive_group()
    grid.add_argument("--extra-grid", type=int, nargs="+", metavar="E",
                      help="lr exponents there, the same for every optimizer (default: --grid)")
    grid.add_argument("--extra-window", type=int, metavar="K",
                      help="lr exponents there: for each optimizer, its best exponent on the "
                           "preset's data set and the K above and K below it")
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes for the training runs (default 1)")
    parser.add_argument("--skip-functions", action="store_true")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--state-only", action="store_true",
                        help="only the table of stored bits per parameter (seconds)")
    parser.add_argument("--from-json", metavar="FILE",
                        help="no runs: write the tables again from a run's optim.json")
    parser.add_argument("--out", default="build/bench")
    add_docs_arguments(parser)
    args = parser.parse_args(argv)
    if args.mnist:
        args.extra_data = f"mnist:{args.mnist}"
    for name in ("epochs", "evals_per_epoch", "iters", "jobs", "extra_epochs",
                 "extra_evals_per_epoch"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, not {value}")
    for name in ("target", "extra_target"):
        value = getattr(args, name)
        if value is not None and not 0 < value <= 1:
            parser.error(f"--{name.replace('_', '-')} is a fraction in (0, 1], not {value}")
    if args.extra_window is not None and args.extra_window < 0:
        parser.error(f"--extra-window must be at least 0, not {args.extra_window}")
    if not args.extra_data:
        given = [f"--{n.replace('_', '-')}" for n in ("extra_target", "extra_evals_per_epoch",
                                                      "extra_grid", "extra_window")
                 if getattr(args, n) is not None]
        if given:
            parser.error(f"{', '.join(given)} without --extra-data or --mnist")
    if args.extra_data and args.skip_training:
        parser.error("--extra-data/--mnist with --skip-training: nothing would train there")
    if args.extra_target is None:
        args.extra_target = args.target
    if args.extra_evals_per_epoch is None:
        args.extra_evals_per_epoch = args.evals_per_epoch
    return args


def main(argv=None):
    args = parse_args(argv)
    check_docs_page(args, DOC_TABLES)
    state = state_bits_table()
    if args.state_only:
        print(state)
        docs_page(args, {"optim-state": state}, log=log)
        return 0
    if args.from_json:
        with open(args.from_json, encoding="utf-8") as f:
            result = json.load(f)
        text = markdown(result)
        print(text)
        print(state)
        os.makedirs(args.out, exist_ok=True)
        ir.atomic_write_bytes(os.path.join(args.out, "optim.md"), text.encode())
        docs_page(args, {"optim": docs_markdown(result), "optim-state": state}, log=log)
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
        jobs = [] if args.skip_training else [
            dict(data=preset.dataset, epochs=args.epochs, seeds=args.seeds, target=args.target,
                 evals=args.evals_per_epoch, grid=args.grid, window=None)]
        if args.extra_data and not args.skip_training:
            jobs.append(dict(data=args.extra_data, epochs=args.extra_epochs,
                             seeds=args.extra_seeds, target=args.extra_target,
                             evals=args.extra_evals_per_epoch,
                             grid=args.extra_grid or args.grid, window=args.extra_window))
        for job in jobs:
            label = data_label(job["data"])
            if job["window"] is not None:
                main_label = result["training"][0]["label"]
                grids = window_grids(result["training"][0]["results"], job["window"])
                text = (f"for each optimizer its best exponent on {main_label} and the "
                        f"{job['window']} above and below it ({2 * job['window'] + 1} values)")
            else:
                grids = {o: list(job["grid"]) for o in OPTIMIZERS}
                text = grid_text(job["grid"]) + ", the same for every optimizer"
            log(f"training {preset.name} on {label} ...")
            section = training_benchmark(preset, job["data"], grids, job["seeds"],
                                         job["epochs"], job["evals"], job["target"],
                                         jobs=args.jobs)
            svg_name = "optim.svg" if not result["training"] else \
                f"optim-{label.lower()}.svg"
            section.update(label=label, epochs=job["epochs"], seeds=job["seeds"],
                           target=job["target"], evals=job["evals"], grids=grids,
                           grid_text=text, svg=svg_name,
                           goal=goal(section["results"], job["epochs"]))
            result["training"].append(section)
            curves = {o: r["curve"] for o, r in section["results"].items()}
            svg = curves_svg(curves, target=job["target"],
                             title=f"{preset.name} on {label}: validation accuracy, mean of "
                                   f"{len(job['seeds'])} seeds, each optimizer at its best lr")
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
    docs_page(args, {"optim": docs_markdown(result), "optim-state": state}, log=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
