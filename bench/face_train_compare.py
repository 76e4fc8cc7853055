"""One recipe, two engines: train a face config with torch and with fastconv's engine, score View 1 DevTest.

``python -m bench.face_train_compare --threads 1 [--set key=value ...] [--out DIR]``: the data is
prepared once; both runs start from the same initial backbone weights (the torch trainer's, handed
to the engine); each engine draws its own batch order and augmentation (torch's DataLoader vs a
NumPy permutation, same seed), for the config's epoch counts (``budget_minutes=0`` unless ``--set``
overrides it: a budget would let each engine's probe pick its own). Both score the 1,000 DevTest
pairs after their last epoch with flip TTA. Reports EER, accuracy at the best threshold and seconds
per epoch (from metrics.jsonl).
"""
import argparse
import copy
import json
import os
import sys
import time

from . import _env


def _epochs(path):
    with open(path) as f:
        return [json.loads(line) for line in f if '"epoch_seconds"' in line]


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.face_train_compare", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="cpu-small")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=os.path.join("runs", "face", "engine-compare"))
    args = p.parse_args(argv)
    _env.pin_env(args.threads)
    _env.apply_limits(args.threads)
    import numpy as np
    import torch

    from fastconv.face.config import load_config
    from fastconv.face.engine_train import train_engine
    from fastconv.face.evaluate import pair_scores
    from fastconv.face.metrics import best_threshold, eer
    from fastconv.face.models import get_model
    from fastconv.face.prepare import prepare_data
    from fastconv.face.preprocess import Preprocess
    from fastconv.face.protocols import view1
    from fastconv.face.runtime import load_model
    from fastconv.face.train import model_kwargs, seed_everything, train
    from fastconv.paths import cache_dir, image_dir, lfw_root

    cfg = load_config(args.config, ["precision=fp32", "channels_last=false", f"threads={args.threads}",
                                    "budget_minutes=0"] + list(args.overrides))  # both: the config's epochs
    data = prepare_data(cfg, progress=False)
    seed_everything(cfg["seed"])
    init = get_model(cfg["model"]["name"], cfg["model"]["embedding_size"], **model_kwargs(cfg)).state_dict()
    init = {k: v.numpy() for k, v in init.items() if not k.endswith("num_batches_tracked")}
    results = {}
    t0 = time.time()
    summary = train(copy.deepcopy(cfg), os.path.join(args.out, "torch"), data=data, progress=False, return_model=True)
    results["torch"] = {"minutes": (time.time() - t0) / 60, "epochs": _epochs(os.path.join(args.out, "torch", "metrics.jsonl"))}
    torch_model = summary["model"].cpu().eval()
    cfg_engine = dict(copy.deepcopy(cfg), init_state=init)
    t0 = time.time()
    eng = train_engine(cfg_engine, os.path.join(args.out, "fastconv"), data=data, progress=False)
    results["fastconv"] = {"minutes": (time.time() - t0) / 60,
                           "epochs": _epochs(os.path.join(args.out, "fastconv", "metrics.jsonl"))}
    # the engine's last-epoch backbone, scored like the torch one
    split = view1(lfw_root())
    pre = Preprocess(cfg["data"]["size"], cfg["data"]["crop"])
    root = image_dir(lfw_root())
    scores_t, labels, _ = pair_scores(torch_model, split.test_pairs, root, pre, cache_dir=cache_dir() / "images",
                                      progress=False)

    class _Engine(torch.nn.Module):  # the fastconv backbone behind pair_scores' torch interface
        def __init__(self, net):
            super().__init__()
            self.net = net.eval()

        def forward(self, x):
            return torch.from_numpy(self.net(x.numpy().astype(np.float32)))

    scores_f, labels_f, _ = pair_scores(_Engine(eng["backbone"]), split.test_pairs, root, pre,
                                        cache_dir=cache_dir() / "images", progress=False)
    for name, s, y in (("torch", scores_t, labels), ("fastconv", scores_f, labels_f)):
        e, _ = eer(s, y)
        _, acc = best_threshold(s, y)
        ep = [r["epoch_seconds"] for r in results[name]["epochs"]]
        results[name].update(devtest_eer=float(e), devtest_best_accuracy=float(acc),
                             median_epoch_seconds=float(np.median(ep)) if ep else None)
        print(f"{name:>8}: DevTest EER {100 * e:.2f} %, accuracy {100 * acc:.2f} %, "
              f"median {np.median(ep):.1f} s/epoch, {results[name]['minutes']:.1f} min", flush=True)
    results["config_overrides"] = list(args.overrides)
    results["threads"] = args.threads
    results["train_images"] = int(len(data["images"]))
    from fastconv.atomic import write_json

    write_json(os.path.join(args.out, "compare.json"), results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
