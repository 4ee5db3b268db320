"""Simulation speed, side by side: Amaranth, Verilator under cocotb, bulk Verilator.

    python benchmarks/bench_sim.py [--epochs 3] [--amaranth-vectors 20] [--cocotb-vectors 360]
                                   [--bulk-vectors 20000] [--data fashion-mnist]
                                   [--fmnist-epochs 1] [--out build/bench-sim]

Rows:

* ``digits-bnn`` (trained here for ``--epochs``; the weights do not change the speed), at the
  automatic folding, on its test split (repeated to ``--bulk-vectors`` for the bulk path, so the
  run is long enough to time): simulated cycles per second of the simulation loop alone (wall
  time, and CPU time where measured), build time (0 when cached), vectors per second, and
  bit-exactness against the golden model for
  each of Amaranth's simulator, Verilator driven by cocotb (``harness="cocotb"``) and bulk
  Verilator (the C++ testbench, ``harness="bulk"``, the default of ``qnnfab sim --simulator
  verilator``). Goal: >= 1,000,000 cycles/s for bulk Verilator.
* With Fashion-MNIST installed (``--data fashion-mnist``, the default when
  ``/usr/share/datasets/fashion-mnist`` holds it; ``--data none`` skips it): a 784-256-256-10
  binary MLP trained for ``--fmnist-epochs``, the whole test split (10,000 images) in bulk
  Verilator, bit-exact, with the build and the simulation timed separately. Goal: < 2 min of
  simulation.

Prints one Markdown table on stdout (progress on stderr) and writes ``OUT/sim.md`` and
``OUT/sim.json``. Builds use a cache folder under ``OUT`` (``--fresh``: empty it first, so
the build times are real compiles). Exits 1 if a comparison is not bit-exact.
``make bench-sim``.
"""

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from doc_tables import add_docs_arguments, check_docs_page, docs_page  # noqa: E402

from qnnfab.sim.runner import compare, simulate  # noqa: E402

#: The tables of docs/results.md this benchmark writes.
DOC_TABLES = ("sim",)

COLUMNS = ("network", "simulator", "vectors", "cycles", "build s", "sim s", "cycles/s",
           "cycles/CPU-s", "vectors/s", "bit-exact")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def row(network_name, label, network, codes, **kwargs):
    """Simulate (``kwargs`` go to :func:`qnnfab.sim.runner.simulate`) and compare; one table
    row as a dict, ``label`` in its simulator column."""
    log(f"[{network_name}] {label}: {len(codes)} vectors ...")
    start = time.monotonic()
    result = simulate(network, codes, **kwargs)
    wall = time.monotonic() - start
    cmp = compare(network, codes, result)
    log(f"    {cmp.summary()}, {result.cycles:,} cycles in {result.seconds:.2f} s "
        f"({result.cycles_per_second:,.0f} cycles/s), build {result.compile_seconds:.1f} s, "
        f"wall {wall:.1f} s")
    cpu = result.cpu_seconds
    return {"network": network_name, "simulator": label, "vectors": len(codes),
            "cycles": int(result.cycles), "build_s": round(result.compile_seconds, 1),
            "sim_s": round(result.seconds, 3), "wall_s": round(wall, 1),
            "cycles_per_s": round(result.cycles_per_second),
            "cycles_per_cpu_s": round(result.cycles / cpu) if cpu > 0 else None,
            "load": round(os.getloadavg()[0], 1),
            "vectors_per_s": round(len(codes) / result.seconds) if result.seconds else None,
            "bit_exact": cmp.bit_exact, "checked": cmp.checked, "ok": cmp.ok,
            "hw_classes": result.classes}


def digits_rows(args, cache):
    from qnnfab.model.train import train
    from qnnfab.model.vectors import test_vectors
    log(f"[digits-bnn] training, {args.epochs} epochs ...")
    result = train("digits-bnn", seed=0, epochs=args.epochs, progress=False)
    net = result.network
    codes = test_vectors(net).codes
    rows = []
    if args.amaranth_vectors:
        rows.append(row("digits-bnn", "amaranth", net, codes[:args.amaranth_vectors],
                        simulator="amaranth"))
    if args.cocotb_vectors:
        rows.append(row("digits-bnn", "verilator + cocotb", net, codes[:args.cocotb_vectors],
                        simulator="verilator", harness="cocotb", build_dir=cache))
    if args.bulk_vectors:
        reps = -(-args.bulk_vectors // len(codes))
        bulk = np.tile(codes, (reps, 1))[:args.bulk_vectors]
        rows.append(row("digits-bnn", "verilator bulk", net, bulk, simulator="verilator",
                        build_dir=cache))
        stalled = row("digits-bnn", "verilator bulk, stalls 0.5/0.7", net, bulk,
                      simulator="verilator", build_dir=cache, ready_probability=0.5,
                      valid_probability=0.7, seed=1)
        rows.append(stalled)
    return rows


def fmnist_rows(args, cache):
    from qnnfab.model.data import fashion_mnist_folder, load_dataset
    from qnnfab.model.presets import customize
    from qnnfab.model.train import train
    if args.data == "none":
        return []
    if args.data == "fashion-mnist":
        try:
            fashion_mnist_folder()
        except ValueError as exc:
            log(f"[fashion-mnist] skipped: {exc}")
            return []
    preset = customize("digits-bnn", arch="d256,d256,d10", weights="binary", act_bits="1")
    log(f"[fashion-mnist] training a 784-256-256-10 binary MLP, {args.fmnist_epochs} epochs ...")
    result = train(preset, seed=0, epochs=args.fmnist_epochs, data=args.data, progress=False)
    net = result.network
    ds = load_dataset(args.data, seed=0)
    codes = np.asarray(ds.x_test, dtype=np.int64)
    log(f"    float {result.float_accuracy:.4f}, integer {result.integer_accuracy:.4f}")
    r = row("fashion-mnist binary MLP", "verilator bulk", net, codes, simulator="verilator",
            build_dir=cache)
    r["hw_accuracy"] = float(np.mean(r["hw_classes"] == ds.y_test))
    r["integer_accuracy"] = result.integer_accuracy
    return [r]


def table(rows):
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = [r["network"], r["simulator"], f"{r['vectors']:,}", f"{r['cycles']:,}",
                 f"{r['build_s']:.1f}", f"{r['sim_s']:.2f}", f"{r['cycles_per_s']:,}",
                 f"{r['cycles_per_cpu_s']:,}" if r["cycles_per_cpu_s"] else "n/a",
                 f"{r['vectors_per_s']:,}" if r["vectors_per_s"] else "",
                 f"{r['bit_exact']}/{r['checked']}"]
        lines.append("| " + " | ".join(cells) + " |")
    loads = [r["load"] for r in rows]
    if loads:
        lines.append("")
        lines.append(f"Load average during the runs: {min(loads)}..{max(loads)} on "
                     f"{os.cpu_count()} cores (cycles/s is wall time, so it drops on a busy "
                     "machine; cycles/CPU-s is what one idle core does: Amaranth's whole run in "
                     "this process, bulk Verilator's C++ loop; not measured under cocotb).")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3,
                        help="digits-bnn training epochs (default 3; speed does not depend on "
                             "them)")
    parser.add_argument("--amaranth-vectors", type=int, default=20,
                        help="vectors in Amaranth's simulator (default 20)")
    parser.add_argument("--cocotb-vectors", type=int, default=360,
                        help="vectors in Verilator + cocotb (default 360, the test split)")
    parser.add_argument("--bulk-vectors", type=int, default=20_000,
                        help="vectors in bulk Verilator (the test split repeated; default "
                             "20000)")
    parser.add_argument("--data", default="fashion-mnist",
                        help="data set of the 784-input row (default fashion-mnist; "
                             "mnist:DIR; none to skip)")
    parser.add_argument("--fmnist-epochs", type=int, default=1,
                        help="training epochs of the 784-input MLP (default 1)")
    parser.add_argument("--out", default="build/bench-sim", help="output folder")
    parser.add_argument("--fresh", action="store_true",
                        help="empty the build cache first (build times are real compiles)")
    add_docs_arguments(parser)
    args = parser.parse_args(argv)
    check_docs_page(args, DOC_TABLES)
    os.makedirs(args.out, exist_ok=True)
    cache = os.path.join(args.out, "cache")
    if args.fresh:
        shutil.rmtree(cache, ignore_errors=True)
    rows = digits_rows(args, cache) + fmnist_rows(args, cache)
    text = table(rows)
    print(text)
    for r in rows:
        r.pop("hw_classes", None)
    _write(os.path.join(args.out, "sim.md"), text + "\n")
    _write(os.path.join(args.out, "sim.json"), json.dumps(rows, indent=1) + "\n")
    fm = [r for r in rows if r["network"].startswith("fashion")]
    notes = []
    for r in fm:
        notes.append(f"\nFashion-MNIST test split: {r['bit_exact']}/{r['checked']} bit-exact, "
                     f"hardware accuracy {r['hw_accuracy']:.4f} (integer golden "
                     f"{r['integer_accuracy']:.4f}); build {r['build_s']:.1f} s, simulation "
                     f"{r['sim_s']:.1f} s ({r['wall_s']:.1f} s wall with packing and "
                     f"comparison)")
        print(notes[-1])
    docs_page(args, {"sim": text + "\n" + "\n".join(notes)}, log=log)
    return 0 if all(r["ok"] for r in rows) else 1


def _write(path, text):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
