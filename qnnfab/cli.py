"""The ``qnnfab`` command line. Thin: each command parses, calls a library function, prints.

Errors a user can cause (bad file, unknown board, unwritable folder, missing tool) print one line
``qnnfab: error: ...`` and exit 2; ``--debug`` shows the traceback instead. A simulation that
is not bit-exact exits 1.
"""

import argparse
import os
import sys

__all__ = ["main", "parse_folding", "resolve_folding", "parse_style", "resolve_styles"]


class UserError(Exception):
    """An error to report in one line, without a traceback."""


def parse_folding(text):
    """``"8:16,16:32,2:64"`` → ``[(8, 16), (16, 32), (2, 64)]`` (PE:SIMD per layer; ``-`` for a
    max-pool layer, which has no folding)."""
    if text is None:
        return None
    folding = []
    for i, part in enumerate(text.split(",")):
        if part.strip() == "-":  # a max-pool layer: nothing to fold
            folding.append(None)
            continue
        try:
            pe, simd = (int(v) for v in part.split(":"))
        except ValueError:
            raise UserError(f"--folding: layer {i}: expected PE:SIMD (two integers), "
                            f"got {part!r}") from None
        folding.append((pe, simd))
    return folding


#: What ``--style`` takes besides one style per layer.
STYLE_WORDS = ("folded", "unrolled", "auto")


def parse_style(text, network=None):
    """``--style``: ``"folded"``, ``"unrolled"``, ``"auto"`` as they are, or a comma list of
    ``folded``/``unrolled`` (one per layer of ``network`` when given) as a list; UserError
    naming the option for anything else."""
    if text is None:
        return "folded"
    if text in STYLE_WORDS:
        return text
    styles = [part.strip() for part in text.split(",")]
    bad = [s for s in styles if s not in ("folded", "unrolled")]
    if bad or len(styles) < 2:
        raise UserError(f"--style: expected folded, unrolled, auto or one of folded/unrolled "
                        f"per layer (comma-separated), got {text!r}")
    if network is not None:
        if len(styles) != len(network.layers):
            raise UserError(f"--style {text}: expected {len(network.layers)} entries (one per "
                            f"layer), got {len(styles)}")
        from qnnfab.rtl.network import UnrollError, resolve_styles as resolve
        try:
            resolve(network, styles)
        except UnrollError as exc:
            raise UserError(f"--style {text}: {exc}") from None
    return styles


def resolve_styles(args, network, folding):
    """The layers' styles a command uses (``--style``; ``auto`` with the board's budget,
    :func:`qnnfab.boards.registry.board_styles`, and refused without ``--board``): a list of
    ``"folded"``/``"unrolled"``, one per layer."""
    style = parse_style(getattr(args, "style", None), network)
    board = getattr(args, "board", None)
    if board is not None:
        from qnnfab.boards.registry import board_styles
        return board_styles(network, board, style, folding)
    if style == "auto":
        raise UserError("--style auto needs --board (the board's size is the budget)")
    from qnnfab.rtl.network import resolve_styles as resolve
    return resolve(network, style)


def parse_weights_in(text, network=None):
    """``--weights-in``: ``"ebr"``, ``"spram"``, ``"auto"`` as they are, or a comma list of
    ``ebr``/``spram`` (one per layer of ``network`` when given) as a list; UserError naming the
    option for anything else."""
    if text is None or text in ("ebr", "spram", "auto"):
        return text or "ebr"
    stores = [part.strip() for part in text.split(",")]
    if any(s not in ("ebr", "spram") for s in stores) or len(stores) < 2:
        raise UserError(f"--weights-in: expected ebr, spram, auto or one of ebr/spram per "
                        f"layer (comma-separated), got {text!r}")
    if network is not None and len(stores) != len(network.layers):
        raise UserError(f"--weights-in {text}: expected {len(network.layers)} entries (one per "
                        f"layer), got {len(stores)}")
    return stores


def resolve_weights(args, network, folding, styles):
    """``(folding, weights_in list, note)`` for ``--weights-in`` (``ebr`` changes nothing):
    with ``--board``, :func:`qnnfab.boards.registry.board_weights` (the SPRAM layers' folding
    unless ``--folding`` is given); without, ``spram`` or a list at the folding as it is, and
    ``auto`` refused."""
    text = getattr(args, "weights_in", None)
    weights_in = parse_weights_in(text, network)
    if isinstance(weights_in, str) and weights_in == "ebr":
        return folding, ["ebr"] * len(network.layers), None
    board = getattr(args, "board", None)
    try:
        if board is not None:
            from qnnfab.boards.registry import board_weights
            given = folding if args.folding is not None else None
            return board_weights(network, board, weights_in, given, styles=styles)
        if weights_in == "auto":
            raise UserError("--weights-in auto needs --board (its block RAM and SPRAM)")
        from qnnfab.rtl.network import Network
        hw = Network(network, folding, style=styles, weights_in=weights_in)
        return folding, hw.weights_in, None
    except (ValueError, TypeError) as exc:
        if isinstance(exc, UserError):
            raise
        raise UserError(f"--weights-in {text}: {exc}") from None


def _print_styles(styles, style_arg):
    if "unrolled" in styles:
        from qnnfab.flow import styles_text
        print(f"style {styles_text(styles)} (--style {style_arg})")


def resolve_folding(args, network):
    """The folding a command uses: ``--folding`` if given; else ``--target-ips`` /
    ``--target-cycles`` (:func:`qnnfab.boards.registry.target_folding`); else the board's
    (:func:`qnnfab.boards.registry.board_folding`) when ``--board`` is given; else None (the
    plain :func:`qnnfab.rtl.folding.auto_folding`). ``sim``, ``verilog``, ``build`` and
    ``flow`` all go through here, so the same board gives the same folding everywhere."""
    return _resolve(args, network)[0]


def _resolve(args, network):
    """``(folding, source or None)``, see :func:`resolve_folding`."""
    folding = parse_folding(args.folding)
    board = getattr(args, "board", None)
    target_ips = getattr(args, "target_ips", None)
    target_cycles = getattr(args, "target_cycles", None)
    if folding is not None:
        if target_ips is not None or target_cycles is not None:
            raise UserError("--folding and --target-ips/--target-cycles: give one of them")
        from qnnfab.rtl.folding import FoldingError, check_folding
        try:
            check_folding(network, folding)
        except FoldingError as exc:
            text = str(exc).replace("LayerFolding.pe", "PE").replace("LayerFolding.simd",
                                                                     "SIMD")
            raise UserError(f"--folding {args.folding}: {text}") from None
        return folding, None
    if target_ips is not None or target_cycles is not None:
        if target_ips is not None and target_cycles is not None:
            raise UserError("--target-ips and --target-cycles: give one of them")
        if board is None:
            if target_ips is not None:
                raise UserError("--target-ips needs --board (its clock and size)")
            from qnnfab.rtl.folding import auto_folding
            return (auto_folding(network, target_cycles=target_cycles),
                    f"--target-cycles {target_cycles}, no board: cheapest per layer")
        from qnnfab.boards.registry import target_folding
        return target_folding(network, board, target_ips=target_ips,
                              target_cycles=target_cycles,
                              clock_mhz=getattr(args, "clock_mhz", None))
    if board is not None:
        from qnnfab.boards.registry import board_folding
        return board_folding(network, board), None
    return None, None


def folding_and_source(args, network):
    """``(folding to pass on, folding used, source)``: :func:`resolve_folding`, the folding it
    stands for (the automatic one for None) and where it came from (``given (--folding)``,
    ``--target-ips ...``, ``board NAME default``, ``automatic``)."""
    from qnnfab.flow import folding_source
    folding, target = _resolve(args, network)
    if target is not None:
        return folding, folding, target
    used, source = folding_source(network, folding, given=args.folding is not None,
                                  board=getattr(args, "board", None))
    return folding, used, source


def _print_folding(used, source, *, hint=False):
    from qnnfab.flow import folding_text
    print(f"folding {folding_text(used)} ({source})"
          + ("; `--board NAME` simulates the folding a board builds" if hint else ""))


def _load(path, *, integer_for=None):
    """Read an IR file; ``integer_for``: what needs quantized weights (refuses a float net)."""
    from qnnfab import ir
    network = ir.load(path)
    if integer_for:
        try:
            network.require_integer(integer_for)
        except ir.IRError as exc:
            raise UserError(f"{path}: {exc}") from None
    return network


#: Output folders this command created (parents first): :func:`main` removes those still empty
#: when the command fails, so a failed command leaves nothing behind.
_created_dirs = []


def _prepare_out_dir(path):
    """Create ``path`` (a folder) or fail with a one-line error if it cannot be written."""
    missing, probe = [], os.path.abspath(path)
    while probe and not os.path.exists(probe):
        missing.append(probe)
        probe = os.path.dirname(probe)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{path}: cannot create output folder (a file of that name exists)")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{path}: cannot create output folder ({exc.strerror})") from None
    _created_dirs.extend(reversed(missing))
    if not os.access(path, os.W_OK):
        raise UserError(f"{path}: output folder is not writable")
    return path


def _remove_created_empty_dirs():
    """After a failed command: remove the output folders it created that are still empty."""
    for folder in reversed(_created_dirs):
        try:
            os.rmdir(folder)
        except OSError:
            pass   # not empty (a build's logs stay for the user to read) or already gone
    _created_dirs.clear()


def _lock_out_dir(path):
    """Hold an exclusive lock on the folder ``path`` until the process ends, so a second
    command writing the same folder is refused at once instead of racing the first."""
    import fcntl
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"{path}: another qnnfab command is writing this folder; wait for it "
                        f"or choose another --out") from None
    _held_locks.append(fd)
    return fd


_held_locks = []


def _check_out_file(path):
    if os.path.isdir(path):
        example = os.path.join(path, "net.qnn")
        raise UserError(f"{path}: is a folder; give a file name (e.g. {example})")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError(f"{path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise UserError(f"{path}: folder {folder} is not writable")


def train_preset(args):
    """The preset ``train`` trains: ``--preset`` (default digits-bnn), or with any of
    ``--arch``, ``--weights``, ``--act-bits``, ``--input-shape`` the preset (or the custom
    defaults, :data:`qnnfab.model.presets.CUSTOM`) with those replaced
    (:func:`qnnfab.model.presets.customize`)."""
    from qnnfab.model.presets import customize
    preset = customize(args.preset, arch=args.arch, weights=args.weights,
                       act_bits=args.act_bits, input_shape=args.input_shape)
    return _with_sq_options(preset, getattr(args, "sq_method", None),
                            getattr(args, "sq_cost", None))


def _with_sq_options(preset, method, cost):
    """``preset`` with ``train --sq-method`` / ``--sq-cost`` applied to its Smart Quantization
    settings (:class:`qnnfab.model.sq.SQConfig`): who decides the depth of the adaptive layers,
    the switching rule or the regularizer's depth gates, and the regularizer's memory cost μ.
    ``--sq-cost`` alone means the regularizer. UserError when the network has no adaptive
    layer or the options contradict each other."""
    import dataclasses
    import math
    from qnnfab.model.sq import SQConfig
    if method is None and cost is None:
        return preset
    given = " and ".join(o for o, v in (("--sq-method", method), ("--sq-cost", cost))
                         if v is not None)
    kinds = {preset.weights} if isinstance(preset.weights, str) else set(preset.weights)
    if "adaptive" not in kinds:
        raise UserError(f"{given}: Smart Quantization chooses the depth of adaptive layers "
                        f"only, and {preset.name} has {', '.join(sorted(kinds))} weights; give "
                        f"--weights adaptive (or --preset digits-sq)")
    if cost is not None and not (math.isfinite(cost) and cost >= 0):
        raise UserError(f"--sq-cost: expected a finite number >= 0, got {cost:g}")
    if method is None:
        method = "regularizer"
    elif method == "rule" and cost is not None:
        raise UserError("--sq-cost: the regularizer's memory cost; --sq-method rule has none "
                        "(give --sq-method regularizer, or drop --sq-cost)")
    sq = dataclasses.replace(preset.sq or SQConfig(), method=method,
                             **({} if cost is None else {"cost": cost}))
    label = f"sq={method}" + (f", sq_cost={sq.cost:g}" if method == "regularizer" else "")
    return dataclasses.replace(preset, name=f"{preset.name}({label})", sq=sq)


def _prepare_out_file(path):
    """Create the folder of the output file ``path`` (like ``--out DIR`` of build/flow/verilog),
    then check it is writable."""
    folder = os.path.dirname(os.path.abspath(path))
    _prepare_out_dir(folder)
    _check_out_file(path)


def cmd_train(args):
    from qnnfab import ir
    from qnnfab.model.train import train
    _prepare_out_file(args.out)
    preset = train_preset(args)
    result = train(preset, seed=args.seed, progress=not args.quiet, epochs=args.epochs,
                   data=args.data)
    ir.save(result.network, args.out)
    if result.integer_accuracy is None:
        print(f"float accuracy {result.float_accuracy:.2%} (float weights: quantize next, "
              f"`qnnfab quantize {args.out} --method ga --bits 3 --out FILE.qnn`)")
    else:
        print(f"float accuracy {result.float_accuracy:.2%}, integer accuracy "
              f"{result.integer_accuracy:.2%}, agreement {result.agreement:.2%}")
    print(f"wrote {args.out} ({result.network.summary()}; "
          f"{result.network.weight_bits / result.network.n_weights:.2f} weight bits/weight)")
    if result.network.input_shape is not None:
        from qnnfab.flow import checkpoint_path
        from qnnfab.model.train import save_checkpoint
        ckpt = checkpoint_path(args.out)
        save_checkpoint(ckpt, result)
        print(f"wrote {ckpt} (the float model, for `qnnfab cluster --finetune`)")
    from qnnfab.flow import write_sq_plot
    plot = write_sq_plot(result.network, os.path.splitext(args.out)[0] + ".sq.svg")
    if plot:
        print(f"wrote {plot} (Smart Quantization: depth of each layer per epoch)")
    return 0


def cmd_quantize(args):
    from qnnfab import ir
    from qnnfab.model.ptq import quantize
    network = _load(args.model)
    _check_out_file(args.out)
    result = quantize(network, args.method, args.bits, seed=args.seed,
                      level_bits=args.level_bits, population=args.population,
                      generations=args.generations, progress=not args.quiet,
                      workers=args.workers, scheduler=args.scheduler)
    ir.save(result.network, args.out)
    net = result.network
    unq = (network.meta.get("accuracy") or {}).get("float")
    print(f"{args.method} {args.bits}-bit codebooks: validation accuracy "
          f"{result.val_accuracy:.2%}, test accuracy (integer) {result.test_accuracy:.2%}"
          + (f" (float weights {unq:.2%})" if isinstance(unq, float) else "")
          + f", agreement {result.agreement:.2%}; {result.seconds:.1f} s")
    print(f"wrote {args.out} ({net.summary()}; {net.weight_bits:,} weight bits)")
    if result.history:
        from qnnfab.model.ga import fitness_curve_svg
        plot = os.path.splitext(args.out)[0] + ".ga.svg"
        ir.atomic_write_bytes(plot, fitness_curve_svg(result.history).encode())
        print(f"wrote {plot} (GA fitness per generation)")
    return 0


def cmd_import(args):
    from qnnfab import ir
    from qnnfab.model.qonnx_check import check_against_qonnx, check_codes
    from qnnfab.model.qonnx_import import import_qonnx
    _check_out_file(args.out)
    network = import_qonnx(args.model)
    if not args.quiet:
        q = network.meta["input_quant"]
        print(f"imported {args.model}: {network.summary()}; input codes = round(x / "
              f"{q['scale']:.6g}) ({network.input_bits} bits, meta input_quant)")
    check = None
    if args.check_vectors:
        codes, source = check_codes(network, args.check_vectors, data=args.data,
                                    seed=args.seed)
        check = check_against_qonnx(network, args.model, codes, input_source=source)
        print(check.line())
    ir.save(network, args.out)
    print(f"wrote {args.out} ({network.summary()}; {network.weight_bits:,} weight bits)")
    if check is not None and not check.ok_up_to_ties:
        print(f"qnnfab: classes differ on {check.n - check.agree - check.ties} of {check.n} "
              f"inputs (not counting exact ties of the integer scores)", file=sys.stderr)
        return 1
    return 0


def cmd_cluster(args):
    from qnnfab import ir
    from qnnfab.flow import cluster_kernels
    _check_out_file(args.out)
    network, info = cluster_kernels(args.model, args.kernels, sign=args.scale,
                                    per_layer=args.per_layer, finetune=args.finetune,
                                    seed=args.seed, progress=not args.quiet)
    ir.save(network, args.out)
    total = info["stats"]["total"]

    def pct(v):
        return "n/a" if v is None else f"{v:.2%}"
    print(f"{total['K']} representative kernels for {total['kernels']} kernels "
          f"(reduction {total['reduction']:.1%}); weight memory of the conv layers "
          f"{total['bits_before']:,} -> {total['bits_after']:,} bits "
          f"({total['bits_before'] / max(1, total['bits_after']):.2f}x smaller)")
    print(f"test accuracy (integer): {pct(info['test_before'])} before, "
          + (f"{pct(info['test_clustered'])} clustered, " if "test_clustered" in info else "")
          + f"{pct(info['test_after'])} after"
          + (f" {info['finetune']} epochs of fine-tuning" if info["finetune"] else
             " (no fine-tuning)"))
    print(f"wrote {args.out} ({network.summary()})")
    return 0


def cmd_learn(args):
    from qnnfab.flow import learn_on_device
    if args.plot:
        _check_out_file(args.plot)
    result = learn_on_device(args.model, samples=args.samples, simulator=args.simulator,
                             seed=args.seed, plot=args.plot, progress=not args.quiet)
    cmp, run = result["comparison"], result["run"]
    print(f"test accuracy {result['accuracy_before']:.2%} before (random last layer), "
          f"{result['accuracy_after']:.2%} after {args.samples} samples "
          f"(float rule: {result['curve']['float'][-1]:.2%})")
    print(f"{cmp.summary()} ({run.simulator}, {run.cycles:,} cycles, "
          f"{run.cycles / max(1, len(run.classes)):.0f} cycles/sample)")
    if result["plot"]:
        print(f"wrote {result['plot']}")
    if not cmp.ok:
        print(cmp.report(), file=sys.stderr)
        return 1
    return 0


def cmd_verilog(args):
    from qnnfab import ir
    from qnnfab.rtl.verilog import to_verilog
    network = _load(args.model, integer_for="verilog")
    if not args.name.isidentifier() or not args.name.isascii():
        raise UserError(f"--name: must be a Verilog identifier (letters, digits, _; not "
                        f"starting with a digit), not {args.name!r}")
    folding, used, source = folding_and_source(args, network)
    styles = resolve_styles(args, network, folding)
    folding, used, source, stores = _with_weights(args, network, folding, used, source, styles)
    _prepare_out_dir(args.out)
    _print_folding(used, source)
    _print_styles(styles, args.style)
    path = os.path.join(args.out, f"{args.name}.v")
    ir.atomic_write_bytes(path, to_verilog(network, folding, name=args.name,
                                           style=styles, weights_in=stores).encode())
    print(f"wrote {path}")
    if args.board:
        from qnnfab.boards.top import board_top_verilog
        top = os.path.join(args.out, f"{args.name}_top.v")
        ir.atomic_write_bytes(top, board_top_verilog(network, folding, board=args.board,
                                                     style=styles,
                                                     weights_in=stores).encode())
        print(f"wrote {top}")
    return 0


def _with_weights(args, network, folding, used, source, styles):
    """``--weights-in`` on top of the folding a command resolved: ``(folding, used, source,
    weights_in list)``; prints the SPRAM note."""
    new, stores, note = resolve_weights(args, network, folding, styles)
    if note is not None:
        print(note)
        if new is not folding:
            used, source = new, f"{source}, SPRAM layers at their ports' width"
    return new, used, source, stores


def cmd_sim(args):
    import numpy as np
    from qnnfab.flow import simulate_and_compare
    from qnnfab.model.vectors import test_vectors
    from qnnfab.spec import golden
    network = _load(args.model, integer_for="sim")
    if args.dump:
        from qnnfab.predictions import check_dump_path
        check_dump_path(args.dump)
    simulator = args.simulator or ("verilator" if args.gate_level else "amaranth")
    if args.gate_level and simulator == "amaranth":
        raise UserError("--gate-level simulates the synthesized netlist in Verilator or "
                        "Icarus, not Amaranth: use --simulator verilator or icarus")
    folding, used, source = folding_and_source(args, network)
    styles = resolve_styles(args, network, folding)
    folding, used, source, stores = _with_weights(args, network, folding, used, source, styles)
    if args.gate_level and "spram" in stores:
        raise UserError("--gate-level and --weights-in: the gate-level simulation keeps the "
                        "weights in block RAM; drop one of them")
    _print_folding(used, source, hint=source == "automatic")
    _print_styles(styles, args.style)
    vecs = test_vectors(network, args.vectors, seed=args.seed)
    comparison = simulate_and_compare(network, simulator=simulator, codes=vecs.codes,
                                      folding=folding, progress=not args.quiet,
                                      gate_level=args.gate_level, style=styles,
                                      weights_in=stores)
    print(comparison.summary())
    result = comparison.result
    trace = golden.forward(network, vecs.codes)
    if vecs.labels is not None:
        hw = float(np.mean(np.asarray(result.classes) == vecs.labels))
        gold = float(np.mean(trace.classes == vecs.labels))
        print(f"accuracy: hardware {hw:.2%}, golden {gold:.2%} on {len(vecs.codes)} "
              f"labelled vectors ({vecs.source})")
    if args.dump:
        from qnnfab.predictions import write_predictions
        write_predictions(args.dump, result.classes, result.scores, labels=vecs.labels,
                          golden_classes=trace.classes, golden_scores=trace.scores)
        print(f"wrote {args.dump} (class and scores of every vector, beside the golden "
              f"model's)")
    if comparison.mismatches:
        print(comparison.report(), file=sys.stderr)
        return 1
    return 0


def cmd_build(args):
    from qnnfab.flow import build_board
    network = _load(args.model, integer_for="build")
    if args.learn and args.folding is None and args.target_ips is None \
            and args.target_cycles is None:
        folding, target = None, None   # the learning board's own default (plan_build)
    else:
        folding, target = _resolve(args, network)
    style = parse_style(args.style, network)
    if args.learn and style != "folded":
        raise UserError("--style and --learn: a learning board's layers are folded (its last "
                        "layer's weights change); give one of them")
    weights_in = parse_weights_in(args.weights_in, network)
    if args.learn and weights_in != "ebr":
        raise UserError("--weights-in and --learn: a learning board keeps its weights in block "
                        "RAM; give one of them")
    if weights_in != "ebr" and args.folding is None and target is None:
        folding = None      # the board's, with the SPRAM layers at their ports' width
    _lock_out_dir(_prepare_out_dir(args.out))
    seed = args.pnr_seed
    if args.seed is not None:
        print("qnnfab: note: `build --seed` is deprecated: it is the nextpnr placement seed, "
              "now `--pnr-seed`", file=sys.stderr)
        seed = args.seed
    report = build_board(network, args.board, args.out, folding=folding,
                         clock_mhz=args.clock_mhz, seed=seed, progress=not args.quiet,
                         learn=args.learn, baud=args.baud, folding_source=target,
                         selftest=args.selftest, style=style, weights_in=weights_in,
                         input_buffer=args.input_buffer)
    _print_report_summary(report, args.out)
    return 0


def cmd_flow(args):
    from qnnfab.flow import run_flow
    if args.folding is not None and (args.target_ips is not None
                                     or args.target_cycles is not None):
        raise UserError("--folding and --target-ips/--target-cycles: give one of them")
    style = parse_style(args.style)     # the per-layer count is checked after training
    weights_in = parse_weights_in(args.weights_in)
    _lock_out_dir(_prepare_out_dir(args.out))
    report = run_flow(board=args.board, preset=train_preset(args), data=args.data,
                      out_dir=args.out,
                      seed=args.seed, pnr_seed=args.pnr_seed,
                      vectors=args.vectors, verilator_vectors=args.verilator_vectors,
                      folding=parse_folding(args.folding), clock_mhz=args.clock_mhz,
                      epochs=args.epochs, progress=not args.quiet,
                      target_ips=args.target_ips, target_cycles=args.target_cycles,
                      style=style, weights_in=weights_in, input_buffer=args.input_buffer)
    _print_report_summary(report, args.out)
    return 0 if report["vectors"]["bit_exact"] == report["vectors"]["checked"] else 1


def cmd_run(args):
    import numpy as np
    from qnnfab.boards import session
    from qnnfab.model.vectors import test_vectors
    from qnnfab.progress import progress_bar
    network = _load(args.model, integer_for="run")
    build = session.load_build(args.build, network) if args.build else None
    if args.baud is None:
        args.baud = build.baud if build is not None else 115200
    if build is not None and build.needs_load:
        _load_spram(args, network, build)      # before the first inference: SPRAM starts empty
    if args.learn:
        return _run_learning(args, network, build)
    if args.selftest:
        return _run_selftest(args, build)
    if build is not None and build.learning:
        raise UserError(f"{build.path}: this board was built with --learn: drive it with "
                        f"`qnnfab run --learn`")
    vecs = test_vectors(network, args.vectors)
    n = len(vecs.codes)
    fmt_bytes = 11 * (1 + network.input_features)
    print(f"sending {n} vectors ({vecs.source}) to {args.port} at {args.baud} baud "
          f"(about {n * fmt_bytes / args.baud:.0f} s)")
    bar = progress_bar(n, "run", unit="vec", enabled=not args.quiet)

    def on_answer(k, cls, same):
        bar.update(1)
    try:
        result = session.run_inference(args.port, network, vecs.codes, vecs.labels,
                                       baud=args.baud, timeout=args.timeout,
                                       on_answer=on_answer)
    finally:
        bar.close()
    ok = int(result.bit_exact.sum())
    for k in np.flatnonzero(~result.bit_exact)[:5]:
        print(f"vector {k}: expected class {result.golden_classes[k]} scores "
              f"{result.golden_scores[k].tolist()}, got class {result.classes[k]} scores "
              f"{result.scores[k].tolist()}", file=sys.stderr)
    print(f"{ok}/{n} vectors bit-exact (board at {args.port})")
    acc = result.accuracy()
    if acc is not None:
        print(f"accuracy: board {acc:.2%}, golden {result.accuracy(result.golden_classes):.2%} "
              f"({vecs.source})")
    _print_rates(result.frames_per_s, build)
    return 0 if ok == n else 1


def _load_spram(args, network, build):
    """Send the weights of a board that keeps them in SPRAM (empty after configuration)."""
    from qnnfab.boards import session
    from qnnfab.progress import progress_bar
    words = session.load_words(network, build)
    total = 1 + 2 * len(words)
    print(f"loading {len(words) * 2:,} bytes of weights into the SPRAM (layers "
          f"{', '.join(str(k) for k, w in enumerate(build.weights_in) if w == 'spram')}; about "
          f"{total * 10 / args.baud:.1f} s at {args.baud} baud)")
    bar = progress_bar(total, "load", unit="B", enabled=not args.quiet)
    try:
        seconds = session.load_weights(args.port, network, build, baud=args.baud,
                                       progress=lambda done, _: bar.set(done))
    finally:
        bar.close()
    print(f"weights loaded in {seconds:.1f} s")


def _run_selftest(args, build):
    from qnnfab.boards.driver import selftest
    if build is None or not build.selftest:
        raise UserError("--selftest needs --build DIR of a board built with `qnnfab build "
                        "--selftest N`")
    entry = build.selftest
    n, correct, cycles = selftest(args.port, baud=args.baud, timeout=max(args.timeout, 10.0))
    ips = n * build.clock_mhz * 1e6 / cycles if cycles else float("inf")
    print(f"self-test on chip: {n} vectors ({entry['source']}) in {cycles:,} cycles: "
          f"{ips:,.0f} inferences/s at {build.clock_mhz:g} MHz (the timing model: "
          f"{entry['expected_cycles']:,} cycles)")
    print(f"{correct}/{n} classes right (the golden model: {entry['golden_correct']}/{n}, "
          f"labels from the {entry['labels']})")
    ok = n == entry["vectors"] and correct == entry["golden_correct"] \
        and cycles == entry["expected_cycles"]
    if not ok:
        print("qnnfab: the self-test differs from the golden model or the timing model",
              file=sys.stderr)
    return 0 if ok else 1


def _print_rates(frames_per_s, build):
    chip = ""
    if build is not None and build.inferences_per_s:
        chip = (f"; the chip alone: {build.inferences_per_s:,.0f} inferences/s "
                f"({build.path}): the UART is the limit")
    print(f"measured over the UART: {frames_per_s:,.1f} frames/s{chip}")


def _run_learning(args, network, build):
    import numpy as np
    from qnnfab.boards import session
    from qnnfab.model.data import load_dataset
    from qnnfab.progress import progress_bar
    if build is None:
        raise UserError("--learn needs --build DIR: the learning board's report.json holds "
                        "its rule and initial weights")
    if not build.learning:
        raise UserError(f"{build.path}: this board was built without --learn (rebuild with "
                        f"`qnnfab build --learn`)")
    data = network.meta.get("data") if isinstance(network.meta, dict) else None
    if not data:
        raise UserError(f"{args.model}: no data set recorded in the network: learning needs "
                        f"labelled samples; train it with `qnnfab train`")
    ds = load_dataset(data["name"], seed=data.get("split_seed", 0))
    rng = np.random.default_rng(args.seed)
    samples = args.samples
    order = np.concatenate([rng.permutation(len(ds.x_train))
                            for _ in range(-(-samples // len(ds.x_train)))])[:samples]
    test_n = len(ds.x_test) if args.vectors is None else min(args.vectors, len(ds.x_test))
    print(f"learning on {args.port}: {samples} labelled samples ({data['name']} training "
          f"split), accuracy on {test_n} test vectors before and after")
    bar = progress_bar(samples, "learn", unit="sample", enabled=not args.quiet)
    try:
        result = session.run_learning(
            args.port, network, build.learning, ds.x_train[order], ds.y_train[order],
            ds.x_test[:test_n], ds.y_test[:test_n], baud=args.baud, timeout=args.timeout,
            on_sample=lambda k, same: bar.update(1))
    finally:
        bar.close()
    agree = int(result.agree.sum())
    print(f"{agree}/{samples} learning answers and {result.test_agree}/{result.test_total} "
          f"test answers equal the integer rule's")
    if result.first_mismatch:
        print(f"first mismatch: {result.first_mismatch}", file=sys.stderr)
    print(f"accuracy: board {result.accuracy_before:.2%} before, {result.accuracy_after:.2%} "
          f"after learning (the rule: {result.rule_accuracy_before:.2%}, "
          f"{result.rule_accuracy_after:.2%})")
    _print_rates(result.frames_per_s, build)
    return 0 if result.all_agree else 1


def cmd_infer(args):
    import numpy as np
    from qnnfab.model.new_inputs import read_inputs
    from qnnfab.spec import golden
    network = _load(args.model, integer_for="infer")
    if args.out:
        from qnnfab.predictions import check_dump_path
        check_dump_path(args.out)
    inputs = read_inputs(args.input, network)
    trace = golden.forward(network, inputs.codes)
    classes = np.asarray(trace.classes)
    names = list(network.classes or [])
    shown = min(len(classes), args.show)
    for k in range(shown):
        name = f" ({names[classes[k]]})" if names and classes[k] < len(names) else ""
        label = "" if inputs.labels is None else f", label {inputs.labels[k]}"
        print(f"sample {k}: class {classes[k]}{name}{label}")
    if shown < len(classes):
        counts = np.bincount(classes, minlength=network.layers[-1].out_features)
        print(f"... {len(classes) - shown} more; classes of all {len(classes)}: "
              + ", ".join(f"{c}: {n}" for c, n in enumerate(counts) if n))
    if inputs.labels is not None:
        print(f"accuracy {float(np.mean(classes == inputs.labels)):.2%} on {len(classes)} "
              f"labelled samples (the golden model: what the hardware computes, bit for bit)")
    if args.out:
        from qnnfab.predictions import write_predictions
        write_predictions(args.out, classes, trace.scores, labels=inputs.labels)
        print(f"wrote {args.out} (class and scores of every sample)")
    return 0


def cmd_sweep(args):
    from qnnfab.sweep import run
    return run(args)


def cmd_program(args):
    from qnnfab.boards.program import program
    argv = program(args.dir, tool=args.tool, flash=args.flash)
    print("programmed: " + " ".join(argv))
    return 0


def cmd_boards(args):
    from qnnfab.boards.families import get_family
    from qnnfab.boards.registry import BOARDS
    for name, board in BOARDS.items():
        print(f"{name:12s} {board.description}; default design clock "
              f"{board.design_clock_mhz:g} MHz, folding budget {board.max_lanes} lanes")
        bitstream = f"DIR/{name}{get_family(board.family).bitstream_suffix}"
        print(f"{'':12s} program: {board.program_command.format(bitstream=bitstream)}; "
              f"UART: {board.uart_port}")
    return 0


def _print_report_summary(report, out_dir):
    from qnnfab.flow import folding_text
    res = report.get("resources", {})

    def used(key):
        r = res.get(key) or {}
        return f"{r.get('used', '?')}/{r.get('total', '?')}"
    print(f"board {report.get('board')} ({report.get('device')}): LUT {used('lut')}, "
          f"FF {used('ff')}, BRAM {used('bram')}, DSP {used('dsp')}"
          + (f", SPRAM {used('spram')}" if "spram" in res else ""))
    if report.get("weights_in"):
        load = (report.get("uart") or {}).get("load_bytes")
        ks = [str(k) for k, w in enumerate(report["weights_in"]) if w == "spram"]
        print(f"weights in SPRAM: layer{'s' if len(ks) > 1 else ''} {', '.join(ks)}"
              + (f"; `qnnfab run --build DIR` loads them first ({load:,} bytes)" if load else ""))
    if report.get("input_buffer") == "ebr":
        print("input vector in block RAM (--input-buffer): the codes go to the network as they "
              "arrive")
    fmax = report.get("fmax_mhz")
    if report.get("folding"):
        print(f"folding {folding_text((f['pe'], f['simd']) for f in report['folding'])} "
              f"({report.get('folding_source', 'given')})")
    if report.get("style"):
        from qnnfab.flow import styles_text
        print(f"style {styles_text(report['style'])} "
              f"({report.get('style_source') or 'given'})")
    print(f"fmax {fmax:.1f} MHz, clock {report.get('clock_mhz')} MHz, "
          f"{report.get('cycles_per_inference')} cycles/inference, "
          f"{report.get('inferences_per_s', 0):,.0f} inferences/s at the clock, "
          f"{report.get('inferences_per_s_at_fmax', 0):,.0f} at fmax"
          + ("" if report.get("timing_met") else " (timing NOT met)")
          if fmax is not None else "fmax unknown (timing NOT met)")
    b = report.get("bounds") or {}
    if b.get("memory_bound_cycles") and b.get("cycles_over_bound") and not report.get("learning"):
        macs = b.get("macs_per_lc_per_cycle")
        print(f"memory bound {b['memory_bound_cycles']} cycles/inference (every block RAM "
              f"port busy): this build is {b['cycles_over_bound']:.2f}x that"
              + (f"; {macs:.3f} MACs per logic cell per cycle" if macs else ""))
    if not report.get("timing_met", False):
        from qnnfab.boards.build import timing_warning
        print(f"qnnfab: warning: {timing_warning(report)}", file=sys.stderr)
    acc = report.get("accuracy")
    if acc:
        print("accuracy: " + ", ".join(f"{k} {v:.2%}" for k, v in acc.items()
                                        if isinstance(v, float)))
    vec = report.get("vectors")
    if vec:
        print(f"vectors: {vec.get('bit_exact')}/{vec.get('checked')} bit-exact "
              f"({vec.get('simulator')})")
    if report.get("bitstream"):
        print(f"bitstream: {os.path.join(out_dir, report['bitstream'])} "
              f"({_program_hint(report.get('board'), out_dir, report['bitstream'])})")
    print(f"report: {os.path.join(out_dir, 'report.json')}")


def _program_hint(board, out_dir, bitstream):
    """How to load the bitstream onto ``board``, from the board's registry entry."""
    from qnnfab.boards.registry import BOARDS
    entry = BOARDS.get(board)
    command = getattr(entry, "program_command", None)
    if not command:
        return "program it with your board's loader"
    return "program: " + command.format(bitstream=os.path.join(out_dir, bitstream))


def _choices_text(kind):
    """The names ``{presets}`` / ``{boards}`` stand for in a help text (imported only when a
    help text is shown: the preset registry imports torch)."""
    if kind == "presets":
        from qnnfab.model.presets import PRESETS
        return ", ".join(PRESETS)
    from qnnfab.boards.registry import BOARDS
    return ", ".join(BOARDS)


class _Formatter(argparse.HelpFormatter):
    """Help with every option's default (unless the text already says it) and the preset and
    board names filled in."""

    def _get_help_string(self, action):
        text = action.help or ""
        says_default = "default" in text
        for kind in ("presets", "boards"):
            if "{" + kind + "}" in text:
                text = text.replace("{" + kind + "}", _choices_text(kind))
        default = action.default
        if (action.option_strings and not action.required and not says_default
                and default is not None and default is not False
                and default != argparse.SUPPRESS
                and not isinstance(action, argparse._HelpAction)):
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """argparse with the one-line error format of every other error (exit 2, no usage dump),
    no abbreviated options, defaults in the help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        where = "" if self.prog == "qnnfab" else f"{self.prog.split()[-1]}: "
        self.exit(2, f"qnnfab: error: {where}{message} (see `{self.prog} --help`)\n")


def _version():
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("qnnfab")
    except PackageNotFoundError:
        return "unknown (not installed)"


GLOBAL_OPTIONS_HELP = {
    "--debug": "show the traceback on errors (the exit code stays 2 for usage errors, 1 for "
               "failures)",
    "--progress": "progress bars: tqdm bars with --progress, a few lines (every 10 %%) with "
                  "--no-progress (default: bars when stderr is a terminal, else lines)",
}


def build_parser():
    from qnnfab.boards.families import FAMILIES
    parser = _Parser(
        prog="qnnfab", description="Quantized neural networks onto small FPGAs, bit-exact.")
    parser.add_argument("--version", action="version", version=f"qnnfab {_version()}")

    def global_options(p, default):
        p.add_argument("--debug", action="store_true", default=default or False,
                       help=GLOBAL_OPTIONS_HELP["--debug"])
        p.add_argument("--progress", action=argparse.BooleanOptionalAction,
                       default=default, help=GLOBAL_OPTIONS_HELP["--progress"])
    global_options(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name, func, help_):
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        global_options(p, argparse.SUPPRESS)
        return p

    def quiet_arg(p):
        p.add_argument("--quiet", action="store_true", help="no progress output")

    def board_help(what):
        return f"{what}: one of {{boards}} (see `qnnfab boards`)"

    def folding_arg(p):
        p.add_argument("--folding", metavar="PE:SIMD,...",
                       help="per-layer folding (default: chosen automatically, from the "
                            "board's folding budget when a board is given)")
        p.add_argument("--target-ips", type=float, metavar="N",
                       help="instead of --folding: the cheapest folding that reaches N "
                            "inferences/s at the board's clock (needs --board); refused, with "
                            "the best reachable figure, when nothing that fits reaches it")
        p.add_argument("--target-cycles", type=int, metavar="N",
                       help="instead of --folding: the cheapest folding of at most N cycles "
                            "per inference")

    def style_arg(p, board_note):
        p.add_argument("--style", default="folded", metavar="folded|unrolled|auto|S,S,...",
                       help="how the layers are built: folded (weights in block RAM, "
                            "PE:SIMD lanes), unrolled (every dense layer's weights as "
                            "constants in the logic, one inference per clock; conv layers "
                            "stay folded), auto (unrolled layers, slowest first, while the "
                            f"estimate fits the board{board_note}) or one of folded/unrolled "
                            "per layer, comma-separated (default: folded)")

    def weights_arg(p, board_note):
        p.add_argument("--weights-in", default="ebr", metavar="ebr|spram|auto|W,W,...",
                       help="where the folded dense layers keep their weights: ebr (block RAM, "
                            "in the bitstream; the default), spram (the iCE40 UP5K's 4 "
                            "single-port RAMs of 256 kbit, loaded over the UART by `qnnfab run` "
                            "before the first inference), auto (SPRAM for the largest layers "
                            f"only when block RAM does not suffice{board_note}) or one of "
                            "ebr/spram per layer, comma-separated")

    def input_buffer_arg(p):
        p.add_argument("--input-buffer", default="auto", choices=("ff", "ebr", "auto"),
                       help="where the board top keeps the input vector: ff (flip-flops), ebr "
                            "(block RAM, two banks, the codes going in one by one: an MLP "
                            "whose first layer reads SIMD < inputs) or auto (block RAM only "
                            "when the flip-flops would take more than half the device, e.g. "
                            "a 28x28 8-bit image on the iCEBreaker; the default)")

    def clock_arg(p):
        p.add_argument("--clock-mhz", type=float, default=None, metavar="MHZ",
                       help="design clock, made by the PLL (default: the board's design "
                            "clock; see `qnnfab boards`)")

    def data_arg(p):
        p.add_argument("--data", default=None, metavar="SET",
                       help="data set instead of the preset's: digits; mnist:DIR (the four "
                            "MNIST IDX files as published, optionally gzipped); fashion-mnist "
                            "(apt-get install dataset-fashion-mnist); npz:FILE[,bits=K] "
                            "(x_train, y_train, x_test, y_test[, x_val, y_val]: integer codes, "
                            "or floats in [0, 1] made K-bit codes, default 8); "
                            "csv:FILE[,label=first|last|N|NAME][,bits=K] (split 70/10/20)")

    def arch_args(p):
        p.add_argument("--arch", metavar="SPEC",
                       help="layers, e.g. c16,p2,c32,p2,d128,d10: cN[kK][pP] convolution (N "
                            "channels, KxK kernel, default 3, padding P, default K//2), pS "
                            "max-pool after a convolution, dN dense; the last dN is the "
                            "output (N = classes)")
        p.add_argument("--weights", metavar="KIND[,KIND...]",
                       help="binary|ternary|adaptive|float, for every layer or one per "
                            "conv/dense layer (default: the preset's; binary with --arch alone)")
        p.add_argument("--act-bits", metavar="K[,K...]",
                       help="bits of the hidden activations (1: sign), for every hidden layer "
                            "or one each (default: the preset's; with --arch alone 1 if all "
                            "weights are binary, else 2)")
        p.add_argument("--input-shape", metavar="HxWxC",
                       help="image shape of flat inputs for convolutions (default: from the "
                            "data set, else a square one-channel image)")

    p = add("train", cmd_train, "train a preset, or your own architecture, and export its "
                                "network IR")
    p.add_argument("--preset", default=None, metavar="NAME",
                   help="training preset, one of {presets} (default digits-bnn; with --arch: "
                        "its options, the layers from --arch)")
    arch_args(p)
    p.add_argument("--out", required=True, metavar="FILE.qnn",
                   help="IR file to write (its folder is created)")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="training seed (weights init, data order)")
    p.add_argument("--epochs", type=int, default=None, metavar="N",
                   help="training epochs (default: the preset's)")
    p.add_argument("--sq-method", choices=("rule", "regularizer"), default=None,
                   help="adaptive weights: who chooses each layer's depth (binary or ternary), "
                        "Smart Quantization's switching rule with a bit budget or its "
                        "regularizer's depth gates (default: the preset's, rule)")
    p.add_argument("--sq-cost", type=float, default=None, metavar="MU",
                   help="adaptive weights, regularizer: the memory cost μ, larger makes more "
                        "layers binary (default 0.01; alone it implies --sq-method "
                        "regularizer)")
    data_arg(p)
    quiet_arg(p)

    p = add("import", cmd_import, "import a QONNX model (Brevitas export_qonnx) as a network "
                                  "IR, checked against qonnx's executor")
    p.add_argument("model", metavar="MODEL.onnx", help="a QONNX file (Brevitas "
                                                       "`export_qonnx`, dynamo or not)")
    p.add_argument("--out", required=True, metavar="FILE.qnn", help="IR file to write")
    p.add_argument("--check-vectors", type=int, default=100, metavar="N",
                   help="inputs on which qonnx's executor and the golden model are compared "
                        "(default 100; 0: no check)")
    p.add_argument("--data", default=None, metavar="SET",
                   help="check on the first N test images of this data set (digits, "
                        "mnist:DIR) instead of random codes")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed for the random check codes")
    p.add_argument("--quiet", action="store_true", help="print only the check and the file")

    p = add("cluster", cmd_cluster, "replace a CNN's conv kernels by a small codebook of "
                                    "representative kernels (k-means)")
    p.add_argument("model", metavar="FILE.qnn", help="a CNN (e.g. from `qnnfab train --preset "
                                                     "digits-cnn`)")
    p.add_argument("--kernels", type=int, required=True, metavar="K",
                   help="representative kernels (per conv layer, or network-wide with "
                        "--no-per-layer)")
    p.add_argument("--scale", action=argparse.BooleanOptionalAction, default=True,
                   help="a sign per kernel (kernel = ±representative): one more bit per "
                        "kernel, about half the representatives needed (default: on)")
    p.add_argument("--per-layer", action=argparse.BooleanOptionalAction, default=True,
                   help="a codebook per conv layer; --no-per-layer: one shared by the "
                        "network (default: per layer, with --scale: the setting that keeps "
                        "most accuracy as clustered, make bench-cluster)")
    p.add_argument("--finetune", type=int, default=None, metavar="EPOCHS",
                   help="fine-tune the representatives after assignment (default: 10 epochs "
                        "when FILE.pt from `qnnfab train` is beside FILE.qnn, else 0)")
    p.add_argument("--out", required=True, metavar="CLUSTERED.qnn", help="IR file to write")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed for k-means and fine-tuning")
    quiet_arg(p)

    p = add("learn", cmd_learn, "learn the last layer on the device model from a random "
                                "start, checked against the integer rule step by step")
    p.add_argument("model", metavar="FILE.qnn", help="a trained network (its last layer is "
                                                     "replaced by a random one that learns)")
    p.add_argument("--samples", type=int, default=1000, metavar="N",
                   help="labelled training samples streamed in (default 1000)")
    p.add_argument("--simulator", choices=["amaranth", "verilator"], default="amaranth",
                   help="simulator of the hardware")
    p.add_argument("--plot", metavar="FILE.svg|FILE.png",
                   help="accuracy against samples for the hardware and the float rule (PNG "
                        "needs matplotlib)")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of the random start and the sample order")
    quiet_arg(p)

    p = add("quantize", cmd_quantize, "quantize a float network's weights to per-layer "
                                      "codebooks (post-training)")
    p.add_argument("model", metavar="FLOAT.qnn", help="a float network (e.g. from "
                                                      "`qnnfab train --preset digits-mlp`)")
    p.add_argument("--method", choices=["ga", "kmeans", "fixed", "uniform", "minifloat", "pow2"],
                   default="ga", help="how to choose the levels (default ga)")
    p.add_argument("--bits", type=int, default=3, metavar="K",
                   help="index bits per weight (default 3)")
    p.add_argument("--level-bits", type=int, default=8, metavar="K",
                   help="bits of each signed integer level (default 8)")
    p.add_argument("--out", required=True, metavar="FILE.qnn", help="IR file to write")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of the GA / k-means")
    p.add_argument("--population", type=int, default=24, metavar="N",
                   help="GA population (default 24)")
    p.add_argument("--generations", type=int, default=30, metavar="N",
                   help="GA generations (default 30)")
    from qnnfab.sweep_executor import add_executor_arguments
    add_executor_arguments(p, what="GA's fitness evaluations", default_help="in this process")
    quiet_arg(p)

    p = add("verilog", cmd_verilog, "write the Verilog of a network")
    p.add_argument("model", metavar="FILE.qnn", help="a quantized network")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--name", default="qnnfab_network", metavar="NAME", help="top module name")
    p.add_argument("--board", metavar="NAME",
                   help=board_help("also write the board top (UART) for this board, with its "
                                   "folding"))
    folding_arg(p)
    style_arg(p, "; needs --board")
    weights_arg(p, "; needs --board")

    p = add("sim", cmd_sim, "simulate the hardware and compare it with the golden model")
    p.add_argument("model", metavar="FILE.qnn", help="a quantized network")
    p.add_argument("--simulator", choices=["amaranth", "verilator", "icarus"],
                   default=None, help="simulator (default: amaranth; verilator with "
                                      "--gate-level)")
    p.add_argument("--gate-level", choices=list(FAMILIES), default=None, metavar="FAMILY",
                   help="simulate the netlist Yosys synthesizes for this FPGA family (ice40 "
                        "or ecp5) with its cell models, instead of the RTL")
    p.add_argument("--vectors", type=int, default=None, metavar="N",
                   help="number of test vectors (default: the whole test split, or 64 random "
                        "for a network without a data set)")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed for random vectors")
    p.add_argument("--dump", metavar="FILE.npz|FILE.csv",
                   help="write every vector's class and scores (and label, and the golden "
                        "model's) to this file")
    quiet_arg(p)
    p.add_argument("--board", metavar="NAME",
                   help=board_help("simulate the folding this board's build uses (default: "
                                   "the plain automatic folding)"))
    folding_arg(p)
    style_arg(p, "; needs --board")
    weights_arg(p, "; needs --board")

    p = add("build", cmd_build, "build a bitstream and report.json for a board")
    p.add_argument("model", metavar="FILE.qnn", help="a quantized network")
    p.add_argument("--board", required=True, metavar="NAME", help=board_help("target board"))
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--pnr-seed", type=int, default=0, metavar="N",
                   help="nextpnr placement seed")
    p.add_argument("--seed", type=int, default=None, dest="seed", help=argparse.SUPPRESS)
    p.add_argument("--baud", type=int, default=None, metavar="N",
                   help="UART baud rate of the board top (default: the board's, 115200; the "
                        "iCEBreaker's FT2232H and the ULX3S's FT231X take up to 3000000)")
    p.add_argument("--selftest", type=int, default=0, metavar="N",
                   help="store the first N test vectors on chip: `qnnfab run --selftest` then "
                        "runs them back to back and the chip measures its own inferences/s")
    p.add_argument("--learn", action="store_true",
                   help="the learning board: the last layer learns on chip from a random "
                        "start (labelled samples over the UART, 0x4C frames)")
    quiet_arg(p)
    clock_arg(p)
    folding_arg(p)
    style_arg(p, "")
    weights_arg(p, "")
    input_buffer_arg(p)

    p = add("flow", cmd_flow, "train, export, simulate (Amaranth + Verilator), build: the "
                              "whole flow")
    p.add_argument("--board", default="icebreaker", metavar="NAME",
                   help=board_help("target board"))
    p.add_argument("--preset", default=None, metavar="NAME",
                   help="training preset, one of {presets} (default digits-bnn; with --arch: "
                        "its options, the layers from --arch)")
    arch_args(p)
    p.add_argument("--out", default="build/flow", metavar="DIR", help="output folder (created)")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="training seed (weights init, data order)")
    p.add_argument("--pnr-seed", type=int, default=0, metavar="N",
                   help="nextpnr placement seed")
    p.add_argument("--epochs", type=int, default=None, metavar="N",
                   help="training epochs (default: the preset's)")
    data_arg(p)
    p.add_argument("--vectors", type=int, default=None, metavar="N",
                   help="vectors for Amaranth's simulator (default: the whole test split)")
    p.add_argument("--verilator-vectors", type=int, default=64, metavar="N",
                   help="of those, how many also run in Verilator (0: skip Verilator)")
    quiet_arg(p)
    clock_arg(p)
    folding_arg(p)
    style_arg(p, "")
    weights_arg(p, "")
    input_buffer_arg(p)

    p = add("run", cmd_run, "run the network on a built board over its UART and check every "
                            "answer")
    p.add_argument("model", metavar="FILE.qnn", help="the network the board was built from")
    p.add_argument("--port", required=True, metavar="PORT",
                   help="serial port, e.g. /dev/ttyUSB1 (iCEBreaker) or /dev/ttyUSB0 (ULX3S)")
    p.add_argument("--build", metavar="DIR",
                   help="the board's build folder: its report.json gives the chip's own "
                        "inferences/s (printed beside the measured frames/s) and, with "
                        "--learn, the learning rule and initial weights")
    p.add_argument("--baud", type=int, default=None, metavar="N",
                   help="UART baud rate (default: the build's, from --build DIR, else 115200)")
    p.add_argument("--timeout", type=float, default=2.0, metavar="S",
                   help="seconds to wait for each answer")
    p.add_argument("--vectors", type=int, default=None, metavar="N",
                   help="test vectors sent to the board (default: the whole test split, or "
                        "64 random for a network without a data set)")
    p.add_argument("--learn", action="store_true",
                   help="drive a board built with `build --learn`: labelled training samples, "
                        "test accuracy before and after, answers checked against the rule")
    p.add_argument("--selftest", action="store_true",
                   help="run the vectors stored on a board built with `build --selftest N` "
                        "back to back: the chip's own inferences/s and correct classes")
    p.add_argument("--samples", type=int, default=1000, metavar="N",
                   help="with --learn: labelled training samples sent")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="with --learn: seed of the training samples' order")
    quiet_arg(p)

    p = add("infer", cmd_infer, "classify new samples with a network (the golden model, "
                                "bit-exact with the hardware)")
    p.add_argument("model", metavar="FILE.qnn", help="a quantized network")
    p.add_argument("--input", required=True, metavar="FILE",
                   help="samples: .npz (x, optional labels y), .npy, .csv (one sample per "
                        "line), an IDX file (MNIST format, plain or .gz) or a .pgm image; "
                        "integer codes, or floats in [0, 1]")
    p.add_argument("--out", metavar="FILE.npz|FILE.csv",
                   help="write every sample's class and scores to this file")
    p.add_argument("--show", type=int, default=20, metavar="N",
                   help="print the class of the first N samples")

    p = add("sweep", cmd_sweep, "design-space sweep: train, quantize, simulate and build every "
                                "point of a spec, on local processes or a Dask cluster")
    from qnnfab import sweep
    sweep.add_arguments(p)   # SPEC.toml, --out, --workers, --scheduler, --dry-run, --quiet

    p = add("program", cmd_program,
            "load a build's bitstream onto its board (openFPGALoader or the board's own tool)")
    p.add_argument("dir", metavar="DIR", help="a finished build folder (qnnfab build/flow --out)")
    p.add_argument("--tool", metavar="NAME",
                   help="the programmer to use (default: the board's first installed)")
    p.add_argument("--flash", action="store_true",
                   help="write the configuration flash (kept at power-off) instead of SRAM")

    add("boards", cmd_boards, "list the supported boards")
    return parser


def arg_ranges():
    """The allowed range ``(lo, hi)`` of each numeric option (``None``: no bound), checked
    before a command starts."""
    from qnnfab import ir
    return {
        "vectors": (1, None), "verilator_vectors": (0, None), "check_vectors": (0, None),
        "epochs": (1, None),
        "bits": (1, ir.MAX_CODEBOOK_BITS), "level_bits": (2, ir.MAX_LEVEL_BITS),
        "population": (2, None), "generations": (1, None), "kernels": (1, None),
        "finetune": (0, None), "samples": (1, None), "baud": (1, None),
        "timeout": (0.001, None), "clock_mhz": (0.001, None), "show": (0, None),
        "target_ips": (0.001, None), "target_cycles": (1, None), "selftest": (0, 65535),
        "workers": (0, None),
    }


def check_arg_ranges(args):
    """UserError naming the option (``--bits: expected 1..8, got 9``) for a number out of its
    range (:func:`arg_ranges`)."""
    for name, (lo, hi) in arg_ranges().items():
        value = getattr(args, name, None)
        if value is None:
            continue
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            option = "--" + name.replace("_", "-")
            want = (f"{lo}..{hi}" if hi is not None else
                    "a positive number" if isinstance(lo, float) else f">= {lo}")
            raise UserError(f"{option}: expected {want}, got {value:g}")


def _silence_unraisable():
    """After Ctrl-C, an interrupted simulator's coroutines are closed by the garbage collector
    and report ``RuntimeError: aclose(): ...`` as "Exception ignored": the user asked to stop,
    so say nothing more than ``qnnfab: interrupted``."""
    import gc
    sys.unraisablehook = lambda unraisable: None
    gc.collect()


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    from qnnfab.progress import set_mode
    set_mode(args.progress)
    _created_dirs.clear()
    try:
        rc = _main(args)
        if rc:
            _remove_created_empty_dirs()
        return rc
    except BaseException:
        _remove_created_empty_dirs()
        raise
    finally:
        for fd in _held_locks:
            os.close(fd)
        _held_locks.clear()


def _main(args):
    try:
        check_arg_ranges(args)
        return args.func(args)
    except KeyboardInterrupt:
        _silence_unraisable()
        print("qnnfab: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line for the user, traceback with --debug
        known = (UserError, ValueError, TypeError, OSError, RuntimeError, LookupError)
        if not isinstance(exc, known):
            raise  # a failure: Python's traceback, exit 1
        if args.debug:
            import traceback
            traceback.print_exc()
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"qnnfab: error: {text}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
