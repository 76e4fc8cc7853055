"""CI helper (main venv, with torch): write a face checkpoint and a few images for the torch-free check.

The model is iresnet_small at its default width 0.5 (64 px, 256-d) with random weights whose
BatchNorm statistics are calibrated on the images (no training: CI must stay fast); the stored
threshold is the median score of the image pairs, so both decisions occur.
usage: python .ci/make_face_model.py OUT_DIR
"""
import pathlib
import sys

import numpy as np
import torch

from fastconv.face.checkpoint import save_checkpoint
from fastconv.face.evaluate import embed
from fastconv.face.models import get_model
from fastconv.face.preprocess import Preprocess, decode_images, list_images, normalize_images
from fastconv.paths import image_dir, lfw_root


def sample_images(folder):
    """8 LFW images (2 per person) copied into ``folder``, or 8 synthetic JPEGs where LFW is absent."""
    from PIL import Image

    src = image_dir(lfw_root())
    people = sorted(p for p in src.iterdir() if len(list(p.glob("*.jpg"))) >= 2)[:4] if src.is_dir() else []
    rng = np.random.default_rng(0)
    for k in range(4):
        name = people[k].name if people else f"Person_{k}"
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            out = folder / name / f"{name}_{i + 1:04d}.jpg"
            if people:
                out.write_bytes(sorted(people[k].glob("*.jpg"))[i].read_bytes())
            else:
                Image.fromarray(rng.integers(0, 256, (250, 250, 3), dtype=np.uint8)).save(out)


def main(out):
    out = pathlib.Path(out)
    sample_images(out / "faces")
    pre = Preprocess(64, 150)
    images, _, _ = decode_images(out / "faces", list_images(out / "faces"), pre, progress=False)
    torch.manual_seed(0)
    model = get_model("iresnet_small", 256, input_size=64)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(normalize_images(images)))
    model.eval()
    e = embed(model, images)
    scores = (e @ e.T)[np.triu_indices(len(e), 1)]
    meta = {"model_name": "iresnet_small",
            "model_kwargs": {"input_size": 64, "width": 0.5, "dropout": 0.0, "stem_stride": 2, "dropblock": 0.0},
            "embedding_size": 256, "preprocess": pre.to_dict(), "threshold": float(np.median(scores))}
    save_checkpoint(out / "best.pt", {"model": model.state_dict(), "meta": meta})
    print(f"wrote {out / 'best.pt'} and {len(images)} images under {out / 'faces'}")


if __name__ == "__main__":
    main(sys.argv[1])
