"""Torch-free subcommands of ``fastconv face``: ``convert``, and ``verify`` / ``embed`` with ``--model``.

``verify`` and ``embed`` (``cli_eval``) given ``--model model.npz`` open it here
(:func:`model_file_source`) and run on fastconv's engine (no torch import); given ``-c best.pt``
they run on torch, with the same scorer choice and output. ``convert`` needs torch. Bad
input raises (ValueError, OSError); ``cli.run_command`` turns it into one ``error:`` line, exit 2.
"""
import os
import sys

__all__ = ["add_convert_command", "model_file_source"]


def add_convert_command(subparsers):
    """Add ``fastconv face convert -c best.pt --out model.npz``."""
    p = subparsers.add_parser(
        "convert", help="convert a checkpoint to a torch-free model.npz (fastconv engine)",
        description="Map the checkpoint's backbone onto fastconv's engine and write model.npz: float32 "
                    "weights and a JSON description (architecture, preprocessing, embedding size, "
                    "calibrated cosine threshold) plus the checkpoint's PLDA scoring back-end when it stores "
                    "one (float64 arrays; its threshold is a log-likelihood ratio), loaded without pickle by "
                    "`verify/embed/serve --model`.")
    p.add_argument("--checkpoint", "-c", required=True, help="checkpoint written by `fastconv face train`")
    p.add_argument("--out", "-o", required=True, help="output .npz file")
    p.set_defaults(func=cmd_convert)


def add_model_option(group, p):
    """``--model model.npz`` (into the -c/--model ``group``) and ``--backend`` on a verify/embed parser."""
    group.add_argument("--model", default=None,
                       help="torch-free model.npz from `fastconv face convert` (instead of -c; runs without torch)")
    p.add_argument("--backend", default=None, choices=["reference", "numba", "cython"],
                   help="fastconv kernel backend for --model (default: the fastest that loads)")
    p.add_argument("--threads", type=int, default=1,
                   help="threads for --model (OpenMP, Numba, BLAS; default 1: on a shared machine more "
                        "threads can collapse, see the README's Threads section)")


def cmd_convert(args):
    from .converter import convert_checkpoint

    meta, diff = convert_checkpoint(args.checkpoint, args.out)
    thr, sc = meta["threshold"], meta["scorer"]
    scorer = "no PLDA back-end" if sc is None else (
        f"PLDA back-end ({sc['dim']} dims, log-likelihood-ratio threshold "
        f"{'none' if sc['threshold'] is None else format(sc['threshold'], '.4f')})")
    print(f"wrote {args.out}: {meta['model_name']} ({meta['input_size']} px, {meta['embedding_size']}-d), "
          f"cosine threshold {'none' if thr is None else f'{thr:.4f}'}, {scorer}; max |torch - fastconv| on a "
          f"random batch = {diff:.3g}")
    return 0


def _load(args):
    import fastconv

    from .runtime import load_model

    if args.backend is not None and args.backend not in fastconv.available_backends():
        raise ValueError(f"backend {args.backend!r} did not load here; available: {fastconv.available_backends()}")
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    fastconv.set_num_threads(args.threads)
    return load_model(args.model, backend=args.backend)


def model_file_source(args):
    """``--model model.npz`` as a ``cli_eval.ModelSource`` (fastconv's engine; batches of at most 64)."""
    from .cli_eval import ModelSource

    model = _load(args)

    def run(images, batch_size, flip, progress=False):
        return model.embed(images, batch_size=min(batch_size, 64), flip=flip)

    return ModelSource(model.preprocess, run, model.threshold,
                       model.meta.get("threshold_source") or "stored in the model file", model.scorer, "model file",
                       {"model": os.fspath(args.model), "engine": "fastconv"})
