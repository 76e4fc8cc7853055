"""The top-level ``fastconv`` command: bad input is one ``error:`` line and exit status 2."""
import os
import subprocess
import sys

import pytest

from fastconv import cli


def _run(*argv, env=None):
    return subprocess.run([sys.executable, "-m", "fastconv", *argv], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_backends_lists_what_loads():
    done = _run("backends")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("available:") and "reference" in done.stdout


def test_bad_backend_variable_is_one_error_line():
    done = _run("backends", env={"FASTCONV_BACKEND": "bogus"})
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "FASTCONV_BACKEND='bogus'" in errors[0]


@pytest.mark.parametrize("argv, needle", [
    (["train-cnn", "--epochs", "0"], "--epochs and --batch-size must be >= 1"),
    (["train-cnn", "--threads", "5000"], "<= 4096"),
    (["train-cnn", "--backend", "nope"], "unknown backend 'nope'"),
])
def test_train_cnn_bad_values_exit_2(argv, needle, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err


def test_unknown_command_exit_2(capsys):
    assert cli.main(["no-such-command"]) == 2
    assert "unknown command" in capsys.readouterr().err
