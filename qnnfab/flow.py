"""The end-to-end flow: train → IR → simulate against the golden → bitstream + report.json.

Thin glue over ``qnnfab.model``, ``qnnfab.sim`` and ``qnnfab.boards``; the CLI calls these.
"""

import os
import sys
import time
from contextlib import contextmanager

import numpy as np

from . import ir

__all__ = ["simulate_and_compare", "build_board", "preset_network", "run_flow", "step",
           "folding_text", "folding_source", "write_sq_plot", "checkpoint_path",
           "cluster_kernels", "test_accuracy", "learn_on_device", "flow_precheck",
           "styles_text"]


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def folding_text(folding):
    """``[(8, 16), LayerFolding(2, 64)]`` → ``"8:16,2:64"`` (what ``--folding`` takes)."""
    parts = []
    for f in folding:
        pe, simd = (f.pe, f.simd) if hasattr(f, "pe") else f
        parts.append(f"{int(pe)}:{int(simd)}")
    return ",".join(parts)


def folding_source(network, folding, *, given=False, board=None):
    """``(folding used, source)`` for a command's folding: ``folding`` (None: the automatic one
    that :class:`qnnfab.rtl.network.Network` picks); source ``"given (--folding)"``,
    ``"board NAME default"`` or ``"automatic"``."""
    if folding is None:
        from qnnfab.rtl.folding import auto_folding
        return auto_folding(network), "automatic"
    if given:
        return folding, "given (--folding)"
    if not board:
        return folding, "given"
    from qnnfab.boards.registry import get_board
    return folding, f"board {board} default (max_lanes={get_board(board).max_lanes})"


@contextmanager
def step(title):
    """Print ``title``, then how long the step took."""
    _log(f"==> {title}")
    start = time.monotonic()
    yield
    _log(f"    done in {time.monotonic() - start:.1f} s")


def _bar(total, desc, enabled):
    """A progress reporter (:mod:`qnnfab.progress`) as a ``progress(done, total)`` callable, or
    None when disabled."""
    if not enabled:
        return None, (lambda: None)
    from .progress import progress_bar
    bar = progress_bar(total, desc, unit="vec")
    return bar.set, bar.close


def simulate_and_compare(network, *, simulator="amaranth", vectors=None, folding=None, seed=0,
                         progress=True, codes=None, gate_level=None, style="folded",
                         weights_in="ebr", input_buffer=False):
    """Simulate ``network`` on its test vectors and compare with the golden model.

    ``style``: the layers' styles (``"folded"``, ``"unrolled"`` or one per layer,
    :func:`qnnfab.rtl.network.resolve_styles`); ``weights_in``: where they keep their weights
    (``"ebr"``, ``"spram"`` or one per layer; SPRAM models start loaded); ``input_buffer``:
    the input vector in block RAM (Amaranth's simulator and Verilator's bulk harness,
    :func:`qnnfab.sim.runner.simulate`).

    ``gate_level``: None, or an FPGA family (``"ice40"``, ``"ecp5"``) to simulate the
    synthesized netlist instead of the RTL (:func:`qnnfab.boards.gate_level.simulate_gate_level`;
    ``simulator`` must then be ``"verilator"`` or ``"icarus"``); with ``progress`` the
    synthesis and compile steps are logged.

    Returns the :class:`qnnfab.sim.runner.Comparison` (``summary()`` → "N/N vectors bit-exact").
    """
    from qnnfab.sim.runner import compare, simulate
    from qnnfab.model.vectors import test_vectors
    if codes is None:
        codes = test_vectors(network, vectors, seed=seed).codes
    desc = simulator if gate_level is None else f"{simulator} {gate_level} netlist"
    callback, close = _bar(len(codes), desc, progress)
    try:
        if gate_level is None:
            result = simulate(network, codes, simulator=simulator, folding=folding,
                              progress=callback, style=style, weights_in=weights_in,
                              input_buffer=input_buffer)
        else:
            from qnnfab.boards.gate_level import simulate_gate_level
            result = simulate_gate_level(network, codes, gate_level, simulator=simulator,
                                         folding=folding, progress=callback,
                                         log=_log if progress else None, style=style)
    finally:
        close()
    comparison = compare(network, codes, result)
    comparison.result = result
    return comparison


def build_board(network, board, out_dir, *, folding=None, clock_mhz=None, seed=0, progress=True,
                extra=None, learn=False, baud=None, folding_source=None, selftest=0,
                style="folded", weights_in="ebr", input_buffer="auto"):
    """Build the bitstream for ``board`` into ``out_dir``; returns the report dict.

    ``folding`` None: the board's (:func:`qnnfab.boards.registry.board_folding`); ``clock_mhz``
    None: the board's ``design_clock_mhz``; ``baud`` None: the board's UART rate;
    ``folding_source``: what the report says the folding came from; ``style``: the layers'
    styles (``"folded"``, ``"unrolled"``, ``"auto"`` or one per layer,
    :func:`qnnfab.boards.build.build`); ``weights_in``: ``"ebr"``, ``"spram"``, ``"auto"`` or
    one per layer (:func:`qnnfab.boards.registry.board_weights`); ``input_buffer``: ``"ff"``,
    ``"ebr"`` or ``"auto"`` (:func:`qnnfab.boards.registry.input_buffer_for`). A build whose
    timing is
    not met has ``timing_met: false`` and a ``timing_warning`` line in the report (the CLI
    prints it)."""
    from qnnfab.boards.build import build
    from qnnfab.boards.registry import get_board
    board_obj = get_board(board)

    def on_step(name):
        if progress:
            _log(f"    {name} ...")
    return build(network, board_obj, out_dir, folding=folding, clock_mhz=clock_mhz, seed=seed,
                 progress=on_step, extra=extra or {}, learn=learn, baud=baud,
                 folding_source=folding_source, selftest=selftest, style=style,
                 weights_in=weights_in, input_buffer=input_buffer)


def styles_text(styles):
    """``["folded", "unrolled"]`` → ``"folded,unrolled"`` (what ``--style`` takes)."""
    return ",".join(styles)


def preset_network(preset, *, seed=0, epochs=None, progress=False):
    """The buildable network of ``preset``: trained from ``seed`` (``epochs`` overrides the
    preset's), and for a preset with float weights (``digits-mlp``) quantized to 3-bit
    per-layer codebooks by the genetic algorithm, as the README's ``qnnfab quantize`` example
    does. Returns the :class:`~qnnfab.ir.Network`."""
    from qnnfab.model.train import train
    result = train(preset, seed=seed, epochs=epochs, progress=progress)
    if result.integer_accuracy is not None:
        return result.network
    from qnnfab.model.ptq import quantize
    return quantize(result.network, "ga", 3, seed=seed, progress=progress).network


def checkpoint_path(qnn_path):
    """Where ``qnnfab train`` keeps the float model of ``FILE.qnn``: ``FILE.pt`` beside it."""
    root, ext = os.path.splitext(os.fspath(qnn_path))
    return (root if ext == ".qnn" else os.fspath(qnn_path)) + ".pt"


def test_accuracy(network):
    """The integer (golden) accuracy on the held-out test split of the network's data set, or
    None for a network without one."""
    from qnnfab.spec import golden
    from qnnfab.model.vectors import test_vectors
    vecs = test_vectors(network)
    if vecs.labels is None:
        return None
    return float(np.mean(golden.classify(network, vecs.codes) == vecs.labels))


def cluster_kernels(path, kernels, *, sign=True, per_layer=True, finetune=None, seed=0,
                    progress=True):
    """Cluster the conv kernels of the network in ``path`` (``qnnfab cluster``; ``sign`` and
    ``per_layer`` as :func:`qnnfab.model.kernel_clustering.cluster_network`, on by default).

    ``finetune``: epochs of fine-tuning the representatives (and everything else) after the
    assignment, from the float model ``qnnfab train`` saved beside the file
    (:func:`checkpoint_path`); None: 10 epochs when that file exists, else none. Returns
    ``(network, info)``; ``info`` holds the clustering ``stats``, ``test_before`` /
    ``test_after`` (integer test accuracy of the input and of the result), ``finetune``
    (epochs run) and ``checkpoint`` (the file used, or None)."""
    from qnnfab.model.kernel_clustering import cluster_network
    network = ir.load(path)
    network.require_integer("kernel clustering")
    if not any(isinstance(layer, ir.ConvLayer) for layer in network.layers):
        raise ValueError(f"{path}: has no conv layers to cluster ({network.summary()})")
    ckpt = checkpoint_path(path)
    if finetune is None:
        finetune = 10 if os.path.exists(ckpt) else 0
        if not finetune and progress:
            _log(f"note: no {ckpt} beside {path}: clustering without fine-tuning "
                 f"(`qnnfab train` writes it)")
    elif finetune < 0:
        raise ValueError(f"--finetune: expected epochs >= 0, got {finetune}")
    elif finetune and not os.path.exists(ckpt):
        raise ValueError(f"--finetune {finetune} needs the float model {ckpt} that `qnnfab "
                         f"train` writes beside {path}; pass --finetune 0 to cluster without")
    before = test_accuracy(network)
    clustered, stats = cluster_network(network, kernels, per_layer=per_layer, sign=sign,
                                       seed=seed)
    info = {"stats": stats, "test_before": before, "finetune": int(finetune),
            "checkpoint": ckpt if finetune else None}
    if finetune:
        from qnnfab.model.kernel_finetune import finetune_clustered
        info["test_clustered"] = test_accuracy(clustered)
        clustered, ft = finetune_clustered(ckpt, clustered, epochs=finetune,
                                           progress=progress)
        clustered.meta["clustering"] = stats
    info["test_after"] = test_accuracy(clustered)
    return clustered, info


def learn_on_device(path, *, samples=1000, simulator="amaranth", seed=0, plot=None,
                    points=20, progress=True):
    """``qnnfab learn``: the network's last layer learns on the device model from a random
    start while ``samples`` labelled training images (the training split, reshuffled each
    pass) stream in; the hardware (frozen layers + :class:`~qnnfab.rtl.learner.OnlineLearner`)
    runs in ``simulator`` and every update step is compared with the integer rule
    (:mod:`qnnfab.spec.learn_rule`), weights after every step.

    Returns a dict: ``comparison`` (:class:`~qnnfab.sim.learn_sim.LearnComparison`),
    ``accuracy_before`` / ``accuracy_after`` (test split, the hardware's weights),
    ``curve`` (samples seen, test accuracy of the integer rule and of the float rule),
    ``run`` (the :class:`~qnnfab.sim.learn_sim.LearnRun`), ``rule``, ``plot`` (path or None).
    """
    from qnnfab.spec import learn_rule as lr
    from qnnfab.model.data import load_dataset
    from qnnfab.sim.learn_sim import compare_learning, learner_features, run_learning

    if simulator != "amaranth":  # a missing simulator fails before anything slow
        from qnnfab.sim.runner import tool_version
        tool_version(simulator)
    network = ir.load(path)
    network.require_integer("on-chip learning")
    if plot:
        from .plot import check_plot_path
        check_plot_path(plot)
    data = network.meta.get("data") if isinstance(network.meta, dict) else None
    if not data:
        raise ValueError(f"{path}: no data set recorded in the network (meta['data']): "
                         f"learning needs labelled samples; train it with `qnnfab train`")
    if samples < 1:
        raise ValueError(f"--samples: expected >= 1, got {samples}")
    ds = load_dataset(data["name"], seed=data.get("split_seed", 0))
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(ds.x_train))
                            for _ in range(-(-samples // len(ds.x_train)))])[:samples]
    codes = np.asarray(ds.x_train, dtype=np.int64)[order]
    labels = np.asarray(ds.y_train, dtype=np.int64)[order]
    last = network.layers[-1]
    rule = lr.DEFAULT_RULE
    init = lr.init_state(rng, last.out_features, last.in_features, rule)
    feats = learner_features(network, codes)
    test = learner_features(network, np.asarray(ds.x_test, dtype=np.int64))
    y_test = np.asarray(ds.y_test)

    with step(f"integer and float rule over {samples} samples"):
        golden_run = lr.learn(rule, init, feats, labels, last.in_bits, keep_weights=True)
        float_run = lr.learn(rule, init, feats, labels, last.in_bits, keep_weights=True,
                             use_float=True)
    # Marks spaced evenly on the plot's log axis: the first samples change the most.
    marks = sorted({0, *np.unique(np.geomspace(1, samples, points).astype(int)).tolist(),
                    samples})

    def acc(weights):
        return lr.accuracy(lr.LearnState(weights, weights), test, y_test, last.in_bits)
    curve = {"samples": marks,
             "integer": [acc(init.weights if k == 0 else golden_run.weights[k - 1])
                         for k in marks],
             "float": [acc(init.weights if k == 0 else float_run.weights[k - 1])
                       for k in marks]}
    bar, close = _bar(samples, f"learn ({simulator})", progress)
    with step(f"hardware learning in {simulator} ({samples} update steps)"):
        try:
            run = run_learning(network, rule, init, codes, labels, simulator=simulator,
                               progress=bar, log=_log if progress else None)
        finally:
            close()
    comparison = compare_learning(rule, network, init, codes, labels, run)
    written = None
    if plot:
        from .plot import write_line_plot
        written = write_line_plot(
            plot, {"hardware rule (integer, shifts)": (marks, curve["integer"]),
                   "float rule": (marks, curve["float"])},
            title=f"On-chip learning of the last layer: test accuracy ({data['name']})",
            xlabel="labelled samples", ylabel="accuracy", xscale="log")
    return {"comparison": comparison, "accuracy_before": acc(init.weights),
            "accuracy_after": acc(run.weights[-1]), "curve": curve, "run": run, "rule": rule,
            "plot": written}


def write_sq_plot(network, path):
    """Write the Smart Quantization depth plot of a trained network (if it ran) to ``path``;
    returns the path or None."""
    from qnnfab import ir
    from qnnfab.model.sq import depth_plot_svg
    sq = network.meta.get("sq")
    if not sq or not any(sq.get("adaptive", ())):
        return None
    names = [f"{layer.name} {layer.in_features}x{layer.out_features}" for layer in network.layers]
    ir.atomic_write_bytes(path, depth_plot_svg(sq["history"], names=names).encode())
    return path


def flow_precheck(network, board, folding, n_vectors, *, n_verilator=0, log=None, styles=None,
                  weights_in=None, input_buffer=False):
    """The flow's checks between training and the long steps: the network fits ``board`` at
    ``folding`` and ``styles`` (:func:`qnnfab.boards.build.check_fit`, FitError otherwise), and
    ``log`` is told what the simulations will cost (vectors and simulator)."""
    from qnnfab.boards.build import check_fit
    check_fit(network, board, folding, styles=styles, weights_in=weights_in,
              input_buffer=input_buffer)
    if log is not None:
        log(f"    fits {board} at this folding; the check simulates {n_vectors} vectors in "
            f"Amaranth's simulator" + (f" and {n_verilator} in Verilator" if n_verilator else "")
            + ("" if n_vectors <= 1000 else
               " (a large split: this can take hours; `--vectors N` checks fewer)"))


def run_flow(*, board="icebreaker", preset="digits-bnn", data=None, out_dir="build/flow", seed=0,
             vectors=None, verilator_vectors=64, folding=None, clock_mhz=None, epochs=None,
             progress=True, pnr_seed=None, target_ips=None, target_cycles=None, style="folded",
             weights_in="ebr", input_buffer="auto"):
    """Train ``preset``, check the hardware bit-exact in Amaranth's simulator and Verilator, build
    the bitstream for ``board``; returns the report (also in ``out_dir/report.json``).

    ``folding`` None: the board's (:func:`qnnfab.boards.registry.board_folding`), the same one
    for both simulations and the build; ``clock_mhz`` None: the board's design clock;
    ``pnr_seed`` None: ``seed`` (the nextpnr placement seed; ``seed`` trains); ``target_ips`` /
    ``target_cycles``: instead of ``folding``, the cheapest folding that meets the target
    (:func:`qnnfab.boards.registry.target_folding`); ``style``: the layers' styles
    (``"folded"``, ``"unrolled"``, ``"auto"`` or one per layer,
    :func:`qnnfab.boards.registry.board_styles`), the same for both simulations and the build;
    ``weights_in``: where the layers keep their weights (``"ebr"``, ``"spram"``, ``"auto"`` or
    one per layer, :func:`qnnfab.boards.registry.board_weights`; the SPRAM layers' folding
    follows their ports unless ``folding`` is given); ``input_buffer``: where the top keeps
    the input vector (``"ff"``, ``"ebr"``, ``"auto"``,
    :func:`qnnfab.boards.registry.input_buffer_for`; with it in block RAM both simulations
    run the buffered hardware, Amaranth's fed code by code as the board does).

    Before training: the board, its tools, Verilator (if used) and ``out_dir`` are checked;
    after training and before simulating: the fit (:func:`flow_precheck`)."""
    from qnnfab.boards.registry import board_folding, board_styles, get_board
    from qnnfab.model.train import train
    from qnnfab.model.vectors import test_vectors
    from qnnfab.boards.build import toolchain_env
    # Fail on an unknown board or a missing tool before the long steps.
    toolchain_env(get_board(board).family)
    if verilator_vectors:
        from qnnfab.sim.runner import tool_version
        tool_version("verilator")
    os.makedirs(out_dir, exist_ok=True)
    if not os.access(out_dir, os.W_OK):
        raise OSError(f"{out_dir}: output folder is not writable")
    stale = os.path.join(out_dir, "report.json")  # the mark of a complete run: not until the end
    if os.path.exists(stale):
        os.unlink(stale)
    started = time.monotonic()

    from qnnfab.model.presets import get_preset
    preset_name = get_preset(preset).name
    with step(f"[1/4] training preset {preset_name} (seed {seed})"):
        trained = train(preset, seed=seed, progress=progress, epochs=epochs, data=data)
        network = trained.network
        if trained.integer_accuracy is None:
            # Float weights (digits-mlp, --weights float): 3-bit per-layer codebooks by the
            # genetic algorithm, as preset_network and the README's `qnnfab quantize` do.
            from qnnfab.model.ptq import quantize
            _log(f"    float accuracy {trained.float_accuracy:.2%}; quantizing to 3-bit "
                 f"codebooks (genetic algorithm)")
            network = quantize(network, "ga", 3, seed=seed, progress=progress).network
            integer_accuracy, agreement = test_accuracy(network), None
        else:
            integer_accuracy, agreement = trained.integer_accuracy, trained.agreement
        model_path = os.path.join(out_dir, "network.qnn")
        ir.save(network, model_path)
        _log(f"    {network.summary()}")
        plot = write_sq_plot(network, os.path.join(out_dir, "network.sq.svg"))
        if plot:
            _log(f"    Smart Quantization chose {', '.join(network.meta['sq']['depth'])} -> {plot}")
        agreed = "" if agreement is None else f", agreement {agreement:.2%}"
        integer = "" if integer_accuracy is None else f", integer accuracy {integer_accuracy:.2%}"
        _log(f"    float accuracy {trained.float_accuracy:.2%}{integer}{agreed} -> {model_path}")

    source = "given (--folding)"
    if folding is None and (target_ips is not None or target_cycles is not None):
        from qnnfab.boards.registry import target_folding
        folding, source = target_folding(network, board, target_ips=target_ips,
                                         target_cycles=target_cycles, clock_mhz=clock_mhz)
    elif folding is None:
        folding, source = folding_source(network, board_folding(network, board),
                                         board=board)
    _log(f"    folding (PE:SIMD per layer): {folding_text(folding)} ({source})")
    styles = board_styles(network, board, style, folding)
    if "unrolled" in styles:
        given = style if isinstance(style, str) else styles_text(style)
        _log(f"    style (per layer): {styles_text(styles)} (--style {given})")
    stores = ["ebr"] * len(network.layers)
    if not (isinstance(weights_in, str) and weights_in == "ebr"):
        from qnnfab.boards.registry import board_weights
        folding, stores, note = board_weights(network, board, weights_in,
                                              folding if source.startswith("given") else None,
                                              styles=styles)
        if note:
            _log(f"    {note}; folding {folding_text(folding)}")
            if not source.startswith("given"):
                source = f"{source}; SPRAM layers at their ports' width (--weights-in)"
    from qnnfab.boards.registry import input_buffer_for
    buffered = input_buffer_for(network, board, input_buffer, folding, styles)
    if buffered:
        _log("    input vector in block RAM (--input-buffer "
             f"{input_buffer}): the codes go in one by one")
    vecs = test_vectors(network, vectors)
    flow_precheck(network, board, folding, len(vecs.codes),
                  n_verilator=min(verilator_vectors, len(vecs.codes)), log=_log, styles=styles,
                  weights_in=stores, input_buffer=buffered)
    with step(f"[2/4] Amaranth simulation, {len(vecs.codes)} vectors ({vecs.source})"):
        amaranth = simulate_and_compare(network, simulator="amaranth", codes=vecs.codes,
                                        folding=folding, progress=progress, style=styles,
                                        weights_in=stores, input_buffer=buffered)
        _log(f"    {amaranth.summary()}")
    hw_classes = amaranth.result.classes
    hardware_accuracy = (float(np.mean(hw_classes == vecs.labels))
                         if vecs.labels is not None else None)

    n_ver = min(verilator_vectors, len(vecs.codes))
    comparisons = [amaranth]
    if n_ver:
        with step(f"[3/4] Verilator simulation (cocotb), {n_ver} vectors"):
            verilator = simulate_and_compare(network, simulator="verilator",
                                             codes=vecs.codes[:n_ver], folding=folding,
                                             progress=progress, style=styles,
                                             weights_in=stores, input_buffer=buffered)
            _log(f"    {verilator.summary()}")
        comparisons.append(verilator)
    else:
        _log("[3/4] Verilator simulation skipped (--verilator-vectors 0)")
    for comp in comparisons:
        if comp.mismatches:
            _log(comp.report())

    extra = {
        "accuracy": {"float": trained.float_accuracy, "integer": integer_accuracy,
                     "hardware": hardware_accuracy, "agreement": agreement,
                     "test_vectors": int(len(vecs.codes))},
        "vectors": {"checked": sum(c.checked for c in comparisons),
                    "bit_exact": sum(c.bit_exact for c in comparisons),
                    "simulator": " + ".join(f"{c.simulator} ({c.checked})"
                                            for c in comparisons)},
        "network": {"file": "network.qnn", "summary": network.summary(), "macs": network.macs,
                    "weight_bits": network.weight_bits, "preset": preset_name},
    }
    with step(f"[4/4] bitstream for {board} (Yosys + nextpnr via YoWASP)"):
        report = build_board(network, board, out_dir, folding=folding, clock_mhz=clock_mhz,
                             seed=seed if pnr_seed is None else pnr_seed,
                             progress=progress, extra=extra,
                             folding_source=None if source.startswith("given")
                             or (source.startswith("board") and "SPRAM" not in source)
                             else source, style=style,
                             weights_in=stores if "spram" in stores else "ebr",
                             input_buffer="ebr" if buffered else "ff")
    _log(f"flow finished in {time.monotonic() - started:.0f} s")
    return report
