"""benchmarks/bench_gradquant.py: a run whose gradients blow up is a result (kept, marked
"diverged"), and the table's comparisons never count a diverged cell as a number."""

from .benchmark_modules import load

bg = load("bench_gradquant")


def test_stats_leave_out_diverged_runs_and_count_them():
    st = bg.stats([0.8, None, 0.6])
    assert st["n"] == 3 and st["diverged"] == 1
    assert abs(st["mean"] - 0.7) < 1e-12 and st["min"] == 0.6 and st["max"] == 0.8
    assert not bg.usable(st)
    assert bg.cell(st) == "70.00 (60.00..80.00), 1 of 3 diverged"
    every = bg.stats([None, None])
    assert every["mean"] is None and bg.cell(every) == "diverged (2 of 2)"
    assert bg.usable(bg.stats([0.5, 0.5])) and bg.cell(bg.stats([0.5, 0.5])) == "50.00"


def section(values):
    """A one-optimizer, one-target section at 2 bits: ``{method: [accuracy per seed]}``."""
    runs = [{"optimizer": "sgd", "target": None, "method": bg.BASELINE, "bits": None,
             "integer": 0.9}]
    runs += [{"optimizer": "sgd", "target": "both", "method": m, "bits": 2, "integer": v}
             for m, vs in values.items() for v in vs]
    settings = {"bits": [2], "methods": list(values), "optimizers": ["sgd"],
                "targets": ["both"]}
    return {"settings": settings, "summary": bg.summarize(runs)}


def test_a_diverged_function_is_never_the_best_other():
    # log diverged on one seed with a high survivor: it must not beat stochastic rounding.
    sec = section({"stochastic": [0.80, 0.80], "log": [0.95, None], "uniform": [0.70, 0.70]})
    (text,) = bg.choice_notes(sec)
    assert "in 1 of 1" in text and "not in" not in text
    assert "diverged" in " ".join(bg.bias_notes(sec))


def test_a_diverged_choice_is_a_miss():
    sec = section({"stochastic": [None, None], "uniform": [0.70, 0.70]})
    (text,) = bg.choice_notes(sec)
    assert "in 0 of 1" in text and "the chosen functions diverged" in text
