"""Optional approximate search for large galleries: a faiss inverted-file index (``pip install
'fastconv[ann]'``, faiss-cpu).

:class:`IVFIndex` keeps unit embeddings (N, D) in ``nlist`` cells around k-means centroids
(inner product = cosine); a query scans the ``nprobe`` cells nearest to it, about
``N * nprobe / nlist`` vectors instead of N. The gallery asks it for candidate faces and ranks them
exactly (:meth:`fastconv.face.serve.gallery.Gallery.search`), so it can miss a face but never
mis-scores one. ``bench/ann_recall.py`` measures recall against exact search on 1M vectors.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["IVFIndex", "default_nlist"]


def default_nlist(n: int) -> int:
    """Cells for n vectors: about sqrt(n), at least 1, at most n / 39 (faiss's k-means needs ~39 points per cell)."""
    return max(1, min(int(math.sqrt(max(n, 1))), n // 39))


class IVFIndex:
    """faiss ``IndexIVFFlat`` (inner product) with ids = face ids; add, remove, search.

    ``build(E, ids)`` trains the centroids on up to ``64 * nlist`` rows of ``E`` (float32 (N, D)) and
    adds all of them; later ``add``/``remove`` keep it equal to the gallery.
    """

    kind = "ivf"

    def __init__(self, dim: int, nprobe: int = 256, nlist: int | None = None, seed: int = 0):
        try:
            import faiss
        except ImportError as exc:
            raise ImportError("the approximate index needs faiss-cpu: pip install 'fastconv[ann]'") from exc
        if nprobe < 1:
            raise ValueError(f"nprobe must be >= 1, got {nprobe}")
        self._faiss, self.dim, self.nprobe, self.nlist, self.seed = faiss, int(dim), int(nprobe), nlist, seed
        self._index = None

    @property
    def built(self) -> bool:
        return self._index is not None

    def __len__(self):
        return 0 if self._index is None else int(self._index.ntotal)

    def build(self, E: np.ndarray, ids: np.ndarray) -> None:
        faiss = self._faiss
        E = np.ascontiguousarray(E, dtype=np.float32)
        n = len(E)
        if E.ndim != 2 or E.shape[1] != self.dim or n == 0:
            raise ValueError(f"need (N >= 1, {self.dim}) embeddings, got {E.shape}")
        nlist = self.nlist or default_nlist(n)
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(self.seed)
        sample = E if n <= 64 * nlist else E[np.sort(rng.choice(n, 64 * nlist, replace=False))]
        index.cp.seed = self.seed
        index.train(sample)
        index.add_with_ids(E, np.ascontiguousarray(ids, dtype=np.int64))
        index.nprobe = min(self.nprobe, nlist)
        self._index, self.nlist = index, nlist

    def add(self, E: np.ndarray, ids: np.ndarray) -> None:
        self._index.add_with_ids(np.ascontiguousarray(E, dtype=np.float32).reshape(-1, self.dim),
                                 np.ascontiguousarray(ids, dtype=np.int64).reshape(-1))

    def remove(self, ids) -> None:
        self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64).reshape(-1))

    def search(self, Q: np.ndarray, k: int):
        """Q float32 (M, D) -> (scores float32 (M, k), ids int64 (M, k)); id -1 where fewer than k were found."""
        Q = np.ascontiguousarray(Q, dtype=np.float32).reshape(-1, self.dim)
        return self._index.search(Q, int(k))
