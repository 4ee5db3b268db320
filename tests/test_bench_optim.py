"""benchmarks/bench_optim.py: where validation accuracy is measured within an epoch, epochs to
target read off the curve, SGD's epochs over an optimizer's (exact or a lower bound), the goal's
verdict, the per-optimizer lr windows, the docs table, and the command line's errors."""

import json

import pytest

from .benchmark_modules import load

bo = load("bench_optim")


# -- evaluation points and epochs to target -------------------------------------------------------

@pytest.mark.parametrize("n_batches, evals, want", [
    (20, 20, list(range(20))),          # digits-tnn on digits: every batch
    (20, 40, list(range(20))),          # more evaluations than batches: still every batch once
    (20, 4, [4, 9, 14, 19]),            # the old quarter epochs
    (20, 1, [19]),                      # once, after the last batch
    (7, 3, [1, 4, 6]),                  # round(7/3)-1, round(14/3)-1, 7-1
])
def test_eval_marks(n_batches, evals, want):
    assert bo.eval_marks(n_batches, evals) == want


def test_eval_marks_fashion_mnist_tenths():
    """844 batches (54,000 images, batch 64), 10 evaluations: 10 evenly spaced points, the
    last batch among them, each 84 or 85 batches after the previous one."""
    marks = bo.eval_marks(844, 10)
    assert len(marks) == 10 and marks[-1] == 843
    gaps = [b - a for a, b in zip([-1] + marks, marks)]
    assert set(gaps) <= {84, 85}, gaps
    at = [round((b + 1) / 844, 4) for b in marks]
    assert at[0] == pytest.approx(0.1, abs=1e-3) and at[-1] == 1.0


@pytest.mark.parametrize("args", [(0, 4), (20, 0), (-3, 2)])
def test_eval_marks_errors(args):
    with pytest.raises(ValueError, match="eval_marks: need n_batches >= 1"):
        bo.eval_marks(*args)


def test_epochs_to_target_first_crossing_no_interpolation():
    curve = [(0.05, 0.50), (0.10, 0.80), (0.15, 0.949), (0.20, 0.95), (0.25, 0.90),
             (0.30, 0.97)]
    assert bo.epochs_to_target(curve, 0.95) == 0.20      # at or above, the first one
    assert bo.epochs_to_target(curve, 0.96) == 0.30      # the dip after 0.20 does not matter
    assert bo.epochs_to_target(curve, 0.50) == 0.05
    assert bo.epochs_to_target(curve, 0.98) is None
    assert bo.epochs_to_target([], 0.5) is None


def test_train_run_measures_at_every_batch_and_coarser_points_agree():
    """digits-tnn on digits, one epoch: 20 evaluations give one point per batch (0.05 epoch
    apart); 4 give the quarter points, with exactly the same accuracies there (measuring does
    not change training); epochs to target is the first point of the curve reaching it."""
    from qnnfab.model.data import load_dataset
    from qnnfab.model.presets import get_preset
    preset = get_preset("digits-tnn")
    ds = load_dataset("digits", seed=preset.split_seed)
    make = bo.OPTIMIZERS["LogQuantSGD floor"]
    with torch_threads(1):
        fine = bo.train_run(preset, ds, make, 2.0 ** -4, seed=0, epochs=1, evals_per_epoch=20,
                            target=0.5)
        coarse = bo.train_run(preset, ds, make, 2.0 ** -4, seed=0, epochs=1,
                              evals_per_epoch=4, target=0.5)
    assert [at for at, _ in fine["curve"]] == [round((k + 1) / 20, 4) for k in range(20)]
    assert coarse["curve"] == [p for p in fine["curve"] if p[0] in (0.25, 0.5, 0.75, 1.0)]
    assert fine["epochs_to_target"] == bo.epochs_to_target(fine["curve"], 0.5)
    assert fine["epochs_to_target"] is not None   # digits passes 50 % within one epoch
    assert fine["final_val"] == fine["curve"][-1][1]


class torch_threads:
    def __init__(self, n):
        self.n = n

    def __enter__(self):
        import torch
        self.old = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        import torch
        torch.set_num_threads(self.old)


# -- SGD's epochs over an optimizer's, and the goal ----------------------------------------------

def row(exponent, epochs, diverged=0):
    ok = [v for v in epochs if v is not None]
    return {"exponent": exponent, "epochs_to_target": list(epochs), "seeds_reaching": len(ok),
            "mean_epochs": sum(ok) / len(ok) if ok else None, "diverged": diverged,
            "final_val": [0.9] * len(epochs), "best_val": [0.9] * len(epochs)}


def test_ratio_vs_sgd():
    assert bo.ratio_vs_sgd(row(-3, [1.0, 1.5]), row(-3, [3.0, 2.0]), 15) == (2.0, None)
    # SGD misses on one seed: that seed counted at the budget, a lower bound (15 + 3) / 2 / 1
    assert bo.ratio_vs_sgd(row(-3, [1.0, 1.0]), row(-3, [None, 3.0]), 15) == (None, 9.0)
    assert bo.ratio_vs_sgd(row(-3, [None, 1.0]), row(-3, [2.0, 2.0]), 15) == (None, None)
    assert bo.ratio_vs_sgd(row(-3, [1.0, 1.0], diverged=1), row(-3, [2.0, 2.0]), 15) == \
        (None, None)
    assert bo.ratio_text(1.7142857, None) == "1.71x"
    assert bo.ratio_text(None, 9.0) == "> 9.00x"
    assert bo.ratio_text(None, None) == "-"


def results(lq_rows, sgd_rows, lq_best=0, sgd_best=0):
    out = {}
    for name in bo.OPTIMIZERS:
        rows = lq_rows if name == bo.LOGQ else sgd_rows
        best = lq_best if name == bo.LOGQ else sgd_best
        out[name] = {"best": rows[best], "per_lr": rows,
                     "test": [{"seed": 0, "final_float": 0.9, "final_integer": 0.875,
                               "bestval_float": 0.9, "bestval_integer": 0.9}]}
    return out


def test_goal_verdicts_and_same_lr_with_different_grids():
    # per-optimizer windows: LogQ tried 2^-2..2^-4, SGD 2^-3..2^-5; only 2^-3, 2^-4 are shared
    lq = [row(-2, [0.4]), row(-3, [0.5]), row(-4, [0.9])]
    sgd = [row(-3, [1.2]), row(-4, [2.0]), row(-5, [None])]
    g = bo.goal(results(lq, sgd, lq_best=0, sgd_best=0), 4)
    assert g["met"] is True and g["ratio"] == pytest.approx(3.0)
    assert g["same_lr"] == {-3: "2.40x", -4: "2.22x"}
    g = bo.goal(results([row(-3, [1.0])], [row(-3, [1.5])]), 4)
    assert g["met"] is False and g["ratio"] == pytest.approx(1.5)
    # SGD never reaches it within 4 epochs; LogQ at 2.5: ratio > 1.6, undecided
    g = bo.goal(results([row(-3, [2.5])], [row(-3, [None])]), 4)
    assert g["met"] is None and g["ratio_lower_bound"] == pytest.approx(1.6)
    assert "ratio > 1.60x" in g["text"]
    g = bo.goal(results([row(-3, [None])], [row(-3, [1.0])]), 4)
    assert g["met"] is False and "did not reach the target on every seed (0/1)" in g["text"]


def test_window_grids():
    res = {"A": {"best": row(-3, [1.0])}, "B": {"best": row(1, [1.0])}}
    assert bo.window_grids(res, 1) == {"A": [-2, -3, -4], "B": [2, 1, 0]}
    assert bo.window_grids(res, 0) == {"A": [-3], "B": [1]}


def fake_result():
    lq = [row(-2, [0.4]), row(-3, [0.5])]
    sgd = [row(-2, [1.2]), row(-3, [2.0])]
    section = {"label": "Fashion-MNIST", "epochs": 4, "seeds": [0], "target": 0.85,
               "evals": 10, "n_batches": 844, "n_val": 6000, "n_test": 10000,
               "grids": {o: [-2, -3] for o in bo.OPTIMIZERS}, "grid_text": "2^-2, 2^-3",
               "results": results(lq, sgd)}
    section["goal"] = bo.goal(section["results"], 4)
    return {"args": {"preset": "digits-tnn", "out": "build/bench"}, "seconds": 60.0,
            "functions": None, "training": [section]}


def test_docs_markdown_has_every_section_and_the_ratio():
    text = bo.docs_markdown(fake_result())
    header = next(line for line in text.splitlines() if line.startswith("| optimizer"))
    assert "Fashion-MNIST: epochs to 85 %" in header
    assert "Fashion-MNIST: SGD's epochs / its" in header
    lq_line = next(line for line in text.splitlines()
                   if line.startswith(f"| {bo.LOGQ} |"))
    assert lq_line == f"| {bo.LOGQ} | 2^-2 (edge) | 0.40 | 3.00x | 87.50 |"
    assert "**Fashion-MNIST: goal (>= 2x fewer epochs than SGD) met**" in text
    assert "measured 10 times per epoch (every 0.1 epoch" in text


def test_from_json_writes_the_same_tables_again(tmp_path, capsys):
    """``--from-json``: a run's optim.json (JSON turns the exponent keys of ``same_lr`` into
    strings) gives the same docs table as the run itself, with no training."""
    result = fake_result()
    saved = tmp_path / "optim.json"
    saved.write_text(json.dumps(bo.strip(result)))
    page = tmp_path / "results.md"
    page.write_text("# R\n<!-- table:optim -->\nold\n<!-- /table:optim -->\n"
                    "<!-- table:optim-state -->\nold\n<!-- /table:optim-state -->\n")
    assert bo.main(["--from-json", str(saved), "--out", str(tmp_path / "out"),
                    "--docs", str(page)]) == 0
    text = page.read_text()
    assert bo.docs_markdown(result) in text
    assert "| on-chip learner (qnnfab) |" in text   # the optim-state table
    assert (tmp_path / "out" / "optim.md").read_text() == bo.markdown(result)
    assert "SGD's epochs over LogQuantSGD floor's: 2^-2: 3.00x, 2^-3: 4.00x" in text
    capsys.readouterr()


# -- command line ----------------------------------------------------------------------------------

def test_parse_args_defaults_and_mnist_shorthand():
    args = bo.parse_args(["--no-docs"])
    assert args.evals_per_epoch == 20 and args.extra_data is None and args.jobs == 1
    args = bo.parse_args(["--mnist", "/data/mnist", "--mnist-epochs", "3", "--target", "0.9"])
    assert args.extra_data == "mnist:/data/mnist" and args.extra_epochs == 3
    assert args.extra_target == 0.9 and args.extra_evals_per_epoch == 20
    args = bo.parse_args(["--extra-data", "fashion-mnist", "--extra-window", "1",
                          "--extra-target", "0.85", "--extra-evals-per-epoch", "10"])
    assert (args.extra_window, args.extra_target, args.extra_evals_per_epoch) == (1, 0.85, 10)


@pytest.mark.parametrize("argv, message", [
    (["--extra-window", "1"], "--extra-window without --extra-data or --mnist"),
    (["--extra-target", "0.8", "--extra-grid", "-3"],
     "--extra-target, --extra-grid without --extra-data"),
    (["--extra-data", "fashion-mnist", "--extra-grid", "-3", "--extra-window", "1"],
     "not allowed with argument"),
    (["--extra-data", "fashion-mnist", "--mnist", "/x"], "not allowed with argument"),
    (["--extra-data", "fashion-mnist", "--extra-window", "-1"],
     "--extra-window must be at least 0"),
    (["--evals-per-epoch", "0"], "--evals-per-epoch must be at least 1, not 0"),
    (["--jobs", "0"], "--jobs must be at least 1"),
    (["--target", "95"], "--target is a fraction in (0, 1], not 95.0"),
    (["--extra-data", "fashion-mnist", "--extra-target", "0"], "--extra-target is a fraction"),
    (["--extra-data", "fashion-mnist", "--skip-training"], "nothing would train there"),
])
def test_parse_args_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        bo.parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
