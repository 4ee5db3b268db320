"""The results of a sweep on disk: ``results.jsonl`` (one line per finished point, the record
of truth), the ``results.md`` / ``results.csv`` tables and the Pareto plots, all made from it.

``results.jsonl`` is append-only. Each line is written by one ``write`` and synced, so a
crash leaves at most a torn last line without its newline; :meth:`ResultLog.load` cuts such a
tail off (and says so) before anything is appended. A point that ran again (it had failed)
has several lines: the last one counts (:func:`latest`).
"""

import csv
import io
import json
import math
import os
from html import escape

from . import ir
from .plot import COLOURS, nice_ticks

__all__ = ["ResultLog", "latest", "accuracy_of", "metrics", "table_rows", "markdown_table",
           "csv_table", "pareto_front", "pareto_svg", "write_tables", "TABLE_COLUMNS"]


class ResultLog:
    """``results.jsonl`` of a sweep folder."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.repaired = 0   # bytes of a torn last line cut off by load()

    def load(self):
        """Every result in the file, in order (``[]`` for no file). A torn last line (no
        newline: the writer died mid-write) is cut off the file; ValueError naming the line
        for a line that is not JSON."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        if end < len(data):
            self.repaired = len(data) - end
            with open(self.path, "r+b") as f:
                f.truncate(end)
                os.fsync(f.fileno())
            data = data[:end]
        out = []
        for n, line in enumerate(data.decode("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{self.path}:{n}: not a result line ({exc})") from None
        return out

    def append(self, result):
        """Append ``result`` (a JSON-able dict) as one line: one ``write``, then ``fsync``."""
        line = (json.dumps(result, sort_keys=True, allow_nan=False) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            view = memoryview(line)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)


def latest(results):
    """``{key: result}``: the last result of each key."""
    out = {}
    for result in results:
        out[result["key"]] = result
    return out


def accuracy_of(result):
    """The accuracy a point is judged by: the hardware's (simulated), else the integer model's,
    else the float model's; None if none was measured."""
    acc = result.get("accuracy") or {}
    for kind in ("hardware", "integer", "float"):
        if acc.get(kind) is not None:
            return acc[kind]
    return None


def metrics(result):
    """``{"lut", "bram", "fmax_mhz", "inferences_per_s", "built"}`` of a result: the build
    report's numbers when the point was built, else the estimate's (``built`` False; no
    fmax)."""
    build = result.get("build") or {}
    if build:
        return {"lut": build.get("lut"), "bram": build.get("bram"),
                "fmax_mhz": build.get("fmax_mhz"),
                "inferences_per_s": build.get("inferences_per_s"), "built": True}
    est = result.get("estimate") or {}
    return {"lut": est.get("lut"), "bram": est.get("bram"), "fmax_mhz": None,
            "inferences_per_s": est.get("inferences_per_s"), "built": False}


#: The columns of the tables after the point's own (the axes), as ``(name, header)``.
TABLE_COLUMNS = (("status", "status"), ("float", "float acc"), ("integer", "integer acc"),
                 ("hardware", "hardware acc"), ("weight_bits", "weight bits"),
                 ("folding", "folding"), ("lut", "LUT"), ("bram", "EBR"),
                 ("fmax_mhz", "fmax MHz"), ("inferences_per_s", "inf/s"),
                 ("bit_exact", "bit-exact"), ("seconds", "seconds"), ("error", "error"))


def table_rows(results, axes):
    """One dict per result: the ``axes`` values, then :data:`TABLE_COLUMNS` (raw numbers;
    ``estimated`` True where LUT/EBR/inf/s are the estimate's, no build)."""
    rows = []
    for r in results:
        acc = r.get("accuracy") or {}
        m = metrics(r)
        vec = r.get("vectors") or {}
        row = {a: (r.get("point") or {}).get(a) for a in axes}
        row.update(status=r.get("status"), float=acc.get("float"), integer=acc.get("integer"),
                   hardware=acc.get("hardware"),
                   weight_bits=(r.get("network") or {}).get("weight_bits"),
                   folding=r.get("folding"), lut=m["lut"], bram=m["bram"],
                   fmax_mhz=m["fmax_mhz"], inferences_per_s=m["inferences_per_s"],
                   bit_exact=(f"{vec['bit_exact']}/{vec['checked']}" if vec else None),
                   seconds=(r.get("seconds") or {}).get("total"),
                   error=r.get("error"), estimated=not m["built"] and m["lut"] is not None)
        rows.append(row)
    return rows


def _cell(name, value, estimated):
    if value is None:
        return ""
    if name in ("float", "integer", "hardware"):
        return f"{value:.2%}"
    if name in ("lut", "bram", "weight_bits"):
        return ("~" if estimated and name != "weight_bits" else "") + f"{value:,}"
    if name == "inferences_per_s":
        return ("~" if estimated else "") + f"{value:,.0f}"
    if name == "fmax_mhz":
        return f"{value:.1f}"
    if name == "seconds":
        return f"{value:.1f}"
    return str(value)


def markdown_table(rows, axes, *, title=None):
    """The rows as a markdown table (``~``: an estimate, the point was not built)."""
    headers = [*axes, *(h for _, h in TABLE_COLUMNS)]
    names = [*axes, *(n for n, _ in TABLE_COLUMNS)]
    lines = []
    if title:
        lines += [f"# {title}", ""]
    lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = [_cell(n, row.get(n), row.get("estimated")).replace("|", "\\|")
                 .replace("\n", " ") for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    if any(row.get("estimated") for row in rows):
        lines += ["", "~: estimated (the resource estimate and the timing model at the "
                      "board's design clock); the point was not built."]
    return "\n".join(lines) + "\n"


def csv_table(rows, axes):
    """The rows as CSV text: raw numbers, ``estimated`` as 0/1."""
    names = [*axes, *(n for n, _ in TABLE_COLUMNS), "estimated"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow(["" if row.get(n) is None else
                         int(row[n]) if n == "estimated" else row[n] for n in names])
    return buf.getvalue()


def pareto_front(points, *, x_lower_better):
    """The indices of the points ``(x, y)`` no other point beats: higher y (accuracy) and
    lower x (``x_lower_better``, LUTs) or higher x (inferences/s). Sorted by x."""
    sign = 1 if x_lower_better else -1
    order = sorted(range(len(points)), key=lambda i: (sign * points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return sorted(front, key=lambda i: points[i][0])


def _short(value):
    """``1500000`` → ``1.5M``, ``4000`` → ``4k``: tick labels."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.4g}{suffix}"
    return f"{value:.4g}"


def _panel(out, left, top, width, height, pts, labels, *, xlabel, ylabel, log_x,
           x_lower_better):
    """One scatter panel with its Pareto front into ``out`` (SVG lines)."""
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]

    def fx(x):
        return math.log10(x) if log_x else float(x)
    x0, x1 = min(fx(x) for x in xs), max(fx(x) for x in xs)
    if x1 - x0 < 1e-9:
        x0, x1 = x0 - (0.5 if log_x else max(1.0, abs(x0) * 0.1)), \
            x1 + (0.5 if log_x else max(1.0, abs(x1) * 0.1))
    pad = 0.06 * (x1 - x0)
    x0, x1 = x0 - pad, x1 + pad
    y0, y1 = min(ys), max(ys)
    ypad = 0.08 * (y1 - y0) if y1 > y0 else 0.02
    y0, y1 = max(0.0, y0 - ypad), min(1.0, y1 + ypad) if y1 <= 1 else y1 + ypad
    if y1 <= y0:
        y1 = y0 + 0.01

    def px(x):
        return left + (fx(x) - x0) * width / (x1 - x0)

    def py(y):
        return top + height * (y1 - y) / (y1 - y0)
    out.append(f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" '
               f'stroke="#888"/>')
    for t in nice_ticks(y0, y1):
        out.append(f'<line x1="{left}" x2="{left + width}" y1="{py(t):.1f}" '
                   f'y2="{py(t):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end">'
                   f'{t:.0%}</text>' if y1 <= 1 else
                   f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    if log_x:
        ticks = [10.0 ** k for k in range(math.ceil(x0), math.floor(x1) + 1)]
        if len(ticks) < 2:   # less than a decade or two: round values, spaced by their logs
            ticks = [t for t in nice_ticks(10 ** x0, 10 ** x1, 4) if t > 0]
    else:
        ticks = nice_ticks(x0, x1, 6)
    for t in ticks:
        if not x0 <= fx(t) <= x1:
            continue
        out.append(f'<line x1="{px(t):.1f}" x2="{px(t):.1f}" y1="{top}" y2="{top + height}" '
                   f'stroke="#ddd"/>')
        out.append(f'<text x="{px(t):.1f}" y="{top + height + 16}" text-anchor="middle">'
                   f'{_short(t)}</text>')
    out.append(f'<text x="{left + width / 2:.0f}" y="{top + height + 34}" '
               f'text-anchor="middle">{escape(xlabel)}{" (log scale)" if log_x else ""}'
               f'</text>')
    out.append(f'<text x="{left - 46}" y="{top + height / 2:.0f}" text-anchor="middle" '
               f'transform="rotate(-90 {left - 46} {top + height / 2:.0f})">{escape(ylabel)}'
               f'</text>')
    front = pareto_front(pts, x_lower_better=x_lower_better)
    if len(front) > 1:
        line = " ".join(f"{px(pts[i][0]):.1f},{py(pts[i][1]):.1f}" for i in front)
        out.append(f'<polyline class="pareto" points="{line}" fill="none" '
                   f'stroke="{COLOURS[1]}" stroke-width="1.5"/>')
    on_front = set(front)
    for i, ((x, y), label) in enumerate(zip(pts, labels)):
        colour = COLOURS[1] if i in on_front else COLOURS[0]
        out.append(f'<circle class="{"pareto" if i in on_front else "point"}" '
                   f'cx="{px(x):.1f}" cy="{py(y):.1f}" r="4" fill="{colour}">'
                   f'<title>{escape(label)}: {y:.2%}, {x:,.4g}</title></circle>')
        if i in on_front:   # labels left of the points in the right half of the panel
            right = px(x) > left + width / 2
            anchor = ' text-anchor="end"' if right else ""
            out.append(f'<text x="{px(x) + (-6 if right else 6):.1f}" y="{py(y) - 6:.1f}" '
                       f'font-size="9" fill="{colour}"{anchor}>{escape(label)}</text>')


def pareto_svg(results, board, *, title=None):
    """An SVG (text) for ``board``: accuracy (:func:`accuracy_of`) against LUTs and against
    inferences/s (log scale), one dot per point (its label on hover), the Pareto front in
    red with its labels. Built points only when any was built, else the estimates (the
    titles say which). None when no point of the board has the numbers."""
    mine = [r for r in results if (r.get("point") or {}).get("board") == board
            and r.get("status") == "ok" and accuracy_of(r) is not None]
    built = [r for r in mine if metrics(r)["built"]]
    use = built or mine
    kind = "built" if built else "estimated, not built"
    panels = []
    for metric, xlabel, log_x, lower in (("lut", "LUTs / logic cells", False, True),
                                         ("inferences_per_s", "inferences/s", True, False)):
        pts, labels = [], []
        for r in use:
            x = metrics(r)[metric]
            if x is not None and x > 0:
                pts.append((float(x), float(accuracy_of(r))))
                labels.append(r.get("label") or r.get("key", "")[:8])
        panels.append((pts, labels, xlabel + ("" if built else " (estimate)"), log_x, lower))
    if not any(p[0] for p in panels):
        return None
    left, top, width, height, gap = 80, 50, 420, 280, 110
    total_w = left + 2 * width + gap + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" '
           f'height="{top + height + 80}" font-family="sans-serif" font-size="12">',
           f'<text x="{left}" y="22" font-size="14">'
           f'{escape(title or f"Sweep on {board}: accuracy against cost and speed")} '
           f'({len(use)} point{"s" * (len(use) != 1)}, {kind})</text>',
           f'<text x="{left}" y="{top + height + 62}" fill="{COLOURS[1]}">red: the Pareto '
           f'front (no other point is both more accurate and cheaper / faster)</text>']
    for k, (pts, labels, xlabel, log_x, lower) in enumerate(panels):
        if pts:
            _panel(out, left + k * (width + gap), top, width, height, pts, labels,
                   xlabel=xlabel, ylabel="accuracy", log_x=log_x, x_lower_better=lower)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_tables(out_dir, results, axes, *, title=None, plots=True):
    """Write ``results.md``, ``results.csv`` and (``plots``) ``pareto-<board>.svg`` per board
    into ``out_dir`` (atomically) from ``results`` (one per point, in the sweep's order).
    Returns the paths written."""
    rows = table_rows(results, axes)
    written = []
    for name, text in (("results.md", markdown_table(rows, axes, title=title)),
                       ("results.csv", csv_table(rows, axes))):
        path = os.path.join(out_dir, name)
        ir.atomic_write_bytes(path, text.encode())
        written.append(path)
    if plots:
        boards = dict.fromkeys((r.get("point") or {}).get("board") for r in results)
        for board in boards:
            if board is None:
                continue
            svg = pareto_svg(results, board)
            if svg is not None:
                path = os.path.join(out_dir, f"pareto-{board}.svg")
                ir.atomic_write_bytes(path, svg.encode())
                written.append(path)
    return written
