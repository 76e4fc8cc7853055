"""The ``fastconv`` command: ``fastconv train-cnn``, ``fastconv bench``, ``fastconv face ...``."""
import importlib
import sys

from .cli_errors import run_guarded

COMMANDS = {
    "train-cnn": ("fastconv.examples.train_cnn", "train the fastconv CNN on LFW people with >= 20 images"),
    "bench": ("fastconv.bench.__main__", "benchmark the backends against PyTorch CPU"),
    "face": ("fastconv.face.cli", "face recognition toolkit (PyTorch): train, eval, verify, embed, ..."),
    "backends": (None, "list the kernel backends that load on this machine"),
}


def _usage():
    lines = ["usage: fastconv <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `fastconv <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"fastconv: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    if name == "backends":
        return run_guarded(_print_backends)
    module = importlib.import_module(COMMANDS[name][0])
    return run_guarded(module.main, rest)


def _print_backends():
    import fastconv

    print("available:", ", ".join(fastconv.available_backends()))
    print("default:  ", fastconv.get_backend())


if __name__ == "__main__":
    sys.exit(main())
