"""`fastconv face train --engine fastconv` in a process where torch cannot be imported: an identity
folder and an LFW-shaped View 1 tree are decoded, cached, split and trained on with fastconv alone,
and the model.npz it writes embeds like the run's own backbone."""
import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from face_synth import TINY, fake_lfw  # noqa: E402
from torch_block import run_without_torch  # noqa: E402

SETS = TINY + ["ce.epochs=1", "arcface.epochs=1", "ce.batch_size=8", "arcface.batch_size=8", "ce.cutmix=1.0"]


def _identity_tree(root, people=4, per_person=4, seed=0):
    """root/<Person_k>/<Person_k>_000i.jpg: 250x250 JPEGs, one colour pattern per person plus noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k in range(people):
        (root / f"Person_{k}").mkdir(parents=True)
        base = rng.integers(0, 256, (5, 5, 3)).repeat(50, 0).repeat(50, 1)
        for i in range(per_person):
            img = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / f"Person_{k}" / f"Person_{k}_{i + 1:04d}.jpg", quality=90)


def _train_args(out, *extra, sets=SETS):
    return ["face", "train", "--engine", "fastconv", "--config", "base", "--out", str(out), "--quiet", *extra] + \
        [a for kv in sets for a in ("--set", kv)]


def test_engine_trains_on_an_identity_folder_without_torch(tmp_path):
    _identity_tree(tmp_path / "faces")
    env = {"FASTCONV_CACHE": str(tmp_path / "cache")}
    r = run_without_torch(*_train_args(tmp_path / "run", "--root", tmp_path / "faces",
                                       sets=SETS + ["data.val_people=0"]), env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(x["stage"], x["epoch"]) for x in records] == [("ce", 1), ("arcface", 1)]
    assert all(np.isfinite(x["loss"]) for x in records)
    assert list((tmp_path / "cache" / "images").glob("images-*.npy")), "decoded images were not cached"
    # the written model runs torch-free too, and a resume of the finished run is a no-op
    r = run_without_torch("face", "embed", tmp_path / "faces", "--model", tmp_path / "run" / "model.npz",
                          "-o", tmp_path / "emb.npy", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    emb = np.load(tmp_path / "emb.npy")
    assert emb.shape == (16, 16) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    r = run_without_torch(*_train_args(tmp_path / "run", "--root", tmp_path / "faces", "--resume",
                                       sets=SETS + ["data.val_people=0"]), env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2


def test_engine_trains_on_lfw_view1_without_torch(tmp_path):
    """The LFW path: protocol files, the View 1 split, held-out validation people and their pairs."""
    fake_lfw(tmp_path / "lfw")
    env = {"FASTCONV_CACHE": str(tmp_path / "cache"), "FASTCONV_LFW": str(tmp_path / "lfw")}
    r = run_without_torch(*_train_args(tmp_path / "run", "--protocol", "view1",
                                       sets=SETS + ["data.val_people=6", "data.val_pairs=20"]), env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(0 <= x["val_eer"] <= 1 for x in records), records


@pytest.mark.parametrize("what", ["torch", "torchvision", "sklearn.metrics"])
def test_the_blocker_really_blocks(what):
    """The subprocess used above fails for a command that needs torch (so the tests above prove something)."""
    import subprocess

    from torch_block import NO_TORCH

    code = NO_TORCH.replace("from fastconv.cli import main", f"import {what}")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode != 0 and "is blocked" in r.stderr
