"""Fashion-MNIST (28×28×1, 784 8-bit inputs) in hardware: qnnfab's own networks, the same MLP
shapes trained in Brevitas and imported from QONNX, and hls4ml as a peer.

    python benchmarks/bench_fmnist.py [--seeds 0 1 2] [--models ...] [--hw-vectors 1000]
                                      [--build] [--boards ulx3s-85f ulx3s-25f icebreaker]
                                      [--build-models ...] [--clock BOARD=MHZ ...]
                                      [--reuse] [--brevitas-seeds 0]
                                      [--out build/bench-fmnist]

Data: ``--data fashion-mnist`` (Debian's ``dataset-fashion-mnist``; ``--data mnist:DIR`` for
the IDX files elsewhere). Every accuracy is on the whole test split (10,000 images); with
several seeds a cell is ``mean (min..max)``. ``--brevitas-seeds`` (default: ``--seeds``) trains
the Brevitas networks (and runs hls4ml) on fewer seeds; the table's heading says so.

Rows:

* **qnnfab** (``qnnfab.model.train``): binary MLP, ternary MLP, SQ (adaptive binary/ternary)
  MLP (784→256→256→10) and a ternary CNN (``c16,p2,c32,p2,d10``): float and integer (golden)
  accuracy, stored weight bits, and the hardware at the ULX3S-85F's folding
  (:func:`qnnfab.boards.registry.board_folding`) in Verilator on the first ``--hw-vectors``
  test images, compared output by output with the golden model (``N/N`` bit-exact; the
  hardware's accuracy on those images; simulated cycles per inference). ``--build``: a real
  bitstream for each board of ``--boards`` (ULX3S-85F ~15-25 min per network): LUT, EBR, fmax,
  cycles and inferences per second from ``report.json`` (a network the fit check refuses is
  reported as such; ``--build-models``: only these networks). On a board with SPRAM
  (``--boards icebreaker``) the layers block RAM cannot hold go there (``--weights-in auto``),
  and there an MLP's 784-code input vector is kept in block RAM (``--input-buffer auto``).
* **Brevitas → QONNX → qnnfab**: the binary and ternary MLP shapes as Brevitas models
  (8-bit input quantizer of scale 1/255, so the input codes are the pixels), trained here with
  Adam, exported with ``brevitas.export.export_qonnx`` (``dynamo=False``), imported with
  :func:`qnnfab.model.qonnx_import.import_qonnx`: Brevitas float accuracy, qonnx-executor
  accuracy, qnnfab integer accuracy, class agreement with the executor on the whole test split
  (:func:`qnnfab.model.qonnx_check.check_against_qonnx`), and the same Verilator check.
* **hls4ml** (peer): ``hls4ml.converters.convert_from_onnx_model`` of the same QONNX files,
  compiled to its bit-accurate C++ emulation (g++), run on the test split: accuracy and class
  agreement with the qonnx executor. If hls4ml is not installed or fails, one row says so.

``--reuse`` keeps the rows of an earlier run into the same ``--out`` (``OUT/fmnist.json``, same
data set; rows and builds that failed, a missed timing included, are redone) and computes only
what they lack: a kept network (qnnfab's or an imported one) is loaded from
``OUT/<network>-seed<seed>.qnn`` for a missing Verilator check (or one at a folding other than
the board's today) or build, so the builds can follow the accuracy run without training again::

    python benchmarks/bench_fmnist.py --out DIR                   # accuracy, Verilator
    python benchmarks/bench_fmnist.py --out DIR --reuse --build --boards ulx3s-85f \
        --build-models "binary MLP" "ternary CNN"                 # adds the builds

Prints one Markdown table (progress on stderr) and writes ``OUT/fmnist.md`` and
``OUT/fmnist.json`` atomically, and at the end the ``fmnist`` table of ``docs/results.md``
(``--docs PAGE``; ``--no-docs``: not). Exits 1 if a hardware comparison was not bit-exact, an import
disagreed with qonnx, or a build failed (the table is written anyway). ``make bench-fmnist``.
"""

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
import traceback
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from doc_tables import add_docs_arguments, check_docs_page, docs_page  # noqa: E402

from qnnfab import ir  # noqa: E402
from qnnfab.spec import golden  # noqa: E402

#: The tables of docs/results.md this benchmark writes.
DOC_TABLES = ("fmnist",)
BOARD = "ulx3s-85f"
ARCH_MLP = "d256,d256,d10"
ARCH_CNN = "c16,p2,c32,p2,d10"

#: qnnfab's own networks: name -> (base preset whose optimizer settings are kept, arch,
#: weights, act bits, default epochs).
QNNFAB_MODELS = {
    "binary MLP": ("digits-bnn", ARCH_MLP, "binary", 1, 5),
    "ternary MLP": ("digits-tnn", ARCH_MLP, "ternary", 2, 5),
    "SQ MLP": ("digits-sq", ARCH_MLP, "adaptive", 2, 5),
    "ternary CNN": ("digits-cnn", ARCH_CNN, "ternary", 2, 8),
}

#: Brevitas networks: name -> (weights, act bits, default epochs).
BREVITAS_MODELS = {
    "Brevitas binary MLP": ("binary", 1, 10),
    "Brevitas ternary MLP": ("ternary", 2, 10),
}

ALL_MODELS = [*QNNFAB_MODELS, *BREVITAS_MODELS, "hls4ml"]

COLUMNS = ("network", "trained in", "arch", "weight bits", "float %", "qonnx %", "integer %",
           "agreement", "hardware (Verilator)", "hw %", "cycles/inf (sim)", "build")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def step(what):
    log(f"{what} ...")
    start = time.monotonic()
    yield
    log(f"    done in {time.monotonic() - start:.1f} s")


# -- cells --------------------------------------------------------------------------------------

def spread(values, scale=100.0, digits=2):
    """``88.12`` for one value, ``88.12 (87.90..88.31)`` for several; ``""`` for none."""
    values = [v for v in values if v is not None]
    if not values:
        return ""
    v = np.asarray(values, dtype=np.float64) * scale
    text = f"{v.mean():.{digits}f}"
    if len(v) > 1:
        text += f" ({v.min():.{digits}f}..{v.max():.{digits}f})"
    return text


def counts(pairs):
    """``1000/1000`` (summed over seeds)."""
    pairs = [p for p in pairs if p is not None]
    if not pairs:
        return ""
    return f"{sum(a for a, _ in pairs)}/{sum(b for _, b in pairs)}"


# -- hardware -------------------------------------------------------------------------------------

def verilator_check(network, codes, labels):
    """The network at the ULX3S-85F folding in Verilator on ``codes``: dict with ``bit_exact``,
    ``checked``, ``hw_accuracy``, ``cycles_per_inference`` (simulated cycles / inputs),
    ``folding``."""
    from qnnfab.boards.registry import board_folding
    from qnnfab.flow import folding_text
    from qnnfab.sim.runner import compare, simulate
    folding = board_folding(network, BOARD)
    result = simulate(network, codes, simulator="verilator", folding=folding)
    comparison = compare(network, codes, result)
    return {"bit_exact": comparison.bit_exact, "checked": comparison.checked,
            "hw_accuracy": float(np.mean(result.classes == labels)),
            "cycles_per_inference": result.cycles / len(codes),
            "compile_s": round(result.compile_seconds, 1), "sim_s": round(result.seconds, 1),
            "folding": folding_text(folding)}


def finished_build(network, board, bdir, clock_mhz):
    """The ``report.json`` in ``bdir`` if it is a build of this very network (its IR hash) for
    ``board`` at ``clock_mhz`` (None: the board's default) with timing met, else None: what
    ``--reuse`` takes instead of building again (e.g. a build run with ``qnnfab build`` into
    ``OUT/builds/<network>/<board>`` beside the benchmark)."""
    import hashlib

    from qnnfab.boards.registry import get_board
    path = os.path.join(bdir, "report.json")
    try:
        with open(path) as f:
            report = json.load(f)
    except (OSError, ValueError):
        return None
    inputs = report.get("inputs") or {}
    requested = (inputs.get("options") or {}).get("clock_mhz")
    want = get_board(board).design_clock_mhz if clock_mhz is None else clock_mhz
    if (inputs.get("ir_sha256") != hashlib.sha256(ir.to_bytes(network)).hexdigest()
            or report.get("board") != board or not report.get("timing_met")
            or requested is None or abs(float(requested) - float(want)) > 1e-6):
        return None
    return report


def build_rows(network, boards, out_dir, clocks=None, reuse=False):
    """``{board: {...}}`` of real builds (``report.json``'s numbers, or why there is none);
    ``clocks``: ``{board: MHz}`` design clocks other than the board's default; ``reuse``:
    take a finished build of the same network and clock (:func:`finished_build`)."""
    from qnnfab.boards.build import FitError, build
    from qnnfab.boards.registry import get_board
    from qnnfab.boards.report import build_problems
    from qnnfab.boards.toolchain import ToolError
    out = {}
    for board in boards:
        bdir = os.path.join(out_dir, board)
        start = time.monotonic()
        clock = (clocks or {}).get(board)
        report = finished_build(network, board, bdir, clock) if reuse else None
        if report is not None:
            log(f"    {board}: the finished build in {bdir}")
        else:
            try:
                with step(f"    building for {board}"):
                    # A board with SPRAM (the iCEBreaker's UP5K) puts the layers that block
                    # RAM cannot hold there (``--weights-in auto``); elsewhere nothing changes.
                    report = build(network, board, bdir, clock_mhz=clock,
                                   weights_in="auto" if get_board(board).spram_blocks else "ebr",
                                   progress=lambda name: log(f"      {name}"))
            except FitError as exc:
                out[board] = {"status": "does not fit", "detail": str(exc)}
                continue
            except ToolError as exc:
                out[board] = {"status": "FAILED", "detail": str(exc).splitlines()[0],
                              "build_s": round(time.monotonic() - start)}
                continue
        problems = build_problems(report, bdir)
        res = report["resources"]
        out[board] = {"status": "ok" if not problems else "FAILED: " + "; ".join(problems),
                      "lut": f"{res['lut']['used']}/{res['lut']['total']}",
                      "ebr": f"{res['bram']['used']}/{res['bram']['total']}",
                      "spram": (f"{res['spram']['used']}/{res['spram']['total']}"
                                if res.get("spram", {}).get("used") else None),
                      "fmax_mhz": round(report["fmax_mhz"], 1) if report["fmax_mhz"] else None,
                      "clock_mhz": report["clock_mhz"],
                      "cycles": report["cycles_per_inference"],
                      "inf_per_s": round(report["inferences_per_s"]),
                      "build_s": round(report["build_seconds"]["total"])}
    return out


def build_text(builds):
    """One cell for the builds of one network (seed 0)."""
    parts = []
    for board, b in builds.items():
        if b["status"] != "ok":
            parts.append(f"{board}: {b['status']}")
        else:
            parts.append(f"{board}: LUT {b['lut']}, EBR {b['ebr']}"
                         + (f", SPRAM {b['spram']}" if b.get("spram") else "")
                         + f", {b['fmax_mhz']} MHz fmax "
                         f"({b['clock_mhz']} MHz clock), {b['cycles']} cycles, "
                         f"{b['inf_per_s']:,} inf/s")
    return "; ".join(parts)


# -- qnnfab's own networks ------------------------------------------------------------------------

def network_path(args, name, seed, ext=".qnn"):
    return os.path.join(args.out, f"{name.replace(' ', '-')}-seed{seed}{ext}")


def hw_check_current(row, args, network):
    """Whether ``row``'s kept Verilator check is what this run asks for: as many images, at the
    folding the board gets today (a check at an older default folding is redone)."""
    from qnnfab.boards.registry import board_folding
    from qnnfab.flow import folding_text
    hw = row.get("hw") or {}
    return (hw.get("checked") == args.hw_vectors
            and hw.get("folding") == folding_text(board_folding(network, BOARD)))


def wants_hw(args, name):
    """Whether this run checks network ``name`` in Verilator: ``--hw-vectors``, and
    ``--hw-models`` for qnnfab's networks, ``--no-hw-imported`` for the imported ones."""
    if not args.hw_vectors:
        return False
    if name in BREVITAS_MODELS:
        return args.hw_imported
    return args.hw_models is None or name in args.hw_models


def add_hw_check(row, network, args, ds):
    """``row["hw"]``: ``network`` in Verilator on the first ``--hw-vectors`` test images."""
    name, seed, n = row["network"], row["seed"], args.hw_vectors
    with step(f"[{name}, seed {seed}] Verilator on {n} test images"):
        row["hw"] = verilator_check(network, ds.x_test[:n], ds.y_test[:n])
    log(f"    {row['hw']['bit_exact']}/{row['hw']['checked']} bit-exact")


def complete_kept(row, args, ds):
    """A kept row (``--reuse``) with what this run asks for and the row lacks: the Verilator
    check (or one at an older folding) and, for qnnfab's networks, the builds; the network
    is loaded from ``OUT/<network>-seed<seed>.qnn`` only when something is to be done."""
    name, seed = row["network"], row["seed"]
    # A board without a build, or whose build failed (timing included), is built again.
    missing = [b for b in args.boards
               if row.get("builds", {}).get(b, {}).get("status") not in ("ok", "does not fit")]
    want_build = name in QNNFAB_MODELS and args.build and seed == args.seeds[0] and missing \
        and (args.build_models is None or name in args.build_models)
    net = ir.load(network_path(args, name, seed)) if wants_hw(args, name) or want_build \
        else None
    want_hw = wants_hw(args, name) and not hw_check_current(row, args, net)
    if not (want_hw or want_build):
        log(f"[{name}, seed {seed}] kept from {args.out}/fmnist.json")
        return row
    if want_hw:
        add_hw_check(row, net, args, ds)
    if want_build:
        row["builds"] = {**row.get("builds", {}), **build_rows(
            net, missing, os.path.join(args.out, "builds", name.replace(" ", "-")), args.clock,
            reuse=True)}
    return row


def run_qnnfab(name, seed, args, ds):
    from qnnfab.model.presets import customize
    from qnnfab.model.train import train
    base, arch, weights, act_bits, epochs = QNNFAB_MODELS[name]
    preset = customize(base, arch=arch, weights=weights, act_bits=str(act_bits))
    epochs = args.epochs_cnn if arch == ARCH_CNN and args.epochs_cnn else \
        args.epochs_mlp if arch != ARCH_CNN and args.epochs_mlp else epochs
    with step(f"[{name}, seed {seed}] training {preset.name}, {epochs} epochs"):
        result = train(preset, seed=seed, epochs=epochs, data=args.data, progress=False)
    net = result.network
    ir.save(net, network_path(args, name, seed))
    row = {"network": name, "trained in": "qnnfab", "arch": arch, "seed": seed,
           "weights": [layer.weight_kind for layer in net.layers
                       if getattr(layer, "weight_kind", None)],
           "weight_bits": int(net.weight_bits), "float": result.float_accuracy,
           "integer": result.integer_accuracy, "train_s": round(result.seconds, 1),
           "epochs": epochs}
    log(f"    float {result.float_accuracy:.4f}, integer {result.integer_accuracy:.4f}, "
        f"{net.weight_bits} weight bits, {net.summary()}")
    if wants_hw(args, name):
        add_hw_check(row, net, args, ds)
    if args.build and seed == args.seeds[0] and (args.build_models is None
                                                 or name in args.build_models):
        row["builds"] = build_rows(net, args.boards,
                                   os.path.join(args.out, "builds", name.replace(" ", "-")),
                                   args.clock)
    return row


# -- Brevitas -------------------------------------------------------------------------------------

def brevitas_modules():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # brevitas's import-time deprecations
        import brevitas.nn as qnn
        from brevitas.export import export_qonnx
        from brevitas.inject.enum import QuantType
        from brevitas.quant import SignedBinaryWeightPerTensorConst, Uint8ActPerTensorFloat
    return qnn, export_qonnx, QuantType, SignedBinaryWeightPerTensorConst, Uint8ActPerTensorFloat


def brevitas_mlp(weights, act_bits, n_in=784, hidden=(256, 256), n_out=10):
    """784 → 256 → 256 → 10 with an 8-bit unsigned input quantizer of constant scale 1/255,
    binary (±1, constant scale) or ternary (2-bit narrow range, per-tensor scale) weights,
    batch-norm, ±1 (``act_bits`` 1) or unsigned ``act_bits``-bit ReLU activations, and a
    bias-free output layer (one scale for every class, as the IR's last layer needs)."""
    import torch
    qnn, _, QuantType, BinW, Uint8 = brevitas_modules()

    def linear(i, o):
        if weights == "binary":
            return qnn.QuantLinear(i, o, bias=False, weight_quant=BinW)
        return qnn.QuantLinear(i, o, bias=False, weight_bit_width=2, weight_narrow_range=True)

    def act():
        if act_bits == 1:
            return qnn.QuantIdentity(bit_width=1, quant_type=QuantType.BINARY,
                                     scaling_impl_type="const", min_val=-1.0, max_val=1.0,
                                     return_quant_tensor=True)
        return qnn.QuantReLU(bit_width=act_bits, return_quant_tensor=True)

    layers = [qnn.QuantIdentity(act_quant=Uint8, scaling_impl_type="const", max_val=1.0,
                                return_quant_tensor=True)]
    width = n_in
    for h in hidden:
        layers += [linear(width, h), torch.nn.BatchNorm1d(h), act()]
        width = h
    layers.append(linear(width, n_out))
    return torch.nn.Sequential(*layers)


def brevitas_predict(model, x, batch=1000):
    import torch
    out = []
    model.eval()
    with torch.no_grad():
        for s in range(0, len(x), batch):
            y = model(torch.from_numpy(x[s:s + batch]))
            out.append((y.value if hasattr(y, "value") else y).numpy())
    return np.concatenate(out)


def brevitas_train(model, ds, *, seed, epochs, lr=5e-3, batch=128):
    """Adam, cosine decay, cross-entropy on the training split; the epoch with the best
    validation accuracy is kept."""
    import copy

    import torch
    x = (ds.x_train / 255.0).astype(np.float32)
    y = torch.from_numpy(ds.y_train.astype(np.int64))
    xv = (ds.x_val / 255.0).astype(np.float32)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * (len(x) // batch))
    rng = np.random.default_rng(seed)
    best, best_state = -1.0, None
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(x))
        for s in range(0, len(order) - batch + 1, batch):
            idx = order[s:s + batch]
            out = model(torch.from_numpy(x[idx]))
            out = out.value if hasattr(out, "value") else out
            loss = torch.nn.functional.cross_entropy(out, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        val = float(np.mean(np.argmax(brevitas_predict(model, xv), axis=1) == ds.y_val))
        log(f"      epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}, val {val:.4f}")
        if val > best:
            best, best_state = val, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return model.eval()


def run_brevitas(name, seed, args, ds, onnx_paths):
    import torch
    from qnnfab.model.qonnx_check import check_against_qonnx
    from qnnfab.model.qonnx_import import import_qonnx
    _, export_qonnx, *_ = brevitas_modules()
    weights, act_bits, epochs = BREVITAS_MODELS[name]
    epochs = args.epochs_mlp or epochs
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = brevitas_mlp(weights, act_bits)
            start = time.monotonic()
            with step(f"[{name}, seed {seed}] training in Brevitas, {epochs} epochs"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    brevitas_train(model, ds, seed=seed, epochs=epochs)
            train_s = time.monotonic() - start
            x_test = (ds.x_test / 255.0).astype(np.float32)
            float_acc = float(np.mean(np.argmax(brevitas_predict(model, x_test), axis=1)
                                      == ds.y_test))
            path = os.path.join(args.out, f"{name.replace(' ', '-')}-seed{seed}.onnx")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                export_qonnx(model, torch.rand(1, 784), path, dynamo=False)
    finally:
        torch.set_num_threads(threads)
    onnx_paths[name, seed] = path
    with step(f"[{name}, seed {seed}] qnnfab import"):
        net = import_qonnx(path, classes=list(ds.classes))
    ir.save(net, path[:-len(".onnx")] + ".qnn")
    codes = np.asarray(ds.x_test, dtype=np.int64)
    with step(f"[{name}, seed {seed}] qonnx executor vs golden on {len(codes)} test images"):
        check = check_against_qonnx(net, path, codes, input_source=f"{ds.name} test split")
    log(f"    {check.line()}")
    trace = golden.forward(net, codes)
    int_acc = float(np.mean(trace.classes == ds.y_test))
    # A disagreement where qonnx's class has the golden maximum score too is an exact tie of
    # the integer scores (QonnxCheck.ties): the golden argmax takes the first index, the
    # executor's float sums break it by rounding noise.
    ties = check.ties
    row = {"network": name, "trained in": "Brevitas → QONNX → qnnfab", "arch": ARCH_MLP,
           "seed": seed, "weights": [layer.weight_kind for layer in net.layers
                                     if getattr(layer, "weight_kind", None)],
           "weight_bits": int(net.weight_bits), "float": float_acc,
           "qonnx": float(np.mean(check.qonnx_classes == ds.y_test)), "integer": int_acc,
           "agree": (check.agree, check.n), "ties": ties,
           "max_deviation_steps": check.max_deviation_steps,
           "ambiguous_thresholds": check.ambiguous, "train_s": round(train_s, 1),
           "epochs": epochs, "qonnx_classes": check.qonnx_classes}
    log(f"    Brevitas float {float_acc:.4f}, qonnx {row['qonnx']:.4f}, qnnfab integer "
        f"{int_acc:.4f}, {net.summary()}")
    if wants_hw(args, name):
        add_hw_check(row, net, args, ds)
    return row


# -- hls4ml ---------------------------------------------------------------------------------------

def kept_qonnx_classes(path, ds):
    """The qonnx executor's classes on the test split for a kept (``--reuse``) Brevitas row,
    whose saved JSON does not hold them."""
    from qnnfab.model.qonnx_check import check_against_qonnx
    net = ir.load(path[:-len(".onnx")] + ".qnn")
    with step(f"    qonnx executor on {len(ds.x_test)} test images ({os.path.basename(path)})"):
        check = check_against_qonnx(net, path, np.asarray(ds.x_test, dtype=np.int64),
                                    input_source=f"{ds.name} test split")
    return check.qonnx_classes


def run_hls4ml(name, seed, path, qonnx_classes, args, ds):
    """hls4ml's C++ emulation of the QONNX file ``path`` on the test split."""
    row = {"network": f"hls4ml: {name}", "trained in": "Brevitas → QONNX → hls4ml",
           "arch": ARCH_MLP, "seed": seed}
    if shutil.which("g++") is None:
        return {**row, "error": "g++ not installed"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import hls4ml
            from qonnx.core.modelwrapper import ModelWrapper
            from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
            from qonnx.transformation.gemm_to_matmul import GemmToMatMul
            from qonnx.util.cleanup import cleanup_model
    except ImportError as exc:
        return {**row, "error": f"hls4ml not installed ({exc}); pip install hls4ml"}
    try:
        with step(f"[hls4ml: {name}, seed {seed}] convert + compile"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = cleanup_model(ModelWrapper(path))
                model = model.transform(ConvertToChannelsLastAndClean())
                model = model.transform(GemmToMatMul())
                model = cleanup_model(model)
                config = hls4ml.utils.config.config_from_onnx_model(
                    model, granularity="name", backend="Vitis",
                    default_precision=args.hls4ml_precision)
                out_dir = os.path.join(args.out, "hls4ml", f"{name.replace(' ', '-')}-{seed}")
                hls_model = hls4ml.converters.convert_from_onnx_model(
                    model, output_dir=out_dir, backend="Vitis", io_type="io_parallel",
                    hls_config=config)
                hls_model.compile()
        x = (ds.x_test / 255.0).astype(np.float32)
        with step(f"[hls4ml: {name}, seed {seed}] C++ emulation on {len(x)} test images"):
            y = np.asarray(hls_model.predict(np.ascontiguousarray(x))).reshape(len(x), -1)
    except Exception as exc:  # a peer's failure is a table row, not a crash
        log(traceback.format_exc())
        text = " ".join(f"{type(exc).__name__}: {exc}".split())
        return {**row, "error": f"hls4ml failed: {text[:200]}"}
    classes = np.argmax(y, axis=1)
    return {**row, "hls4ml": float(np.mean(classes == ds.y_test)),
            "agree": (int(np.sum(classes == qonnx_classes)), len(classes)),
            "precision": args.hls4ml_precision}


# -- the table ------------------------------------------------------------------------------------

def summarize(rows):
    """One table row per network (seeds aggregated)."""
    by_name = {}
    for r in rows:
        by_name.setdefault(r["network"], []).append(r)
    out = []
    for name, rs in by_name.items():
        r0 = rs[0]
        if "error" in r0:
            out.append({"network": name, "trained in": r0["trained in"], "arch": r0["arch"],
                        "build": r0["error"]})
            continue
        hw = [r["hw"] for r in rs if "hw" in r]
        cell = {"network": name, "trained in": r0["trained in"], "arch": r0["arch"],
                "weight bits": f"{r0['weight_bits']:,}" if "weight_bits" in r0 else "",
                "float %": spread([r.get("float") for r in rs]),
                "qonnx %": spread([r.get("qonnx") for r in rs]),
                "integer %": spread([r.get("integer") for r in rs]),
                "agreement": counts([r.get("agree") for r in rs])
                + (f" ({sum(r.get('ties', 0) for r in rs)} exact ties)"
                   if any(r.get("ties") for r in rs) else ""),
                "hardware (Verilator)": (counts([(h["bit_exact"], h["checked"]) for h in hw])
                                         + " bit-exact") if hw else "",
                "hw %": spread([h["hw_accuracy"] for h in hw]),
                "cycles/inf (sim)": f"{np.mean([h['cycles_per_inference'] for h in hw]):,.0f}"
                if hw else "",
                "build": build_text(r0["builds"]) if r0.get("builds") else ""}
        if "hls4ml" in r0:
            cell["integer %"] = spread([r["hls4ml"] for r in rs]) + " (hls4ml C++)"
        out.append(cell)
    order = {name: i for i, name in enumerate(ALL_MODELS)}
    return sorted(out, key=lambda c: order.get(c["network"], len(order)))


def seed_text(seeds):
    return (f"seeds {' '.join(map(str, seeds))} (mean, min..max)" if len(seeds) > 1
            else f"seed {seeds[0]}")


def table(cells, seeds, brevitas_seeds=None):
    heading = f"Fashion-MNIST test split (10,000 images), {seed_text(seeds)}"
    if brevitas_seeds is not None and list(brevitas_seeds) != list(seeds):
        heading += f"; Brevitas and hls4ml rows: {seed_text(brevitas_seeds)}"
    lines = [heading + ".", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for c in cells:
        lines.append("| " + " | ".join(str(c.get(col, "")).replace("|", "/")
                                       for col in COLUMNS) + " |")
    return "\n".join(lines)


def goals(rows):
    """The issue's goals, one line each: (text, met)."""
    def ints(name):
        return [r["integer"] for r in rows if r["network"] == name and "integer" in r]
    out = []
    for name, goal in (("binary MLP", 0.85), ("ternary CNN", 0.89)):
        v = ints(name)
        if v:
            out.append((f"{name} integer accuracy >= {goal:.0%}: mean {np.mean(v):.2%}",
                        bool(np.mean(v) >= goal)))
    agree = [r["agree"] for r in rows if "agree" in r and "hls4ml" not in r]
    if agree:
        a, n = sum(x for x, _ in agree), sum(y for _, y in agree)
        ties = sum(r.get("ties", 0) for r in rows if "agree" in r and "hls4ml" not in r)
        # An exact tie of the integer scores has two right answers: the golden argmax takes
        # the first index, the executor's float sums break it by rounding noise.
        out.append((f"every imported network agrees with qonnx up to exact ties: "
                    f"{a + ties}/{n} (the same class on {a}; {ties} inputs whose top integer "
                    f"scores tie, broken the other way by the executor's float sums)",
                    a + ties == n))
    hw = [r["hw"] for r in rows if "hw" in r]
    if hw:
        a, n = sum(h["bit_exact"] for h in hw), sum(h["checked"] for h in hw)
        out.append((f"every hardware row bit-exact: {a}/{n}", a == n))
    return out


def write_outputs(rows, args, data_name, failures=None):
    """The table and the goals (text), written with the rows to ``OUT/fmnist.md`` and
    ``OUT/fmnist.json`` (after every network, so an interrupted run leaves what it has)."""
    cells = summarize(rows)
    lines = [table(cells, args.seeds, args.brevitas_seeds), ""]
    for text, met in goals(rows):
        lines.append(f"- {'met' if met else 'NOT met'}: {text}")
        if failures is not None and not met and "accuracy" not in text:
            failures.append(text)
    text = "\n".join(lines)
    ir.atomic_write_bytes(os.path.join(args.out, "fmnist.md"), (text + "\n").encode())
    saved = [{k: v for k, v in r.items() if k != "qonnx_classes"} for r in rows]
    ir.atomic_write_bytes(os.path.join(args.out, "fmnist.json"),
                          (json.dumps({"seeds": args.seeds, "brevitas_seeds": args.brevitas_seeds,
                                       "data": data_name, "rows": saved, "table": cells},
                                      indent=1, default=str) + "\n").encode())
    return text


def kept_rows(args, data_name):
    """``{model: [row, ...]}`` of the earlier run in ``OUT/fmnist.json`` (``--reuse``): rows
    without an error; hls4ml's rows under ``"hls4ml"``. Tuples come back as tuples."""
    path = os.path.join(args.out, "fmnist.json")
    if not os.path.exists(path):
        log(f"--reuse: no {path}, nothing to keep")
        return {}
    with open(path) as f:
        saved = json.load(f)
    if saved.get("data") != data_name:
        raise SystemExit(f"--reuse: {path} is of data set {saved.get('data')!r}, not "
                         f"{data_name!r}")
    kept = {}
    for r in saved["rows"]:
        if "error" in r or "seed" not in r:
            continue
        if "agree" in r:
            r["agree"] = tuple(r["agree"])
        name = "hls4ml" if r["network"].startswith("hls4ml: ") else r["network"]
        kept.setdefault(name, []).append(r)
    return kept


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=ALL_MODELS, choices=ALL_MODELS)
    parser.add_argument("--brevitas-seeds", nargs="+", type=int, default=None,
                        help="seeds of the Brevitas networks and hls4ml (default: --seeds)")
    parser.add_argument("--data", default="fashion-mnist",
                        help="fashion-mnist (default) or mnist:DIR with the IDX files")
    parser.add_argument("--epochs-mlp", type=int, default=None,
                        help="epochs of every MLP (default 5; Brevitas: 10)")
    parser.add_argument("--epochs-cnn", type=int, default=None,
                        help="epochs of the CNN (default 8)")
    parser.add_argument("--hw-vectors", type=int, default=1000,
                        help="test images simulated in Verilator per network (0: none)")
    parser.add_argument("--hw-models", nargs="+", default=None, choices=list(QNNFAB_MODELS),
                        help="simulate only these of qnnfab's networks (default: all; the "
                             "Verilator compile of a 784-256-256-10 MLP takes 10-20 min)")
    parser.add_argument("--no-hw-imported", dest="hw_imported", action="store_false",
                        help="no Verilator run for the imported (Brevitas) networks")
    parser.add_argument("--build", action="store_true",
                        help="real bitstreams (seed 0) for --boards: ~15-25 min each")
    parser.add_argument("--boards", nargs="+", default=[BOARD, "ulx3s-25f", "icebreaker"])
    parser.add_argument("--build-models", nargs="+", default=None, choices=list(QNNFAB_MODELS),
                        help="with --build: build only these of qnnfab's networks (default: all)")
    parser.add_argument("--clock", nargs="+", default=[], metavar="BOARD=MHZ",
                        help="design clock of a board's builds instead of its default (e.g. "
                             "ulx3s-85f=45 where the 784-input networks miss 50 MHz)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the rows of an earlier run in --out (OUT/fmnist.json) and "
                             "compute only what they lack (Verilator checks, builds)")
    parser.add_argument("--hls4ml-precision", default="fixed<32,16>",
                        help="hls4ml's default precision (accumulators, batch-norm)")
    parser.add_argument("--out", default="build/bench-fmnist")
    add_docs_arguments(parser)
    args = parser.parse_args(argv)
    check_docs_page(args, DOC_TABLES)
    clocks = {}
    for item in args.clock:
        board, _, mhz = item.partition("=")
        try:
            clocks[board] = float(mhz)
        except ValueError:
            parser.error(f"--clock {item}: expected BOARD=MHZ, e.g. ulx3s-85f=45")
        if board not in args.boards:
            parser.error(f"--clock {item}: {board} is not one of --boards")
    args.clock = clocks
    if args.brevitas_seeds is None:
        args.brevitas_seeds = args.seeds
    os.makedirs(args.out, exist_ok=True)
    from qnnfab.model.data import load_dataset
    ds = load_dataset(args.data, seed=0)
    if ds.n_features != 784:
        parser.error(f"--data {args.data}: {ds.n_features} features, expected 784 (28x28)")
    rows, failures, onnx_paths = [], [], {}
    kept = kept_rows(args, ds.name) if args.reuse else {}
    for name in args.models:
        for seed in args.seeds if name in QNNFAB_MODELS else args.brevitas_seeds:
            try:
                old = [r for r in kept.get(name, []) if r.get("seed") == seed]
                if name in BREVITAS_MODELS and old:
                    rows.append(complete_kept(old[0], args, ds))
                    onnx_paths[name, seed] = network_path(args, name, seed, ".onnx")
                elif name == "hls4ml" and old:
                    log(f"[hls4ml, seed {seed}] kept from {args.out}/fmnist.json")
                    rows.extend(old)
                elif name in QNNFAB_MODELS and old:
                    rows.append(complete_kept(old[0], args, ds))
                elif name in QNNFAB_MODELS:
                    rows.append(run_qnnfab(name, seed, args, ds))
                elif name in BREVITAS_MODELS:
                    rows.append(run_brevitas(name, seed, args, ds, onnx_paths))
                else:
                    done = [k for k in onnx_paths if k[1] == seed]
                    if not done:
                        rows.append({"network": "hls4ml", "trained in": "-", "arch": "-",
                                     "error": "no Brevitas model to convert (--models)"})
                    for bname, _ in done:
                        qc = next(r.get("qonnx_classes") for r in rows
                                  if r["network"] == bname and r["seed"] == seed)
                        if qc is None:
                            qc = kept_qonnx_classes(onnx_paths[bname, seed], ds)
                        rows.append(run_hls4ml(bname, seed, onnx_paths[bname, seed], qc, args,
                                               ds))
            except Exception as exc:
                log(traceback.format_exc())
                failures.append(f"{name}, seed {seed}: {type(exc).__name__}: {exc}")
                rows.append({"network": name, "trained in": "-", "arch": "-", "seed": seed,
                             "error": f"FAILED: {type(exc).__name__}: {exc}"})
            write_outputs(rows, args, ds.name)
    text = write_outputs(rows, args, ds.name, failures)
    for r in rows:
        for board, b in r.get("builds", {}).items():
            if b["status"].startswith("FAILED"):
                failures.append(f"{r['network']} on {board}: {b.get('detail') or b['status']}")
    print(text)
    docs_page(args, {"fmnist": text}, log=log)
    for f in failures:
        log(f"FAILED {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
