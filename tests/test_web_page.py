"""The planner web page in headless Chromium against the real app on loopback.

A planner types the token, picks a patient, sets a regimen and clicks "Prescribe": every value shown must equal
the API's JSON for the same request (formatted as the page formats it), the SVG plot must carry the TCP and NTCP
curves and the rail/recommendation markers where the dose-response says, the downloads must be the record and
objectives.json, and a wrong token / bad input must show the API's 401 / 422 in the error box. A screenshot is
saved to ``$RADIOGENOMICS_SCREENSHOT_DIR`` (default: the test's tmp_path).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from prescriber_factory import Bundle, session_base, use_tracking_uri
from records_compare import REL
from serving_factory import MODEL, new_token, shared_registry, tracking_uri

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 90.0
#: Decimals the page shows per record field (static/app.js DECIMALS); toxicity is shown in percent, 1 decimal.
DECIMALS = {"rsi": 3, "rsi_lower": 3, "rsi_upper": 3, "alpha_per_gy": 3, "beta_per_gy2": 3, "alpha_beta_gy": 1,
            "gard": 1, "target_gard": 1, "n_fractions": 0, "dose_per_fraction_gy": 2, "dose_for_target_gard_gy": 1,
            "dose_for_target_gard_lower_gy": 1, "dose_for_target_gard_upper_gy": 1, "recommended_total_dose_gy": 1,
            "recommended_n_fractions": 0, "recommended_dose_per_fraction_gy": 2}
TEXT_FIELDS = ("patient_id", "model_name", "model_version", "model_uri", "input_sha256")
REGIMEN = {"n-fractions": "30", "dose-per-fraction": "2.2", "target-gard": "40"}

#: Records the page's API answers in window.capturedResponses ([url, status, body text]).
CAPTURE_RESPONSES = """
window.capturedResponses = [];
const fetchOriginal = window.fetch;
window.fetch = async (...args) => {
  const response = await fetchOriginal(...args);
  const text = await response.clone().text();
  window.capturedResponses.push([String(args[0]), response.status, text]);
  return response;
};
"""

log = logging.getLogger(__name__)


def js_fixed(value: float | None, decimals: int) -> str:
    """JavaScript's ``Number.prototype.toFixed`` (exact binary value, ties away from zero); an em dash for null."""
    if value is None or not math.isfinite(value):
        return "\u2014"
    return str(Decimal(value).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP))


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def server(bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL, token) of the real app with a registered prescriber, on a free loopback port."""
    import uvicorn

    from radiogenomics.serving.api import create_app

    registry, _ = shared_registry(bundle, session_base(tmp_path_factory))  # read only: shared with the API tests
    folder = tmp_path_factory.mktemp("web-page")
    with use_tracking_uri(tracking_uri(registry)):
        tokens, token = new_token(folder)
        app = create_app(MODEL, tokens_file=tokens, audit_db=folder / "audit.db", features=bundle.features_path,
                         workdir=folder / "work")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        uv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not uv.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}", token
        finally:
            uv.should_exit = True
            thread.join(15)
            sock.close()


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def driver(downloads: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(f"the page tests need {CHROMIUM} and {CHROMEDRIVER}: apt-get install chromium chromium-driver "
                    "(.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1100"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    browser = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    browser.set_window_size(1400, 1100)
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    try:
        yield browser
    finally:
        browser.quit()


# ------------------------------------------------------------------------------------------------- helpers
def wait_for(browser: Any, condition: Callable[[Any], Any], what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    def check(d: Any) -> Any:
        error = d.find_element("id", "error")
        if error.is_displayed() and what != "the error box":
            pytest.fail(f"the page shows an error while waiting for {what}: {error.text}")
        return condition(d)

    return WebDriverWait(browser, WAIT_S, poll_frequency=0.1).until(check, message=f"timed out waiting for {what}")


def open_page(browser: Any, base: str, token: str) -> None:
    """A fresh page (empty session storage), the token typed and Connect clicked."""
    browser.get(f"{base}/")
    browser.execute_script("sessionStorage.clear();")
    browser.get(f"{base}/")
    field = browser.find_element("id", "token")
    field.clear()
    field.send_keys(token)
    browser.find_element("id", "connect").click()


def api(base: str, token: str, method: str, path: str, body: Any = None) -> Any:
    response = httpx.request(method, f"{base}{path}", json=body, headers={"Authorization": f"Bearer {token}"},
                             timeout=120)
    assert response.status_code == 200, (path, response.status_code, response.text)
    return response.json()


def shown(browser: Any) -> dict[str, tuple[str, str]]:
    """{data-field: (text, data-value)} of every value element of the record."""
    pairs = browser.execute_script(
        "return [...document.querySelectorAll('#result [data-field]')]"
        ".map(e => [e.dataset.field, e.textContent, e.dataset.value]);")
    return {field: (text.strip(), value) for field, text, value in pairs}


def svg_number(element: Any, name: str) -> float:
    return float(element.get_attribute(name))


def path_points(d: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in re.findall(r"[ML](-?[\d.]+),(-?[\d.]+)", d)]


def wait_for_download(folder: Path, suffix: str) -> Path:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        done = [p for p in folder.glob(f"*{suffix}") if p.stat().st_size > 0]
        if done:
            return done[0]
        time.sleep(0.1)
    pytest.fail(f"no *{suffix} in {folder}: {sorted(p.name for p in folder.iterdir())}")


def check_record_shown(browser: Any, record: dict[str, Any], started: datetime) -> dict[str, tuple[str, str]]:
    """Every value shown equals ``record`` (the API's JSON), formatted as the page does; the flags explained."""
    values = shown(browser)
    for field, decimals in DECIMALS.items():
        text, raw = values[field]
        assert text == js_fixed(record[field], decimals), (field, text, record[field])
        assert (float(raw) if raw else None) == record[field], (field, raw, record[field])
    for field in TEXT_FIELDS:
        assert values[field][0] == str(record[field]), field
    created = datetime.fromisoformat(values["created_at"][0].replace("Z", "+00:00"))
    assert started.replace(microsecond=0) <= created <= datetime.now(UTC)
    toxicity = {k.removeprefix("toxicity."): v for k, v in values.items() if k.startswith("toxicity.")}
    assert set(toxicity) == set(record["toxicity"])
    for endpoint, p in record["toxicity"].items():
        assert toxicity[endpoint][0] == f"{js_fixed(p * 100, 1)} %" and float(toxicity[endpoint][1]) == p
    flags = [e.get_attribute("data-flag") for e in browser.find_elements("css selector", "#flags li.flag")]
    expected_flags = list(record["flags"])
    if {"clipped_max", "clipped_min"} <= set(expected_flags):
        expected_flags.append("no_safe_dose")
    assert flags == expected_flags
    for item in browser.find_elements("css selector", "#flags li.flag"):
        assert len(item.text) > 40, f"flag without a plain-language explanation: {item.text}"
    return values


def save_screenshot(browser: Any, tmp_path: Path) -> Path:
    """A full-page PNG in $RADIOGENOMICS_SCREENSHOT_DIR (default tmp_path); its path is printed."""
    folder = Path(os.environ.get("RADIOGENOMICS_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    height = int(browser.execute_script("return document.documentElement.scrollHeight;"))
    browser.set_window_size(1400, max(1100, height + 140))
    path = folder / "planner-page.png"
    assert browser.save_screenshot(str(path)), "the screenshot was not written"
    browser.set_window_size(1400, 1100)
    print(f"planner page screenshot: {path}")
    log.info("planner page screenshot: %s", path)
    return path


# --------------------------------------------------------------------------------------------------- tests
def test_prescribe_shows_the_api_record_plot_and_downloads(server: tuple[str, str], driver: Any, downloads: Path,
                                                           tmp_path: Path) -> None:
    from selenium.webdriver.support.ui import Select

    base, token = server
    started = datetime.now(UTC)
    driver.get_log("browser")  # drain what earlier pages logged
    open_page(driver, base, token)
    ids = api(base, token, "GET", "/v1/patients")["patients"]
    assert len(ids) > 1
    wait_for(driver, lambda d: d.find_element("id", "patient").get_attribute("data-loaded") == str(len(ids)),
             "the patient list")
    picker = Select(driver.find_element("id", "patient"))
    assert [o.get_attribute("value") for o in picker.options] == ids
    patient_id = ids[1]
    picker.select_by_value(patient_id)
    for element_id, value in REGIMEN.items():
        driver.find_element("id", element_id).send_keys(value)
    driver.find_element("id", "prescribe").click()
    wait_for(driver, lambda d: d.find_elements("css selector", "#plot svg path[data-series='tcp']"), "the plot")

    # the record: every value equals the API's answer to the same request, formatted as the page does
    features = api(base, token, "GET", f"/v1/patients/{patient_id}")["features"]
    body = {"patients": [{"patient_id": patient_id,
                          "features": {k: v for k, v in features.items() if v is not None}}],
            "regimen": {"n_fractions": 30, "dose_per_fraction_gy": 2.2}, "target_gard": 40}
    record = api(base, token, "POST", "/v1/prescriptions", body)["records"][0]
    assert record["n_fractions"] == 30 and record["dose_per_fraction_gy"] == 2.2 and record["target_gard"] == 40
    assert record["toxicity"], "the bundle's toxicity model should predict for a feature-table patient"
    values = check_record_shown(driver, record, started)

    # the plot: curves and markers where POST /v1/dose-response puts them
    curve = api(base, token, "POST", "/v1/dose-response", body)
    svg = driver.find_element("css selector", "#plot svg")
    area = driver.find_element("css selector", "#plot rect[data-role='plot-area']")
    left, width = svg_number(area, "x"), svg_number(area, "width")
    top, height = svg_number(area, "y"), svg_number(area, "height")
    x0, x1 = min(curve["total_dose_gy"]), max(curve["total_dose_gy"])
    assert (svg_number(svg, "data-x0-gy"), svg_number(svg, "data-x1-gy")) == (x0, x1)

    def x_of(dose: float) -> float:
        return left + (dose - x0) / (x1 - x0) * width

    def check_path(element: Any, probabilities: list[float | None]) -> None:
        points = path_points(element.get_attribute("d"))
        expected = [(x_of(d), top + (1 - p) * height)
                    for d, p in zip(curve["total_dose_gy"], probabilities, strict=True) if p is not None]
        assert len(points) == len(expected) > 10
        for (px, py), (ex, ey) in zip(points, expected, strict=True):
            assert abs(px - ex) < 0.01 and abs(py - ey) < 0.01

    check_path(driver.find_element("css selector", "#plot path[data-series='tcp']"), curve["tcp"])
    for key in ("tcp-low", "tcp-high"):  # the RSI interval's band
        check_path(driver.find_element("css selector", f"#plot path[data-series='{key}']"),
                   curve[key.replace("-", "_")])
    ntcp_paths = {e.get_attribute("data-endpoint"): e
                  for e in driver.find_elements("css selector", "#plot path[data-series='ntcp']")}
    assert set(ntcp_paths) == set(curve["ntcp"]) and ntcp_paths
    for endpoint, probabilities in curve["ntcp"].items():
        check_path(ntcp_paths[endpoint], probabilities)
    markers = {e.get_attribute("data-marker"): e for e in driver.find_elements("css selector", "#plot line.marker")
               if e.get_attribute("data-marker")}
    expected_markers = {"rail-min": curve["rails"]["min_total_dose_gy"],
                        "rail-max": curve["rails"]["max_total_dose_gy"],
                        "recommended": curve["recommended_total_dose_gy"]}
    # the curve's record comes from the DataFrame path, the prescription's from the JSON-row path: to rounding
    assert curve["recommended_total_dose_gy"] == pytest.approx(record["recommended_total_dose_gy"], rel=REL)
    for key, dose in expected_markers.items():
        assert dose is not None and x0 <= dose <= x1, (key, dose, x0, x1)
        assert float(markers[key].get_attribute("data-dose-gy")) == dose
        assert abs(svg_number(markers[key], "x1") - x_of(dose)) < 0.01
    assert svg_number(markers["rail-min"], "x1") <= svg_number(markers["recommended"], "x1") <= \
        svg_number(markers["rail-max"], "x1")
    labels = {e.get_attribute("data-axis"): e.text for e in driver.find_elements("css selector", "#plot [data-axis]")}
    assert labels == {"x": "Total prescription dose (Gy)", "y": "Probability"}
    legend = driver.find_element("css selector", "#plot [data-role='legend']").text
    assert "TCP" in legend and "NTCP" in legend and "recommended" in legend and "rail" in legend

    screenshot = save_screenshot(driver, tmp_path)
    assert screenshot.stat().st_size > 20_000

    # downloads: the record exactly as the API returned it, and objectives.json for the same body
    driver.find_element("id", "download-record").click()
    saved = json.loads(wait_for_download(downloads, ".prescription.json").read_text())
    assert {k: v for k, v in saved.items() if k != "created_at"} == \
        {k: v for k, v in record.items() if k != "created_at"}
    assert saved["created_at"] == values["created_at"][0]
    driver.find_element("id", "download-objectives").click()
    objectives = json.loads(wait_for_download(downloads, ".objectives.json").read_text())
    assert objectives["format"] == "radiogenomics-objectives/1"
    assert objectives["patient_id"] == patient_id and objectives["input_sha256"] == record["input_sha256"]
    # no script error, failed request or Content-Security-Policy violation on the way
    assert [e for e in driver.get_log("browser") if e["level"] in {"SEVERE", "WARNING"}] == []


def test_upload_images_shows_the_api_record(server: tuple[str, str], driver: Any, bundle: Bundle) -> None:
    """The upload form posts the multipart fields of POST /v1/prescriptions/images; the record equals the API's."""
    base, token = server
    folder = bundle.cohort / "images" / "SYN0003"
    images = pd.read_csv(bundle.cohort / "images.csv")
    rois = images[(images["patient_id"] == "SYN0003") & (images["modality"] == "CT")]
    manifest = json.dumps({"images": [{"modality": "CT", "image": "ct.nii.gz", "mask": "labels.nii.gz",
                                       "rois": {str(r): int(v) for r, v in zip(rois["roi"], rois["label"],
                                                                              strict=True)}}]})
    clinical = json.dumps({"site": "head_neck", "age_years": 58, "sex": "F"})
    started = datetime.now(UTC)
    open_page(driver, base, token)
    wait_for(driver, lambda d: d.find_element("id", "upload-submit").is_enabled(), "the connection")
    driver.find_element("css selector", "#upload summary").click()
    driver.find_element("id", "upload-patient-id").send_keys("UP-001")
    driver.find_element("id", "upload-files").send_keys(f"{folder / 'ct.nii.gz'}\n{folder / 'labels.nii.gz'}")
    for element_id, text in (("upload-manifest", manifest), ("upload-clinical", clinical)):
        driver.execute_script("arguments[0].value = arguments[1];", driver.find_element("id", element_id), text)
    driver.find_element("id", "target-gard").send_keys("36")
    driver.execute_script(CAPTURE_RESPONSES)  # one extraction, not two: read the API's answer to the page itself
    driver.find_element("id", "upload-submit").click()
    wait_for(driver, lambda d: d.find_element("id", "result").is_displayed(), "the upload's record")

    answers = wait_for(driver, lambda d: d.execute_script("return window.capturedResponses;"), "the API's answer")
    assert [(url.rsplit("/", 3)[-3:], status) for url, status, _ in answers] == [(["v1", "prescriptions", "images"],
                                                                                  200)]
    record = json.loads(answers[0][2])["records"][0]
    assert record["patient_id"] == "UP-001" and record["target_gard"] == 36
    assert "missing_imaging" in record["flags"]  # CT only: the PET modalities of the model's schema are missing
    check_record_shown(driver, record, started)
    assert not driver.find_elements("css selector", "#plot svg")  # the images endpoint returns no feature row
    assert "feature table" in driver.find_element("id", "plot-caption").text
    assert not driver.find_element("id", "download-objectives").is_enabled()


def test_token_stays_in_session_storage(server: tuple[str, str], driver: Any) -> None:
    base, token = server
    open_page(driver, base, token)
    wait_for(driver, lambda d: d.find_element("id", "patient").get_attribute("data-loaded"), "the patient list")
    assert driver.execute_script("return sessionStorage.getItem('radiogenomics.token');") == token
    assert driver.execute_script("return localStorage.length;") == 0
    assert not driver.get_cookies()
    driver.refresh()  # the same tab keeps it and reconnects by itself
    wait_for(driver, lambda d: d.find_element("id", "patient").get_attribute("data-loaded"), "the reconnect")
    assert driver.find_element("id", "token").get_attribute("value") == token


def test_wrong_token_shows_401(server: tuple[str, str], driver: Any) -> None:
    base, token = server
    open_page(driver, base, token[::-1])
    box = wait_for(driver, lambda d: d.find_element("id", "error") if d.find_element("id", "error").is_displayed()
                   else None, "the error box")
    assert box.text.startswith("401 Unauthorized"), box.text
    assert "token" in box.text
    assert box.get_attribute("data-status") == "401"
    assert not driver.find_element("id", "prescribe").is_enabled()


def test_bad_regimen_shows_the_422_detail(server: tuple[str, str], driver: Any) -> None:
    from selenium.webdriver.support.ui import Select

    base, token = server
    open_page(driver, base, token)
    wait_for(driver, lambda d: d.find_element("id", "patient").get_attribute("data-loaded"), "the patient list")
    Select(driver.find_element("id", "patient")).select_by_index(0)
    driver.find_element("id", "n-fractions").send_keys("2.5")
    driver.find_element("id", "prescribe").click()
    box = wait_for(driver, lambda d: d.find_element("id", "error") if d.find_element("id", "error").is_displayed()
                   else None, "the error box")
    assert box.get_attribute("data-status") == "422", box.text
    assert box.text.startswith("422") and "n_fractions" in box.text, box.text
    assert driver.find_element("id", "result").get_attribute("hidden") is not None  # no stale record shown


def test_page_needs_no_external_resources() -> None:
    static = Path(__file__).resolve().parents[1] / "radiogenomics" / "serving" / "static"
    text = "\n".join(p.read_text() for p in sorted(static.iterdir()) if p.suffix in {".html", ".js", ".css"})
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), "the page must not fetch from elsewhere"
    assert 'src="static/app.js"' in text and 'href="static/style.css"' in text
