"""``make fuzz``: a long randomized-equivalence campaign on every core, bounded in networks and
in time.

Worker processes (``--workers``, default every core) each take *chunks*: ``--chunk`` random
networks drawn by Hypothesis (:func:`qnnfab.sim.fuzz.run`) from the chunk's own seed
(``--seed`` plus the chunk's number), every one checked against the golden model in Amaranth's
simulator one at a time, and ``--verilator-share`` of them (evenly spread) also in bulk
Verilator, ``--batch`` networks per build (:func:`qnnfab.sim.fuzz.check_batch`; every other
batch with random stalls). Why a share: a random network costs about 0.25 s of CPU in
Amaranth's simulator but about 1.6 s in Verilator, nearly all of it making the hardware
(measured on batches of 48: Amaranth's RTLIL ~0.5 s, Yosys ~0.1 s, Verilator ~0.55 s, g++
-O0 ~0.6 s per network; the simulation itself takes milliseconds); 10,000 networks in an hour
on two cores (0.72 core-seconds each) leave room for about a fifth of them there. The parent
hands out chunks until ``--networks`` networks are checked or ``--minutes`` have passed
(chunks running then skip the rest of their networks), prints progress on stderr, then the
counts, every failing example and the mismatches::

    python -m qnnfab.sim.fuzz --networks 10000 --minutes 60
    ...
    <N> networks in <M> min (<R> per hour on 2 workers); <C> CPU-min, <R'> per CPU-hour
    golden = amaranth: <N> networks, <V> vectors; golden = verilator: <about N/5> networks,
    <V'> vectors; 0 mismatches

Exit status 0 with no mismatch, 1 otherwise. A chunk that failed can be repeated alone:
``python -m qnnfab.sim.fuzz --seed <seed + chunk> --networks <chunk> --chunk <chunk>
--workers 1`` (printed with the failure).
"""

import argparse
import concurrent.futures
import multiprocessing
import os
import resource
import sys
import tempfile
import time

__all__ = ["campaign", "run_chunk", "SIMULATORS", "VERILATOR_SHARE"]

#: Simulators a campaign can check.
SIMULATORS = ("amaranth", "verilator")
#: Default share of the networks also checked in bulk Verilator (see ``--verilator-share``).
VERILATOR_SHARE = 0.2


def run_chunk(run, tally_class, seed, networks, simulators, batch, max_features, max_vectors,
              deadline_s, build_dir, verilator_share=1.0):
    """One chunk in a worker process: ``networks`` Hypothesis examples from ``seed`` checked by
    ``run`` (:func:`qnnfab.sim.fuzz.run`) into a new ``tally_class``
    (:class:`qnnfab.sim.fuzz.Tally`); returns ``(tally, error or None, seconds)``.
    ``deadline_s``: seconds from now after which examples are skipped. An AssertionError (a
    mismatch found one example at a time, shrunk by Hypothesis) is returned as the error text,
    not raised."""
    tally = tally_class()
    start = time.monotonic()
    error = None
    try:
        run(networks, simulators, seed=seed, build_dir=build_dir, tally=tally,
            max_features=max_features, max_vectors=max_vectors, batch=batch,
            deadline=None if deadline_s is None else start + deadline_s,
            verilator_share=verilator_share)
    except AssertionError as exc:
        error = f"{exc}"
    return tally, error, time.monotonic() - start


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m qnnfab.sim.fuzz",
        description="Check golden = Amaranth = Verilator on random networks (Hypothesis), on "
                    "every core, until --networks networks or --minutes minutes.")
    parser.add_argument("--networks", type=int, default=10_000,
                        help="stop after this many networks (default 10000)")
    parser.add_argument("--minutes", type=float, default=60.0,
                        help="stop handing out work after this many minutes (default 60)")
    parser.add_argument("--simulators", default=",".join(SIMULATORS),
                        help="comma-separated, of: amaranth, verilator (default both)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: one per core)")
    parser.add_argument("--verilator-share", type=float, default=VERILATOR_SHARE,
                        help="with both simulators, the share of the networks also run in "
                             f"bulk Verilator (default {VERILATOR_SHARE}: a network costs "
                             "several times more there, Verilog generation and compile "
                             "included); 1 for every network")
    parser.add_argument("--batch", type=int, default=48,
                        help="networks per bulk Verilator build (default 48)")
    parser.add_argument("--chunk", type=int, default=240,
                        help="networks per unit of work handed to a worker (default 240: one "
                             "full Verilator batch at the default share)")
    parser.add_argument("--seed", type=int, default=None,
                        help="Hypothesis seed of the first chunk, to repeat a run (default: a "
                             "new random seed, printed)")
    parser.add_argument("--max-features", type=int, default=12,
                        help="largest layer width drawn (default 12)")
    parser.add_argument("--max-vectors", type=int, default=6,
                        help="most input vectors per network (default 6)")
    return parser


def _check_args(parser, args):
    sims = tuple(s.strip() for s in args.simulators.split(",") if s.strip())
    bad = [s for s in sims if s not in SIMULATORS]
    if not sims or bad:
        parser.error(f"--simulators: expected some of {', '.join(SIMULATORS)}, got "
                     f"{args.simulators!r}")
    for name in ("networks", "batch", "chunk", "max_features", "max_vectors"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, not {getattr(args, name)}")
    if not 0.0 < args.verilator_share <= 1.0:
        parser.error(f"--verilator-share must be in (0, 1], not {args.verilator_share}")
    if args.minutes <= 0:
        parser.error(f"--minutes must be > 0, not {args.minutes}")
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be >= 1, not {args.workers}")
    return sims


def campaign(argv=None, *, run, tally_class):
    """Parse ``argv`` and run the campaign (see the module docstring) with ``run`` and
    ``tally_class`` (:func:`qnnfab.sim.fuzz.run`, :class:`qnnfab.sim.fuzz.Tally`: handed in
    by :func:`qnnfab.sim.fuzz.main`, so this module does not import that one); returns the exit
    status."""
    parser = _parser()
    args = parser.parse_args(argv)
    simulators = _check_args(parser, args)
    if "verilator" in simulators:
        from .verilator_env import find_verilator
        find_verilator()  # a missing tool fails here, with how to get it
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "little")
    workers = args.workers or os.cpu_count() or 1
    chunk = min(args.chunk, args.networks)
    log = _logger()
    log(f"seed {args.seed} (repeat this run with --seed {args.seed}); {workers} workers, "
        f"chunks of {chunk} networks, golden = {' = '.join(simulators)}"
        + (f", {_share(args, simulators):.0%} of them in Verilator, {args.batch} networks per "
           "build" if "verilator" in simulators else ""))
    tally = tally_class()
    errors = []
    work = (run, tally_class)
    cpu_start = cpu_seconds()
    start = time.monotonic()
    deadline = start + 60.0 * args.minutes
    with tempfile.TemporaryDirectory(prefix="qnnfab-fuzz-") as build_dir:
        try:
            _campaign(args, simulators, workers, chunk, build_dir, tally, errors, start,
                      deadline, log, work)
        except KeyboardInterrupt:
            log("interrupted: the counts so far")
    elapsed = time.monotonic() - start
    cpu = cpu_seconds() - cpu_start
    counted = max(tally.networks.values(), default=0)
    print(f"{counted} networks in {elapsed / 60:.1f} min "
          f"({counted / max(elapsed, 1e-9) * 3600:,.0f} per hour on {workers} workers); "
          f"{cpu / 60:.1f} CPU-min, {counted / max(cpu, 1e-9) * 3600:,.0f} per CPU-hour")
    if tally.features:
        print(f"features exercised: {', '.join(sorted(tally.features))}")
    for line in tally.failures[:20]:
        print(f"FAILED: {line}")
    for line in errors[:20]:
        print(f"MISMATCH: {line}")
    for line in tally.mismatches[:50]:
        print(f"  {line}")
    if len(tally.mismatches) > 50:
        print(f"  ... and {len(tally.mismatches) - 50} more")
    print(tally.summary())
    return 0 if not tally.mismatches and not errors else 1


def cpu_seconds():
    """User + system CPU seconds of this process and of its finished children (the workers,
    and the Verilator and compiler runs they waited for): the campaign's cost independent of
    what else the machine runs, for the per-CPU-hour rate."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _logger():
    def log(message):
        print(message, file=sys.stderr, flush=True)
    return log


def _campaign(args, simulators, workers, chunk, build_dir, tally, errors, start, deadline,
              log, work):
    if workers == 1:  # in this process: no start-up cost, and easier to debug
        _serial(args, simulators, chunk, build_dir, tally, errors, start, deadline, log, work)
        return
    context = multiprocessing.get_context("spawn")
    submitted = 0  # networks handed out
    next_chunk = 0
    last_report = start
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers,
                                                mp_context=context) as pool:
        running = {}

        def submit():
            nonlocal submitted, next_chunk
            n = min(chunk, args.networks - submitted)
            seed = args.seed + next_chunk
            future = pool.submit(run_chunk, *work, seed, n, simulators, args.batch,
                                 args.max_features, args.max_vectors,
                                 max(0.0, deadline - time.monotonic()), build_dir,
                                 _share(args, simulators))
            running[future] = (seed, n)
            submitted += n
            next_chunk += 1

        while submitted < args.networks and len(running) < workers:
            submit()
        while running:
            done, _ = concurrent.futures.wait(running, timeout=30,
                                              return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                seed, n = running.pop(future)
                part, error, _seconds = future.result()
                tally.merge(part)
                _record(errors, error, seed, n)
                if submitted < args.networks and time.monotonic() < deadline:
                    submit()
            now = time.monotonic()
            if done or now - last_report > 60:
                last_report = now
                counted = max(tally.networks.values(), default=0)
                log(f"  {counted}/{args.networks} networks, "
                    f"{len(tally.mismatches) + len(errors)} mismatches "
                    f"({(now - start) / 60:.1f} min)")


def _serial(args, simulators, chunk, build_dir, tally, errors, start, deadline, log, work):
    submitted, k = 0, 0
    while submitted < args.networks and time.monotonic() < deadline:
        n = min(chunk, args.networks - submitted)
        seed = args.seed + k
        part, error, _ = run_chunk(*work, seed, n, simulators, args.batch, args.max_features,
                                   args.max_vectors, max(0.0, deadline - time.monotonic()),
                                   build_dir, _share(args, simulators))
        tally.merge(part)
        _record(errors, error, seed, n)
        submitted += n
        k += 1
        counted = max(tally.networks.values(), default=0)
        log(f"  {counted}/{args.networks} networks, {len(tally.mismatches) + len(errors)} "
            f"mismatches ({(time.monotonic() - start) / 60:.1f} min)")


def _share(args, simulators):
    return args.verilator_share if "amaranth" in simulators else 1.0


def _record(errors, error, seed, n):
    if error:
        errors.append(f"chunk seed {seed} (repeat: python -m qnnfab.sim.fuzz --seed {seed} "
                      f"--networks {n} --chunk {n} --workers 1):\n{error}")
