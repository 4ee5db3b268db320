"""Where many independent jobs run: this process, a local process pool, or a Dask cluster.

One interface for ``qnnfab sweep`` (one job per design point) and the genetic search of
``qnnfab quantize`` (one job per slice of the population), so the same job function runs the
same way on every executor:

* :class:`SerialExecutor` — in this process, one job after another (``--workers 0``; the GA's
  default), for debugging and for callers that are themselves a job;
* :class:`LocalPool` — ``--workers N`` processes of this machine (``spawn``ed, so nothing
  but the job's arguments is shared with the caller). A worker ignores Ctrl-C: the caller
  handles it and ends the pool. A worker that dies (killed, out of memory) breaks the pool:
  the pool is made anew and the jobs it was running go again, :data:`RETRIES` times at most;
* :class:`DaskExecutor` — ``--scheduler ADDRESS``, a ``dask.distributed`` scheduler (optional
  extra ``qnnfab[cluster]``). The scheduler itself gives a job whose worker died to another
  worker; a job is never run for a result twice.

Jobs and their arguments travel by pickle (Dask: cloudpickle), so a job is a module-level
function of an installed module, and it returns plain data (files as ``bytes``): nothing goes
through a shared disk. Each job runs with one torch/BLAS thread per worker process
(``OMP_NUM_THREADS=1`` in pool workers): workers, not threads, are the parallelism, and one
thread keeps float sums in the same order everywhere.
"""

import os
import signal
import sys

__all__ = ["Executor", "SerialExecutor", "LocalPool", "DaskExecutor", "MissingDask",
           "make_executor", "add_executor_arguments", "default_workers", "CLUSTER_HINT",
           "RETRIES"]

#: What a user without Dask is told to run.
CLUSTER_HINT = "pip install qnnfab[cluster]"

#: How often a local pool job whose worker process died runs again before it counts as failed.
RETRIES = 2


class MissingDask(RuntimeError):
    """``--scheduler`` without ``dask.distributed`` installed; the message says how to get it."""


def default_workers():
    """Worker processes when ``--workers`` is not given: the CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _chunks(items, n):
    """``items`` cut into at most ``n`` consecutive slices of near-equal length."""
    items = list(items)
    n = max(1, min(n, len(items)))
    size, extra = divmod(len(items), n)
    out, start = [], 0
    for k in range(n):
        end = start + size + (1 if k < extra else 0)
        out.append(items[start:end])
        start = end
    return out


class Executor:
    """Runs ``fn(*args)`` jobs. Subclasses implement :meth:`imap_unordered` and
    :meth:`close`; use as a context manager (``with make_executor(...) as ex:``).

    Attributes
    ----------
    workers : int
        How many jobs run at once (at least 1).
    """
    workers = 1

    def describe(self):
        """One line: what runs the jobs (``local process pool, 2 workers``)."""
        raise NotImplementedError

    def imap_unordered(self, fn, arglist, *, keys=None):
        """Yield ``(index, outcome)`` as each job ``fn(*arglist[index])`` finishes: its return
        value, or the exception it raised (a job failing does not stop the others).
        ``keys``: a name per job (Dask task keys; unique, the same for the same inputs).
        Closing the generator early (an exception in the caller, Ctrl-C) cancels the jobs not
        yet finished."""
        raise NotImplementedError

    def map_chunks(self, fn, items, *, shared=None):
        """``fn(shared, chunk)`` over :attr:`workers` consecutive chunks of ``items``, each
        returning one result per item; the results in the order of ``items``. ``shared`` (the
        same for every chunk) travels once per call (to each worker once on Dask). The first
        failing chunk's exception is raised."""
        chunks = _chunks(items, self.workers)
        outcomes = [None] * len(chunks)
        for index, outcome in self.imap_unordered(fn, [(shared, c) for c in chunks]):
            if isinstance(outcome, BaseException):
                raise outcome
            outcomes[index] = outcome
        out = []
        for chunk, got in zip(chunks, outcomes):
            got = list(got)
            if len(got) != len(chunk):
                raise ValueError(f"map_chunks: {fn.__name__} returned {len(got)} results for "
                                 f"{len(chunk)} items")
            out.extend(got)
        return out

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class SerialExecutor(Executor):
    """Jobs in this process, one after another."""
    workers = 1

    def describe(self):
        return "this process (serial)"

    def imap_unordered(self, fn, arglist, *, keys=None):
        for index, args in enumerate(arglist):
            try:
                outcome = fn(*args)
            except Exception as exc:  # noqa: BLE001 -- the caller gets it as the outcome
                outcome = exc
            yield index, outcome


def _init_pool_worker():
    """A pool worker: Ctrl-C is the caller's to handle; one math thread."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = "1"


class LocalPool(Executor):
    """``workers`` processes of this machine (``concurrent.futures`` with ``spawn``)."""

    def __init__(self, workers):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"--workers: expected an integer >= 1, got {workers!r}")
        self.workers = workers
        self._pool = None

    def describe(self):
        return f"local process pool, {self.workers} worker{'s' * (self.workers != 1)}"

    def _get_pool(self):
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor
            self._pool = ProcessPoolExecutor(max_workers=self.workers,
                                             mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_pool_worker)
        return self._pool

    def _drop_pool(self, *, kill):
        pool, self._pool = self._pool, None
        if pool is None:
            return
        # The pool's processes (concurrent.futures keeps them in ``_processes``): ended
        # below, so no job runs on after Ctrl-C. (Python 3.14 adds terminate_workers().)
        processes = list((getattr(pool, "_processes", None) or {}).values()) if kill else []
        pool.shutdown(wait=not kill, cancel_futures=True)
        for process in processes:  # jobs still running: end them now, not after they finish
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=5)

    def imap_unordered(self, fn, arglist, *, keys=None):
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool
        arglist = list(arglist)
        attempts = [0] * len(arglist)
        pending = {}
        for index, args in enumerate(arglist):
            pending[self._get_pool().submit(fn, *args)] = index
        ok = False
        try:
            while pending:
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                broken = []
                for future in done:
                    index = pending.pop(future)
                    exc = future.exception()
                    if isinstance(exc, BrokenProcessPool):
                        broken.append((index, exc))
                    else:
                        yield index, exc if exc is not None else future.result()
                if broken:
                    # A worker died: every job of this pool fails with BrokenProcessPool. Make
                    # a new pool and run them again (the dead worker's job among them).
                    for future in list(pending):
                        broken.append((pending.pop(future), None))
                    self._drop_pool(kill=True)
                    for index, exc in sorted(broken, key=lambda b: b[0]):
                        attempts[index] += 1
                        if attempts[index] > RETRIES:
                            yield index, RuntimeError(
                                f"a worker process died while running this job "
                                f"{attempts[index]} times ({exc or 'pool broken'})")
                        else:
                            pending[self._get_pool().submit(fn, *arglist[index])] = index
            ok = True
        finally:
            if not ok:  # Ctrl-C or the caller stopped early: end the running jobs now
                self._drop_pool(kill=True)

    def close(self):
        self._drop_pool(kill=False)


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise MissingDask(f"--scheduler needs Dask (dask.distributed): {CLUSTER_HINT}") \
            from None
    return distributed


def _worker_versions():
    """Run on each Dask worker: what it would run the jobs with."""
    import qnnfab
    return {"qnnfab": qnnfab.__version__, "python": sys.version.split()[0]}


class DaskExecutor(Executor):
    """Jobs on a ``dask.distributed`` cluster.

    Parameters
    ----------
    scheduler : str or distributed.Client
        The scheduler's address (``tcp://HOST:8786``) or a client connected to it.
    timeout : float
        Seconds to wait for the scheduler and for at least one worker.
    """

    def __init__(self, scheduler, *, timeout=60.0):
        distributed = _import_distributed()
        self._own = not isinstance(scheduler, distributed.Client)
        try:
            self.client = distributed.Client(scheduler, timeout=timeout,
                                             set_as_default=False) if self._own else scheduler
        except OSError as exc:
            raise OSError(f"--scheduler {scheduler}: cannot reach the Dask scheduler "
                          f"({exc}); start one with `dask scheduler`") from None
        self.address = self.client.scheduler.address
        self._shared = None
        try:
            try:
                self.client.wait_for_workers(1, timeout=timeout)
            except TimeoutError:
                raise TimeoutError(f"--scheduler {self.address}: no Dask worker connected "
                                   f"within {timeout:g} s; start some with `dask worker "
                                   f"{self.address} --nworkers N --nthreads 1`") from None
            self._check_workers()
        except BaseException:
            self.close()
            raise

    def _check_workers(self):
        import qnnfab
        try:
            found = self.client.run(_worker_versions)
        except Exception as exc:  # noqa: BLE001 -- a worker without qnnfab fails to unpickle
            raise RuntimeError(f"--scheduler {self.address}: the Dask workers cannot run "
                               f"qnnfab jobs ({type(exc).__name__}: {exc}); install qnnfab "
                               f"on every worker") from None
        wrong = {w: v["qnnfab"] for w, v in found.items() if v["qnnfab"] != qnnfab.__version__}
        if wrong:
            raise RuntimeError(f"--scheduler {self.address}: workers run another qnnfab "
                               f"version than this one ({qnnfab.__version__}): "
                               + ", ".join(f"{w}: {v}" for w, v in sorted(wrong.items())))

    @property
    def workers(self):
        return max(1, sum(self.client.nthreads().values()))

    def describe(self):
        n = len(self.client.nthreads())
        return (f"Dask scheduler {self.address}, {n} worker{'s' * (n != 1)} "
                f"({self.workers} threads)")

    def _scatter(self, value):
        """``value`` on every worker (a future standing for it); the last value is kept
        there, so the calls of one GA send it once."""
        if self._shared is None or self._shared[0] is not value:
            self._shared = None
            self._shared = (value, self.client.scatter([value], broadcast=True, hash=False)[0])
        return self._shared[1]

    def map_chunks(self, fn, items, *, shared=None):
        return super().map_chunks(fn, items, shared=_Scattered(self._scatter(shared)))

    def imap_unordered(self, fn, arglist, *, keys=None):
        distributed = _import_distributed()
        arglist = [tuple(a.future if isinstance(a, _Scattered) else a for a in args)
                   for args in arglist]
        futures = {}
        for index, args in enumerate(arglist):
            if keys is not None:
                future = self.client.submit(fn, *args, key=keys[index], pure=False)
            else:
                future = self.client.submit(fn, *args, pure=False)
            futures[future] = index
        ok = False
        try:
            for future in distributed.as_completed(list(futures), loop=self.client.loop):
                index = futures[future]
                try:
                    outcome = future.result()
                except Exception as exc:  # noqa: BLE001 -- a failed job, e.g. KilledWorker
                    outcome = exc
                future.release()
                yield index, outcome
            ok = True
        finally:
            if not ok:
                self.client.cancel(list(futures), force=True)

    def close(self):
        self._shared = None
        if self._own:
            self.client.close()


class _Scattered:
    """Marks an argument that is already a Dask future (the scattered shared value)."""

    def __init__(self, future):
        self.future = future


def make_executor(workers=None, scheduler=None):
    """The executor for ``--workers`` / ``--scheduler``: a :class:`DaskExecutor` when
    ``scheduler`` is given (``workers`` must then be None); else :class:`SerialExecutor` for
    ``workers=0`` and a :class:`LocalPool` of ``workers`` processes otherwise (None:
    :func:`default_workers`)."""
    if scheduler is not None:
        if workers is not None:
            raise ValueError("--workers and --scheduler: give one of them (the cluster's "
                             "workers are set where they start: `dask worker --nworkers N`)")
        return DaskExecutor(scheduler)
    if workers is None:
        workers = default_workers()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"--workers: expected an integer >= 0, got {workers!r}")
    return SerialExecutor() if workers == 0 else LocalPool(workers)


def add_executor_arguments(parser, *, what, default_help):
    """``--workers N`` and ``--scheduler ADDRESS`` on an argparse ``parser``; ``what``: the
    jobs (``"design points"``), ``default_help``: what happens without either option."""
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help=f"run the {what} on N local worker processes (0: in this "
                             f"process; default: {default_help})")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help=f"run the {what} on a Dask cluster: the scheduler's address, "
                             f"e.g. tcp://10.0.0.5:8786 (needs {CLUSTER_HINT})")
