"""The build matrix: every preset on every board, each a real bitstream.

    python benchmarks/bench_boards.py [--presets ...] [--boards ...] [--seed 0]
                                      [--out build/bench-boards]

For each (preset, board): trains the preset (:func:`qnnfab.flow.preset_network`; float presets
are quantized to 3-bit GA codebooks), builds it at the board's default folding and clock, and
checks that the bitstream and ``report.json`` exist and that timing is met. Prints a Markdown
table (also ``OUT/boards.md`` and the ``boards`` table of ``docs/results.md``; ``--docs PAGE``
or ``--no-docs``) and writes ``OUT/boards.json``; exits 1 if any build failed or
missed timing. A network that the fit check refuses is reported as such, not as a failure.
Slow: the ULX3S-85F and ECP5-EVN builds take ~15 minutes each, the Tang Nano 9K's ~10
(`make bench-boards`; `--boards` picks some of `qnnfab boards`).
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
from qnnfab.boards.registry import BOARDS  # noqa: E402
from qnnfab.boards.report import build_problems  # noqa: E402
from qnnfab.boards.toolchain import ToolError  # noqa: E402
from qnnfab.flow import preset_network  # noqa: E402
from qnnfab.model.presets import PRESETS  # noqa: E402

#: The tables of docs/results.md this benchmark writes.
DOC_TABLES = ("boards",)

COLUMNS = ("preset", "board", "status", "folding", "lut", "bram", "fmax_mhz", "clock_mhz",
           "cycles", "inf_per_s", "synthesis", "build_s")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def matrix_row(preset, board, network, out_dir):
    row = {"preset": preset, "board": board}
    start = time.monotonic()
    try:
        report = build(network, board, out_dir, progress=lambda step: None)
    except FitError as exc:
        return {**row, "status": "does not fit", "detail": str(exc)}
    except ToolError as exc:
        return {**row, "status": "FAILED", "detail": str(exc).splitlines()[0],
                "build_s": round(time.monotonic() - start)}
    problems = build_problems(report, out_dir)
    res = report["resources"]
    return {**row, "status": "ok" if not problems else "FAILED: " + "; ".join(problems),
            "folding": ",".join("-" if f is None else f"{f['pe']}:{f['simd']}"
                                for f in report["folding"]),
            "lut": f"{res['lut']['used']}/{res['lut']['total']}",
            "bram": f"{res['bram']['used']}/{res['bram']['total']}",
            "fmax_mhz": round(report["fmax_mhz"], 1) if report["fmax_mhz"] else None,
            "clock_mhz": report["clock_mhz"], "cycles": report["cycles_per_inference"],
            "inf_per_s": round(report["inferences_per_s"]),
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
    add_docs_arguments(parser)
    args = parser.parse_args(argv)
    check_docs_page(args, DOC_TABLES)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for preset in args.presets:
        log(f"training {preset} (seed {args.seed}) ...")
        network = preset_network(preset, seed=args.seed)
        ir.save(network, os.path.join(args.out, f"{preset}.qnn"))
        for board in args.boards:
            log(f"building {preset} for {board} ...")
            row = matrix_row(preset, board, network, os.path.join(args.out, preset, board))
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
