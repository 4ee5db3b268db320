"""Benchmark kernel clustering on digits-cnn: integer and float kernels, K sweep, hardware.

    python benchmarks/bench_cluster.py [--data digits|fashion-mnist] [--seeds 0 1 2]
                                       [--kernels 4 8 16 32 64] [--finetune 10]
                                       [--hw-kernels 16] [--out build/bench]

``--data fashion-mnist``: the same network (c16,p2,c32,p2,d10, 2-bit activations, digits-cnn's
training settings) on Fashion-MNIST's 28x28x1 images (``--epochs`` of training, default 2:
digits-cnn's 80 epochs would take hours there); its results go to their own files
(``OUT/cluster-fmnist.*``) and table (``cluster-fmnist``), the digits ones stay.

For each seed, two paths:

* ``integer`` -- train ``digits-cnn`` (quantization-aware: ternary 3x3 conv kernels, 2-bit
  activations) and cluster its already-ternary kernels
  (:func:`qnnfab.model.kernel_clustering.cluster_network`);
* ``float`` -- train the same network with float weights
  (:func:`qnnfab.model.float_kernel_clustering.train_float_cnn`), cluster its *float* kernels
  and only then quantize the representatives and the other layers to ternary
  (:func:`qnnfab.model.float_kernel_clustering.cluster_float_cnn`), as Matsui et al. do;
* ``float, codebook`` -- the same float network and clustering, quantized to
  ``--codebook-bits``-bit k-means codebooks instead of ternary weights (as clustered only:
  fine-tuning handles binary and ternary tables);
* ``float, unquantized`` -- the paper's own setting: the float kernels replaced by their float
  representatives, nothing quantized (the float model's accuracy, as clustered only;
  :func:`qnnfab.model.float_kernel_clustering.cluster_float_unquantized`).

Each K and each mode (``per-layer`` / ``shared``: K representatives per conv layer or one
table for the network; ``±``: kernel = ±representative) is measured as clustered (integer
golden test accuracy, nothing trained) and after ``--finetune`` epochs of fine-tuning
(assignments fixed; :func:`qnnfab.model.kernel_finetune.finetune_clustered`,
:func:`qnnfab.model.float_kernel_clustering.finetune_float_clustered`). Kernel reduction =
1 - K / kernels; weight memory = the conv layers' bits (indices [+ sign bits] + the table)
against every kernel stored at the same 2-bit width. Accuracies are means over seeds. The row
of each path and mode whose reduction is nearest the paper's 85.6 % is marked.

Hardware (seed 0, integer path; ``--hw-kernels 0``: no builds): the unclustered CNN and the
``--hw-kernels`` per-layer ± one on the iCEBreaker (iCE40 UP5K) at the board's folding --
logic cells, EBR, fmax, measured cycles/inference -- and Verilator on the whole test split
against the golden model.

Prints a Markdown table (progress on stderr) and writes ``OUT/cluster.md``, ``OUT/cluster.json``,
``OUT/cluster.svg`` (accuracy against reduction) and the ``cluster`` table of
``docs/results.md`` (``--docs PAGE``; ``--no-docs``: not) atomically (``cluster-fmnist`` for
``--data fashion-mnist``). Exits 1 if a build or a simulation failed.
"""

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_quant import Steps, hardware, log  # noqa: E402
from doc_tables import add_docs_arguments, check_docs_page, docs_page  # noqa: E402

from qnnfab import ir  # noqa: E402
from qnnfab.flow import test_accuracy  # noqa: E402
from qnnfab.model.float_kernel_clustering import cluster_float_cnn, \
    cluster_float_unquantized, finetune_float_clustered, train_float_cnn  # noqa: E402
from qnnfab.model.kernel_clustering import cluster_network, sweep_plot_svg  # noqa: E402
from qnnfab.model.kernel_finetune import finetune_clustered  # noqa: E402
from qnnfab.model.train import load_checkpoint, save_checkpoint, train  # noqa: E402

PRESET = "digits-cnn"
#: Per ``--data``: the docs table (and the stem of the OUT files) it writes, its default
#: training epochs (None: the preset's) and how the table names the network.
DATA = {"digits": ("cluster", None, PRESET),
        "fashion-mnist": ("cluster-fmnist", 2,
                          f"{PRESET}'s network (c16,p2,c32,p2,d10) on fashion-mnist")}
#: The tables of docs/results.md this benchmark writes (one per run: its --data's), a literal
#: (tests/test_readme.py reads it without running the benchmark).
DOC_TABLES = ("cluster", "cluster-fmnist")
assert set(DOC_TABLES) == {table for table, _, _ in DATA.values()}
HW_MODE = "per-layer ±"
#: mode -> (per_layer, sign)
MODES = {"per-layer": (True, False), "per-layer ±": (True, True), "shared": (False, False),
         "shared ±": (False, True)}
PATHS = ("integer", "float", "float, codebook", "float, unquantized")
#: Paths measured as clustered only.
AS_CLUSTERED_ONLY = ("float, codebook", "float, unquantized")
#: Matsui et al.'s headline kernel reduction (VGG-16).
PAPER_REDUCTION = 0.856


def finetune_subset(dataset, images, seed):
    """``dataset`` with its training split cut to ``images`` images drawn by ``seed`` (the
    validation and test splits whole), or ``dataset`` itself when ``images`` is None or not
    smaller than the split: what ``--finetune-images`` fine-tunes on."""
    n = len(dataset.y_train)
    if images is None or images >= n:
        return dataset
    keep = np.sort(np.random.default_rng(seed).permutation(n)[:images])
    return dataclasses.replace(dataset, x_train=dataset.x_train[keep],
                               y_train=dataset.y_train[keep])


def pct(x):
    return "-" if x is None else f"{100 * x:.2f}"


def parse_args(argv=None):
    """The options, checked (``parser.error`` names the option at fault); ``args.epochs`` is
    filled in with the data set's default."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=list(DATA), default="digits",
                        help="data set: digits (8x8, table cluster) or fashion-mnist (28x28, "
                             "table cluster-fmnist)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--kernels", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    parser.add_argument("--finetune", type=int, default=10, help="epochs (0: none)")
    parser.add_argument("--finetune-images", type=int, default=None, metavar="N",
                        help="fine-tune on N images of the training split drawn by the seed "
                             "(default: all of it; for quick runs on fashion-mnist)")
    parser.add_argument("--codebook-bits", type=int, default=4, metavar="K",
                        help="the float path with K-bit codebooks instead of ternary weights, as "
                             "clustered only (0: not run)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs of both networks (default: the preset's on "
                             "digits, 2 on fashion-mnist)")
    parser.add_argument("--hw-kernels", type=int, default=16,
                        help="K of the clustered network that is built (0: no builds)")
    parser.add_argument("--out", default="build/bench")
    add_docs_arguments(parser)
    args = parser.parse_args(argv)
    if any(s < 0 for s in args.seeds) or len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds: expected distinct non-negative integers, got {args.seeds}")
    if any(k < 1 for k in args.kernels):
        parser.error(f"--kernels: expected positive integers, got {args.kernels}")
    if args.finetune < 0:
        parser.error(f"--finetune: expected epochs >= 0, got {args.finetune}")
    if args.finetune_images is not None and args.finetune_images < 1:
        parser.error(f"--finetune-images: expected a positive number of images, got "
                     f"{args.finetune_images}")
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs: expected a positive integer, got {args.epochs}")
    if args.hw_kernels < 0:
        parser.error(f"--hw-kernels: expected K >= 0 (0: no builds), got {args.hw_kernels}")
    table, default_epochs, _ = DATA[args.data]
    args.table = table
    if args.epochs is None:
        args.epochs = default_epochs
    return args


def main(argv=None):
    args = parse_args(argv)
    check_docs_page(args, (args.table,))
    os.makedirs(args.out, exist_ok=True)
    started = time.monotonic()
    paths = [p for p in PATHS if args.codebook_bits or p != "float, codebook"]
    n_sweep = len(args.seeds) * len(args.kernels) * len(MODES) * len(paths)
    steps = Steps(2 * len(args.seeds) + n_sweep + (4 if args.hw_kernels else 0))

    base, base_float, base_ptq, base_book, cells, hw_nets = [], [], [], [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            trained = steps.run(f"train {PRESET} on {args.data} seed {seed}",
                                lambda: train(PRESET, seed=seed, progress=False,
                                              epochs=args.epochs, data=args.data))
            net = trained.network
            ckpt = os.path.join(tmp, f"seed{seed}.pt")
            save_checkpoint(ckpt, trained)
            ckpt = load_checkpoint(ckpt)
            if args.finetune_images is not None:   # the integer path's fine-tuning data
                small = finetune_subset(trained.dataset, args.finetune_images, seed)
                ckpt.load_dataset = lambda data=None, small=small: small
            base.append(trained.integer_accuracy)
            log(f"        {net.summary()}: integer test accuracy "
                f"{trained.integer_accuracy:.2%}, {trained.seconds:.0f} s")
            source = steps.run(f"train {PRESET} on {args.data} seed {seed}, float weights",
                               lambda: train_float_cnn(PRESET, seed=seed,
                                                       epochs=args.epochs, data=args.data))
            test_images = len(source.dataset.y_test)
            ptq = cluster_float_cnn(source, None)
            base_float.append(source.float_accuracy)
            base_ptq.append(ptq.test_accuracy)
            log(f"        float test accuracy {source.float_accuracy:.2%}, ternary "
                f"post-training {ptq.test_accuracy:.2%}, {source.seconds:.0f} s")
            if args.codebook_bits:
                book = cluster_float_cnn(source, None, bits=args.codebook_bits)
                base_book.append(book.test_accuracy)
                log(f"        {args.codebook_bits}-bit codebooks post-training "
                    f"{book.test_accuracy:.2%}")
            if seed == args.seeds[0]:
                hw_nets["unclustered"] = net
            for path in paths:
                for k in args.kernels:
                    for mode, (per_layer, sign) in MODES.items():
                        def one():
                            if path == "integer":
                                clustered, stats = cluster_network(
                                    net, k, per_layer=per_layer, sign=sign, seed=seed)
                                acc = test_accuracy(clustered)
                            elif path == "float, unquantized":
                                _, acc, total = cluster_float_unquantized(
                                    source, k, per_layer=per_layer, sign=sign, seed=seed)
                                clustered, stats = None, {"total": {
                                    **total, "bits_before": None, "bits_after": None,
                                    "ratio": None}}
                            else:
                                bits = args.codebook_bits if path == "float, codebook" \
                                    else None
                                fc = cluster_float_cnn(source, k, per_layer=per_layer,
                                                       sign=sign, seed=seed, bits=bits)
                                clustered, stats, acc = fc.network, fc.stats, fc.test_accuracy
                            row = {"stats": stats["total"], "clustered": acc}
                            if args.finetune and path not in AS_CLUSTERED_ONLY:
                                if path == "integer":
                                    tuned, info = finetune_clustered(ckpt, clustered,
                                                                     epochs=args.finetune)
                                else:
                                    fc = dataclasses.replace(fc, source=dataclasses.replace(
                                        fc.source, dataset=finetune_subset(
                                            fc.source.dataset, args.finetune_images, seed)))
                                    tuned, info = finetune_float_clustered(
                                        fc, epochs=args.finetune)
                                row["tuned"] = info["test_after"]
                                row["tuned_val"] = info["val_after"]
                                clustered = tuned
                            return row, clustered
                        row, clustered = steps.run(f"seed {seed}: {path} K={k} {mode}", one)
                        ratio = row["stats"]["ratio"]
                        log(f"        K used {row['stats']['K']}, reduction "
                            f"{row['stats']['reduction']:.1%}, memory "
                            f"{'-' if ratio is None else f'{ratio:.2f}'}x smaller, accuracy "
                            f"clustered "
                            f"{pct(row['clustered'])} %, fine-tuned {pct(row.get('tuned'))} %")
                        cells.setdefault((path, k, mode), []).append(row)
                        if seed == args.seeds[0] and path == "integer" \
                                and k == args.hw_kernels and mode == HW_MODE:
                            hw_nets[f"K={k} {mode}"] = clustered

    base_mean = float(np.mean(base))
    rows = []
    order = {m: i for i, m in enumerate(MODES)}
    for (path, k, mode), runs in sorted(cells.items(),
                                        key=lambda c: (PATHS.index(c[0][0]), c[0][1],
                                                       order[c[0][2]])):
        st = runs[0]["stats"]
        acc = [r.get("tuned", r["clustered"]) for r in runs]
        rows.append({
            "path": path, "K": k, "mode": mode, "K_used": [r["stats"]["K"] for r in runs],
            "kernels": st["kernels"], "reduction": float(np.mean([r["stats"]["reduction"]
                                                                  for r in runs])),
            "bits_before": st["bits_before"],
            "bits_after": [r["stats"]["bits_after"] for r in runs],
            "ratio": None if st["ratio"] is None else
            float(np.mean([r["stats"]["ratio"] for r in runs])),
            "clustered": float(np.mean([r["clustered"] for r in runs])),
            "clustered_min": min(r["clustered"] for r in runs),
            "clustered_max": max(r["clustered"] for r in runs),
            "accuracy": float(np.mean(acc)), "accuracy_min": min(acc),
            "accuracy_max": max(acc), "drop": base_mean - float(np.mean(acc)),
            "finetuned": "tuned" in runs[0]})
    for path in paths:
        for mode in MODES:
            mine = [r for r in rows if r["path"] == path and r["mode"] == mode]
            if mine:
                near = min(mine, key=lambda r: abs(r["reduction"] - PAPER_REDUCTION))
                near["paper_point"] = True

    hw = {}
    if args.hw_kernels:
        for label, net in hw_nets.items():
            name = f"{PRESET}-" + ("" if args.data == "digits" else f"{args.data}-") + \
                "".join(c for c in label if c.isalnum() or c == "-")
            hw[label] = hardware(name, net, args.out, steps)
            hw[label]["weight_bits"] = int(net.weight_bits)

    seconds = time.monotonic() - started
    result = {"preset": PRESET, "data": args.data, "network": DATA[args.data][2],
              "test_images": test_images, "seeds": args.seeds,
              "finetune_epochs": args.finetune, "finetune_images": args.finetune_images,
              "epochs": args.epochs,
              "baseline": base, "baseline_mean": base_mean,
              "float_baseline": base_float, "float_ptq_baseline": base_ptq,
              "codebook_bits": args.codebook_bits, "float_codebook_baseline": base_book,
              "rows": rows, "hardware": hw, "seconds": round(seconds, 1)}
    text = markdown(result)
    print(text)
    stem = os.path.join(args.out, args.table)
    ir.atomic_write_bytes(f"{stem}.md", text.encode())
    ir.atomic_write_bytes(f"{stem}.json", json.dumps(result, indent=1).encode())
    plot_rows = [{"K": r["K"], "series": f"{r['path']} {r['mode']}",
                  "reduction": r["reduction"], "accuracy": r["accuracy"]} for r in rows]
    svg = sweep_plot_svg(plot_rows, baseline=base_mean,
                         title=f"{result['network']}: test accuracy vs kernel reduction "
                               f"(mean of "
                               f"{len(args.seeds)} seeds, {args.finetune} epochs of "
                               f"fine-tuning)")
    ir.atomic_write_bytes(f"{stem}.svg", svg.encode())
    log(f"wrote {stem}.md, {args.table}.json, {args.table}.svg ({seconds / 60:.1f} min)")
    docs_page(args, {args.table: text}, log=log)
    return 1 if any(h.get("errors") for h in hw.values()) else 0


def markdown(result):
    seeds = ", ".join(map(str, result["seeds"]))

    def each(values):
        return ", ".join(pct(v) for v in values)
    network = result.get("network", PRESET)
    lines = [f"Unclustered {network}, seeds {seeds}: ternary, trained quantization-aware "
             f"(the integer path's start) {pct(result['baseline_mean'])} % "
             f"({each(result['baseline'])}); trained with float weights "
             f"{pct(float(np.mean(result['float_baseline'])))} % "
             f"({each(result['float_baseline'])}), that float network made ternary "
             f"post-training, no clustering (the float path's start) "
             f"{pct(float(np.mean(result['float_ptq_baseline'])))} % "
             f"({each(result['float_ptq_baseline'])})"
             + (f"; with {result['codebook_bits']}-bit k-means codebooks instead "
                f"{pct(float(np.mean(result['float_codebook_baseline'])))} % "
                f"({each(result['float_codebook_baseline'])})"
                if result.get("float_codebook_baseline") else "") + ".", "",
             "| path | K | table | representatives | kernel reduction | conv weight bits "
             "(all kernels -> clustered) | smaller | as clustered % (min..max) "
             "| fine-tuned % (min..max) | drop (pt) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        used = sorted(set(r["K_used"]))
        mark = " ◆" if r.get("paper_point") else ""
        tuned = (f"{pct(r['accuracy'])} ({pct(r['accuracy_min'])}..{pct(r['accuracy_max'])})"
                 if r.get("finetuned", True) else "-")
        memory = (f"| {r['bits_before']:,} -> {int(np.mean(r['bits_after'])):,} "
                  f"| {r['ratio']:.2f}x " if r["ratio"] is not None else "| - | - ")
        lines.append(
            f"| {r['path']} | {r['K']} | {r['mode']} | {'/'.join(map(str, used))} "
            f"| {100 * r['reduction']:.1f} %{mark} {memory}"
            f"| {pct(r['clustered'])} ({pct(r.get('clustered_min'))}.."
            f"{pct(r.get('clustered_max'))}) | {tuned} | {100 * r['drop']:+.2f} |")
    if result["hardware"]:
        lines += ["", "| seed 0 on icebreaker | weight bits | LC | EBR | fmax MHz | clock MHz "
                      "| cycles/inf | inf/s | Verilator bit-exact |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for label, h in result["hardware"].items():
            def get(key, fmt=str):
                return fmt(h[key]) if h.get(key) is not None else "failed"
            lines.append(
                f"| {label} | {h['weight_bits']:,} | {get('lc')}/{h.get('lc_total', '?')} "
                f"| {get('ebr')}/{h.get('ebr_total', '?')} | {get('fmax_mhz', '{:.1f}'.format)} "
                f"| {get('clock_mhz', '{:g}'.format)} | {get('cycles_per_inference')} "
                f"| {get('inferences_per_s', '{:,.0f}'.format)} "
                f"| {get('verilator_bit_exact')}/{h.get('verilator_checked', '?')} |")
    data = result.get("data", "digits")
    trained = "" if data == "digits" and result.get("epochs") is None else \
        f"both networks trained {result['epochs']} epochs; "
    lines += ["", f"Seeds {seeds}; {trained}accuracy = integer (golden) model on the held-out "
                  f"{data} test split ({result.get('test_images', 360):,} images), mean over "
                  f"seeds (min..max); as clustered = "
                  f"nothing trained after the clustering; fine-tuning "
                  f"{result['finetune_epochs']} epochs"
                  + (f" on {result['finetune_images']:,} training images (drawn by the seed)"
                     if result.get("finetune_images") else "")
                  + ". integer = the ternary kernels of the "
                  f"quantization-aware network clustered; float = the float network's "
                  f"kernels clustered, then representatives and other layers made ternary; "
                  f"float, codebook = the same with {result.get('codebook_bits')}-bit "
                  f"k-means codebooks (levels: signed 8-bit integers) instead of ternary "
                  f"weights, not fine-tuned (conv weight bits then count "
                  f"{result.get('codebook_bits')} bits per weight); float, unquantized = the "
                  f"paper's own setting: the float network with its kernels replaced by the "
                  f"float representatives, nothing quantized (float model accuracy; no IR, "
                  f"not a network the hardware runs). "
                  f"Kernel reduction = 1 - (representatives in all tables)/kernels "
                  f"({result['rows'][0]['kernels'] if result['rows'] else '?'} kernels); "
                  f"◆ = the row of each path and table nearest the paper's 85.6 %. "
                  f"Drop = the quantization-aware unclustered accuracy minus the fine-tuned "
                  f"one (as clustered where not fine-tuned). Run time "
                  f"{result['seconds'] / 60:.1f} min."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
