"""Threshold calibration on LFW View 1: DevTest accuracy at the thresholds of ``best`` and ``cv-median``.

``python -m bench.face_calibration -c runs/v1/best.pt``: re-creates the checkpoint's validation pairs
(its own training config: 150 held-out DevTrain people, 600 pairs), scores them with cosine and the
stored PLDA back-end, picks each method's threshold (``fastconv.face.calibrate``; cv-median with
grouping seeds 0-4), and reports the 1,000 DevTest pairs' accuracy at it beside the best-threshold
accuracy (the threshold chosen on DevTest itself, for comparison only). Flip TTA throughout.
"""
import argparse

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.face_calibration", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", "-c", required=True, help="best.pt of a View 1 training run")
    args = p.parse_args(argv)

    from fastconv.face.calibrate import calibrate_threshold
    from fastconv.face.checkpoint import load_for_inference
    from fastconv.face.evaluate import embed
    from fastconv.face.metrics import best_threshold
    from fastconv.face.prepare import prepare_data
    from fastconv.face.preprocess import load_image
    from fastconv.face.protocols import view1
    from fastconv.face.scoring import CosineScorer, stored_scorer
    from fastconv.paths import image_dir, lfw_root

    opened = load_for_inference(args.checkpoint)
    model, meta, pre = opened.model, opened.meta, opened.preprocess
    data = prepare_data(meta["config"], progress=False)
    val, pairs, same = embed(model, data["val_images"]), data["val_pairs"], data["val_same"]
    split, root = view1(lfw_root()), image_dir(lfw_root())
    rel = sorted({r for t in split.test_pairs for r in (t.a, t.b)})
    where = {r: i for i, r in enumerate(rel)}
    test = embed(model, np.stack([load_image(root / r, pre) for r in rel]))
    tp = np.array([(where[t.a], where[t.b]) for t in split.test_pairs])
    ty = np.array([t.same for t in split.test_pairs], bool)
    print(f"{args.checkpoint}: {len(pairs)} validation pairs, {len(tp)} DevTest pairs")
    print("| scorer | DevTest best-threshold accuracy | best | cv-median (mean of seeds 0-4) |")
    print("|---|---:|---:|---:|")
    for scorer in [CosineScorer()] + ([stored_scorer(meta)] if stored_scorer(meta) else []):
        vs, ts = scorer.score(val[pairs[:, 0]], val[pairs[:, 1]]), scorer.score(test[tp[:, 0]], test[tp[:, 1]])

        def acc(method, seed=0):
            return float(np.mean((ts >= calibrate_threshold(vs, same, pairs, method, seed=seed)) == ty))

        cv = [acc("cv-median", s) for s in range(5)]
        print(f"| {scorer.name} | {100 * best_threshold(ts, ty.astype(np.int64))[1]:.2f} % | "
              f"{100 * acc('best'):.2f} % | {100 * np.mean(cv):.2f} % ({', '.join(f'{100 * a:.1f}' for a in cv)}) |")


if __name__ == "__main__":
    main()
