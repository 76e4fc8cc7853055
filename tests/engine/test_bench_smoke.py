"""Smoke test of the benchmark machinery (bench/): one tiny case, one repeat, no timing asserts.

``bench/`` is installed as ``fastconv.bench``: without the install the test is skipped, except
in CI (``FASTCONV_REQUIRE_BACKENDS`` set), where it fails (``engine_helpers.import_installed``).
"""
import json

import pytest

from engine_helpers import assert_close, import_installed

pytest.importorskip("torch")
cases = import_installed("fastconv.bench.cases")
suite = import_installed("fastconv.bench.suite")
report = import_installed("fastconv.bench.report")
timing = import_installed("fastconv.bench.timing")
bench_main = import_installed("fastconv.bench.__main__")

CASE = "conv1d_24_8_k8s4p0_n1_w128"


def test_suite_writes_json_and_markdown_with_every_contender(tmp_path):
    chosen = cases.select(cases.all_cases(quick=True), [CASE])
    assert [c.id for c in chosen] == [CASE]
    names = suite.contenders()
    assert names[0] == "reference" and names[-1] == suite.TORCH
    plan = timing.Plan(repeats=1, warmup=0, budget_s=0.0, min_repeats=1)
    result = suite.run(chosen, names, plan, gemm_n=64, log=lambda s: None, jit=False)
    meta = {"quick": True, "processor": "cpu", "cpu_count": 1, "platform": "test", "threads": 1,
            "env_set_before_imports": True, "imported_before_pinning": [], "torch_threads": 1,
            "blas": "test", "env": {}, "python": "3", "numpy": "x", "torch": "x", "numba": None,
            "fastconv": "x"}
    paths, md = report.write(result, meta, str(tmp_path))

    data = json.loads(open(paths["json"]).read())
    (row,) = data["rows"]
    assert row["id"] == CASE and row["macs"] == 8 * 31 * 24 * 8
    assert set(row["contenders"]) == set(names)
    for name in names:
        rec = row["contenders"][name]
        assert rec["error"] is None, rec.get("traceback")
        assert rec["n"] == 1 and rec["fwd_ms"] > 0 and rec["fwdbwd_ms"] >= rec["fwd_ms"]
    text = open(paths["markdown"]).read()
    assert text == md
    for name in names:
        assert f"{name} ms" in text
    assert "Conv1d(24,8,8,s4)" in text


def test_torch_twin_matches_fastconv():
    """Every case's torch contender computes what its fastconv module computes."""
    import torch

    import fastconv as fc

    for case in cases.all_cases(quick=True):
        module, x, _ = case.build()
        twin = cases.torch_twin(module)
        with fc.use_backend("reference"), torch.no_grad():
            assert_close(module(x), twin(torch.from_numpy(x)), x.dtype, case.id)


def test_list_cases(capsys):
    assert bench_main.main(["--list", "--quick"]) == 0
    out = capsys.readouterr().out
    assert CASE in out and "train_face_cnn" in out
