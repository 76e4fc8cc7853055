"""Training on fastconv's engine against the torch trainer, float64: heads, then 20 full steps.

* the margin head (insightface's combined margin, including the theta + m > pi fallback) and the
  softmax head with label smoothing / soft targets: loss and gradients vs ``fastconv.face.heads``;
* 20 SGD steps (10 softmax CE, 10 ArcFace) of an IResNet from identical weights and batches with
  the torch trainer's optimiser groups, schedule and clipping: losses and final weights agree to
  1e-9 relative, under every backend.
"""
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv as fc
from fastconv.face import convert, heads
from fastconv.face.engine_heads import CombinedMarginHead, SoftmaxHead
from fastconv.face.engine_train import StageOptimizer, lr_factor, param_groups, train_step

sys.path.insert(0, os.path.dirname(__file__))
from engine_helpers import BACKENDS, assert_close  # noqa: E402  (tests/face/conftest.py adds the path)
from face_synth import calibrated_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_blas_thread")

REL = 1e-9


class _Margin64(heads.CombinedMarginHead):
    """The torch head without its float32 cast of the cosines (so float64 stays float64)."""

    def cosine(self, embeddings):
        return F.linear(F.normalize(embeddings), F.normalize(self.weight))


class _Softmax64(heads.SoftmaxHead):
    def forward(self, embeddings, labels):
        return F.cross_entropy(self.fc(embeddings), labels, label_smoothing=self.label_smoothing)


def _rel_close(a, b, what):
    a, b = np.asarray(a, np.float64), np.asarray(b.detach().numpy() if hasattr(b, "detach") else b, np.float64)
    # relative to the tensor's largest value; the floor covers tensors that are rounding noise (the
    # FC bias before a training-mode BatchNorm1d has an exactly-zero gradient: values ~1e-17)
    err = np.max(np.abs(a - b)) / max(1e-6, np.max(np.abs(b))) if b.size else 0.0
    assert err <= REL, f"{what}: relative error {err:.3g} > {REL:g}"


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 6), c=st.integers(2, 9), d=st.integers(2, 12), m1=st.sampled_from([1.0, 0.9, 1.2]),
       m2=st.sampled_from([0.0, 0.4, 1.2, 2.6]), m3=st.sampled_from([0.0, 0.2]), s=st.sampled_from([8.0, 32.0]),
       seed=st.integers(0, 2**31))
def test_margin_head_matches_torch(b, c, d, m1, m2, m3, s, seed):
    rng = np.random.default_rng(seed)
    emb, labels = rng.normal(size=(b, d)), rng.integers(0, c, b)
    th = _Margin64(d, c, s, m1, m2, m3).double()
    fh = CombinedMarginHead(d, c, s, m1, m2, m3, dtype=np.float64)
    fh.weight.data[...] = th.weight.detach().numpy()
    et = torch.from_numpy(emb).requires_grad_(True)
    loss_t = th(et, torch.from_numpy(labels))
    loss_t.backward()
    loss = fh(emb, labels)
    demb = fh.backward()
    # Scaled, not absolute, 1e-12: the gradients grow with s (up to 32) and pass through
    # d acos(x)/dx = -1/sqrt(1 - x^2), so the same rounding in a different order gives absolute
    # differences of a few 1e-12 on gradients of size ~300 (hypothesis found 4.4e-12 at -281.8).
    _scaled_close(np.array(loss), loss_t, "loss")
    _scaled_close(demb, et.grad, "d embeddings")
    _scaled_close(fh.weight.grad, th.weight.grad, "d weight")


def _scaled_close(a, b, what, tol=1e-12):
    """max |a - b| / max(1, max |b|) <= tol (float64)."""
    a, b = np.asarray(a, np.float64), b.detach().numpy().astype(np.float64)
    err = np.max(np.abs(a - b)) / max(1.0, np.max(np.abs(b)))
    assert err <= tol, f"{what}: scaled error {err:.3g} > {tol:g}"


def test_margin_head_fallback_branch_is_exercised():
    """With m2 = 2.6 the target angle theta + m exceeds pi for most rows: the fallback must be used."""
    fh = CombinedMarginHead(4, 3, 16.0, 1.0, 2.6, 0.0, dtype=np.float64)
    emb = np.random.default_rng(0).normal(size=(32, 4))
    cos = fh.cosine(emb)[np.arange(32), np.zeros(32, int)]
    assert np.mean(cos <= fh.th) > 0.5


@pytest.mark.parametrize("soft", [False, True], ids=["labels", "cutmix-targets"])
def test_softmax_head_matches_torch(soft):
    rng = np.random.default_rng(1)
    emb, labels = rng.normal(size=(6, 5)), rng.integers(0, 4, 6)
    target = rng.dirichlet(np.ones(4), 6) if soft else labels
    th = _Softmax64(5, 4, label_smoothing=0.1).double()
    fh = SoftmaxHead(5, 4, 0.1, dtype=np.float64)
    fh.load_state_dict(th.state_dict())
    et = torch.from_numpy(emb).requires_grad_(True)
    loss_t = th(et, torch.from_numpy(target))
    loss_t.backward()
    assert_close(np.array(fh(emb, target)), loss_t, np.float64, "loss")
    assert_close(fh.backward(), et.grad, np.float64, "d embeddings")
    assert_close(fh.fc.weight.grad, th.fc.weight.grad, np.float64, "d fc.weight")


@pytest.mark.parametrize("backend", BACKENDS)
def test_twenty_training_steps_match_torch(backend):
    """10 CE steps (label smoothing 0.1) then 10 ArcFace steps, float64, same weights and batches."""
    from fastconv.face.train import _optimizer

    torch_model = calibrated_model("iresnet18", 16, input_size=16, width=0.125).double().train()
    net = convert(torch_model, np.float64).train()
    rng = np.random.default_rng(0)
    n_classes, batch = 5, 8
    batches = [(rng.uniform(-1, 1, (batch, 3, 16, 16)), rng.integers(0, n_classes, batch)) for _ in range(20)]
    stage = {"weight_decay": 5e-4, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9}
    losses_t, losses_f = [], []
    with fc.use_backend(backend):
        for kind, steps in (("softmax", batches[:10]), ("arcface", batches[10:])):
            if kind == "softmax":
                th = _Softmax64(16, n_classes, label_smoothing=0.1).double()
                fh = SoftmaxHead(16, n_classes, 0.1, dtype=np.float64)
            else:
                th = _Margin64(16, n_classes, s=32.0, m2=0.4).double()
                fh = CombinedMarginHead(16, n_classes, 32.0, 1.0, 0.4, dtype=np.float64)
            fh.load_state_dict(th.state_dict())
            opt_t = _optimizer(torch_model, th, stage)
            opt_f = StageOptimizer(param_groups(net, fh), stage["lr"], stage["momentum"], stage["weight_decay"])
            sched = torch.optim.lr_scheduler.LambdaLR(opt_t, lambda s: lr_factor(s, 10, 2))
            for k, (x, y) in enumerate(steps):
                loss = th(torch_model(torch.from_numpy(x)), torch.from_numpy(y))
                opt_t.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(list(torch_model.parameters()) + list(th.parameters()), 5.0)
                opt_t.step()
                sched.step()
                losses_t.append(float(loss.detach()))
                opt_f.set_factor(lr_factor(k, 10, 2))
                losses_f.append(train_step(net, fh, x, y, opt_f, clip=5.0)[0])
            _rel_close(fh.state_dict()["weight" if kind != "softmax" else "fc.weight"],
                       th.state_dict()["weight" if kind != "softmax" else "fc.weight"], f"{kind} head weight")
    _rel_close(losses_f, np.array(losses_t), "losses")
    assert losses_t[9] != losses_t[0] and losses_t[19] != losses_t[10]  # training moved
    state = net.state_dict()
    for key, value in torch_model.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            _rel_close(state[key], value, key)


def test_cli_trains_on_the_engine_and_the_runtime_loads_it(face_tree, tmp_path, monkeypatch, capsys):
    """`fastconv face train --engine fastconv` end to end on the synthetic tree: both stages, model.npz."""
    from face_synth import TINY

    from fastconv.face.cli import main
    from fastconv.face.runtime import load_model

    monkeypatch.setenv("FASTCONV_CACHE", str(tmp_path / "cache"))
    sets = TINY + ["ce.epochs=2", "arcface.epochs=1", "ce.batch_size=4", "arcface.batch_size=4", "data.val_people=0",
                   "ce.cutmix=1.0"]
    args = ["train", "--engine", "fastconv", "--config", "base", "--root", str(face_tree.root),
            "--out", str(tmp_path / "run"), "--quiet"] + [a for kv in sets for a in ("--set", kv)]
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        assert main(args) == 0
    records = [__import__("json").loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in records] == [("ce", 1), ("ce", 2), ("arcface", 1)]
    assert all(np.isfinite(r["loss"]) and r["engine"] == "fastconv" for r in records)
    m = load_model(tmp_path / "run" / "model.npz")
    e, kept, _ = m.embed_files([str(face_tree.root / r) for r in face_tree.relpaths])
    assert e.shape == (len(face_tree.relpaths), 16) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    assert main(args[:-2] + ["--set", "ce.mixup=0.2"]) == 2
    assert "does not implement ce.mixup" in capsys.readouterr().err
