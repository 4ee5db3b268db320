"""The SVG line plot: round tick labels inside the data range (no ``1.027``), a log x axis for
learning curves whose first samples matter, and text that stays on the canvas."""

import xml.etree.ElementTree as ET

import pytest

from qnnfab.plot import line_plot_svg, nice_ticks

SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize("lo, hi, want", [
    (0.07, 1.03, [0.2, 0.4, 0.6, 0.8, 1.0]),
    (0, 1000, [0, 200, 400, 600, 800, 1000]),
    (-3, 7, [-2, 0, 2, 4, 6]),
    (0.9123, 0.9456, [0.92, 0.93, 0.94]),
])
def test_nice_ticks_are_round_and_inside(lo, hi, want):
    assert nice_ticks(lo, hi) == pytest.approx(want)


def _texts(svg):
    return [t.text for t in ET.fromstring(svg).iter(f"{SVG}text")]


def test_accuracy_axis_has_round_labels():
    svg = line_plot_svg({"rule": ([0, 10, 100, 1000], [0.1, 0.5, 0.9, 0.97])},
                        title="t", xlabel="samples", ylabel="accuracy")
    labels = _texts(svg)
    assert "1" in labels and "0.2" in labels
    assert not any(t and t.startswith("1.0") and len(t) > 3 for t in labels), labels


def test_log_axis_spreads_the_first_samples():
    xs, ys = [0, 1, 10, 100, 1000], [0.1, 0.3, 0.6, 0.8, 0.9]

    def first_segment(svg):
        line = next(ET.fromstring(svg).iter(f"{SVG}polyline"))
        pts = [tuple(map(float, p.split(","))) for p in line.get("points").split()]
        return pts[2][0] - pts[0][0]   # width of x = 0 .. 10 on the page
    linear = first_segment(line_plot_svg({"a": (xs, ys)}, title="t", xlabel="x", ylabel="y"))
    log = first_segment(line_plot_svg({"a": (xs, ys)}, title="t", xlabel="x", ylabel="y",
                                      xscale="log"))
    assert linear < 10 and log > 150
    labels = _texts(line_plot_svg({"a": (xs, ys)}, title="t", xlabel="x", ylabel="y",
                                  xscale="log"))
    assert {"0", "1", "10", "100", "1000"} <= set(labels)
    with pytest.raises(ValueError, match="log x axis needs x >= 0"):
        line_plot_svg({"a": ([-1, 2], [0, 1])}, title="t", xlabel="x", ylabel="y",
                      xscale="log")


def test_depth_plot_row_labels_fit_left_of_the_bands():
    from qnnfab.model.sq import depth_plot_svg
    names = ["conv0 3x3x1x16 (28x28)", "dense1 128x128"]
    history = [{"epoch": e, "depth": ["binary", "ternary"], "gain": [0.2, 0.7]}
               for e in range(1, 4)]
    root = ET.fromstring(depth_plot_svg(history, names=names))
    band_x = min(float(r.get("x")) for r in root.iter(f"{SVG}rect"))
    for t in root.iter(f"{SVG}text"):
        if t.text in names:   # about 7 px a character at 12 px sans-serif
            assert float(t.get("x")) + 6.5 * len(t.text) <= band_x, t.text
