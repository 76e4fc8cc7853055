"""The one rule for command-line errors: bad input prints one ``error: ...`` line and exits 2.

Torch-free, so the engine's commands (``fastconv train-cnn``, ``bench``, ``backends``) and the face
toolkit's (``fastconv face ...``) share it.
"""
import sys

# What a command raises for bad input: ValueError (bad values, unreadable checkpoints or images,
# a bad FASTCONV_BACKEND), TypeError (wrong kinds), OSError (missing or unwritable files),
# ImportError (a backend that does not load), RuntimeError (a failed check a command runs).
USER_ERRORS = (ValueError, TypeError, OSError, ImportError, RuntimeError)


def fail(exc) -> int:
    """Print ``error: <message>`` as one line on stderr; returns 2, the exit status for bad input."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    print(f"error: {'; '.join(lines) or type(exc).__name__}", file=sys.stderr)
    return 2


def run_guarded(func, *args) -> int:
    """``func(*args)`` as an exit status: its return value (``None`` -> 0), or 2 after :func:`fail`."""
    try:
        return func(*args) or 0
    except USER_ERRORS as exc:
        return fail(exc)
