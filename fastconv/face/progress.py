"""Progress display: a tqdm bar in a terminal, one plain line per task when stdout is not a terminal
(CI, ``nohup``, a log file), so logs hold no carriage-return bar updates."""
import sys
import time

__all__ = ["progress_bar", "interactive", "epoch_line"]


def interactive():
    """True when stdout is a terminal."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


class _Silent:
    def update(self, n=1):
        pass

    def set_postfix(self, **kw):
        pass

    def close(self):
        pass


class _Line(_Silent):
    """Counts updates and prints ``desc: n unit in t s (postfix)`` once, when closed."""

    def __init__(self, total, desc, unit):
        self.total, self.desc, self.unit, self.n, self.postfix = total, desc, unit, 0, {}
        self.t0 = time.perf_counter()

    def update(self, n=1):
        self.n += n

    def set_postfix(self, **kw):
        self.postfix = kw

    def close(self):
        extra = ", ".join(f"{k}={v}" for k, v in self.postfix.items())
        print(f"{self.desc}: {self.n}/{self.total} {self.unit} in {time.perf_counter() - self.t0:.1f} s"
              + (f" ({extra})" if extra else ""), flush=True)


def progress_bar(total, desc, unit="it", enabled=True, line_when_piped=True):
    """An object with ``update(n)``, ``set_postfix(**kw)``, ``close()``.

    Disabled: does nothing. In a terminal: a tqdm bar. Otherwise: one line at ``close()``, or
    nothing with ``line_when_piped=False`` (for callers that print their own line per task).
    """
    if not enabled:
        return _Silent()
    if interactive():
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, leave=False)
    return _Line(total, desc, unit) if line_when_piped else _Silent()


def epoch_line(record):
    """The one line a trainer prints per epoch: ``key=value, ...`` (floats with 4 decimals)."""
    return ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
