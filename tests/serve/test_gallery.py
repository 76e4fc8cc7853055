"""The SQLite gallery: exact search, memory == database, schema and model checks, transactions."""
import sqlite3
import threading
import time

import numpy as np
import pytest

from fastconv.face.serve import gallery as gallery_mod
from fastconv.face.serve.gallery import Gallery, GalleryError, ModelMismatch, NotFound

D = 16


def _unit(rng, n):
    e = rng.normal(size=(n, D)).astype(np.float32)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def _filled(path, rng, n_subjects=40, n_faces=300):
    g = Gallery(path, "m-1", D)
    names = [f"s{i:02d}" for i in range(n_subjects)]
    for name in names:
        g.add_subject(name)
    owner = rng.integers(0, n_subjects, n_faces)
    E = _unit(rng, n_faces)
    ids = [g.add_face(names[o], e, f"h{i}") for i, (o, e) in enumerate(zip(owner, E))]
    return g, names, owner, E, ids


def test_search_is_exact_best_face_per_subject(tmp_path):
    rng = np.random.default_rng(0)
    g, names, owner, E, ids = _filled(tmp_path / "g.db", rng)
    for q in _unit(rng, 20):
        s = E.astype(np.float64) @ q.astype(np.float64)
        best = {}
        for i, o in enumerate(owner):
            if o not in best or s[i] > s[best[o]]:
                best[o] = i
        expect = sorted(best.items(), key=lambda kv: -s[kv[1]])[:7]
        hits = g.search(q, top_k=7)
        assert [h.subject for h in hits] == [names[o] for o, _ in expect]
        assert [h.face_id for h in hits] == [ids[i] for _, i in expect]
        np.testing.assert_allclose([h.similarity for h in hits], [s[i] for _, i in expect], atol=1e-6)
    with pytest.raises(ValueError, match="top_k"):
        g.search(E[0], top_k=0)
    with pytest.raises(ValueError, match="16 values"):
        g.search(E[0][:5])


def test_plda_search_ranks_by_log_likelihood_ratio_through_adds_and_deletes(tmp_path):
    """search(scorer=PLDA) == the scorer's own score_matrix, best face per subject, while the cached
    transformed faces follow appends and deletions."""
    from fastconv.face.scoring import plda_from_covariances

    rng = np.random.default_rng(5)
    a = rng.normal(size=(D, D))
    plda = plda_from_covariances(rng.normal(0, 0.1, D), a @ a.T / D, np.eye(D) * 0.3, dim=10)
    g, names, owner, E, ids = _filled(tmp_path / "g.db", rng, n_subjects=12, n_faces=60)

    def check(q, E, owner, ids):
        s = plda.score_matrix(q[None].astype(np.float64), E.astype(np.float64))[0]
        best = {}
        for i, o in enumerate(owner):
            if o not in best or s[i] > s[best[o]]:
                best[o] = i
        expect = sorted(best.items(), key=lambda kv: -s[kv[1]])[:5]
        hits = g.search(q, top_k=5, scorer=plda)
        assert [h.face_id for h in hits] == [ids[i] for _, i in expect]
        np.testing.assert_allclose([h.similarity for h in hits], [s[i] for _, i in expect], rtol=1e-9, atol=1e-9)

    for q in _unit(rng, 3):
        check(q, E, owner, ids)
    extra = _unit(rng, 4)
    ids = ids + [g.add_face(names[0], e, f"x{i}") for i, e in enumerate(extra)]
    E, owner = np.concatenate([E, extra]), np.concatenate([owner, [0] * 4])
    check(extra[2], E, owner, ids)  # an appended face is found (transformed on demand)
    g.delete_face(ids[10])
    keep = np.arange(len(ids)) != 10
    E, owner, ids = E[keep], owner[keep], [i for k, i in zip(keep, ids) if k]
    for q in _unit(rng, 2):
        check(q, E, owner, ids)


def test_memory_stays_equal_to_the_database(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "g.db"
    g, names, owner, E, ids = _filled(path, rng, n_subjects=10, n_faces=100)
    for fid in ids[::3]:
        g.delete_face(fid)
    gone = g.delete_subject(names[4])
    assert gone == sum(1 for i, o in enumerate(owner) if o == 4 and i % 3)
    g.add_subject("late")
    g.add_face("late", E[0], "x")
    again = Gallery(path, "m-1", D)
    assert len(again) == len(g) and len(g) == 100 - len(ids[::3]) - gone + 1
    np.testing.assert_array_equal(again.embeddings, g.embeddings)  # float32 blobs round-trip exactly
    assert again.subjects() == g.subjects()
    assert sum(s["n_faces"] for s in g.subjects()) == len(g)
    q = _unit(rng, 1)[0]
    assert again.search(q, 5) == g.search(q, 5)
    with pytest.raises(NotFound):
        g.delete_face(ids[0])
    with pytest.raises(NotFound):
        g.delete_subject(names[4])
    with pytest.raises(NotFound):
        g.add_face("nobody", E[0], "x")


def test_file_format(tmp_path):
    path = tmp_path / "g.db"
    g = Gallery(path, "m-1", D)
    g.add_subject("a")
    e = _unit(np.random.default_rng(2), 1)[0]
    g.add_face("a", e, "abc")
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == gallery_mod.SCHEMA_VERSION
    blob, digest, model = db.execute("SELECT embedding, image_sha256, model_id FROM faces").fetchone()
    assert len(blob) == 4 * D and (digest, model) == ("abc", "m-1")
    np.testing.assert_array_equal(np.frombuffer(blob, "<f4"), e)
    assert dict(db.execute("SELECT key, value FROM meta"))["model_id"] == "m-1"
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    with pytest.raises(GalleryError, match="schema version 99"):
        Gallery(path, "m-1", D)


def test_new_gallery_is_private_and_an_existing_one_keeps_its_mode(tmp_path):
    """Galleries hold biometric data: a new file (and its WAL) is 0600; an existing file keeps its mode."""
    path = tmp_path / "g.db"
    g = Gallery(path, "m-1", D)
    g.add_subject("a")
    g.add_face("a", _unit(np.random.default_rng(3), 1)[0], "h")
    assert (path.stat().st_mode & 0o777) == 0o600
    wal = tmp_path / "g.db-wal"
    assert not wal.exists() or (wal.stat().st_mode & 0o777) == 0o600
    g.close()
    path.chmod(0o640)
    Gallery(path, "m-1", D).close()
    assert (path.stat().st_mode & 0o777) == 0o640


def test_refuses_another_model_and_non_galleries(tmp_path):
    path = tmp_path / "g.db"
    Gallery(path, "m-1", D).close()
    with pytest.raises(ModelMismatch, match="'m-1'"):
        Gallery(path, "m-2", D)
    with pytest.raises(GalleryError, match="embedding size"):
        Gallery(path, "m-1", D + 1)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(GalleryError, match="not a usable gallery"):
        Gallery(junk, "m-1", D)


def test_failed_enrolment_rolls_back(tmp_path, monkeypatch):
    g = Gallery(tmp_path / "g.db", "m-1", D)
    g.add_subject("a")

    def boom():
        raise OSError("disk gone")

    monkeypatch.setattr(gallery_mod, "_test_pause", boom)
    with pytest.raises(OSError):
        g.add_face("a", _unit(np.random.default_rng(0), 1)[0], "h")
    assert len(g) == 0 and g.subjects()[0]["n_faces"] == 0
    db = sqlite3.connect(tmp_path / "g.db")
    assert db.execute("SELECT COUNT(*) FROM faces").fetchone()[0] == 0
    for bad in (np.zeros(D - 1), np.full(D, np.nan)):
        with pytest.raises(ValueError, match="finite"):
            g.add_face("a", bad, "h")
    for name in ("", " ", "a\x00b", "x" * 201, 3):
        with pytest.raises(ValueError, match="subject name"):
            g.add_subject(name)


def test_concurrent_writers_and_readers(tmp_path):
    g = Gallery(tmp_path / "g.db", "m-1", D)
    for i in range(4):
        g.add_subject(f"s{i}")
    E = _unit(np.random.default_rng(3), 200)
    errors = []

    def enrol(k):
        try:
            for j in range(k, 200, 4):
                g.add_face(f"s{k}", E[j], "h")
                g.search(E[j], 3)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=enrol, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(g) == 200
    assert sorted(s["n_faces"] for s in g.subjects()) == [50] * 4


def test_killed_during_enrolment_leaves_no_half_row(tmp_path, tiny_checkpoint, photo):
    """SIGKILL the server between the two writes of an enrolment: the database keeps what was committed."""
    import httpx

    from live import LiveServer

    path = tmp_path / "g.db"
    args = ["-c", str(tiny_checkpoint), "--gallery", str(path), "--no-detect"]
    files = {"img": ("a.jpg", photo(1), "image/jpeg")}
    with LiveServer(args) as srv:
        assert httpx.post(srv.url + "/api/v1/subjects", json={"name": "Ann"}).status_code == 201
        first = httpx.post(srv.url + "/api/v1/subjects/Ann/faces", files=files, timeout=30).json()["face_id"]
    flag = tmp_path / "paused"
    with LiveServer(args, env={"FASTCONV_GALLERY_TEST_PAUSE": str(flag)}) as srv:
        t = threading.Thread(target=lambda: _ignore_errors(
            lambda: httpx.post(srv.url + "/api/v1/subjects/Ann/faces", files=files, timeout=60)))
        t.start()
        deadline = time.monotonic() + 30
        while not flag.exists():
            assert time.monotonic() < deadline, "the enrolment never reached its transaction"
            time.sleep(0.05)
        srv.kill()  # SIGKILL: no cleanup, no rollback by the process
        t.join()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT id FROM faces").fetchall() == [(first,)]
    assert db.execute("SELECT name, n_faces FROM subjects").fetchall() == [("Ann", 1)]
    db.close()
    with LiveServer(args) as srv:
        assert httpx.get(srv.url + "/api/v1/subjects").json()["n_faces"] == 1


def _ignore_errors(fn):
    try:
        fn()
    except Exception:
        pass


def test_bulk_add_equals_one_by_one(tmp_path):
    rng = np.random.default_rng(4)
    E = _unit(rng, 50)
    names = [f"p{i % 7}" for i in range(50)]
    bulk = Gallery(tmp_path / "bulk.db", "m-1", D)
    bulk.bulk_add(names, E)
    single = Gallery(tmp_path / "single.db", "m-1", D)
    for n in sorted(set(names)):
        single.add_subject(n)
    for n, e in zip(names, E):
        single.add_face(n, e, "synthetic")
    assert [(s["name"], s["n_faces"]) for s in bulk.subjects()] == [(s["name"], s["n_faces"]) for s in single.subjects()]
    np.testing.assert_array_equal(Gallery(tmp_path / "bulk.db", "m-1", D).embeddings, single.embeddings)
    for q in _unit(rng, 5):
        assert [(h.subject, h.similarity) for h in bulk.search(q, 4)] == \
               [(h.subject, h.similarity) for h in single.search(q, 4)]
    with pytest.raises(ValueError, match="M names"):
        bulk.bulk_add(names[:3], E)
