"""``fastconv face`` command line: train, info, benchmark-lfw, ablate, throughput, plus
eval/verify/embed/export-onnx and serve.

``main(argv=None) -> int`` (0 = success, 2 = bad input). Every subcommand is a ``cmd_*(args) -> int``
set as ``func`` on its subparser; it raises on bad input and :func:`run_command`, the one error
handler, prints one ``error: ...`` line and returns 2 (no traceback). A new subcommand adds its
parser in :func:`build_parser` (or an ``add_*_commands(sub)`` function, like ``cli_eval``) and
nothing else.
"""
import argparse
import json
import pathlib
import sys
import time

from .cli_eval import add_eval_commands

from ..cli_errors import USER_ERRORS, fail  # noqa: F401  (fail is part of this module's API)


def _add_config_args(p):
    p.add_argument("--config", default="cpu-small",
                   help="preset name (base; cpu-small = 10 min, cpu-large = 60 min of training on 2 cores, epochs "
                        "picked by a throughput probe; gpu-r18, gpu-r50) or a .toml file (default cpu-small)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, dotted key (e.g. --set ce.lr=0.05); repeatable")


def _add_budget_arg(p):
    p.add_argument("--budget-minutes", type=float, default=None, metavar="N",
                   help="fit the run into N minutes: a throughput probe at start-up picks ce.epochs and "
                        "arcface.epochs (logged, kept in budget.json; --resume reuses them). cpu-small and "
                        "cpu-large set a budget; --set budget_minutes=0 trains the config's epoch counts")


def _budget_overrides(args):
    if args.budget_minutes is None:
        return []
    if not 0 < args.budget_minutes < float("inf"):
        raise ValueError(f"--budget-minutes must be a positive number of minutes, got {args.budget_minutes}")
    return [f"budget_minutes={args.budget_minutes}"]


def build_parser():
    """The argparse parser of ``fastconv face``."""
    parser = argparse.ArgumentParser(prog="fastconv face", description="Face verification toolkit (PyTorch).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a face embedding model (CE stage, then ArcFace fine-tune)",
                       description="Train on the training side of an LFW protocol (View 1 DevTrain or the nine "
                                   "training folds of View 2) or on your own identity folders (--root).")
    _add_config_args(p)
    _add_budget_arg(p)
    p.add_argument("--out", default=None, help="run folder (default runs/face/<config>-<protocol>-<time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last.pt (--engine fastconv: last.npz)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--protocol", choices=["view1", "view2"], default=None, help="LFW protocol (default view1)")
    src.add_argument("--root", default=None, help="own data: a folder of identity folders <root>/<name>/*.jpg")
    p.add_argument("--fold", type=int, default=None, help="View 2 test fold 1..10 held out (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--engine", choices=["torch", "fastconv"], default="torch",
                   help="train on PyTorch (default) or on fastconv's own engine (writes model.npz and last.npz; "
                        "needs no torch)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("info", help="parameters and FLOPs of the backbones")
    p.add_argument("--model", default=None, help="one backbone (default: all)")
    p.add_argument("--input-size", type=int, default=None, help="input side (default: 64 and 112)")
    p.add_argument("--embedding-size", type=int, default=512)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("benchmark-lfw", help="LFW View 2: one training per held-out fold, test on that fold",
                       description="For each fold K: train on the other nine people folds (validation on held-out "
                                   "training-side people), then score the fold's 600 test pairs with best.pt. "
                                   "Writes DIR/summary.json and DIR/roc.png.")
    _add_config_args(p)
    p.add_argument("--folds", default="1,2,3,4,5,6,7,8,9,10", help="comma-separated folds (default all ten)")
    p.add_argument("--out", default=None, help="output folder (default runs/face/benchmark-<config>-<time>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--merge", nargs="+", metavar="DIR", default=None,
                   help="instead of training: combine the summary.json of earlier runs (folds split over "
                        "processes or machines) into --out/summary.json; their configs must agree")
    _add_budget_arg(p)
    p.add_argument("--scorer", choices=["auto", "cosine", "plda"], default="auto",
                   help="pair scorer of the test folds (auto: the PLDA back-end each fold's best.pt stores, "
                        "else cosine)")
    p.set_defaults(func=cmd_benchmark)

    from .ablation import VARIANT_NAMES

    p = sub.add_parser("ablate", help="ablation of a recipe on LFW View 1 DevTest, same epoch budget per variant",
                       description="Train the recipe and one variant per change, each on the recipe's epochs: CE "
                                   "alone, and CutMix, MixUp, RandomPerspective, label smoothing, DropBlock, framing "
                                   "jitter each switched on where the recipe lacks it and off where it has it. Train "
                                   "on View 1 DevTrain, score the 1,000 DevTest pairs with the last epoch's weights "
                                   "(last.pt) four ways: cosine and PLDA (fit on DevTrain), each without and with "
                                   "`eval --jitter`'s default framing jitter (seed 0). Variants already scored in "
                                   "--out are kept; a variant whose training finished is scored without training "
                                   "again. Writes DIR/ablation.json and DIR/ablation.md.")
    _add_config_args(p)
    p.add_argument("--variants", "--names", dest="variants", default=None,
                   help=f"comma-separated subset of {','.join(VARIANT_NAMES)} (default all)")
    p.add_argument("--jobs", type=int, default=1, help="variants trained at once, one process each (default 1)")
    p.add_argument("--out", default=None, help="output folder (default runs/face/ablation-<config>-<time>)")
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("throughput", help="training images/s of a config per precision (fp32, bf16, fp16) "
                                          "and memory format",
                       description="Time the CE training step of the config's backbone on a synthetic batch: "
                                   "warm-up, then the median of --steps steps; then the data path the step "
                                   "leaves out (the config's augmentation and CutMix/MixUp, on synthetic "
                                   "images) and the images/s of both together, as training runs them.")
    _add_config_args(p)
    p.add_argument("--precision", default=None,
                   help="comma-separated subset of fp32,bf16,fp16 (default: fp32,bf16 on CPU, all three on CUDA)")
    p.add_argument("--channels-last", choices=["no", "yes", "both"], default="both",
                   help="memory format(s) to time (default both)")
    p.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps (default 3)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default the config's ce.batch_size)")
    p.add_argument("--out", default=None, help="also write the results to this JSON file")
    p.set_defaults(func=cmd_throughput)

    add_eval_commands(sub)
    from .serve.command import add_serve_command

    add_serve_command(sub)
    return parser


def _default_out(*parts):
    return pathlib.Path("runs") / "face" / ("-".join(str(p) for p in parts) + time.strftime("-%Y%m%d-%H%M%S"))


def cmd_train(args):
    from .config import load_config

    overrides = list(args.overrides) + _budget_overrides(args)
    if args.root is not None:
        overrides += ["data.protocol=folder", f"data.root={args.root}"]
    elif args.protocol is not None:
        overrides.append(f"data.protocol={args.protocol}")
    if args.fold is not None:
        if args.root is not None or (args.protocol or "") != "view2":
            raise ValueError("--fold needs --protocol view2")
        overrides.append(f"data.fold={args.fold}")
    cfg = load_config(args.config, overrides)
    last = "last.npz" if args.engine == "fastconv" else "last.pt"
    if args.resume and args.out is None:
        raise ValueError(f"--resume needs --out (the run folder holding {last})")
    out = pathlib.Path(args.out) if args.out else _default_out(pathlib.Path(args.config).stem,
                                                               cfg["data"]["protocol"])
    if args.resume and not (out / last).is_file():
        raise ValueError(f"--resume: {out / last} does not exist")
    if args.engine == "fastconv":  # torch-free: no torch import on this path
        from .engine_train import train_engine

        summary = train_engine(cfg, out, progress=not args.quiet, resume=args.resume)
        summary.pop("backbone")
        print(json.dumps(summary, indent=1))
        print(f"model: {summary['model']} (best validation EER; run it with verify/embed --model); "
              f"resume with --resume --out {out}")
        return 0
    from .train import train

    summary = train(cfg, out, resume=args.resume, progress=not args.quiet)
    print(json.dumps(summary, indent=1))
    print(f"checkpoints: {out / 'best.pt'} (best validation EER), {out / 'last.pt'}")
    return 0


def cmd_info(args):
    from .models import get_model, model_info, model_names

    names = [args.model] if args.model else model_names()
    sizes = [args.input_size] if args.input_size is not None else [64, 112]
    print(f"{'model':<16} {'input':>5} {'params (M)':>11} {'GFLOPs':>8}")
    for name in names:
        for s in sizes:
            model = get_model(name, args.embedding_size, input_size=s)
            info = model_info(model, s)
            print(f"{name:<16} {s:>5} {info['params'] / 1e6:>11.2f} {info['flops'] / 1e9:>8.3f}")
    return 0


def cmd_benchmark(args):
    from . import benchmark
    from .config import load_config

    if args.merge:
        if not args.out:
            raise ValueError("--merge needs --out DIR for the combined summary.json")
        s = benchmark.merge(args.merge, args.out)
        for r in s["folds"]:
            print(f"fold {r['fold']:2d}: accuracy {r['accuracy']:.4f}, EER {r['eer']:.4f}, "
                  f"TAR@FAR1e-3 {r['tar_at_far_1e-3']:.4f}, {r['minutes']:.1f} min")
        print(f"mean accuracy {s['mean_accuracy']:.4f} +- {s['std_accuracy']:.4f}, mean EER "
              f"{s['mean_eer']:.4f}, {len(s['folds'])} folds, {s['total_minutes']:.1f} min of training "
              f"and testing; {pathlib.Path(args.out) / 'summary.json'}")
        return 0
    folds = benchmark.parse_folds(args.folds)
    cfg = load_config(args.config, list(args.overrides) + _budget_overrides(args))
    out = pathlib.Path(args.out) if args.out else _default_out("benchmark", pathlib.Path(args.config).stem)
    s = benchmark.run(cfg, folds, out, progress=not args.quiet, log=lambda m: print(m, flush=True),
                      scorer=args.scorer)
    print(f"mean accuracy {s['mean_accuracy']:.4f} +- {s['std_accuracy']:.4f}, mean EER {s['mean_eer']:.4f}, "
          f"total {s['total_minutes']:.1f} min; {out / 'summary.json'}, {out / 'roc.png'}")
    if "mean_rank1" in s:
        print(f"identification: mean rank-1 {s['mean_rank1']:.4f}, rank-5 {s['mean_rank5']:.4f}"
              + (f", DIR@FAR1e-2 {s['mean_dir_at_far_1e-2']:.4f}" if "mean_dir_at_far_1e-2" in s else ""))
    return 0


def cmd_ablate(args):
    from .ablation import VARIANT_NAMES, run_ablation

    names = [n.strip() for n in args.variants.split(",") if n.strip()] if args.variants else list(VARIANT_NAMES)
    out = pathlib.Path(args.out) if args.out else _default_out("ablation", pathlib.Path(args.config).stem)
    run_ablation(args.config, out, names, jobs=args.jobs, extra=list(args.overrides))
    print((out / "ablation.md").read_text(), end="")  # the table run_ablation wrote
    print(f"{out / 'ablation.json'}, {out / 'ablation.md'}")
    return 0


def cmd_throughput(args):
    from ..atomic import check_writable, write_json
    from .config import load_config
    from .device import resolve_device, resolve_precision
    from .budget import combined_images_per_s
    from .throughput import PRECISIONS, default_grid, format_table, measure, measure_data

    if args.out:
        check_writable(args.out)
    cfg = load_config(args.config, list(args.overrides))
    device = resolve_device(cfg["device"])
    chosen, why = resolve_precision(cfg["precision"], device)
    if args.precision:
        precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
        bad = [p for p in precisions if p not in PRECISIONS]
        if bad or not precisions:
            raise ValueError(f"--precision expects a subset of {','.join(PRECISIONS)}, got {args.precision!r}")
        formats = {"no": [False], "yes": [True], "both": [False, True]}[args.channels_last]
        grid = [(p, cl) for p in precisions for cl in formats]
    else:
        grid = [(p, cl) for p, cl in default_grid(device)
                if args.channels_last == "both" or cl == (args.channels_last == "yes")]
    print(f"config precision {cfg['precision']!r}: training would use {chosen} ({why})", flush=True)
    results = []
    for precision, cl in grid:
        r = measure(cfg, precision, cl, steps=args.steps, warmup=args.warmup, batch_size=args.batch_size)
        results.append(r)
        print(f"{precision:>5} channels_last={'yes' if cl else 'no ':3}: {r['images_per_s']:8.0f} images/s",
              flush=True)
    print(f"model {cfg['model']['name']} (width {cfg['model']['width']}) at {cfg['data']['size']} px, "
          f"threads {results[0]['threads']}")
    print(format_table(results), end="")
    data = _time_data_path(cfg, measure_data)
    best = max(results, key=lambda r: r["images_per_s"])
    print(f"data path (augmentation and batch mix, main process): {1e3 * data:.2f} ms per image; with the fastest "
          f"step above ({best['precision']}, channels_last {'yes' if best['channels_last'] else 'no'}) training "
          f"runs at about {combined_images_per_s(best['images_per_s'], data):.0f} images/s with workers = 0")
    if args.out:
        write_json(args.out, {"config": cfg, "chosen_precision": chosen, "chosen_because": why,
                              "results": results, "data_ms_per_image": 1e3 * data})
    return 0


def _time_data_path(cfg, measure_data, n_images=256, n_classes=100):
    """Seconds per image of ``cfg``'s training data path on synthetic uint8 images (content does not change
    the cost of the warps and colour ops)."""
    import numpy as np

    size = cfg["data"]["size"]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n_images, 3, size, size), dtype=np.uint8)
    labels = np.arange(n_images) % n_classes
    return measure_data(cfg, images, labels, n_classes, n_images=n_images)


def run_command(args) -> int:
    """Run the parsed subcommand ``args.func(args)``: the one place that turns bad input into exit 2."""
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        return fail(exc)


def main(argv=None):
    """Entry point of ``fastconv face``; returns the exit status."""
    return run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
