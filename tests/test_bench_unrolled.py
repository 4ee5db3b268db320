"""benchmarks/bench_unrolled.py: the rows a table shows without a build (how to build them,
da4ml's "does not fit" from its packed netlist on a bigger board) and the README's short table."""

from .benchmark_modules import load

bu = load("bench_unrolled")


def report(lut, fmax=80.0, cycles=1, bram=0, total=83640, packed_only=False):
    return {"resources": {"lut": {"used": lut, "total": total}, "bram": {"used": bram}},
            "fmax_mhz": fmax, "cycles_per_inference": cycles, "clock_mhz": 60,
            "timing_met": True, "style": ["unrolled"], "packed_only": packed_only}


def da4ml(board, rep=None, **kw):
    row = bu.row_of("digits-tnn", board, "da4ml", rep, **kw)
    row["generator"] = "da4ml"
    return row


def test_da4ml_misfit_from_a_bigger_boards_packing():
    rows = [da4ml("ulx3s-85f", report(67802, fmax=None, packed_only=True)),
            da4ml("ulx3s-25f", status="not built", detail="no finished build"),
            da4ml("icesugar", status="not built", detail="no finished build")]
    bu.mark_da4ml_misfits(rows)
    assert rows[0]["status"] == "ok"
    assert rows[1]["status"] == "does not fit"
    assert "67,802" in rows[1]["detail"] and "24,288" in rows[1]["detail"]
    assert rows[2]["status"] == "does not fit"


def test_da4ml_row_that_would_fit_stays_not_built():
    rows = [da4ml("ulx3s-25f", report(9000, fmax=None, total=24288, packed_only=True)),
            da4ml("ulx3s-85f", status="not built", detail="no finished build")]
    bu.mark_da4ml_misfits(rows)
    assert rows[1]["status"] == "not built"


def test_readme_table_lists_builds_and_groups_refusals():
    rows = [bu.row_of("net-a", "ulx3s-25f", "unrolled", report(13177, fmax=91.2)),
            bu.row_of("net-a", "ulx3s-25f", "folded", report(10374, fmax=84.6, cycles=7,
                                                                 bram=25)),
            bu.row_of("net-b", "ulx3s-85f", "unrolled", status="does not fit", detail="x"),
            bu.row_of("net-b", "ulx3s-25f", "unrolled", status="does not fit", detail="y"),
            bu.row_of("net-c", "ulx3s-85f", "folded", status="not built", detail="z")]
    text = bu.readme_table(rows)
    lines = text.splitlines()
    assert lines[0].startswith("| network | board | style |")
    assert "| net-a | ulx3s-25f | unrolled | 13,177 | 0 | 91.2 | 91.20 M |" in lines
    assert "| net-a | ulx3s-25f | folded | 10,374 | 25 | 84.6 | 12.09 M |" in lines
    assert lines[-1] == "Does not fit: net-b unrolled (ulx3s-85f, ulx3s-25f)."
    assert "net-c" not in text           # not built: only in the full table
