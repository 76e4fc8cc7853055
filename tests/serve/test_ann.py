"""The optional faiss index: with every cell probed it equals exact search, and it follows the gallery."""
import numpy as np
import pytest

pytest.importorskip("faiss", reason="faiss-cpu is not installed (pip install 'fastconv[ann]')")

from fastconv.face.serve.ann import IVFIndex, default_nlist  # noqa: E402
from fastconv.face.serve.gallery import Gallery  # noqa: E402

D = 16


def _clustered(rng, n_subjects, per):
    centres = rng.normal(size=(n_subjects, D))
    E = np.repeat(centres, per, axis=0) + 0.3 * rng.normal(size=(n_subjects * per, D))
    E = (E / np.linalg.norm(E, axis=1, keepdims=True)).astype(np.float32)
    return [f"s{i // per:04d}" for i in range(n_subjects * per)], E


def test_default_nlist():
    assert default_nlist(1) == 1 and default_nlist(39 * 30) == 30 and default_nlist(1_000_000) == 1000


def test_full_probe_equals_exact_and_stays_in_sync(tmp_path):
    rng = np.random.default_rng(0)
    names, E = _clustered(rng, 200, 10)
    exact = Gallery(tmp_path / "exact.db", "m", D)
    approx = Gallery(tmp_path / "ivf.db", "m", D, index=IVFIndex(D, nprobe=10_000), index_min_faces=1500)
    exact.bulk_add(names[:1000], E[:1000])
    approx.bulk_add(names[:1000], E[:1000])
    assert not approx.index_in_use  # below index_min_faces: exact scan
    exact.bulk_add(names[1000:], E[1000:])
    approx.bulk_add(names[1000:], E[1000:])
    assert approx.index_in_use and len(approx.index) == 2000

    def same(q, k=5):
        a, b = exact.search(q, k), approx.search(q, k)
        assert [(h.subject, h.face_id) for h in a] == [(h.subject, h.face_id) for h in b]
        np.testing.assert_allclose([h.similarity for h in a], [h.similarity for h in b], atol=1e-6)
        return b

    for q in E[rng.choice(2000, 20, replace=False)]:
        same(q)
    top = same(E[7], 1)[0]
    exact.delete_face(top.face_id)
    approx.delete_face(top.face_id)
    assert len(approx.index) == 1999 and same(E[7], 3)[0].face_id != top.face_id
    exact.delete_subject("s0001")
    approx.delete_subject("s0001")
    assert len(approx.index) == 1989 and all(h.subject != "s0001" for h in same(E[15], 10))
    exact.add_subject("new")
    approx.add_subject("new")
    exact.add_face("new", E[15], "h")
    fid = approx.add_face("new", E[15], "h")
    assert same(E[15], 1)[0].face_id == fid
    reopened = Gallery(tmp_path / "ivf.db", "m", D, index=IVFIndex(D, nprobe=10_000), index_min_faces=1500)
    assert reopened.index_in_use and len(reopened.index) == len(approx)
    assert [h.face_id for h in reopened.search(E[40], 5)] == [h.face_id for h in approx.search(E[40], 5)]


def test_scores_are_exact_even_when_a_probe_misses(tmp_path):
    rng = np.random.default_rng(1)
    names, E = _clustered(rng, 300, 10)
    g = Gallery(":memory:", "m", D, index=IVFIndex(D, nprobe=1), index_min_faces=1)
    g.bulk_add(names, E)
    for q in E[:50]:
        for h in g.search(q, 5):
            row = int(h.face_id) - 1  # bulk_add numbered the faces 1..N in order
            assert h.similarity == pytest.approx(float(E[row] @ q), abs=1e-6)
    with pytest.raises(ValueError, match="nprobe"):
        IVFIndex(D, nprobe=0)


def test_serve_with_index_ivf(tiny_checkpoint, tmp_path, photo):
    from fastapi.testclient import TestClient

    from fastconv.face.cli import build_parser
    from fastconv.face.serve.command import build_app

    args = build_parser().parse_args(["serve", "-c", str(tiny_checkpoint), "--gallery", str(tmp_path / "g.db"),
                                      "--no-detect", "--index", "ivf", "--index-min-faces", "2", "--nprobe", "4",
                                      "--scorer", "cosine"])
    app, _, gallery = build_app(args)
    files = lambda seed: {"img": ("a.jpg", photo(seed), "image/jpeg")}  # noqa: E731
    with TestClient(app) as c:
        assert c.get("/api/v1/health").json()["gallery"]["search"].startswith("exact (faiss IVF from 2 faces")
        c.post("/api/v1/subjects", json={"name": "Ann"})
        c.post("/api/v1/subjects", json={"name": "Bo"})
        c.post("/api/v1/subjects/Ann/faces", files=files(1))
        bo = c.post("/api/v1/subjects/Bo/faces", files=files(2)).json()["face_id"]
        assert c.get("/api/v1/health").json()["gallery"]["search"].startswith("faiss IVF (nlist 1, nprobe 1)")
        hit = c.post("/api/v1/identify", files=files(2)).json()["results"][0]
        assert hit["face_id"] == bo and hit["similarity"] == pytest.approx(1, abs=1e-5)
    gallery.close()


def test_ann_recall_bench_smoke(tmp_path):
    """Run in a child process: the benchmark pins thread counts for the whole process."""
    import json
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "fastconv.bench.ann_recall", "--faces", "2000", "--dim", "16",
                    "--queries", "5", "--nprobe", "1,1000", "--threads", "1", "--noise", "0.2",
                    "--out", str(tmp_path)], check=True, capture_output=True, timeout=300)
    rows = json.loads((tmp_path / "ann_recall.json").read_text())["rows"]
    assert [r["nprobe"] for r in rows] == [1, 1000]
    assert rows[1]["recall_at_10"] == 1.0 and rows[1]["top1_agreement"] == 1.0  # every cell probed: exact
    assert 0 <= rows[0]["recall_at_10"] <= 1
