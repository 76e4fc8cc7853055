"""``fastconv face`` command line: train, info, benchmark-lfw, plus eval/verify/embed/export-onnx.

``main(argv=None) -> int`` (0 = success, 2 = bad input).
"""
import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time


def _fail(msg):
    print(f"error: {msg}", file=sys.stderr)
    return 2


def _add_config_args(p):
    p.add_argument("--config", default="cpu-small",
                   help="preset name (base, cpu-small, gpu-r18, gpu-r50) or a .toml file (default cpu-small)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, dotted key (e.g. --set ce.lr=0.05); repeatable")


def build_parser():
    """The argparse parser of ``fastconv face``."""
    from .cli_eval import add_eval_commands

    parser = argparse.ArgumentParser(prog="fastconv face", description="Face verification toolkit (PyTorch).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a face embedding model (CE stage, then ArcFace fine-tune)",
                       description="Train on the training side of an LFW protocol (View 1 DevTrain or the nine "
                                   "training folds of View 2) or on your own identity folders (--root).")
    _add_config_args(p)
    p.add_argument("--out", default=None, help="run folder (default runs/face/<config>-<protocol>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--protocol", choices=["view1", "view2"], default=None, help="LFW protocol (default view1)")
    src.add_argument("--root", default=None, help="own data: a folder of identity folders <root>/<name>/*.jpg")
    p.add_argument("--fold", type=int, default=None, help="View 2 test fold 1..10 held out (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("info", help="parameters and FLOPs of the backbones")
    p.add_argument("--model", default=None, help="one backbone (default: all)")
    p.add_argument("--input-size", type=int, default=None, help="input side (default: 64 and 112)")
    p.add_argument("--embedding-size", type=int, default=512)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("benchmark-lfw", help="LFW View 2: one training per held-out fold, test on that fold",
                       description="For each fold K: train on the other nine people folds (validation on held-out "
                                   "training-side people), then score the fold's 600 test pairs with best.pt. "
                                   "Writes DIR/summary.json.")
    _add_config_args(p)
    p.add_argument("--folds", default="1,2,3,4,5,6,7,8,9,10", help="comma-separated folds (default all ten)")
    p.add_argument("--out", default=None, help="output folder (default runs/face/benchmark-<config>-<time>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--merge", nargs="+", metavar="DIR", default=None,
                   help="instead of training: combine the summary.json of earlier runs (folds split over "
                        "processes or machines) into --out/summary.json; their configs must agree")
    p.set_defaults(func=cmd_benchmark)

    add_eval_commands(sub)
    return parser


def _default_out(*parts):
    return pathlib.Path("runs") / "face" / ("-".join(str(p) for p in parts) + time.strftime("-%Y%m%d-%H%M%S"))


def cmd_train(args):
    from .config import load_config
    from .train import train

    try:
        overrides = list(args.overrides)
        if args.root is not None:
            overrides += [f"data.protocol=folder", f"data.root={args.root}"]
        elif args.protocol is not None:
            overrides.append(f"data.protocol={args.protocol}")
        if args.fold is not None:
            if args.root is not None or (args.protocol or "") != "view2":
                raise ValueError("--fold needs --protocol view2")
            overrides.append(f"data.fold={args.fold}")
        cfg = load_config(args.config, overrides)
        if args.resume and args.out is None:
            raise ValueError("--resume needs --out (the run folder holding last.pt)")
        out = pathlib.Path(args.out) if args.out else _default_out(pathlib.Path(args.config).stem,
                                                                   cfg["data"]["protocol"])
        if args.resume and not (out / "last.pt").is_file():
            raise ValueError(f"--resume: {out / 'last.pt'} does not exist")
        summary = train(cfg, out, resume=args.resume, progress=not args.quiet)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        return _fail(exc)
    print(json.dumps(summary, indent=1))
    print(f"checkpoints: {out / 'best.pt'} (best validation EER), {out / 'last.pt'}")
    return 0


def cmd_info(args):
    from .models import get_model, model_info, model_names

    try:
        names = [args.model] if args.model else model_names()
        sizes = [args.input_size] if args.input_size else [64, 112]
        print(f"{'model':<16} {'input':>5} {'params (M)':>11} {'GFLOPs':>8}")
        for name in names:
            for s in sizes:
                kw = {"input_size": s}
                model = get_model(name, args.embedding_size, **kw)
                info = model_info(model, s)
                print(f"{name:<16} {s:>5} {info['params'] / 1e6:>11.2f} {info['flops'] / 1e9:>8.3f}")
    except (ValueError, TypeError) as exc:
        return _fail(exc)
    return 0


def _parse_folds(text):
    try:
        folds = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--folds expects comma-separated integers 1..10, got {text!r}") from None
    if not folds or any(not 1 <= k <= 10 for k in folds) or len(set(folds)) != len(folds):
        raise ValueError(f"--folds expects distinct integers in 1..10, got {text!r}")
    return folds


def run_fold(cfg, fold, out_dir, progress=True):
    """Train with View 2 fold ``fold`` held out, then score its test pairs with best.pt -> per-fold dict."""
    from .train import train

    t0 = time.time()
    cfg = json.loads(json.dumps(cfg))
    cfg["data"]["protocol"], cfg["data"]["fold"], cfg["data"]["val_devtest"] = "view2", fold, False
    train(cfg, out_dir, progress=progress)
    res = score_fold(pathlib.Path(out_dir) / "best.pt", fold)
    res["minutes_train"] = (time.time() - t0) / 60 - res["minutes_test"]
    res["minutes"] = (time.time() - t0) / 60
    with open(pathlib.Path(out_dir) / "test_fold.json", "w") as f:
        json.dump(res, f, indent=1)
    return res


def score_fold(checkpoint, fold):
    """Score View 2 fold ``fold``'s 600 test pairs with ``checkpoint``: accuracy at the checkpoint's
    training-side threshold (and at the fold's own best threshold), EER, TAR@FAR=1e-3."""
    from fastconv.paths import cache_dir, image_dir, lfw_root

    from .checkpoint import load_for_inference
    from .data import Preprocess
    from .evaluate import pair_scores
    from .metrics import accuracy_at, best_threshold, eer, tar_at_far
    from .protocols import check_disjoint, view2_fold

    t0 = time.time()
    split = view2_fold(lfw_root(), fold)
    check_disjoint(split)
    model, meta = load_for_inference(checkpoint)
    scores, labels, _ = pair_scores(model, split.test_pairs, image_dir(),
                                    Preprocess.from_dict(dict(meta["preprocess"])),
                                    cache_dir=cache_dir() / "images", progress=False)
    e, _ = eer(scores, labels)
    thr = meta.get("threshold")
    _, acc_oracle = best_threshold(scores, labels)
    return {"fold": fold, "accuracy": accuracy_at(scores, labels, thr) if thr is not None else acc_oracle,
            "accuracy_best_threshold": acc_oracle, "threshold": thr, "eer": e,
            "tar_at_far_1e-3": tar_at_far(scores, labels, 1e-3), "n_pairs": int(len(labels)),
            "minutes_test": (time.time() - t0) / 60}


def cmd_benchmark(args):
    from .config import load_config

    if args.merge:
        return _merge_benchmarks(args.merge, args.out)
    try:
        folds = _parse_folds(args.folds)
        cfg = load_config(args.config, list(args.overrides))
    except ValueError as exc:
        return _fail(exc)
    out = pathlib.Path(args.out) if args.out else _default_out("benchmark", pathlib.Path(args.config).stem)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    results = []
    for k in folds:
        print(f"=== fold {k}: training on the other nine folds ===", flush=True)
        try:
            r = run_fold(cfg, k, out / f"fold{k:02d}", progress=not args.quiet)
        except (ValueError, FileNotFoundError) as exc:
            return _fail(exc)
        results.append(r)
        print(f"fold {k}: accuracy {r['accuracy']:.4f} (best-threshold {r['accuracy_best_threshold']:.4f}), "
              f"EER {r['eer']:.4f}, TAR@FAR1e-3 {r['tar_at_far_1e-3']:.4f}, {r['minutes']:.1f} min", flush=True)
        _write_summary(out, cfg, results, (time.time() - t0) / 60)
    s = _write_summary(out, cfg, results, (time.time() - t0) / 60)
    print(f"mean accuracy {s['mean_accuracy']:.4f} +- {s['std_accuracy']:.4f}, mean EER {s['mean_eer']:.4f}, "
          f"total {s['total_minutes']:.1f} min; {out / 'summary.json'}")
    return 0


def _merge_benchmarks(dirs, out):
    """Combine earlier benchmark-lfw runs (same config, disjoint folds) into ``out/summary.json``."""
    if not out:
        return _fail("--merge needs --out DIR for the combined summary.json")
    results, cfg = [], None
    for d in dirs:
        path = pathlib.Path(d) / "summary.json"
        try:
            with open(path) as f:
                part = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            return _fail(f"cannot read {path}: {exc}")
        if cfg is None:
            cfg = part["config"]
        elif part["config"] != cfg:
            return _fail(f"{path} was made with a different config than {pathlib.Path(dirs[0]) / 'summary.json'}")
        results += part["folds"]
    folds = [r["fold"] for r in results]
    if len(set(folds)) != len(folds):
        return _fail(f"the runs share folds: {sorted(folds)}")
    results.sort(key=lambda r: r["fold"])
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    s = _write_summary(out, cfg, results, sum(r["minutes"] for r in results))
    for r in results:
        print(f"fold {r['fold']:2d}: accuracy {r['accuracy']:.4f}, EER {r['eer']:.4f}, "
              f"TAR@FAR1e-3 {r['tar_at_far_1e-3']:.4f}, {r['minutes']:.1f} min")
    print(f"mean accuracy {s['mean_accuracy']:.4f} +- {s['std_accuracy']:.4f}, mean EER {s['mean_eer']:.4f}, "
          f"{len(results)} folds, {s['total_minutes']:.1f} min of training and testing; {out / 'summary.json'}")
    return 0


def _write_summary(out, cfg, results, total_minutes):
    accs = [r["accuracy"] for r in results]
    summary = {"folds": results, "mean_accuracy": statistics.fmean(accs),
               "std_accuracy": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
               "mean_eer": statistics.fmean(r["eer"] for r in results),
               "mean_tar_at_far_1e-3": statistics.fmean(r["tar_at_far_1e-3"] for r in results),
               "mean_accuracy_best_threshold": statistics.fmean(r["accuracy_best_threshold"] for r in results),
               "total_minutes": total_minutes, "config": cfg,
               "accuracy_note": "accuracy at the cosine threshold calibrated on training-side validation pairs"}
    fd, tmp = tempfile.mkstemp(dir=out, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(summary, f, indent=1)
    os.replace(tmp, out / "summary.json")
    return summary


def main(argv=None):
    """Entry point of ``fastconv face``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
