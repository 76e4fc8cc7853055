"""Fixtures for the ``fastconv face serve`` tests.

tiny_checkpoint : session-wide best.pt of a tiny iresnet18 (width 0.125, D=16, 16 px input) trained for
                  two epochs on synthetic identities (``tests/face/face_synth.py``); it stores a threshold.
other_checkpoint: the same recipe with another seed (a different model id).
make_client     : factory ``make_client(gallery_path, checkpoint=None, scorer="cosine", **create_app_kw)``
                  -> TestClient (cosine unless asked: most tests check cosine arithmetic).
photo           : factory ``photo(seed, size=250, mode="RGB", fmt="JPEG") -> bytes`` of a random image.
lfw_images      : the LFW image folder; skips the test where it is absent.
"""
from __future__ import annotations

import io
import os
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'fastconv[serve]')")
pytest.importorskip("httpx", reason="TestClient needs httpx")
with warnings.catch_warnings():  # starlette >= 1.x suggests httpx2 at import; httpx works the same
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "face"))
from face_synth import TINY, make_data  # noqa: E402


def _train_tiny(out, seed):
    import torch

    from fastconv.face.config import load_config
    from fastconv.face.train import train

    torch.set_num_threads(1)
    cfg = load_config("base", TINY + ["ce.epochs=2", "arcface.epochs=1", f"seed={seed}"])
    train(cfg, out, progress=False, data=make_data())
    return out / "best.pt"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    return _train_tiny(tmp_path_factory.mktemp("tiny-model"), seed=0)


@pytest.fixture(scope="session")
def other_checkpoint(tmp_path_factory):
    return _train_tiny(tmp_path_factory.mktemp("other-model"), seed=1)


@pytest.fixture
def make_client(tiny_checkpoint):
    from fastconv.face.serve.app import create_app
    from fastconv.face.serve.embedder import TorchEmbedder
    from fastconv.face.serve.gallery import Gallery

    opened = []

    def make(gallery_path, checkpoint=None, detect=False, scorer="cosine", **kw):
        emb = TorchEmbedder(checkpoint or tiny_checkpoint, scorer=scorer)
        gallery = Gallery(gallery_path, emb.model_id, emb.embedding_size)
        client = TestClient(create_app(emb, gallery, detect=detect, **kw))
        client.__enter__()
        opened.append((client, gallery))
        return client

    yield make
    for client, gallery in opened:
        client.__exit__(None, None, None)
        gallery.close()


@pytest.fixture
def photo():
    from PIL import Image

    def make(seed, size=250, mode="RGB", fmt="JPEG", **save):
        rng = np.random.default_rng(seed)
        arr = rng.integers(0, 256, size=(size, size, 4), dtype=np.uint8)
        img = Image.fromarray(arr, "RGBA").convert(mode)
        buf = io.BytesIO()
        img.save(buf, format=fmt, **save)
        return buf.getvalue()

    return make


@pytest.fixture
def lfw_images():
    from fastconv.paths import image_dir, lfw_root

    root = image_dir(lfw_root())
    if not (root / "George_W_Bush").is_dir():
        pytest.skip(f"LFW images not found at {root} (set FASTCONV_LFW)")
    return root.resolve()  # a browser's file input takes only canonical paths (FASTCONV_LFW=../x has '..')
