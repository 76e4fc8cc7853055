"""Shared fixtures for the face tests: a tiny synthetic identity-folder tree, a tiny model, LFW.

Fixtures
--------
face_tree  : `FaceTree` with ``root`` = tmp_path/faces/<Name>/<Name>_000k.jpg (250x250 JPEGs,
             3 identities x 3 images, each identity a distinct colour pattern) plus one corrupt
             JPEG (``corrupt``) inside Bob's folder.
tiny_model : factory ``tiny_model(embedding_size=8, seed=0)`` -> small conv net (B,3,S,S) -> (B,D),
             not flip-invariant.
lfw_dir    : the LFW folder (``fastconv.paths.lfw_root()``); skips the test when it is absent.
backend    : the test runs once per fastconv backend (engine tests of the face backbones).
one_blas_thread : BLAS limited to one thread (beside torch's threads on a busy machine they collapse).
The engine suite's ``engine_helpers`` (tolerances, ``assert_close``) is importable from here.
"""
from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import pytest
import torch

import sys

import fastconv as fc
from fastconv.paths import lfw_root

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "engine"))  # engine_helpers

torch.set_num_threads(2)

IDENTITIES = {"Alice_A": (220, 40, 40), "Bob_B": (40, 200, 40), "Carol_C": (40, 40, 220)}
N_PER_ID = 3


@dataclasses.dataclass
class FaceTree:
    root: pathlib.Path
    names: list[str]  # sorted identity names
    relpaths: list[str]  # readable images, sorted
    corrupt: str  # relative path of the corrupt JPEG


def _face_image(colour, k, rng):
    """250x250 RGB uint8: identity colour disc on noise, shifted by image number k."""
    yy, xx = np.mgrid[:250, :250]
    img = rng.integers(0, 60, size=(250, 250, 3), dtype=np.uint8)
    cy, cx = 125 + 4 * k, 110 + 6 * k  # off-centre so flipping changes the image
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 55 ** 2
    img[disc] = colour
    img[100:110, 60:120] = 255  # asymmetric bar
    return img


@pytest.fixture
def face_tree(tmp_path) -> FaceTree:
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "faces"
    relpaths = []
    for name, colour in IDENTITIES.items():
        (root / name).mkdir(parents=True)
        for k in range(1, N_PER_ID + 1):
            rel = f"{name}/{name}_{k:04d}.jpg"
            Image.fromarray(_face_image(colour, k, rng)).save(root / rel, quality=92)
            relpaths.append(rel)
    corrupt = "Bob_B/Bob_B_0004.jpg"
    good = (root / relpaths[0]).read_bytes()
    (root / corrupt).write_bytes(good[: len(good) // 3])  # truncated JPEG
    return FaceTree(root=root, names=sorted(IDENTITIES), relpaths=sorted(relpaths), corrupt=corrupt)


class TinyEmbedder(torch.nn.Module):
    """(B,3,S,S) float -> (B,D); a conv + spatial-position-sensitive linear layer."""

    def __init__(self, embedding_size=8, pool=4):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.pool = torch.nn.AdaptiveAvgPool2d(pool)
        self.fc = torch.nn.Linear(4 * pool * pool, embedding_size)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.bn(self.conv(x)))), 1))


@pytest.fixture
def tiny_model():
    def make(embedding_size=8, seed=0):
        torch.manual_seed(seed)
        return TinyEmbedder(embedding_size).eval()

    return make


@pytest.fixture
def lfw_dir() -> pathlib.Path:
    root = lfw_root()
    if not (root / "pairs.txt").is_file():
        pytest.skip(f"LFW not found at {root} (set FASTCONV_LFW)")
    return root


@pytest.fixture(params=fc.available_backends())
def backend(request):
    with fc.use_backend(request.param):
        yield request.param


@pytest.fixture
def one_blas_thread():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        yield
