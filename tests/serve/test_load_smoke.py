"""bench/serve_load.py runs end to end (a few requests per row) and reports every scenario."""
import json


def test_serve_load_smoke(tiny_checkpoint, tmp_path, monkeypatch):
    from fastconv.bench import serve_load

    monkeypatch.setenv("FASTCONV_LFW", str(tmp_path / "no-lfw"))  # skip the detection row
    rc = serve_load.main(["-c", str(tiny_checkpoint), "--requests", "3", "--concurrency", "1,2",
                          "--galleries", "50", "--workers", "1", "--threads", "1", "--out", str(tmp_path)])
    assert rc == 0
    report = json.loads((tmp_path / "serve_load.json").read_text())
    rows = [(r["route"], r["concurrency"], r.get("gallery")) for r in report["results"]]
    assert rows == [("/api/v1/verify", 1, None), ("/api/v1/verify", 2, None), ("/api/v1/identify", 4, "50")]
    assert all(r["failed"] == 0 and r["requests_per_s"] > 0 and r["p50_ms"] <= r["p99_ms"] for r in report["results"])
    assert "| `/api/v1/identify` | 50 |" in (tmp_path / "serve_load.md").read_text()
