"""A real browser drives the page: headless Chromium through Selenium against a live server on 127.0.0.1.

Two LFW photos of one person and two of different people are verified, a subject is enrolled and
identified; the page's numbers are checked against the API's for the same files. Screenshots go to
``$FASTCONV_ARTIFACTS`` (default ``tests/artifacts``)/serve/. Skips where Chromium, chromedriver or
LFW are missing, unless ``FASTCONV_REQUIRE_BROWSER=1`` (CI), where a missing browser fails.
"""
import os
import pathlib
import shutil

import httpx
import pytest

from live import LiveServer

KEY = "browser-test-key"
SAME = ("George_W_Bush/George_W_Bush_0001.jpg", "George_W_Bush/George_W_Bush_0002.jpg")
DIFFERENT = ("Colin_Powell/Colin_Powell_0001.jpg", "Tony_Blair/Tony_Blair_0001.jpg")
ARTIFACTS = pathlib.Path(os.environ.get("FASTCONV_ARTIFACTS", pathlib.Path(__file__).parents[1] / "artifacts")) / "serve"


def _missing(what):
    if os.environ.get("FASTCONV_REQUIRE_BROWSER") == "1":
        pytest.fail(f"FASTCONV_REQUIRE_BROWSER=1 but {what}")
    pytest.skip(what)


@pytest.fixture
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        _missing("no chromium / chromedriver on PATH (apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=900,1000", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait(driver, fn, timeout=60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: fn(d))


def _by_id(driver, i):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, i)


def _api_verify(url, a, b):
    files = {"img1": (a.name, a.read_bytes(), "image/jpeg"), "img2": (b.name, b.read_bytes(), "image/jpeg")}
    r = httpx.post(url + "/api/v1/verify", files=files, headers={"x-api-key": KEY}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def _page_verify(driver, a, b):
    driver.execute_script("document.getElementById('decision').dataset.verified = '';")
    _by_id(driver, "file1").send_keys(str(a))
    _by_id(driver, "file2").send_keys(str(b))
    _wait(driver, lambda d: _by_id(d, "decision").get_attribute("data-verified") in ("true", "false")
          and _by_id(d, "crop2").get_attribute("src"))
    return (_by_id(driver, "decision").get_attribute("data-verified") == "true",
            float(_by_id(driver, "similarity").get_attribute("data-value")),
            _by_id(driver, "decision").text)


def test_page_verifies_enrols_and_identifies(browser, lfw_images, tiny_checkpoint, tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    args = ["-c", str(tiny_checkpoint), "--gallery", str(tmp_path / "g.db")]  # face detection on
    with LiveServer(args, env={"FASTCONV_API_KEY": KEY}) as srv:
        d = browser
        d.get(srv.url + "/")
        _wait(d, lambda d: _by_id(d, "key-dialog").is_displayed())  # asks for the key ...
        _by_id(d, "key-input").send_keys(KEY)
        _by_id(d, "key-save").click()
        _wait(d, lambda d: d.execute_script("return document.body.dataset.ready") == "true")
        assert _by_id(d, "engine").text == "torch"
        health = httpx.get(srv.url + "/api/v1/health", headers={"x-api-key": KEY}).json()
        assert _by_id(d, "model").text == health["model"]
        assert health["scorer"] == "plda"  # the checkpoint stores a PLDA back-end: auto serves with it
        assert _by_id(d, "scorer").get_attribute("data-kind") == health["threshold_kind"] == "log-likelihood ratio"
        assert _by_id(d, "scorer").text == "plda log-likelihood ratio"
        d.refresh()  # ... once: the key is remembered
        _wait(d, lambda d: d.execute_script("return document.body.dataset.ready") == "true")
        assert not _by_id(d, "key-dialog").is_displayed()

        for name, (ra, rb) in (("same", SAME), ("different", DIFFERENT)):
            a, b = lfw_images / ra, lfw_images / rb
            api = _api_verify(srv.url, a, b)
            verified, similarity, text = _page_verify(d, a, b)
            assert similarity == pytest.approx(api["similarity"], abs=1e-6)
            assert verified == api["verified"] == (api["similarity"] >= api["threshold"])
            assert text == ("same person" if verified else "different people")
            assert all(f["detected"] for f in api["faces"])
            for f in api["faces"]:  # LFW faces sit near the centre of the 250x250 photo
                box = f["box"]
                assert abs(box["x"] + box["w"] / 2 - 125) < 30 and abs(box["y"] + box["h"] / 2 - 125) < 30
            assert _by_id(d, "crop1").get_attribute("src").startswith("data:image/jpeg;base64,")
            d.save_screenshot(str(ARTIFACTS / f"verify_{name}.png"))

        bad = tmp_path / "notes.jpg"
        bad.write_text("not an image at all")
        _by_id(d, "file1").send_keys(str(bad))
        _wait(d, lambda d: "not a JPEG, PNG or WebP" in _by_id(d, "verify-error").text)
        d.save_screenshot(str(ARTIFACTS / "verify_error.png"))

        _by_id(d, "tab-gallery").click()
        bush = [lfw_images / r for r in SAME]
        _by_id(d, "subject-name").send_keys("George_W_Bush")
        _by_id(d, "enrol-files").send_keys("\n".join(str(p) for p in bush))
        _by_id(d, "enrol-btn").click()
        _wait(d, lambda d: _by_id(d, "enrol-status").get_attribute("data-done") == "2")
        _by_id(d, "subject-name").clear()
        _by_id(d, "subject-name").send_keys("Colin_Powell")
        _by_id(d, "enrol-files").send_keys(str(lfw_images / DIFFERENT[0]))
        _by_id(d, "enrol-btn").click()
        _wait(d, lambda d: "for Colin_Powell" in _by_id(d, "enrol-status").text)
        subjects = httpx.get(srv.url + "/api/v1/subjects", headers={"x-api-key": KEY}).json()
        assert [(s["name"], s["n_faces"]) for s in subjects["subjects"]] == [("Colin_Powell", 1), ("George_W_Bush", 2)]

        _by_id(d, "identify-file").send_keys(str(bush[1]))  # an enrolled photo: found, with the API's scores
        _wait(d, lambda d: _by_id(d, "identify-decision").get_attribute("data-subject") == "George_W_Bush")
        rows = [r.text.split() for r in _by_id(d, "identify-results").find_elements("css selector", "tbody tr")]
        assert [r[1] for r in rows] == ["George_W_Bush", "Colin_Powell"]
        api = httpx.post(srv.url + "/api/v1/identify", headers={"x-api-key": KEY}, timeout=60,
                         files={"img": (bush[1].name, bush[1].read_bytes(), "image/jpeg")}).json()
        assert [float(r[2]) for r in rows] == pytest.approx([m["similarity"] for m in api["results"]], abs=1e-3)
        assert api["results"][0]["accepted"] and api["results"][0]["similarity"] > api["threshold"]
        d.save_screenshot(str(ARTIFACTS / "identify.png"))
