"""The persistent gallery: subjects and their face embeddings in one SQLite file, searched in memory.

Storage (stdlib ``sqlite3``, WAL journal, ``PRAGMA user_version`` = :data:`SCHEMA_VERSION`)::

    meta(key TEXT PRIMARY KEY, value TEXT)        -- model_id, embedding_size, created
    subjects(id, name UNIQUE, created, n_faces)   -- n_faces = its rows in faces
    faces(id, subject_id -> subjects ON DELETE CASCADE, embedding BLOB (D float32, little-endian),
          image_sha256, model_id, created)

Every change is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``): an enrolment writes the face
row and the subject's ``n_faces`` together or not at all, even when the process is killed between
them. The in-memory copy (``E``: float32 (N, D) unit rows, one per face) is loaded at open and
updated only after a commit, so it always equals the database.

Search is exact: ``s = E @ q`` (cosine, rows and q unit-norm), one matrix product, then the best
face of each subject, sorted. A gallery remembers the ``model_id`` it was made with and refuses to
open for another model (embeddings of two models are not comparable).
"""
from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from dataclasses import dataclass

import numpy as np

from ...atomic import PRIVATE

__all__ = ["SCHEMA_VERSION", "Gallery", "GalleryError", "ModelMismatch", "NotFound", "Conflict", "Hit",
           "image_digest"]

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE subjects (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    n_faces INTEGER NOT NULL DEFAULT 0 CHECK (n_faces >= 0)
);
CREATE TABLE faces (
    id INTEGER PRIMARY KEY,
    subject_id INTEGER NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    embedding BLOB NOT NULL,
    image_sha256 TEXT NOT NULL,
    model_id TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX faces_subject ON faces(subject_id);
"""
# Test hook: when set to a path, an enrolment creates that file and sleeps between its two writes
# (tests kill the process there to show the transaction leaves no half row).
_PAUSE_ENV = "FASTCONV_GALLERY_TEST_PAUSE"



def _create_private(path):
    """Create a new gallery file with mode 0600 (embeddings are biometric data); SQLite gives its
    -wal and -shm files the database file's mode. An existing file keeps its mode."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE))
    except FileExistsError:
        pass

class GalleryError(ValueError):
    """A gallery file that cannot be used (wrong schema, corrupt rows)."""


class ModelMismatch(GalleryError):
    """The gallery was made with another model."""


class NotFound(KeyError):
    """No such subject or face."""

    def __str__(self):
        return str(self.args[0]) if self.args else "not found"


class Conflict(ValueError):
    """The subject already exists."""


@dataclass(frozen=True)
class Hit:
    subject: str
    similarity: float
    face_id: int


def image_digest(data: bytes) -> str:
    """SHA-256 hex of the uploaded image bytes."""
    return hashlib.sha256(data).hexdigest()


def _check_name(name) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError("subject name must be a non-empty string")
    name = name.strip()
    if len(name) > 200:
        raise ValueError(f"subject name is {len(name)} characters, at most 200 allowed")
    if any(ord(c) < 32 for c in name):
        raise ValueError("subject name must not contain control characters")
    return name


class Gallery:
    """Open (or create) the gallery at ``path`` for embeddings of ``model_id`` with ``embedding_size`` D.

    ``path=":memory:"`` keeps it in memory only. Methods are thread-safe (one lock).
    ``index``: an optional approximate index (:class:`~fastconv.face.serve.ann.IVFIndex`), built once
    the gallery holds ``index_min_faces`` faces and kept in sync after that; search then ranks its
    candidates exactly instead of scanning every face.
    """

    def __init__(self, path, model_id: str, embedding_size: int, index=None, index_min_faces: int = 100_000):
        self.path = os.fspath(path)
        self.model_id, self.dim = str(model_id), int(embedding_size)
        self._lock = threading.RLock()
        self.index, self.index_min_faces = index, int(index_min_faces)
        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            _create_private(self.path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA foreign_keys = ON")
            if self.path != ":memory:":
                mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise GalleryError(f"{self.path}: could not switch to WAL mode (got {mode})")
            self._db.execute("PRAGMA synchronous = FULL")
            self._init_schema()
            self._load()
        except sqlite3.DatabaseError as exc:
            raise GalleryError(f"{self.path} is not a usable gallery database: {exc}") from None

    # -- schema -------------------------------------------------------------------------------
    def _init_schema(self):
        db = self._db
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version == 0 and not tables:
            db.execute("BEGIN IMMEDIATE")
            try:
                for stmt in _SCHEMA.strip().split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                db.executemany("INSERT INTO meta(key, value) VALUES (?, ?)",
                               [("model_id", self.model_id), ("embedding_size", str(self.dim)),
                                ("created", f"{time.time():.3f}")])
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return
        if version != SCHEMA_VERSION:
            raise GalleryError(f"{self.path}: gallery schema version {version}, this fastconv reads "
                               f"version {SCHEMA_VERSION}")
        meta = dict(db.execute("SELECT key, value FROM meta"))
        if meta.get("model_id") != self.model_id:
            raise ModelMismatch(f"{self.path} was made with model {meta.get('model_id')!r}; this server runs "
                                f"{self.model_id!r}, whose embeddings are not comparable (use another --gallery)")
        if int(meta.get("embedding_size", -1)) != self.dim:
            raise GalleryError(f"{self.path}: embedding size {meta.get('embedding_size')}, model has {self.dim}")

    def _load(self):
        rows = self._db.execute(
            "SELECT f.id, f.subject_id, s.name, f.embedding, f.model_id FROM faces f "
            "JOIN subjects s ON s.id = f.subject_id ORDER BY f.id").fetchall()
        n = len(rows)
        self._cap = max(64, n)
        self._E = np.zeros((self._cap, self.dim), np.float32)
        self._face_ids = np.zeros(self._cap, np.int64)
        self._subject_rows = np.zeros(self._cap, np.int64)  # subject id of each row
        self._n = 0
        self._scored = None  # (scorer, V (M, k) = T (E - mean), (V * V) @ a (M,)) of the first M rows
        self._names = dict(self._db.execute("SELECT id, name FROM subjects"))
        for face_id, sid, _name, blob, model_id in rows:
            if model_id != self.model_id:
                raise ModelMismatch(f"{self.path}: face {face_id} was embedded by model {model_id!r}, not "
                                    f"{self.model_id!r}")
            if len(blob) != 4 * self.dim:
                raise GalleryError(f"{self.path}: face {face_id} has a {len(blob)}-byte embedding, expected "
                                   f"{4 * self.dim}")
            self._append(face_id, sid, np.frombuffer(blob, dtype="<f4"))
        self._maybe_build_index()

    def _maybe_build_index(self):
        if self.index is not None and not self.index.built and self._n >= max(1, self.index_min_faces):
            self.index.build(self._E[:self._n], self._face_ids[:self._n])

    @property
    def index_in_use(self) -> bool:
        return self.index is not None and self.index.built

    def _append(self, face_id, subject_id, e):
        if self._n == self._cap:
            self._cap *= 2
            for attr in ("_E", "_face_ids", "_subject_rows"):
                old = getattr(self, attr)
                new = np.zeros((self._cap,) + old.shape[1:], old.dtype)
                new[:self._n] = old[:self._n]
                setattr(self, attr, new)
        self._E[self._n] = e
        self._face_ids[self._n] = face_id
        self._subject_rows[self._n] = subject_id
        self._n += 1

    def _drop_rows(self, keep):
        """Keep the in-memory rows where ``keep`` (bool (N,)) is true."""
        self._scored = None
        m = int(keep.sum())
        for attr in ("_E", "_face_ids", "_subject_rows"):
            arr = getattr(self, attr)
            arr[:m] = arr[:self._n][keep]
        self._n = m

    def _tx(self):
        return _Transaction(self._db)

    # -- reads --------------------------------------------------------------------------------
    def __len__(self):
        return self._n

    @property
    def embeddings(self) -> np.ndarray:
        """float32 (N, D) copy of the in-memory gallery, rows in face-id order."""
        with self._lock:
            return self._E[:self._n].copy()

    @property
    def n_subjects(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM subjects").fetchone()[0]

    def subjects(self) -> list[dict]:
        """[{name, n_faces, created}] sorted by name."""
        with self._lock:
            rows = self._db.execute("SELECT name, n_faces, created FROM subjects ORDER BY name").fetchall()
        return [{"name": n, "n_faces": k, "created": c} for n, k, c in rows]

    def faces_of(self, name) -> list[int]:
        with self._lock:
            sid = self._subject_id(name)
            return [r[0] for r in self._db.execute("SELECT id FROM faces WHERE subject_id = ? ORDER BY id", (sid,))]

    def _subject_id(self, name) -> int:
        row = self._db.execute("SELECT id FROM subjects WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no subject named {name!r}")
        return row[0]

    # -- writes -------------------------------------------------------------------------------
    def add_subject(self, name) -> dict:
        name = _check_name(name)
        with self._lock:
            now = time.time()
            try:
                with self._tx():
                    sid = self._db.execute("INSERT INTO subjects(name, created) VALUES (?, ?)", (name, now)).lastrowid
            except sqlite3.IntegrityError:
                raise Conflict(f"subject {name!r} already exists") from None
            self._names[sid] = name
        return {"name": name, "n_faces": 0, "created": now}

    def delete_subject(self, name) -> int:
        """Delete a subject and its faces; returns how many faces went."""
        with self._lock:
            sid = self._subject_id(name)
            with self._tx():
                self._db.execute("DELETE FROM subjects WHERE id = ?", (sid,))  # faces cascade
            keep = self._subject_rows[:self._n] != sid
            gone = self._n - int(keep.sum())
            if self.index_in_use and gone:
                self.index.remove(self._face_ids[:self._n][~keep])
            self._drop_rows(keep)
            self._names.pop(sid, None)
        return gone

    def add_face(self, name, embedding, image_sha256: str) -> int:
        """Enrol one face (float32 (D,) unit embedding) for an existing subject; returns its face id."""
        e = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if e.shape != (self.dim,) or not np.all(np.isfinite(e)):
            raise ValueError(f"embedding must be {self.dim} finite floats, got shape {e.shape}")
        with self._lock:
            sid = self._subject_id(name)
            with self._tx():
                face_id = self._db.execute(
                    "INSERT INTO faces(subject_id, embedding, image_sha256, model_id, created) VALUES (?,?,?,?,?)",
                    (sid, e.astype("<f4").tobytes(), image_sha256, self.model_id, time.time())).lastrowid
                _test_pause()
                self._db.execute("UPDATE subjects SET n_faces = n_faces + 1 WHERE id = ?", (sid,))
            self._append(face_id, sid, e)
            if self.index_in_use:
                self.index.add(e[None], np.array([face_id]))
            else:
                self._maybe_build_index()
        return face_id

    def delete_face(self, face_id: int) -> None:
        with self._lock:
            row = self._db.execute("SELECT subject_id FROM faces WHERE id = ?", (int(face_id),)).fetchone()
            if row is None:
                raise NotFound(f"no face with id {face_id}")
            with self._tx():
                self._db.execute("DELETE FROM faces WHERE id = ?", (int(face_id),))
                self._db.execute("UPDATE subjects SET n_faces = n_faces - 1 WHERE id = ?", (row[0],))
            self._drop_rows(self._face_ids[:self._n] != int(face_id))
            if self.index_in_use:
                self.index.remove([int(face_id)])

    def bulk_add(self, names, embeddings, image_sha256="synthetic") -> None:
        """Enrol M faces at once, one transaction: ``names[i]`` (created if new) gets ``embeddings[i]``
        (float32 (M, D), unit rows). For benchmarks and imports."""
        E = np.asarray(embeddings, dtype=np.float32)
        if E.ndim != 2 or E.shape[1] != self.dim or len(names) != len(E):
            raise ValueError(f"need M names and (M, {self.dim}) embeddings, got {len(names)} and {E.shape}")
        names = [_check_name(n) for n in names]
        with self._lock:
            now = time.time()
            with self._tx():
                known = dict(self._db.execute("SELECT name, id FROM subjects"))
                for name in dict.fromkeys(names):
                    if name not in known:
                        known[name] = self._db.execute("INSERT INTO subjects(name, created) VALUES (?, ?)",
                                                       (name, now)).lastrowid
                first = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM faces").fetchone()[0] + 1
                self._db.executemany(
                    "INSERT INTO faces(id, subject_id, embedding, image_sha256, model_id, created) "
                    "VALUES (?,?,?,?,?,?)",
                    ((first + i, known[n], e.astype("<f4").tobytes(), image_sha256, self.model_id, now)
                     for i, (n, e) in enumerate(zip(names, E))))
                counts = {}
                for n in names:
                    counts[known[n]] = counts.get(known[n], 0) + 1
                self._db.executemany("UPDATE subjects SET n_faces = n_faces + ? WHERE id = ?",
                                     [(k, sid) for sid, k in counts.items()])
            for name, sid in known.items():
                self._names[sid] = name
            for i, (n, e) in enumerate(zip(names, E)):
                self._append(first + i, known[n], e)
            if self.index_in_use:
                self.index.add(E, np.arange(first, first + len(E)))
            else:
                self._maybe_build_index()

    # -- search -------------------------------------------------------------------------------
    def search(self, query, top_k=5, scorer=None) -> list[Hit]:
        """The ``top_k`` subjects whose best face scores highest against ``query`` (D,), best first.

        ``scorer`` None or cosine: ``s = E @ q`` over all N faces (cosines). A PLDA back-end
        (``fastconv.face.scoring.PLDAScorer``): ``s_i = LLR(q, E_i)``, computed as
        ``a.(u*u) + a.(v_i*v_i) + (b*u).v_i + c`` with ``u = T (q - mean)`` and the faces' ``v_i``
        (transformed once and kept until a face is deleted). Then each subject's best face, sorted
        by score (``Hit.similarity``). With an approximate index in use, only its
        ``max(100, 10 top_k)`` cosine candidates are scored.
        """
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.shape != (self.dim,):
            raise ValueError(f"query must have {self.dim} values, got {q.shape}")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")
        with self._lock:
            n = self._n
            if n == 0:
                return []
            if self.index_in_use:
                _, cand = self.index.search(q[None], min(n, max(100, 10 * top_k)))
                rows = np.searchsorted(self._face_ids[:n], cand[0][cand[0] >= 0])  # ids ascend with rows
            else:
                rows = np.arange(n)
            if scorer is None or scorer.name == "cosine":
                s = self._E[rows] @ q  # (N,): one matrix product
            else:
                s = self._llr(scorer, q, rows)
            order = np.argsort(-s, kind="stable")
            ranked = rows[order]
            _, first = np.unique(self._subject_rows[ranked], return_index=True)  # best face of each subject
            return [Hit(self._names[int(self._subject_rows[ranked[p]])], float(s[order[p]]),
                        int(self._face_ids[ranked[p]])) for p in np.sort(first)[:top_k]]

    def _llr(self, scorer, q, rows):
        """(with the lock) PLDA log-likelihood ratios (len(rows),) of ``q`` against the faces ``rows``."""
        n = self._n
        if self._scored is None or self._scored[0] is not scorer:
            self._scored = (scorer, np.zeros((0, scorer.psi.shape[0])), np.zeros(0))
        _, V, quad = self._scored
        if V.shape[0] < n:  # faces appended since: transform only those
            new = scorer.transform(self._E[V.shape[0]:n])
            V, quad = np.concatenate([V, new]), np.concatenate([quad, (new * new) @ scorer.a])
            self._scored = (scorer, V, quad)
        u = scorer.transform(q[None].astype(np.float64))[0]
        return quad[rows] + V[rows] @ (scorer.b * u) + float((u * u) @ scorer.a) + scorer.c

    def close(self):
        with self._lock:
            self._db.close()


class _Transaction:
    """``with``: BEGIN IMMEDIATE, then COMMIT on success or ROLLBACK on any exception."""

    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        return False


def _test_pause():
    path = os.environ.get(_PAUSE_ENV)
    if path:
        with open(path, "w") as fh:
            fh.write("in transaction\n")
        time.sleep(60)
