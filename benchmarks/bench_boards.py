"""The build matrix: every preset on every board, each a real bitstream.

    python benchmarks/bench_boards.py [--presets ...] [--boards ...] [--seed 0]
                                      [--out build/bench-boards] [--reuse]

For each (preset, board): trains the preset (:func:`qnnfab.flow.preset_network`; float presets
are quantized to 3-bit GA codebooks), builds it at the board's default folding and clock, and
checks that the bitstream and ``report.json`` exist and that timing is met. Prints a Markdown
table (also ``OUT/boards.md`` and the ``boards`` table of ``docs/results.md``; ``--docs PAGE``
or ``--no-docs``) and writes ``OUT/boards.json``; exits 1 if any build failed or
missed timing. A network that the fit check refuses is reported as such, not as a failure.
Slow: the ULX3S-85F and ECP5-EVN builds take ~15 minutes each, the Tang Nano 9K's ~10
(`make bench-boards`; `--boards` picks some of `qnnfab boards`). ``--reuse`` takes the networks
(``OUT/<preset>.qnn``) and the finished builds (``OUT/<preset>/<board>/report.json``) an
earlier run left and builds only what is missing: delete a build's folder to build it again.

Beside each build, its memory bound (``bound``: cycles per inference if every block RAM read
port delivered weight bits every cycle, and on the UP5K with its SPRAMs' ports too,
:func:`qnnfab.boards.report.bounds`), the SPRAMs it uses (``spram``) and the
multiply-accumulates per logic cell per cycle (``macs_lc_cycle``).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from doc_tables import add_docs_arguments, check_docs_page, docs_page  # noqa: E402

from qnnfab import ir  # noqa: E402
from qnnfab.boards.build import FitError, build  # noqa: E402
from qnnfab.boards.registry import BOARDS, get_board  # noqa: E402
from qnnfab.boards.report import bounds as report_bounds, build_problems  # noqa: E402
from qnnfab.boards.toolchain import ToolError  # noqa: E402
from qnnfab.flow import preset_network  # noqa: E402
from qnnfab.model.presets import PRESETS  # noqa: E402

#: The tables of docs/results.md this benchmark writes.
DOC_TABLES = ("boards",)

COLUMNS = ("preset", "board", "status", "folding", "lut", "bram", "spram", "fmax_mhz", "clock_mhz",
           "cycles", "bound", "inf_per_s", "macs_lc_cycle", "synthesis", "build_s")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def matrix_row(preset, board, network, out_dir, *, reuse=False):
    row = {"preset": preset, "board": board}
    start = time.monotonic()
    try:
        report_path = os.path.join(out_dir, "report.json")
        if reuse and os.path.exists(report_path):
            with open(report_path) as f:
                report = json.load(f)
        else:
            report = build(network, board, out_dir, progress=lambda step: None)
    except FitError as exc:
        return {**row, "status": "does not fit", "detail": str(exc)}
    except ToolError as exc:
        return {**row, "status": "FAILED", "detail": str(exc).splitlines()[0],
                "build_s": round(time.monotonic() - start)}
    problems = build_problems(report, out_dir)
    res = report["resources"]
    bounds = report_bounds(network, get_board(board), report)   # also for older reports
    return {**row, "status": "ok" if not problems else "FAILED: " + "; ".join(problems),
            "folding": ",".join("-" if f is None else f"{f['pe']}:{f['simd']}"
                                for f in report["folding"]),
            "lut": f"{res['lut']['used']}/{res['lut']['total']}",
            "bram": f"{res['bram']['used']}/{res['bram']['total']}",
            "spram": (f"{res['spram']['used']}/{res['spram']['total']}" if "spram" in res
                      else f"0/{get_board(board).spram_blocks}" if get_board(board).spram_blocks
                      else "-"),
            "fmax_mhz": round(report["fmax_mhz"], 1) if report["fmax_mhz"] else None,
            "clock_mhz": report["clock_mhz"], "cycles": report["cycles_per_inference"],
            "bound": (f"{bounds['memory_bound_cycles']} ({bounds['memory_bound_cycles_spram']} "
                      f"with SPRAM)" if bounds.get("memory_bound_cycles_spram")
                      else bounds.get("memory_bound_cycles")),
            "inf_per_s": round(report["inferences_per_s"]),
            "macs_lc_cycle": (round(bounds["macs_per_lc_per_cycle"], 3)
                              if bounds.get("macs_per_lc_per_cycle") else None),
            "synthesis": "fallback (abc)" if report["synthesis"]["fallback"] else "default",
            "build_s": round(report["build_seconds"]["total"])}


def table(rows):
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = []
        for col in COLUMNS:
            value = row.get(col, "")
            cells.append(f"{value:,}" if isinstance(value, int) and col == "inf_per_s"
                         else str("" if value is None else value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--boards", nargs="+", default=list(BOARDS), choices=list(BOARDS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="build/bench-boards")
    parser.add_argument("--reuse", action="store_true",
                        help="take the networks and finished builds an earlier run left in "
                             "--out; build only what is missing")
    add_docs_arguments(parser)
    args = parser.parse_args(argv)
    check_docs_page(args, DOC_TABLES)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for preset in args.presets:
        path = os.path.join(args.out, f"{preset}.qnn")
        if args.reuse and os.path.exists(path):
            log(f"{preset}: the network of an earlier run ({path})")
            network = ir.load(path)
        else:
            log(f"training {preset} (seed {args.seed}) ...")
            network = preset_network(preset, seed=args.seed)
            ir.save(network, path)
        for board in args.boards:
            log(f"building {preset} for {board} ...")
            row = matrix_row(preset, board, network, os.path.join(args.out, preset, board),
                             reuse=args.reuse)
            log(f"    {row['status']}" + (f" ({row['build_s']} s)" if "build_s" in row else ""))
            rows.append(row)
    text = table(rows)
    print(text)
    ir.atomic_write_bytes(os.path.join(args.out, "boards.md"), (text + "\n").encode())
    ir.atomic_write_bytes(os.path.join(args.out, "boards.json"),
                          (json.dumps(rows, indent=1) + "\n").encode())
    docs_page(args, {"boards": text}, log=log)
    failed = [r for r in rows if r["status"].startswith("FAILED")]
    for r in failed:
        log(f"FAILED {r['preset']} on {r['board']}: {r.get('detail') or r['status']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
