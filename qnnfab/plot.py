"""Line plots without a plotting library: SVG text, or PNG through matplotlib when it is
installed (qnnfab does not depend on it)."""

from html import escape

from . import ir

__all__ = ["line_plot_svg", "write_line_plot", "check_plot_path"]

COLOURS = ("#3b6fb6", "#d0452f", "#2e9b4f", "#8a4fb0", "#c08a1e")


def line_plot_svg(series, *, title, xlabel, ylabel):
    """An SVG (text) with one line per entry of ``series`` (``{name: (xs, ys)}``), axes
    spanning the data, the end values labelled and a legend."""
    if not series or not all(len(xs) == len(ys) and len(xs) for xs, ys in series.values()):
        raise ValueError("line_plot_svg: expected {name: (xs, ys)} with equal, non-empty "
                         "lengths")
    xs_all = [float(x) for xs, _ in series.values() for x in xs]
    ys_all = [float(y) for _, ys in series.values() for y in ys]
    x0, x1 = min(xs_all), max(xs_all)
    y0, y1 = min(ys_all), max(ys_all)
    x1 = x1 if x1 > x0 else x0 + 1
    pad = 0.05 * (y1 - y0) if y1 > y0 else 0.5
    y0, y1 = y0 - pad, y1 + pad
    left, top, width, height = 70, 40, 560, 260

    def px(x):
        return left + (float(x) - x0) * width / (x1 - x0)

    def py(y):
        return top + height * (y1 - float(y)) / (y1 - y0)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 40}" '
           f'height="{top + height + 60 + 16 * len(series)}" font-family="sans-serif" '
           f'font-size="12">',
           f'<text x="{left}" y="20" font-size="14">{escape(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" '
           f'stroke="#888"/>',
           f'<text x="5" y="{top + 4}">{y1:.4g}</text>',
           f'<text x="5" y="{top + height + 4}">{y0:.4g}</text>',
           f'<text x="5" y="{top + height // 2}">{escape(ylabel)}</text>',
           f'<text x="{left}" y="{top + height + 16}">{x0:g}</text>',
           f'<text x="{left + width - 40}" y="{top + height + 16}">{x1:g}</text>',
           f'<text x="{left + width // 2 - 40}" y="{top + height + 16}">{escape(xlabel)}'
           f'</text>']
    for n, (name, (xs, ys)) in enumerate(series.items()):
        colour = COLOURS[n % len(COLOURS)]
        pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys))
        out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" '
                   f'stroke-width="1.5"><title>{escape(name)}</title></polyline>')
        out.append(f'<text x="{px(xs[-1]) - 60:.1f}" y="{py(ys[-1]) - 6:.1f}" '
                   f'fill="{colour}" font-size="10">{float(ys[-1]):.4g}</text>')
        out.append(f'<text x="{left}" y="{top + height + 36 + 16 * n}" fill="{colour}">'
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


def write_line_plot(path, series, *, title, xlabel, ylabel):
    """Write the plot to ``path`` atomically: ``.svg`` always works, ``.png`` needs
    matplotlib (ValueError saying so otherwise)."""
    path = str(path)
    if path.lower().endswith(".svg"):
        svg = line_plot_svg(series, title=title, xlabel=xlabel, ylabel=ylabel)
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
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    ir.atomic_write_bytes(path, buf.getvalue())
    return path
