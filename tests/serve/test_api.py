"""The REST API through FastAPI's TestClient: every endpoint, every refusal, the API key, restarts."""
import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from fastconv.face.scoring import CosineScorer
from fastconv.face.serve.embedder import TorchEmbedder
from fastconv.face.serve.gallery import Gallery, ModelMismatch


def _files(**images):
    return {k: (f"{k}.jpg", v, "image/jpeg") for k, v in images.items()}


def _code(resp):
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]["code"]


def test_health(make_client, tmp_path, tiny_checkpoint):
    c = make_client(tmp_path / "g.db")
    h = c.get("/api/v1/health").json()
    emb = TorchEmbedder(tiny_checkpoint, scorer="cosine")
    assert h["model"] == emb.model_id and h["model"].startswith("iresnet18-")
    assert h["engine"] == "torch" and h["threshold"] == pytest.approx(emb.threshold)
    assert h["threshold_kind"] == "cosine" and h["scorer"] == "cosine" and h["embedding_size"] == 16 and h["input_size"] == 16
    assert h["gallery"]["faces"] == 0 and h["gallery"]["subjects"] == 0 and h["detect"] is False


def test_verify_matches_the_cli_pipeline(make_client, tmp_path, photo, tiny_checkpoint):
    """The service scores like `fastconv face verify` (load_image + embed with flip) on LFW-style crops."""
    from fastconv.face.checkpoint import load_for_inference
    from fastconv.face.data import load_image
    from fastconv.face.evaluate import embed

    a, b = photo(1), photo(2)
    (tmp_path / "a.jpg").write_bytes(a)
    (tmp_path / "b.jpg").write_bytes(b)
    model, meta, pre, _ = load_for_inference(tiny_checkpoint)
    e = embed(model, np.stack([load_image(tmp_path / "a.jpg", pre), load_image(tmp_path / "b.jpg", pre)]))
    expected = float(e[0] @ e[1])

    c = make_client(tmp_path / "g.db")
    r = c.post("/api/v1/verify", files=_files(img1=a, img2=b))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["similarity"] == pytest.approx(expected, abs=1e-5)
    assert body["verified"] == (body["similarity"] >= body["threshold"])
    assert body["threshold"] == pytest.approx(meta["threshold"]) and body["threshold_kind"] == "cosine"
    assert body["engine"] == "torch" and body["time_ms"] > 0
    assert [f["box"] for f in body["faces"]] == [{"x": 0, "y": 0, "w": 250, "h": 250}] * 2
    assert all(f["crop"] is None and f["detected"] is False for f in body["faces"])

    same = c.post("/api/v1/verify", files=_files(img1=a, img2=a), data={"crops": "true"}).json()
    assert same["similarity"] == pytest.approx(1.0, abs=1e-5) and same["verified"] is True
    crop = same["faces"][0]["crop"]
    assert crop.startswith("data:image/jpeg;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(crop.split(",", 1)[1]))).size == (250, 250)


def test_verify_and_represent_take_base64_json(make_client, tmp_path, photo):
    c = make_client(tmp_path / "g.db")
    a, b = photo(1), photo(2)
    multipart = c.post("/api/v1/verify", files=_files(img1=a, img2=b)).json()
    as_json = c.post("/api/v1/verify", json={"img1": base64.b64encode(a).decode(),
                                             "img2": "data:image/jpeg;base64," + base64.b64encode(b).decode()}).json()
    assert as_json["similarity"] == pytest.approx(multipart["similarity"], abs=1e-6)
    rep = c.post("/api/v1/represent", json={"img": base64.b64encode(a).decode()}).json()
    e = np.array(rep["embedding"])
    assert e.shape == (16,) and np.linalg.norm(e) == pytest.approx(1.0, abs=1e-5)
    assert rep["box"] == {"x": 0, "y": 0, "w": 250, "h": 250} and rep["detected"] is False
    rep2 = c.post("/api/v1/represent", files=_files(img=b)).json()
    assert float(e @ np.array(rep2["embedding"])) == pytest.approx(multipart["similarity"], abs=1e-5)


def test_gallery_endpoints(make_client, tmp_path, photo):
    c = make_client(tmp_path / "g.db")
    assert c.post("/api/v1/subjects", json={"name": "Ann"}).status_code == 201
    assert c.post("/api/v1/subjects", json={"name": "Bo"}).json()["n_faces"] == 0
    r = c.post("/api/v1/subjects", json={"name": "Ann"})
    assert r.status_code == 409 and _code(r) == "subject_exists"
    r = c.post("/api/v1/subjects", json={"name": ""})
    assert r.status_code == 422
    r = c.post("/api/v1/subjects", json={"name": "  "})
    assert r.status_code == 422 and _code(r) == "bad_name"

    added = c.post("/api/v1/subjects/Ann/faces", files=_files(img=photo(1)))
    assert added.status_code == 201, added.text
    fa = added.json()
    assert fa["subject"] == "Ann" and isinstance(fa["face_id"], int) and len(fa["image_sha256"]) == 64
    f2 = c.post("/api/v1/subjects/Ann/faces", files=_files(img=photo(2))).json()["face_id"]
    fb = c.post("/api/v1/subjects/Bo/faces", files=_files(img=photo(3))).json()["face_id"]
    assert len({fa["face_id"], f2, fb}) == 3
    r = c.post("/api/v1/subjects/Nobody/faces", files=_files(img=photo(1)))
    assert r.status_code == 404 and _code(r) == "no_subject"

    listed = c.get("/api/v1/subjects").json()
    assert listed["n_faces"] == 3
    assert [(s["name"], s["n_faces"]) for s in listed["subjects"]] == [("Ann", 2), ("Bo", 1)]

    hits = c.post("/api/v1/identify", files=_files(img=photo(3)), data={"top_k": "5"}).json()
    assert [h["subject"] for h in hits["results"]][0] == "Bo"
    assert hits["results"][0]["face_id"] == fb and hits["results"][0]["similarity"] == pytest.approx(1, abs=1e-5)
    assert hits["accepted"] is True and hits["subject"] == "Bo" and hits["gallery_faces"] == 3
    assert len(hits["results"]) == 2  # one entry per subject: the best face of each
    top1 = c.post("/api/v1/identify", json={"img": base64.b64encode(photo(1)).decode(), "top_k": 1}).json()
    assert [(h["subject"], h["face_id"]) for h in top1["results"]] == [("Ann", fa["face_id"])]

    assert c.delete(f"/api/v1/faces/{f2}").json() == {"deleted": f2}
    r = c.delete(f"/api/v1/faces/{f2}")
    assert r.status_code == 404 and _code(r) == "no_face"
    r = c.delete("/api/v1/faces/abc")
    assert r.status_code == 422 and _code(r) == "bad_request"
    assert c.delete("/api/v1/subjects/Ann").json() == {"deleted": "Ann", "faces_deleted": 1}
    r = c.delete("/api/v1/subjects/Ann")
    assert r.status_code == 404
    assert c.get("/api/v1/health").json()["gallery"] == {"path": str(tmp_path / "g.db"), "subjects": 1, "faces": 1,
                                                        "search": "exact"}
    left = c.post("/api/v1/identify", files=_files(img=photo(1))).json()
    assert [h["subject"] for h in left["results"]] == ["Bo"]


def test_identify_empty_gallery_and_bad_top_k(make_client, tmp_path, photo):
    c = make_client(tmp_path / "g.db")
    r = c.post("/api/v1/identify", files=_files(img=photo(1))).json()
    assert r["results"] == [] and r["accepted"] is False and r["subject"] is None
    for bad in ("0", "101", "abc", "2.5"):
        r = c.post("/api/v1/identify", files=_files(img=photo(1)), data={"top_k": bad})
        assert r.status_code == 422 and _code(r) == "bad_field", bad


def test_restart_keeps_the_gallery(make_client, tmp_path, photo):
    path = tmp_path / "g.db"
    c = make_client(path)
    c.post("/api/v1/subjects", json={"name": "Ann"})
    face = c.post("/api/v1/subjects/Ann/faces", files=_files(img=photo(5))).json()["face_id"]
    again = make_client(path)
    assert again.get("/api/v1/subjects").json()["subjects"][0]["name"] == "Ann"
    hit = again.post("/api/v1/identify", files=_files(img=photo(5))).json()["results"][0]
    assert hit["face_id"] == face and hit["similarity"] == pytest.approx(1, abs=1e-5)


def test_gallery_of_another_model_is_refused(make_client, tmp_path, photo, tiny_checkpoint, other_checkpoint,
                                            capsys):
    from fastconv.face.cli import main

    path = tmp_path / "g.db"
    c = make_client(path)
    c.post("/api/v1/subjects", json={"name": "Ann"})
    other = TorchEmbedder(other_checkpoint)
    assert other.model_id != TorchEmbedder(tiny_checkpoint).model_id
    with pytest.raises(ModelMismatch, match="was made with model"):
        Gallery(path, other.model_id, other.embedding_size)
    assert main(["serve", "-c", str(other_checkpoint), "--gallery", str(path), "--no-detect"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "was made with model" in err and len(err.strip().splitlines()) == 1


def test_serve_command_refuses_bad_options(tiny_checkpoint, tmp_path, capsys):
    from fastconv.face.cli import main

    base = ["serve", "--gallery", str(tmp_path / "g.db")]
    cases = [(["--model", str(tmp_path / "m.npz")], "m.npz"),
             (["-c", str(tmp_path / "none.pt")], "not found"),
             (["-c", str(tiny_checkpoint), "--port", "0"], "--port"),
             (["-c", str(tiny_checkpoint), "--scorer", "cosine", "--threshold", "1.5"], "cosine in [-1, 1]"),
             (["-c", str(tiny_checkpoint), "--workers", "0"], "--workers"),
             (["-c", str(tiny_checkpoint), "--max-image-mb", "0"], "--max-image-mb")]
    for extra, message in cases:
        assert main(base + extra) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, (extra, err)


def _png_header_only(w, h):
    """A PNG that claims w x h pixels (valid IHDR) with a tiny IDAT: a decompression-bomb probe."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def _png(w, h):
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (90, 90, 90)).save(buf, format="PNG")
    return buf.getvalue()


def test_bad_uploads_get_4xx_json(make_client, tmp_path, photo):
    c = make_client(tmp_path / "g.db", max_bytes=200_000)
    good = photo(1)
    gif = io.BytesIO()
    Image.new("RGB", (50, 50)).save(gif, format="GIF")
    cases = {
        "unsupported_type": [gif.getvalue(), b"hello, not an image", b"%PDF-1.4"],
        "corrupt_image": [good[: len(good) // 3], b"\x89PNG\r\n\x1a\n" + b"\x00" * 40],
        "image_too_large": [photo(2, size=400, fmt="PNG")],
        "too_many_pixels": [_png_header_only(100_000, 100_000)],
        "empty_image": [b""],
        "too_small": [_png(8, 300)],
        "bad_aspect": [_png(20, 2000), _png(3000, 100)],
    }
    status = {"unsupported_type": 415, "corrupt_image": 422, "image_too_large": 413, "too_many_pixels": 413,
              "empty_image": 400, "too_small": 422, "bad_aspect": 422}
    for code, payloads in cases.items():
        for data in payloads:
            assert len(photo(2, size=400, fmt="PNG")) > 200_000
            for route, fields in (("/api/v1/verify", {"img1": data, "img2": good}), ("/api/v1/represent", {"img": data})):
                r = c.post(route, files=_files(**fields))
                assert r.status_code == status[code] and _code(r) == code, (route, code, r.text)
    # a JPEG named .png and declared image/png is still read as what it is (by content)
    r = c.post("/api/v1/represent", files={"img": ("x.png", good, "image/png")})
    assert r.status_code == 200
    r = c.post("/api/v1/represent", files={"img": ("x.jpg", gif.getvalue(), "image/jpeg")})
    assert r.status_code == 415


def test_bad_requests_get_4xx_json(make_client, tmp_path, photo):
    c = make_client(tmp_path / "g.db", max_bytes=200_000)
    r = c.post("/api/v1/verify", files=_files(img1=photo(1)))
    assert r.status_code == 422 and _code(r) == "missing_field"
    r = c.post("/api/v1/verify", json={"img1": "abc"})
    assert r.status_code == 422 and _code(r) in ("missing_field", "bad_base64")
    r = c.post("/api/v1/represent", json={"img": "not base64!!"})
    assert r.status_code == 422 and _code(r) == "bad_base64"
    r = c.post("/api/v1/represent", json={"img": 12})
    assert r.status_code == 422 and _code(r) == "bad_field"
    r = c.post("/api/v1/represent", json=["img"])
    assert r.status_code == 422 and _code(r) == "bad_json"
    r = c.post("/api/v1/represent", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 422 and _code(r) == "bad_json"
    r = c.post("/api/v1/represent", content=b"img=1", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and _code(r) == "unsupported_media_type"
    r = c.post("/api/v1/represent", files=_files(img=photo(1)), data={"detect": "maybe"})
    assert r.status_code == 422 and _code(r) == "bad_field"
    r = c.post("/api/v1/represent", json={"img": base64.b64encode(photo(2, size=500)).decode() * 3})
    assert r.status_code == 413
    r = c.post("/api/v1/represent", content=b"x" * 2_000_000, headers={"content-type": "application/json"})
    assert r.status_code == 413 and _code(r) == "request_too_large"
    r = c.get("/api/v1/nope")
    assert r.status_code == 404 and _code(r) == "not_found"
    r = c.get("/api/v1/verify")
    assert r.status_code == 405 and _code(r) == "method_not_allowed"
    r = c.post("/api/v1/subjects", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_random_garbage_never_500(make_client, tmp_path, photo):
    c = make_client(tmp_path / "g.db", max_bytes=100_000)
    rng = np.random.default_rng(0)
    heads = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x00\x00\x00WEBP", b""]
    good = photo(1, fmt="PNG")
    for i in range(40):
        if i % 2:
            data = heads[i % 4] + rng.integers(0, 256, int(rng.integers(0, 3000)), dtype=np.uint8).tobytes()
        else:  # a valid image with bytes flipped after the header
            buf = bytearray(good)
            for j in rng.integers(30, len(buf), 20):
                buf[j] ^= 0xFF
            data = bytes(buf)
        r = c.post("/api/v1/represent", files=_files(img=data))
        assert r.status_code in (200, 400, 413, 415, 422), (i, r.status_code, r.text)
        r.json()


def test_grey_alpha_palette_webp_and_exif(make_client, tmp_path, photo):
    c = make_client(tmp_path / "g.db")
    for mode, fmt in (("L", "PNG"), ("LA", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("RGB", "WEBP"), ("L", "JPEG"),
                      ("RGBA", "WEBP")):
        r = c.post("/api/v1/represent", files=_files(img=photo(3, mode=mode, fmt=fmt)))
        assert r.status_code == 200, (mode, fmt, r.text)
    # alpha is composited on white: a fully transparent image embeds like a white one
    clear = io.BytesIO()
    Image.new("RGBA", (250, 250), (10, 200, 30, 0)).save(clear, format="PNG")
    white = io.BytesIO()
    Image.new("RGB", (250, 250), (255, 255, 255)).save(white, format="PNG")
    e1 = c.post("/api/v1/represent", files=_files(img=clear.getvalue())).json()["embedding"]
    e2 = c.post("/api/v1/represent", files=_files(img=white.getvalue())).json()["embedding"]
    np.testing.assert_allclose(e1, e2, atol=1e-6)
    # EXIF orientation 6 (rotate 90 degrees clockwise) on a 300 x 200 photo -> a 200 x 300 image
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    tagged, rotated = io.BytesIO(), io.BytesIO()
    img.save(tagged, format="PNG", exif=exif)
    img.transpose(Image.Transpose.ROTATE_270).save(rotated, format="PNG")
    a = c.post("/api/v1/represent", files=_files(img=tagged.getvalue())).json()
    b = c.post("/api/v1/represent", files=_files(img=rotated.getvalue())).json()
    assert a["box"] == {"x": 0, "y": 0, "w": 200, "h": 300}
    np.testing.assert_allclose(a["embedding"], b["embedding"], atol=1e-6)


def test_no_face_is_422(make_client, tmp_path):
    c = make_client(tmp_path / "g.db", detect=True)
    grey = io.BytesIO()
    Image.new("RGB", (400, 300), (128, 128, 128)).save(grey, format="JPEG")
    r = c.post("/api/v1/verify", files=_files(img1=grey.getvalue(), img2=grey.getvalue()))
    assert r.status_code == 422 and _code(r) == "no_face" and "img1" in r.json()["error"]["message"]
    assert c.get("/api/v1/health").json()["detect"] is True
    r = c.post("/api/v1/represent", files=_files(img=grey.getvalue()), data={"detect": "false"})
    assert r.status_code == 200


def test_api_key(make_client, tmp_path, photo):
    c = make_client(tmp_path / "g.db", api_key="s3cret")
    routes = [("get", "/api/v1/health", {}), ("get", "/api/v1/subjects", {}),
              ("post", "/api/v1/subjects", {"json": {"name": "A"}}), ("delete", "/api/v1/subjects/A", {}),
              ("delete", "/api/v1/faces/1", {}),
              ("post", "/api/v1/verify", {"files": _files(img1=photo(1), img2=photo(2))}),
              ("post", "/api/v1/represent", {"files": _files(img=photo(1))}),
              ("post", "/api/v1/identify", {"files": _files(img=photo(1))}),
              ("post", "/api/v1/subjects/A/faces", {"files": _files(img=photo(1))})]
    for method, url, kw in routes:
        for headers in ({}, {"x-api-key": "wrong"}, {"x-api-key": ""}):
            r = getattr(c, method)(url, headers=headers, **kw)
            assert r.status_code == 401 and _code(r) == "unauthorized", (url, headers)
    ok = {"x-api-key": "s3cret"}
    assert c.get("/api/v1/health", headers=ok).status_code == 200
    assert c.post("/api/v1/subjects", json={"name": "A"}, headers=ok).status_code == 201
    assert c.post("/api/v1/verify", files=_files(img1=photo(1), img2=photo(2)), headers=ok).status_code == 200
    assert c.get("/").status_code == 200  # the page itself asks for the key


def test_page_and_openapi(make_client, tmp_path):
    c = make_client(tmp_path / "g.db")
    page = c.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/static/app.js" in page.text and "http" not in page.text.replace("http-equiv", "")  # nothing remote
    for asset, kind in (("/static/app.js", "javascript"), ("/static/style.css", "css")):
        r = c.get(asset)
        assert r.status_code == 200 and kind in r.headers["content-type"]
    spec = c.get("/openapi.json").json()
    assert {"/api/v1/verify", "/api/v1/identify", "/api/v1/subjects", "/api/v1/subjects/{name}/faces",
            "/api/v1/faces/{face_id}", "/api/v1/represent", "/api/v1/health"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/api/v1/verify"]["post"]["requestBody"]["content"]


class _BlockingEmbedder:
    """Embedder stub whose ``embed`` waits until ``release`` is set (to hold the worker pool)."""

    model_id, engine, threshold, threshold_source = "stub-0", "torch", 0.5, "test"
    crop, size, embedding_size = 150, 16, 4
    scorer, threshold_kind = CosineScorer(), "cosine"

    def __init__(self):
        import threading

        self.entered, self.release = threading.Event(), threading.Event()

    def embed(self, crops):
        self.entered.set()
        assert self.release.wait(30)
        return np.tile(np.array([[1, 0, 0, 0]], np.float32), (len(crops), 1))


def test_inference_is_off_the_event_loop_and_bounded(tmp_path, photo):
    import threading

    from fastconv.face.serve.app import create_app

    from fastapi.testclient import TestClient  # imported (warning silenced) by conftest

    emb = _BlockingEmbedder()
    app = create_app(emb, Gallery(tmp_path / "g.db", emb.model_id, 4), detect=False, workers=1, max_pending=1)
    with TestClient(app) as c:
        first = {}
        t = threading.Thread(target=lambda: first.update(r=c.post("/api/v1/represent", files=_files(img=photo(1)))))
        t.start()
        assert emb.entered.wait(30)
        health = c.get("/api/v1/health")  # answered while the only worker is busy
        assert health.status_code == 200
        busy = c.post("/api/v1/represent", files=_files(img=photo(2)))
        assert busy.status_code == 503 and _code(busy) == "busy"
        emb.release.set()
        t.join(30)
        assert first["r"].status_code == 200 and first["r"].json()["embedding"] == [1, 0, 0, 0]


@pytest.mark.parametrize("scorer", ["auto", "cosine"])
def test_model_npz_runs_on_fastconvs_engine(tiny_checkpoint, tmp_path, photo, scorer):
    """--model model.npz (converted from the same checkpoint) serves on the engine and scores like torch,
    with the same scorer (auto: the stored PLDA back-end) and threshold."""
    from fastapi.testclient import TestClient

    from fastconv.face.converter import convert_checkpoint
    from fastconv.face.serve.app import create_app
    from fastconv.face.serve.embedder import open_embedder

    npz = tmp_path / "model.npz"
    convert_checkpoint(tiny_checkpoint, npz)
    files = _files(img1=photo(1), img2=photo(2))
    answers = {}
    for kw in ({"checkpoint": tiny_checkpoint}, {"model": npz}):
        emb = open_embedder(**kw, scorer=scorer)
        with TestClient(create_app(emb, Gallery(tmp_path / f"{emb.engine}.db", emb.model_id, emb.embedding_size),
                                   detect=False)) as c:
            assert c.get("/api/v1/health").json()["engine"] == emb.engine
            answers[emb.engine] = c.post("/api/v1/verify", files=files).json()
    assert set(answers) == {"torch", "fastconv"}
    t, f = answers["torch"], answers["fastconv"]
    assert f["scorer"] == t["scorer"] == ("plda" if scorer == "auto" else "cosine")
    assert f["threshold"] == t["threshold"] and f["threshold_kind"] == t["threshold_kind"]
    assert f["similarity"] == pytest.approx(t["similarity"], abs=1e-4 * max(1.0, abs(t["similarity"])))
    assert f["verified"] == t["verified"]


def test_verify_and_identify_score_with_the_stored_plda_back_end(make_client, tmp_path, photo, tiny_checkpoint):
    """auto = the checkpoint's PLDA back-end, as `fastconv face verify`: LLR scores, its LLR threshold,
    said in every answer; identify ranks the gallery by LLR; bad requests stay 4xx JSON."""
    from fastconv.face.checkpoint import load_for_inference
    from fastconv.face.data import load_image
    from fastconv.face.evaluate import embed
    from fastconv.face.scoring import stored_scorer

    model, meta, pre, _ = load_for_inference(tiny_checkpoint)
    plda = stored_scorer(meta)
    assert plda is not None and plda.threshold is not None  # train fits one by default
    imgs = [photo(i) for i in range(1, 5)]
    for i, data in enumerate(imgs):
        (tmp_path / f"{i}.jpg").write_bytes(data)
    e = embed(model, np.stack([load_image(tmp_path / f"{i}.jpg", pre) for i in range(4)]))

    c = make_client(tmp_path / "g.db", scorer="auto")
    h = c.get("/api/v1/health").json()
    assert (h["scorer"], h["threshold_kind"]) == ("plda", "log-likelihood ratio")
    assert h["threshold"] == pytest.approx(plda.threshold, abs=1e-12)
    body = c.post("/api/v1/verify", files=_files(img1=imgs[0], img2=imgs[1])).json()
    want = float(plda.score(e[:1], e[1:2])[0])
    assert body["scorer"] == "plda" and body["threshold_kind"] == "log-likelihood ratio"
    assert body["similarity"] == pytest.approx(want, abs=1e-5 * max(1.0, abs(want)))
    assert body["verified"] == (body["similarity"] >= plda.threshold)
    cosine = float(e[0] @ e[1])
    assert abs(body["similarity"] - cosine) > 1e-3  # really not the cosine

    for name, data in (("A", imgs[0]), ("B", imgs[1]), ("C", imgs[2])):
        assert c.post("/api/v1/subjects", json={"name": name}).status_code == 201
        assert c.post(f"/api/v1/subjects/{name}/faces", files=_files(img=data)).status_code == 201
    hits = c.post("/api/v1/identify", files=_files(img=imgs[3]), data={"top_k": "3"}).json()
    llr = plda.score_matrix(e[3:4], e[:3])[0]
    order = np.argsort(-llr)
    assert [r["subject"] for r in hits["results"]] == [["A", "B", "C"][i] for i in order]
    # an LLR is a sum of large terms that cancel (a fit on a few faces is ill-conditioned), so float32
    # rounding in the service's embeddings is bounded relative to the terms, not to their sum
    u, v = plda.transform(e[3:4])[0], plda.transform(e[:3])
    terms = np.abs(v * v) @ np.abs(plda.a) + np.abs(v) @ np.abs(plda.b * u) + np.abs(u * u) @ np.abs(plda.a)
    got = np.array([r["similarity"] for r in hits["results"]])
    assert (np.abs(got - llr[order]) <= 1e-5 * (terms[order] + abs(plda.c) + 1.0)).all()
    assert [r["accepted"] for r in hits["results"]] == [bool(v >= plda.threshold) for v in llr[order]]
    assert hits["scorer"] == "plda" and hits["threshold_kind"] == "log-likelihood ratio"
    r = c.post("/api/v1/identify", files=_files(img=imgs[3]), data={"top_k": "0"})
    assert r.status_code == 422 and _code(r) == "bad_field"
    r = c.post("/api/v1/verify", files=_files(img1=imgs[0]))
    assert r.status_code == 422 and _code(r) == "missing_field"

    cos = make_client(tmp_path / "c.db", scorer="cosine").post("/api/v1/verify", files=_files(img1=imgs[0], img2=imgs[1]))
    assert cos.json()["scorer"] == "cosine" and cos.json()["similarity"] == pytest.approx(cosine, abs=1e-5)


def test_serve_scorer_options(tiny_checkpoint, tmp_path, capsys):
    """--scorer plda takes an LLR --threshold outside [-1, 1]; plda without a stored back-end is refused."""
    from fastconv.face.checkpoint import load_checkpoint, save_checkpoint
    from fastconv.face.cli import main
    from fastconv.face.serve.embedder import open_embedder

    emb = open_embedder(checkpoint=tiny_checkpoint, scorer="plda", threshold=3.5)
    assert (emb.threshold, emb.threshold_source, emb.threshold_kind) == (3.5, "--threshold", "log-likelihood ratio")
    state = load_checkpoint(tiny_checkpoint)
    del state["meta"]["scorer"]
    save_checkpoint(tmp_path / "plain.pt", state)
    assert open_embedder(checkpoint=tmp_path / "plain.pt").scorer.name == "cosine"  # auto without one
    assert main(["serve", "--gallery", str(tmp_path / "g.db"), "-c", str(tmp_path / "plain.pt"),
                 "--scorer", "plda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --scorer plda: the checkpoint stores no PLDA back-end"), err
    assert main(["serve", "--gallery", str(tmp_path / "g.db"), "-c", str(tiny_checkpoint), "--scorer", "plda",
                 "--threshold", "nan"]) == 2
    assert "finite log-likelihood ratio" in capsys.readouterr().err
