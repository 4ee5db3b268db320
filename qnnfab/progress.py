"""Progress reporting, one helper for every long step: a tqdm bar when stderr is a terminal, a
few plain lines (start, every 10 %, end) otherwise, so a captured log stays readable.

``qnnfab --progress`` / ``--no-progress`` force bars / lines (:func:`set_mode`).
"""

import sys

__all__ = ["set_mode", "use_bars", "progress_bar", "iterate", "write_line"]

_forced = None  # None: bars when stderr is a TTY; True: always bars; False: always lines


def set_mode(bars):
    """``True``: tqdm bars always; ``False``: line-based always; ``None``: bars on a TTY."""
    global _forced
    _forced = bars


def use_bars(stream=None):
    """Whether progress on ``stream`` (default stderr) is drawn as a tqdm bar."""
    if _forced is not None:
        return _forced
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _Null:
    n = 0
    total = 0

    def update(self, k=1):
        pass

    def set(self, done, total=None):
        pass

    def set_postfix(self, **values):
        pass

    def close(self):
        pass


class _Lines:
    """``desc: done/total unit (P %)`` on stderr at 0 % and each further 10 %."""

    def __init__(self, total, desc, unit):
        self.total, self.desc, self.unit = total, desc, unit
        self.n = 0
        self._last = -1
        self._postfix = ""

    def update(self, k=1):
        self.set(self.n + k)

    def set(self, done, total=None):
        if total is not None:
            self.total = total
        self.n = done
        pct = min(100, int(100 * done / self.total)) if self.total else 100
        mark = pct // 10 * 10
        if mark > self._last:
            self._last = mark
            print(f"{self.desc}: {done}/{self.total} {self.unit} ({mark} %){self._postfix}",
                  file=sys.stderr, flush=True)

    def set_postfix(self, **values):
        self._postfix = "; " + ", ".join(f"{k} {v}" for k, v in values.items())

    def close(self):
        pass


class _Bar:
    def __init__(self, total, desc, unit):
        from tqdm import tqdm
        self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False)

    @property
    def n(self):
        return self._bar.n

    def update(self, k=1):
        self._bar.update(k)

    def set(self, done, total=None):
        if total is not None:
            self._bar.total = total
        self._bar.n = done
        self._bar.refresh()

    def set_postfix(self, **values):
        self._bar.set_postfix(**values)

    def close(self):
        self._bar.close()


def progress_bar(total, desc, unit="it", enabled=True):
    """A progress reporter with ``update(k=1)``, ``set(done, total=None)``,
    ``set_postfix(**values)`` and ``close()``: a tqdm bar (:func:`use_bars`), line-based, or
    silent when not ``enabled``."""
    if not enabled:
        return _Null()
    return _Bar(total, desc, unit) if use_bars() else _Lines(total, desc, unit)


def iterate(iterable, total, desc, unit="it", enabled=True):
    """Yield from ``iterable``, reporting one step per item; returns (via the generator) the
    reporter too: use as ``for item, bar in iterate(...)`` to set a postfix."""
    bar = progress_bar(total, desc, unit, enabled)
    try:
        for item in iterable:
            yield item, bar
            bar.update(1)
    finally:
        bar.close()


def write_line(msg):
    """Print ``msg`` on stderr as a line of its own: above a running tqdm bar (tqdm.write) when
    bars are drawn, else plainly."""
    if use_bars():
        from tqdm import tqdm
        tqdm.write(msg, file=sys.stderr)
    else:
        print(msg, file=sys.stderr, flush=True)
