"""Torch-free subcommands of ``fastconv face``: ``convert``, and ``verify`` / ``embed`` with ``--model``.

``verify`` and ``embed`` given ``--model model.npz`` run here on fastconv's engine (no torch
import); given ``-c best.pt`` they stay in ``cli_eval`` on torch. ``convert`` needs torch. Bad
input raises (ValueError, OSError); ``cli.run_command`` turns it into one ``error:`` line, exit 2.
"""
import os
import sys

__all__ = ["add_convert_command", "verify_with_model", "embed_with_model"]


def add_convert_command(subparsers):
    """Add ``fastconv face convert -c best.pt --out model.npz``."""
    p = subparsers.add_parser(
        "convert", help="convert a checkpoint to a torch-free model.npz (fastconv engine)",
        description="Map the checkpoint's backbone onto fastconv's engine and write model.npz: float32 "
                    "weights and a JSON description (architecture, preprocessing, embedding size, "
                    "calibrated threshold), loaded without pickle by `verify/embed --model`.")
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
    thr = meta["threshold"]
    print(f"wrote {args.out}: {meta['model_name']} ({meta['input_size']} px, {meta['embedding_size']}-d), "
          f"threshold {'none' if thr is None else f'{thr:.4f}'}; max |torch - fastconv| on a random batch "
          f"= {diff:.3g}")
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


def verify_with_model(args):
    """``fastconv face verify a b --model model.npz``: the same output as the torch path."""
    import numpy as np

    from .preprocess import load_image

    model = _load(args)
    images = np.stack([load_image(args.image_a, model.preprocess), load_image(args.image_b, model.preprocess)])
    e = model.embed(images, flip=not args.no_flip)
    score = float(e[0].astype(np.float64) @ e[1].astype(np.float64))
    if args.threshold is not None:
        thr, source = args.threshold, "--threshold"
    elif model.threshold is not None:
        thr, source = model.threshold, model.meta.get("threshold_source", "stored in the model file")
    else:
        thr, source = None, None
    from .cli_eval import print_verdict

    return print_verdict(score, thr, source)


def embed_with_model(args):
    """``fastconv face embed DIR --model model.npz -o emb.npy``: the same files as the torch path."""
    import numpy as np

    from .cli_eval import embed_targets, write_embeddings
    from .preprocess import decode_images

    out, sidecar, relpaths = embed_targets(args)
    model = _load(args)
    images, kept, skipped = decode_images(args.directory, relpaths, model.preprocess, progress=False)
    if skipped:
        print(f"skipped {len(skipped)} unreadable images (listed in {sidecar})", file=sys.stderr)
    if not len(kept):
        raise ValueError(f"none of the {len(relpaths)} images under {args.directory} could be read")
    emb = model.embed(images, batch_size=min(args.batch_size, 64), flip=not args.no_flip).astype(np.float32)
    return write_embeddings(args, out, sidecar, emb, [relpaths[i] for i in kept], skipped, model.preprocess,
                            model=os.fspath(args.model), engine="fastconv")
