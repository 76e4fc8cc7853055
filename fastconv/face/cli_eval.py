"""Evaluation subcommands of ``fastconv face``: eval, verify, embed, fit-scorer, export-onnx.

``fastconv/face/cli.py`` calls :func:`add_eval_commands` on its subparsers; each command sets
``func(args) -> int`` (0 = success) and raises ValueError/OSError on bad input, which
``cli.run_command`` turns into one ``error:`` line and exit status 2.
"""
from __future__ import annotations

import math
import os
import sys

from .jitter_spec import REALISTIC, format_jitter, parse_jitter

__all__ = ["add_eval_commands"]


def _open_checkpoint(path, device):
    """The one way the commands open a checkpoint: -> ``checkpoint.InferenceModel`` (model in eval mode
    on ``device``, meta, preprocess, threshold). Separate so tests can patch it."""
    from .checkpoint import load_for_inference

    return load_for_inference(path, map_location=str(device))


def _positive_batch(args):
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")


def _add_common(p, checkpoint=True, scorer="auto"):
    if checkpoint == "or-model":  # -c best.pt (torch) or --model model.npz (fastconv engine, no torch)
        src = p.add_mutually_exclusive_group(required=True)
        src.add_argument("--checkpoint", "-c", help="checkpoint written by `fastconv face train` (torch)")
        from .cli_runtime import add_model_option

        add_model_option(src, p)
    elif checkpoint:
        p.add_argument("--checkpoint", "-c", required=True, help="checkpoint written by `fastconv face train`")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to run the model (auto: cuda when available)")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default 256)")

    # --scorer, not --backend: in fastconv "backend" names the compute engine (numpy, cython, numba)
    p.add_argument("--scorer", choices=["auto", "cosine", "plda"], default=scorer,
                   help="pair scorer: cosine of the embeddings (scores and threshold in [-1, 1]), or the PLDA "
                        "back-end stored in the checkpoint or model.npz (scores and threshold are natural-log "
                        f"likelihood ratios, 0 = equal evidence); auto = plda when one is stored (default {scorer})")


def _add_detect(p):
    p.add_argument("--detect", action="store_true",
                   help="photos, not LFW crops: frame the largest face like LFW (Haar cascade, box enlarged 2.2x "
                        "to 250x250) first, as `fastconv face serve` does; images without a face are an error "
                        "(verify) or skipped (embed)")


def _add_image_command(p, func, scorer="auto"):
    """The options verify and embed share: -c or --model, --scorer, --no-flip, --detect."""
    _add_common(p, "or-model", scorer=scorer)
    p.add_argument("--no-flip", action="store_true", help="disable horizontal-flip test-time augmentation")
    _add_detect(p)
    p.set_defaults(func=func)


def _loader(args):
    """``load(path, pre) -> uint8 (3, S, S)`` for --detect or plain LFW-style images."""
    if args.detect:
        from .serve.pipeline import load_detected

        return load_detected
    from .preprocess import load_image

    return load_image


def add_eval_commands(subparsers) -> None:
    """Add the ``eval``, ``verify``, ``embed``, ``fit-scorer`` and ``export-onnx`` subcommands."""
    from fastconv.paths import lfw_root

    from .cli_runtime import add_convert_command

    # eval
    p = subparsers.add_parser(
        "eval", help="verification metrics on LFW protocols or a pairs file",
        description="Score image pairs and report EER, AUC, TAR@FAR and accuracy. "
                    "Give --pairs FILE (LFW pairs file, detected by its header, or CSV "
                    "'path_a,path_b,label') or --protocol view1|view2 [--fold K]. "
                    "view2 without --fold scores all of pairs.txt with 10-fold accuracy.")
    _add_common(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pairs", help="LFW pairs file or CSV of 'path_a,path_b,label'")
    src.add_argument("--protocol", choices=["view1", "view2"], help="LFW protocol")
    p.add_argument("--fold", type=int, default=None,
                   help="View 2 fold 1..10 (the test fold; default: all ten folds)")
    p.add_argument("--lfw", default=None, help=f"LFW folder with the protocol files (default {lfw_root()})")
    p.add_argument("--root", default=None,
                   help="image root the pair paths are relative to (default: <lfw>/lfw-deepfunneled, or "
                        "<lfw> itself when it holds the identity folders directly)")
    p.add_argument("--no-flip", action="store_true", help="disable horizontal-flip test-time augmentation")
    p.add_argument("--out", default=None, help="folder for metrics.json, scores.csv, roc.png, scores_hist.png")
    p.add_argument("--cache-dir", default=None, help="decoded-image cache (default: $FASTCONV_CACHE/images)")
    realistic = format_jitter(REALISTIC)
    p.add_argument("--jitter", nargs="?", const=realistic, default=None, metavar="SCALE,SHIFT,DEG",
                   help="re-frame every test image like a face detector's box would: box scale in [1-SCALE, "
                        "1+SCALE], centre shift up to SHIFT of the side, rotation up to DEG degrees "
                        f"(default when given bare: {realistic})")
    p.add_argument("--jitter-seed", type=int, default=0, help="seed of the --jitter draws (default 0)")
    p.add_argument("--identify", action="store_true",
                   help="also identification on the test fold's people (--protocol view2 --fold K): gallery "
                        "= first image of each person with >= 2 images, the rest probes; rank-1/rank-5 and "
                        "open-set DIR at FAR 1 %% with the one-image people as impostors")
    p.set_defaults(func=cmd_eval)

    # verify
    p = subparsers.add_parser(
        "verify", help="are two face images the same person?",
        description="Score of two images (cosine, or the PLDA back-end's log-likelihood ratio with "
                    "--scorer plda / auto) and a same/different decision at the checkpoint's stored "
                    "threshold for that scorer (or --threshold), from -c best.pt on torch or --model model.npz on "
                    "fastconv's engine with the same scores and decision. Images that are not 250x250 get their shorter "
                    "side resized to 250 and are centre-cropped to 250x250 first, then preprocessed "
                    "exactly like training (crop and size from the checkpoint).")
    p.add_argument("image_a")
    p.add_argument("image_b")
    p.add_argument("--threshold", type=float, default=None,
                   help="threshold on the scorer's scale: a cosine with --scorer cosine, a log-likelihood ratio "
                        "with plda (overrides the one stored in the checkpoint or model.npz)")
    _add_image_command(p, cmd_verify)

    # embed
    p = subparsers.add_parser(
        "embed", help="embed every image under a folder",
        description="Embed every image under DIR (recursive; identity folders or flat) and write "
                    "(N, D) float32 L2-normalised embeddings to --out (.npy) plus a sidecar .json "
                    "listing the image paths in row order and any skipped files. With --scorer plda: "
                    "the back-end's features u = T (e - mean) (N, k) instead, and the sidecar holds "
                    "a, b, c of LLR(u, v) = sum a (u^2 + v^2) + b u v + c.")
    p.add_argument("directory")
    p.add_argument("--out", "-o", required=True, help="output .npy file")
    _add_image_command(p, cmd_embed, scorer="cosine")

    # fit-scorer
    p = subparsers.add_parser(
        "fit-scorer", help="fit the PLDA scoring back-end of an existing checkpoint",
        description="Fit the PLDA back-end on the training side of the checkpoint's own training config "
                    "(the same images and validation pairs `train` would use; never a test fold) and "
                    "store it in the checkpoint (or in --out). `train` does this itself unless "
                    "scorer.fit = false; this command is for checkpoints made before or without it.")
    p.add_argument("--checkpoint", "-c", required=True)
    p.add_argument("--out", "-o", default=None, help="write here instead of replacing --checkpoint")
    p.add_argument("--dim", type=int, default=0, help="PLDA dimensions kept (0 = min(D, identities - 1))")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=cmd_fit_scorer)

    # export-onnx
    p = subparsers.add_parser(
        "export-onnx", help="export the embedding model to ONNX",
        description="Export to ONNX (input: normalised float (batch,3,S,S); output: (batch,D) "
                    "embeddings) and check parity with onnxruntime.")
    p.add_argument("--checkpoint", "-c", required=True)
    p.add_argument("--out", "-o", required=True, help="output .onnx file")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    p.set_defaults(func=cmd_export_onnx)

    add_convert_command(subparsers)


def _pairs_for(args):
    """-> (pairs, folds or None, image root, description)."""
    from fastconv.paths import image_dir, lfw_root

    from .lfw import read_pairs_any
    from .protocols import view1, view2_all, view2_fold

    lfw = args.lfw if args.lfw is not None else os.fspath(lfw_root())
    root = args.root if args.root is not None else os.fspath(image_dir(lfw))
    if args.pairs is not None:
        if args.fold is not None:
            raise ValueError("--fold only applies to --protocol view2")
        pairs, folds = read_pairs_any(args.pairs)
        notes = pairs.describe_skipped() if hasattr(pairs, "describe_skipped") else ""
        return pairs, folds, root, f"pairs file {args.pairs} ({len(pairs)} pairs{'; ' + notes if notes else ''})"
    if args.protocol == "view1":
        if args.fold is not None:
            raise ValueError("--fold only applies to --protocol view2")
        return view1(lfw).test_pairs, None, root, "LFW View 1 (pairsDevTest.txt)"
    if args.fold is None:
        pairs, folds = view2_all(lfw)
        return pairs, folds, root, "LFW View 2, all 10 folds of pairs.txt"
    return view2_fold(lfw, args.fold).test_pairs, None, root, f"LFW View 2 fold {args.fold} of pairs.txt"


class ModelSource:
    """What ``verify`` / ``embed`` need from ``-c best.pt`` (torch) or ``--model model.npz`` (fastconv):

    ``preprocess``; ``embed(images uint8 (N, 3, S, S), batch_size, flip, progress) -> (N, D)``
    L2-normalised; ``cosine_threshold`` and ``cosine_source`` (or None); ``stored``: the PLDA
    back-end (``scoring.PLDAScorer``) or None; ``what`` ("checkpoint" / "model file") and ``origin``
    (the sidecar's fields naming it).
    """

    def __init__(self, preprocess, embed, cosine_threshold, cosine_source, stored, what, origin):
        self.preprocess, self.embed, self.stored, self.what, self.origin = preprocess, embed, stored, what, origin
        self.cosine_threshold, self.cosine_source = cosine_threshold, cosine_source


def _checkpoint_source(args):
    from .device import resolve_device
    from .evaluate import embed
    from .scoring import stored_scorer

    device = resolve_device(args.device)
    model, meta, pre, cos_thr = _open_checkpoint(args.checkpoint, device)

    def run(images, batch_size, flip, progress=False):
        return embed(model, images, batch_size=batch_size, flip=flip, device=device, progress=progress)

    return ModelSource(pre, run, cos_thr,
                       meta.get("threshold_source") or "stored in the checkpoint (chosen on its validation pairs)",
                       stored_scorer(meta, os.fspath(args.checkpoint)), "checkpoint",
                       {"checkpoint": os.fspath(args.checkpoint)})


def _open_source(args):
    """-> :class:`ModelSource` of ``args.model`` (torch-free, ``cli_runtime``) or ``args.checkpoint``."""
    if getattr(args, "model", None) is not None:
        from .cli_runtime import model_file_source

        return model_file_source(args)
    return _checkpoint_source(args)


def _scorer_for(args, stored, cosine_threshold, cosine_source, what="checkpoint"):
    """-> (scorer of ``--scorer``, its stored threshold or None, where that threshold comes from)."""
    from .scoring import choose_scorer

    scorer = choose_scorer(args.scorer, stored, what)
    if scorer.name == "cosine":
        return scorer, cosine_threshold, cosine_source
    return scorer, scorer.threshold, (f"a log-likelihood ratio stored with the {what}'s PLDA back-end "
                                      "(chosen on its validation pairs)")


def _jitter_arg(args):
    """``--jitter`` / ``--jitter-seed`` -> ``(JitterSpec, seed)``, or None without ``--jitter``."""
    return None if args.jitter is None else (parse_jitter(args.jitter), args.jitter_seed)


def cmd_eval(args) -> int:
    from ..atomic import check_writable
    from .device import resolve_device
    from .evaluate import evaluate_pairs, format_report

    _positive_batch(args)
    if args.out is not None:
        check_writable(os.path.join(args.out, "metrics.json"))
    device = resolve_device(args.device)
    if args.identify and (args.protocol != "view2" or args.fold is None):
        raise ValueError("--identify needs --protocol view2 --fold K (the test fold's people)")
    jitter = _jitter_arg(args)
    pairs, folds, root, what = _pairs_for(args)
    model, meta, pre, cos_thr = _open_checkpoint(args.checkpoint, device)
    from .scoring import stored_scorer

    scorer, threshold, _ = _scorer_for(args, stored_scorer(meta, os.fspath(args.checkpoint)), cos_thr, None)
    print(f"evaluating {args.checkpoint} ({meta.get('model_name', '?')}, {pre.size}x{pre.size}, "
          f"crop {pre.crop}) on {what}")
    print(f"images from {root}; flip TTA {'off' if args.no_flip else 'on'}; device {device}")
    extra = {"checkpoint": os.fspath(args.checkpoint), "pairs_source": what, "model_name": meta.get("model_name")}
    if args.identify:
        from fastconv.paths import lfw_root

        from .identify import identify_fold

        extra["identification"] = identify_fold(
            model, args.lfw if args.lfw is not None else lfw_root(), args.fold, root, pre, scorer,
            cache_dir=args.cache_dir, device=device, flip=not args.no_flip, batch_size=args.batch_size)
    report = evaluate_pairs(
        model, pairs, root, pre, folds=folds, out_dir=args.out, threshold=threshold, extra=extra,
        cache_dir=args.cache_dir, flip=not args.no_flip, device=device, batch_size=args.batch_size,
        scorer=scorer, jitter=jitter,
    )
    print(format_report(report))
    if args.identify:
        r = report["identification"]
        dir_ = "n/a (no one-image people)" if r["dir_at_far_0.01"] is None else f"{100 * r['dir_at_far_0.01']:.2f}%"
        print(f"identification   rank-1 {100 * r['rank1']:.2f}%, rank-5 {100 * r['rank5']:.2f}%, DIR@FAR=1% "
              f"{dir_} ({r['n_gallery']} gallery, {r['n_probes']} probes, {r['n_impostors']} impostors)")
    if args.out is not None:
        print(f"wrote metrics.json, scores.csv, roc.png, scores_hist.png to {args.out}")
    return 0


def cmd_verify(args) -> int:
    """Both engines: ``-c best.pt`` on torch, ``--model model.npz`` on fastconv's (no torch import)."""
    import numpy as np

    if args.threshold is not None and not math.isfinite(args.threshold):
        raise ValueError(f"--threshold must be a finite number, got {args.threshold}")
    src = _open_source(args)
    scorer, stored, stored_source = _scorer_for(args, src.stored, src.cosine_threshold, src.cosine_source, src.what)
    load = _loader(args)
    images = np.stack([load(args.image_a, src.preprocess), load(args.image_b, src.preprocess)])
    e = src.embed(images, 2, not args.no_flip)
    score = float(scorer.score(e[:1], e[1:])[0])
    if args.threshold is not None:
        thr, source = args.threshold, "--threshold"
    elif stored is not None:
        thr, source = stored, stored_source
    else:
        thr, source = None, None
    return print_verdict(score, thr, source,
                         label="cosine score" if scorer.name == "cosine" else "PLDA log-likelihood ratio",
                         what=src.what)


def print_verdict(score, thr, source, label="cosine score", what="checkpoint") -> int:
    """Print the score and, with a threshold, the same/different decision (verify's output)."""
    print(f"{label}: {score:.6f}")
    if thr is None:
        print(f"no threshold: the {what} stores none for this scorer; pass --threshold T to decide same/different")
        return 0
    verdict = "same" if score >= thr else "different"
    print(f"threshold:    {thr:.4f} ({source})")
    print(f"decision:     {verdict}")
    return 0


def cmd_embed(args) -> int:
    """Both engines, as :func:`cmd_verify`; with ``--scorer plda`` the rows are the back-end's features."""
    import numpy as np

    from .preprocess import decode_images

    out, sidecar, relpaths = embed_targets(args)
    src = _open_source(args)
    scorer = _scorer_for(args, src.stored, src.cosine_threshold, src.cosine_source, src.what)[0]
    images, kept, skipped = decode_images(args.directory, relpaths, src.preprocess, progress=True, load=_loader(args))
    if not len(kept):
        raise ValueError(f"none of the {len(relpaths)} images under {args.directory} could be read "
                         f"(first: {skipped[0][0]}: {skipped[0][1]})")
    if skipped:
        print(f"skipped {len(skipped)} unreadable images (listed in {sidecar})", file=sys.stderr)
    emb = src.embed(images, args.batch_size, not args.no_flip, progress=True)
    emb = (emb if scorer.name == "cosine" else scorer.transform(emb)).astype(np.float32)
    return write_embeddings(args, out, sidecar, emb, [relpaths[i] for i in kept], skipped, src.preprocess,
                            **src.origin, scorer=_embed_scorer_info(scorer))


def _embed_scorer_info(scorer):
    """The sidecar's ``scorer`` entry: what the rows are and, for PLDA, how to score two of them."""
    if scorer.name == "cosine":
        return {"name": "cosine", "rows": "L2-normalised embeddings"}
    return {"name": scorer.name, "rows": "u = T (e - mean)", "a": scorer.a.tolist(), "b": scorer.b.tolist(),
            "c": scorer.c, "llr": "sum_i a_i (u_i^2 + v_i^2) + b_i u_i v_i + c", "threshold": scorer.threshold}


def embed_targets(args):
    """``embed``'s checks before any model loads -> (out .npy, sidecar .json, image relpaths)."""
    from ..atomic import check_writable
    from .preprocess import list_images

    out = args.out if args.out.endswith(".npy") else args.out + ".npy"
    sidecar = out[:-4] + ".json"
    _positive_batch(args)
    check_writable(out)
    check_writable(sidecar)
    relpaths = list_images(args.directory)
    if not relpaths:
        raise ValueError(f"no images (.jpg, .jpeg, .png, .bmp, .webp) found under {args.directory}")
    return out, sidecar, relpaths


def write_embeddings(args, out, sidecar, emb, paths, skipped, pre, **source):
    """Write ``emb`` (N, D) to ``out`` and the sidecar JSON (paths in row order, skipped files, settings)."""
    import numpy as np

    from ..atomic import PRIVATE, atomic_write, write_json

    atomic_write(out, lambda fh: np.save(fh, emb), mode=PRIVATE)
    info = {"root": os.path.abspath(args.directory), "paths": paths,
            "skipped": [{"path": p, "reason": r} for p, r in skipped], "shape": list(emb.shape),
            **source, "preprocess": pre.to_dict(), "flip": not args.no_flip}
    write_json(sidecar, info, mode=PRIVATE)
    print(f"wrote {emb.shape[0]} x {emb.shape[1]} embeddings to {out} and the path list to {sidecar}")
    return 0


def cmd_fit_scorer(args) -> int:
    from ..atomic import check_writable
    from .checkpoint import load_checkpoint, save_checkpoint
    from .device import resolve_device
    from .prepare import prepare_data
    from .scoring import fit_training_side, state_as_tensors

    if args.dim < 0:
        raise ValueError(f"--dim must be >= 0, got {args.dim}")
    out = args.out or args.checkpoint
    check_writable(out)
    device = resolve_device(args.device)
    model, meta, _, _ = _open_checkpoint(args.checkpoint, device)
    cfg = meta.get("config")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("data"), dict):
        raise ValueError(f"{args.checkpoint} stores no training config (meta['config']) to find its training side")
    data = prepare_data(cfg, progress=True)
    scorer = fit_training_side(model, data, device, dim=args.dim, calibration=cfg.get("calibration", "best"))
    state = load_checkpoint(args.checkpoint)
    state["meta"]["scorer"] = state_as_tensors(scorer.to_state())
    save_checkpoint(out, state)
    thr = "none (no validation pairs)" if scorer.threshold is None else f"{scorer.threshold:.4f}"
    print(f"PLDA back-end fit on {len(data['labels'])} training images of {len(data['classes'])} people: "
          f"{scorer.psi.shape[0]} dimensions, log-likelihood-ratio threshold {thr}; wrote {out}")
    return 0


def cmd_export_onnx(args) -> int:
    from ..atomic import check_writable
    from .export import export_onnx

    check_writable(args.out)
    model, meta, pre, _ = _open_checkpoint(args.checkpoint, "cpu")
    diff = export_onnx(model, args.out, pre.size, opset=args.opset, check=not args.no_check)
    print(f"exported {args.out}: input 'input' float32 (batch, 3, {pre.size}, {pre.size}) normalised "
          f"as (x/255 - 0.5)/0.5, output 'embedding' (batch, {meta.get('embedding_size', 'D')})")
    if not args.no_check:
        print(f"onnxruntime parity: max |torch - onnx| = {diff:.3g}")
    return 0
