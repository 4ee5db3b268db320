"""Benchmark the default network (`digits-bnn`): accuracy, resources, speed, simulation speed.

    python benchmarks/bench_default.py [--seeds 0 1 2] [--boards icebreaker ulx3s-85f]
                                       [--out build/bench]

Prints tables (Markdown), writes ``OUT/bench.json`` and rewrites the tables of
``docs/results.md`` (``--docs PAGE``: another page; ``--no-docs``: none). Not part of
``make test``: it trains several seeds and runs full place-and-route for each board.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from doc_tables import add_docs_arguments, check_docs_page, docs_page  # noqa: E402

from qnnfab import ir  # noqa: E402
from qnnfab.boards.registry import get_board  # noqa: E402
from qnnfab.flow import build_board, simulate_and_compare  # noqa: E402
from qnnfab.model.train import train  # noqa: E402
from qnnfab.model.vectors import test_vectors  # noqa: E402

#: The tables of docs/results.md this benchmark writes.
DOC_TABLES = ("default-accuracy", "default-hardware", "default-sim")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def accuracy_table(seeds, preset, out):
    rows, first = [], None
    for seed in seeds:
        log(f"training {preset} seed {seed} ...")
        result = train(preset, seed=seed, progress=False)
        vecs = test_vectors(result.network)
        cmp = simulate_and_compare(result.network, simulator="amaranth", codes=vecs.codes,
                                   progress=False)
        hw = float(np.mean(cmp.result.classes == vecs.labels))
        rows.append({"seed": seed, "float": result.float_accuracy,
                     "integer": result.integer_accuracy, "hardware": hw,
                     "agreement": result.agreement, "bit_exact": cmp.summary(),
                     "train_s": result.seconds})
        if first is None:
            first = result.network
            ir.save(first, os.path.join(out, "network.qnn"))
    return rows, first


def board_row(network, board, out):
    folder = os.path.join(out, board)
    os.makedirs(folder, exist_ok=True)
    start = time.monotonic()
    report = build_board(network, board, folder, progress=False)
    seconds = time.monotonic() - start
    res = report["resources"]
    cycles = report["cycles_per_inference"]
    luts = res["lut"]["used"]
    return {
        "board": board, "device": report["device"],
        "lut": f"{luts}/{res['lut']['total']}", "ff": res["ff"]["used"],
        "bram": f"{res['bram']['used']}/{res['bram']['total']}",
        "dsp": res["dsp"]["used"],
        "fmax_mhz": report["fmax_mhz"], "clock_mhz": report["clock_mhz"],
        "cycles_per_inference": cycles,
        "inferences_per_s": report["inferences_per_s"],
        "inferences_per_s_at_fmax": report["inferences_per_s_at_fmax"],
        "binary_macs_per_lut_per_cycle": network.macs / cycles / luts,
        "build_s": seconds,
    }


def sim_speed(network, n_amaranth=40, n_verilator=200):
    rows = []
    codes = test_vectors(network).codes
    for simulator, n in (("amaranth", n_amaranth), ("verilator", n_verilator)):
        cmp = simulate_and_compare(network, simulator=simulator, codes=codes[:n],
                                   progress=False)
        r = cmp.result
        rows.append({"simulator": simulator, "vectors": n, "cycles": r.cycles,
                     "seconds": r.seconds, "cycles_per_s": r.cycles_per_second,
                     "compile_s": r.compile_seconds, "bit_exact": cmp.summary()})
    return rows


def md_table(rows, columns):
    lines = ["| " + " | ".join(h for h, _ in columns) + " |",
             "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row) for _, fmt in columns) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="digits-bnn")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--boards", nargs="+", default=["icebreaker", "ulx3s-85f"])
    parser.add_argument("--out", default="build/bench")
    add_docs_arguments(parser)
    args = parser.parse_args()
    check_docs_page(args, DOC_TABLES)
    for board in args.boards:
        get_board(board)
    os.makedirs(args.out, exist_ok=True)

    acc_rows, network = accuracy_table(args.seeds, args.preset, args.out)
    mean = {k: float(np.mean([r[k] for r in acc_rows])) for k in ("float", "integer", "hardware")}
    board_rows = [board_row(network, b, args.out) for b in args.boards]
    sim_rows = sim_speed(network)

    pct = "{:.2%}".format
    accuracy = md_table(acc_rows + [{"seed": "mean", **mean, "agreement": float("nan"),
                                     "bit_exact": "", "train_s": float("nan")}], [
        ("seed", lambda r: str(r["seed"])), ("float", lambda r: pct(r["float"])),
        ("integer (golden)", lambda r: pct(r["integer"])),
        ("hardware (Amaranth sim)", lambda r: pct(r["hardware"])),
        ("bit-exact", lambda r: r["bit_exact"]),
        ("train s", lambda r: "" if r["train_s"] != r["train_s"] else f"{r['train_s']:.1f}")])
    hardware = md_table(board_rows, [
        ("board", lambda r: r["board"]), ("LUT", lambda r: r["lut"]),
        ("FF", lambda r: str(r["ff"])), ("BRAM", lambda r: r["bram"]),
        ("DSP", lambda r: str(r["dsp"])), ("fmax MHz", lambda r: f"{r['fmax_mhz']:.1f}"),
        ("clock MHz", lambda r: f"{r['clock_mhz']:g}"),
        ("cycles/inf", lambda r: str(r["cycles_per_inference"])),
        ("inf/s at clock", lambda r: f"{r['inferences_per_s']:,.0f}"),
        ("inf/s at fmax", lambda r: f"{r['inferences_per_s_at_fmax']:,.0f}"),
        ("bin. MACs/LUT/cycle", lambda r: f"{r['binary_macs_per_lut_per_cycle']:.2f}"),
        ("build s", lambda r: f"{r['build_s']:.0f}")])
    simulation = md_table(sim_rows, [
        ("simulator", lambda r: r["simulator"]), ("vectors", lambda r: str(r["vectors"])),
        ("cycles", lambda r: str(r["cycles"])),
        ("cycles/s", lambda r: f"{r['cycles_per_s']:,.0f}"),
        ("compile s", lambda r: f"{r['compile_s']:.1f}"),
        ("bit-exact", lambda r: r["bit_exact"])])
    print(f"## Accuracy, {args.preset}, digits held-out test split (360 images)\n")
    print(accuracy)
    print(f"\n## Hardware, {network.summary()}, {network.macs} MACs/inference\n")
    print(hardware)
    print("\n## Simulation speed\n")
    print(simulation)
    with open(os.path.join(args.out, "bench.json"), "w") as f:
        json.dump({"accuracy": acc_rows, "boards": board_rows, "sim": sim_rows}, f, indent=1,
                  default=float)
    docs_page(args, dict(zip(DOC_TABLES, (accuracy, hardware, simulation))), log=log)


if __name__ == "__main__":
    main()
