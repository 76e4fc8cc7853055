"""CI helper (either venv, NumPy only): the torch path and the torch-free path must agree.

usage: python .ci/compare_face_outputs.py DIR
DIR holds verify-torch-<k>.txt / verify-fastconv-<k>.txt (``fastconv face verify`` outputs) and
emb-torch.npy / emb-fastconv.npy (``fastconv face embed``). Scores must agree within 1e-5 and the
decisions must be equal; embeddings within 1e-5.
"""
import pathlib
import re
import sys

import numpy as np


def parse(path):
    text = path.read_text()
    score = float(re.search(r"cosine score: ([-0-9.]+)", text).group(1))
    return score, re.search(r"decision: +(\w+)", text).group(1)


def main(d):
    d = pathlib.Path(d)
    worst = 0.0
    for torch_out in sorted(d.glob("verify-torch-*.txt")):
        (s1, v1), (s2, v2) = parse(torch_out), parse(d / torch_out.name.replace("torch", "fastconv"))
        worst = max(worst, abs(s1 - s2))
        if v1 != v2 or abs(s1 - s2) > 1e-5:
            raise SystemExit(f"{torch_out.name}: torch {s1} {v1} vs fastconv {s2} {v2}")
    a, b = np.load(d / "emb-torch.npy"), np.load(d / "emb-fastconv.npy")
    diff = float(np.max(np.abs(a - b)))
    if a.shape != b.shape or diff > 1e-5:
        raise SystemExit(f"embeddings differ: shapes {a.shape} {b.shape}, max |diff| {diff:.3g}")
    print(f"torch vs torch-free: same decisions, max |score diff| {worst:.2g}, embeddings {a.shape} "
          f"max |diff| {diff:.2g}")


if __name__ == "__main__":
    main(sys.argv[1])
