"""Line plots without a plotting library: SVG text, or PNG through matplotlib when it is
installed (qnnfab does not depend on it)."""

from html import escape

from . import ir

__all__ = ["line_plot_svg", "write_line_plot", "check_plot_path", "nice_ticks"]

COLOURS = ("#3b6fb6", "#d0452f", "#2e9b4f", "#8a4fb0", "#c08a1e")


def nice_ticks(lo, hi, count=5):
    """Round tick values (1, 2 or 5 times a power of ten apart) covering ``lo .. hi``, about
    ``count`` of them, all inside the range."""
    import math
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    k = first
    while k * step <= hi + 1e-9 * step:
        ticks.append(round(k * step, 12))
        k += 1
    return ticks


def _log_ticks(lo, hi):
    """0 (when in range) and the powers of ten within ``lo .. hi``."""
    ticks = [0.0] if lo <= 0 else []
    p = 1.0
    while p <= hi:
        if p >= lo:
            ticks.append(p)
        p *= 10
    return ticks


def line_plot_svg(series, *, title, xlabel, ylabel, xscale="linear"):
    """An SVG (text) with one line per entry of ``series`` (``{name: (xs, ys)}``), axes
    spanning the data with round tick labels and light grid lines, the end values labelled
    and a legend. ``xscale="log"`` spaces x as ``log10(1 + x)`` (x >= 0), so the first few
    samples of a learning curve get as much room as the last thousands."""
    import math
    if not series or not all(len(xs) == len(ys) and len(xs) for xs, ys in series.values()):
        raise ValueError("line_plot_svg: expected {name: (xs, ys)} with equal, non-empty "
                         "lengths")
    if xscale not in ("linear", "log"):
        raise ValueError(f"line_plot_svg: xscale is 'linear' or 'log', not {xscale!r}")
    xs_all = [float(x) for xs, _ in series.values() for x in xs]
    ys_all = [float(y) for _, ys in series.values() for y in ys]
    if xscale == "log" and min(xs_all) < 0:
        raise ValueError("line_plot_svg: a log x axis needs x >= 0")

    def fx(x):
        return math.log10(1 + float(x)) if xscale == "log" else float(x)
    x0, x1 = min(xs_all), max(xs_all)
    y0, y1 = min(ys_all), max(ys_all)
    x1 = x1 if x1 > x0 else x0 + 1
    pad = 0.05 * (y1 - y0) if y1 > y0 else 0.5
    y0, y1 = y0 - pad, y1 + pad
    left, top, width, height = 70, 40, 560, 260

    def px(x):
        return left + (fx(x) - fx(x0)) * width / (fx(x1) - fx(x0))

    def py(y):
        return top + height * (y1 - float(y)) / (y1 - y0)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 40}" '
           f'height="{top + height + 70 + 16 * len(series)}" font-family="sans-serif" '
           f'font-size="12">',
           f'<text x="{left}" y="20" font-size="14">{escape(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" '
           f'stroke="#888"/>']
    for t in nice_ticks(y0, y1):
        out.append(f'<line x1="{left}" x2="{left + width}" y1="{py(t):.1f}" y2="{py(t):.1f}" '
                   f'stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    xticks = _log_ticks(x0, x1) if xscale == "log" else nice_ticks(x0, x1, 6)
    for t in xticks:
        out.append(f'<line x1="{px(t):.1f}" x2="{px(t):.1f}" y1="{top}" y2="{top + height}" '
                   f'stroke="#ddd"/>')
        out.append(f'<text x="{px(t):.1f}" y="{top + height + 16}" text-anchor="middle">'
                   f'{t:g}</text>')
    scale_note = " (log scale)" if xscale == "log" else ""
    out += [f'<text x="{left + width / 2:.0f}" y="{top + height + 34}" text-anchor="middle">'
            f'{escape(xlabel + scale_note)}</text>',
            f'<text x="14" y="{top + height / 2:.0f}" text-anchor="middle" '
            f'transform="rotate(-90 14 {top + height / 2:.0f})">{escape(ylabel)}</text>']
    for n, (name, (xs, ys)) in enumerate(series.items()):
        colour = COLOURS[n % len(COLOURS)]
        pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys))
        out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" '
                   f'stroke-width="1.5"><title>{escape(name)}</title></polyline>')
        out.append(f'<text x="{px(xs[-1]) - 60:.1f}" y="{py(ys[-1]) - 6:.1f}" '
                   f'fill="{colour}" font-size="10">{float(ys[-1]):.4g}</text>')
        out.append(f'<text x="{left}" y="{top + height + 54 + 16 * n}" fill="{colour}">'
                   f'{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def check_plot_path(path):
    """ValueError now (before long work) if ``path`` cannot take a plot: not .svg/.png, or
    .png without matplotlib."""
    path = str(path)
    if path.lower().endswith(".svg"):
        return
    if not path.lower().endswith(".png"):
        raise ValueError(f"{path}: plots are .svg or .png files")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError(f"{path}: a PNG plot needs matplotlib (`pip install matplotlib`); "
                         f"or write an .svg") from None


def write_line_plot(path, series, *, title, xlabel, ylabel, xscale="linear"):
    """Write the plot to ``path`` atomically: ``.svg`` always works, ``.png`` needs
    matplotlib (ValueError saying so otherwise). ``xscale``: as :func:`line_plot_svg`."""
    path = str(path)
    if path.lower().endswith(".svg"):
        svg = line_plot_svg(series, title=title, xlabel=xlabel, ylabel=ylabel, xscale=xscale)
        ir.atomic_write_bytes(path, svg.encode())
        return path
    if not path.lower().endswith(".png"):
        raise ValueError(f"{path}: plots are .svg or .png files")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError(f"{path}: a PNG plot needs matplotlib (`pip install matplotlib`); "
                         f"or write an .svg") from None
    import io
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if xscale == "log":
        ax.set_xscale("symlog", linthresh=1)
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    ir.atomic_write_bytes(path, buf.getvalue())
    return path
