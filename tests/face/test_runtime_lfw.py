"""Embeddings of 200 LFW images: the torch-free runtime against the torch path.

The model is cpu-small's backbone (``iresnet_small``, 64 px, 256-d), randomly initialised with its
BatchNorm statistics calibrated on the same LFW images (a trained model's activations without
the training). float32: the runtime vs ``fastconv.face.evaluate.embed`` (torch float32), flip
TTA on: cosine >= 0.99999 and max |diff| <= 1e-4. float64: the runtime vs the torch model in
float64 with the same flip TTA: max |diff| <= 1e-10. The runtime runs as deployed (prepared for
inference: BatchNorm folded, measured algorithms), under every backend.
"""
import os
import sys

import numpy as np
import pytest
import torch

import fastconv as fc
from fastconv.face.converter import convert_checkpoint

sys.path.insert(0, os.path.dirname(__file__))
from face_synth import calibrated_model  # noqa: E402

pytestmark = [pytest.mark.lfw, pytest.mark.usefixtures("one_blas_thread")]
N_IMAGES = 200


@pytest.fixture(scope="module")
def lfw_images():
    from fastconv.face.preprocess import Preprocess, decode_images, list_images, normalize_images
    from fastconv.paths import image_dir, lfw_root

    root = lfw_root()
    if not (root / "pairs.txt").is_file():
        pytest.skip(f"LFW not found at {root} (set FASTCONV_LFW)")
    folder = image_dir(root)
    rel = list_images(folder)[::37][:N_IMAGES]  # spread over many identities
    images, kept, skipped = decode_images(folder, rel, Preprocess(64, 150), progress=False)
    assert len(kept) == N_IMAGES and not skipped
    return images, normalize_images(images)


def test_lfw_embeddings_runtime_vs_torch(lfw_images, tmp_path):
    images, normalised = lfw_images
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 threads on a busy 2-core machine run slower than 1
    try:
        _compare(images, normalised, tmp_path)
    finally:
        torch.set_num_threads(threads)


def _compare(images, normalised, tmp_path):
    from fastconv.face.checkpoint import save_checkpoint
    from fastconv.face.evaluate import embed
    from fastconv.face.runtime import load_model

    model = calibrated_model("iresnet_small", 256, input_size=64, images=normalised)
    meta = {"model_name": "iresnet_small", "model_kwargs": {"input_size": 64, "width": 0.5, "dropout": 0.0,
                                                            "stem_stride": 2, "dropblock": 0.0},
            "embedding_size": 256, "preprocess": {"size": 64, "crop": 150}, "threshold": 0.25}
    save_checkpoint(tmp_path / "best.pt", {"model": model.state_dict(), "meta": meta})
    convert_checkpoint(tmp_path / "best.pt", tmp_path / "model.npz")

    want32 = embed(model, images, flip=True)
    m64 = model.double()
    x = torch.from_numpy(images.astype(np.float64) / 127.5 - 1)
    with torch.no_grad():
        want64 = torch.nn.functional.normalize(m64(x) + m64(torch.flip(x, dims=[3])), dim=1).numpy()
    for backend in fc.available_backends():  # the runtime as deployed: prepared for inference
        got32 = load_model(tmp_path / "model.npz", backend=backend).embed(images, flip=True)
        cosine = np.sum(got32.astype(np.float64) * want32, axis=1)
        diff32 = float(np.max(np.abs(got32 - want32)))
        got64 = load_model(tmp_path / "model.npz", dtype=np.float64, backend=backend).embed(images, flip=True)
        diff64 = float(np.max(np.abs(got64 - want64)))
        print(f"\n{backend}: float32 min cosine {cosine.min():.9f}, max |diff| {diff32:.3g}; "
              f"float64 max |diff| {diff64:.3g}")
        assert cosine.min() >= 0.99999
        assert diff32 <= 1e-4
        assert got64.dtype == np.float64
        assert diff64 <= 1e-10
