"""Face detection and the LFW-style 2.2x crop; `fastconv face verify/embed --detect` agree with the service."""
import json
import re

import numpy as np
import pytest
from PIL import Image

from fastconv.face.detect import Box, HaarDetector, NoFaceFound, detect_and_crop, largest_face, lfw_crop

pytest.importorskip("cv2", reason="opencv-python-headless is not installed")


def _gradient(w, h):
    yy, xx = np.mgrid[:h, :w]
    return Image.fromarray(np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8))


def test_lfw_crop_is_the_box_enlarged_2_2x():
    img = _gradient(500, 500)
    side = 500 / 2.2
    box = Box(round(250 - side / 2), round(250 - side / 2), round(side), round(side))
    crop = lfw_crop(img, box)
    assert crop.size == (250, 250)
    diff = np.abs(np.asarray(crop, float) - np.asarray(img.resize((250, 250), Image.Resampling.BILINEAR), float))
    assert np.median(diff) <= 2  # the same frame: the whole photo scaled to 250 (wrapping gradient edges aside)
    corner = lfw_crop(img, Box(0, 0, 100, 100))  # the square reaches past the border: padded black
    arr = np.asarray(corner)
    assert arr[:50, :50].max() == 0 and arr[200:, 200:].max() > 0


def test_largest_face_and_no_face():
    boxes = [Box(0, 0, 10, 10), Box(5, 5, 30, 20), Box(1, 1, 20, 20)]
    assert largest_face(boxes) == Box(5, 5, 30, 20)
    with pytest.raises(NoFaceFound, match="no face found"):
        largest_face([])
    det = HaarDetector()
    assert det.detect(np.full((300, 400, 3), 128, np.uint8)) == []
    with pytest.raises(NoFaceFound):
        detect_and_crop(Image.new("RGB", (300, 400), (128, 128, 128)), det)
    with pytest.raises(ValueError, match="RGB uint8"):
        det.detect(np.zeros((10, 10), np.uint8))


def test_detects_lfw_faces_where_lfw_put_them(lfw_images):
    """On LFW photos the box sits at the centre with side ~250/2.2; moved and scaled, it follows the face."""
    det = HaarDetector()
    for rel in ("George_W_Bush/George_W_Bush_0001.jpg", "Colin_Powell/Colin_Powell_0001.jpg",
                "Tony_Blair/Tony_Blair_0001.jpg"):
        img = Image.open(lfw_images / rel).convert("RGB")
        box = largest_face(det.detect(np.asarray(img)))
        assert abs(box.x + box.w / 2 - 125) < 25 and abs(box.y + box.h / 2 - 125) < 25, (rel, box)
        assert 80 <= box.w <= 160, (rel, box)
        canvas = Image.new("RGB", (900, 700), (90, 90, 90))
        canvas.paste(img.resize((400, 400), Image.Resampling.BILINEAR), (380, 170))
        _, moved = detect_and_crop(canvas, det)
        s = 400 / 250
        assert abs(moved.x - (380 + s * box.x)) < 25 and abs(moved.y - (170 + s * box.y)) < 25, (rel, moved, box)
        assert abs(moved.w - s * box.w) < 0.25 * s * box.w


def test_cli_detect_agrees_with_the_service(lfw_images, tiny_checkpoint, make_client, tmp_path, capsys):
    from fastconv.face.cli import main

    a = lfw_images / "George_W_Bush/George_W_Bush_0001.jpg"
    b = lfw_images / "George_W_Bush/George_W_Bush_0002.jpg"
    files = {"img1": ("a.jpg", a.read_bytes(), "image/jpeg"), "img2": ("b.jpg", b.read_bytes(), "image/jpeg")}
    served = make_client(tmp_path / "g.db", detect=True).post("/api/v1/verify", files=files).json()
    assert main(["verify", str(a), str(b), "-c", str(tiny_checkpoint), "--detect", "--device", "cpu",
                 "--scorer", "cosine"]) == 0
    cli = float(re.search(r"cosine score: (\S+)", capsys.readouterr().out).group(1))
    assert cli == pytest.approx(served["similarity"], abs=1e-4)
    assert main(["verify", str(a), str(b), "-c", str(tiny_checkpoint), "--device", "cpu", "--scorer", "cosine"]) == 0
    plain = float(re.search(r"cosine score: (\S+)", capsys.readouterr().out).group(1))
    assert abs(plain - cli) > 1e-4  # the detected framing is really used

    grey = tmp_path / "photos" / "grey.png"
    grey.parent.mkdir()
    Image.new("RGB", (300, 300), (120, 120, 120)).save(grey)
    (tmp_path / "photos" / "bush.jpg").write_bytes(a.read_bytes())
    assert main(["verify", str(a), str(grey), "-c", str(tiny_checkpoint), "--detect"]) == 2
    assert "no face found" in capsys.readouterr().err
    out = tmp_path / "emb.npy"
    assert main(["embed", str(tmp_path / "photos"), "-c", str(tiny_checkpoint), "--detect", "-o", str(out)]) == 0
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["paths"] == ["bush.jpg"]
    assert side["skipped"][0]["path"] == "grey.png" and "no face found" in side["skipped"][0]["reason"]
    rep = make_client(tmp_path / "g2.db", detect=True).post(
        "/api/v1/represent", files={"img": ("a.jpg", a.read_bytes(), "image/jpeg")}).json()
    np.testing.assert_allclose(np.load(out)[0], rep["embedding"], atol=1e-5)
