"""The planner page's mid-treatment upload (POST /v1/adaptations/images) in headless Chromium: the "Baseline vs
adapted" section shows the API's adapted record (the baseline course, delivered + remaining = adapted total, the
TCP of both, the response before and now, the adaptation's flags); a normal prescription hides it.

The server, browser and helpers are tests/test_web_page.py's; the upload is tests/test_api_adaptive.py's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import test_web_page
from test_api_adaptive import TIMEPOINT, mid_treatment_cohort, upload_parts
from test_web_page import CAPTURE_RESPONSES, js_fixed, open_page, wait_for

#: tests/test_web_page.py's fixtures, used here: the app on loopback (a server of this module's own) and the browser.
server, driver, downloads = test_web_page.server, test_web_page.driver, test_web_page.downloads

#: The flags the section explains (static/app.js ADAPTIVE_FLAGS).
ADAPTIVE_FLAGS = ("deescalated", "escalated", "adaptation_fallback")


def adapt_shown(browser: Any) -> dict[str, tuple[str, str]]:
    """{data-adapt: (text, data-value)} of the "Baseline vs adapted" section."""
    pairs = browser.execute_script(
        "return [...document.querySelectorAll('#adaptive [data-adapt]')]"
        ".map(e => [e.dataset.adapt, e.textContent, e.dataset.value]);")
    return {key: (text.strip(), value) for key, text, value in pairs}


def percent(value: float | None) -> str:
    return "\u2014" if value is None else f"{js_fixed(value * 100, 1)} %"


def expected_section(record: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    """data-adapt key -> (raw value, text) the page must show for ``record``."""
    k, delivered = record["delivered_n_fractions"], record["delivered_dose_gy"]
    remaining = record["remaining_n_fractions"] * record["remaining_dose_per_fraction_gy"]
    out: dict[str, tuple[Any, str]] = {
        "timepoint": (record["timepoint"], record["timepoint"]),
        "baseline_n_fractions": (record["recommended_n_fractions"], js_fixed(record["recommended_n_fractions"], 0)),
        "baseline_dose_per_fraction_gy": (record["recommended_dose_per_fraction_gy"],
                                          js_fixed(record["recommended_dose_per_fraction_gy"], 2)),
        "baseline_total_dose_gy": (record["baseline_total_dose_gy"], js_fixed(record["baseline_total_dose_gy"], 1)),
        "delivered_n_fractions": (k, str(k)),
        "delivered_dose_per_fraction_gy": (delivered / k, js_fixed(delivered / k, 2)),
        "delivered_dose_gy": (delivered, js_fixed(delivered, 1)),
        "remaining_n_fractions": (record["remaining_n_fractions"], str(record["remaining_n_fractions"])),
        "remaining_dose_per_fraction_gy": (record["remaining_dose_per_fraction_gy"],
                                           js_fixed(record["remaining_dose_per_fraction_gy"], 2)),
        "remaining_dose_gy": (remaining, js_fixed(remaining, 1)),
        "adapted_total_dose_gy": (record["adapted_total_dose_gy"], js_fixed(record["adapted_total_dose_gy"], 1)),
        "tcp_baseline": (record["tcp_baseline"], percent(record["tcp_baseline"])),
        "tcp_adapted": (record["tcp_adapted"], percent(record["tcp_adapted"])),
    }
    columns: dict[str, int | None] = {"hypoxic_fraction": None, "mean_po2_mmhg": 1, "fmiso_tbr_max": 2,
                                      "suv_max": 2, "mtv_cc": 1, "gtv_volume_cc": 1}  # None: in percent
    for when in ("baseline", "mid_treatment"):
        for key, decimals in columns.items():
            value = record["response"][when].get(key)
            text = percent(value) if decimals is None else js_fixed(value, decimals)
            out[f"response.{when}.{key}"] = (value, text)
    return out


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cohort = mid_treatment_cohort(tmp_path_factory.mktemp("web-adaptive") / "cohort")
    return upload_parts(cohort, "SYN0002", cohort.parent / "upload")


def test_mid_treatment_upload_shows_baseline_vs_adapted(server: tuple[str, str], driver: Any,
                                                        parts: dict[str, Any], tmp_path: Path) -> None:
    from selenium.webdriver.support.ui import Select

    base, token = server
    driver.get_log("browser")  # drain what earlier pages logged
    open_page(driver, base, token)
    wait_for(driver, lambda d: d.find_element("id", "upload-submit").is_enabled(), "the connection")
    driver.find_element("css selector", "#upload summary").click()
    timepoint = driver.find_element("id", "upload-timepoint")
    assert timepoint.get_attribute("placeholder") == "fraction_10"
    assert driver.find_element("css selector", "label[for='upload-timepoint']").text.startswith("Mid-treatment")
    driver.find_element("id", "upload-patient-id").send_keys(parts["patient_id"])
    driver.find_element("id", "upload-files").send_keys("\n".join(str(p) for p in parts["files"].values()))
    for element_id, text in (("upload-manifest", json.dumps(parts["manifest"])),
                             ("upload-clinical", json.dumps(parts["clinical"])),
                             ("upload-expression", json.dumps(parts["expression"]))):
        driver.execute_script("arguments[0].value = arguments[1];", driver.find_element("id", element_id), text)
    timepoint.send_keys(TIMEPOINT)
    driver.execute_script(CAPTURE_RESPONSES)  # one extraction: read the API's answer to the page itself
    driver.find_element("id", "upload-submit").click()
    wait_for(driver, lambda d: d.find_element("id", "adaptive").is_displayed(), "the baseline-vs-adapted section")

    answers = wait_for(driver, lambda d: d.execute_script("return window.capturedResponses;"), "the API's answer")
    assert [(url.rsplit("/", 3)[-3:], status) for url, status, _ in answers] == [(["v1", "adaptations", "images"],
                                                                                  200)]
    (record,) = json.loads(answers[0][2])["records"]
    assert record["patient_id"] == parts["patient_id"] and record["timepoint"] == TIMEPOINT
    assert "adaptation_fallback" not in record["flags"]
    values = adapt_shown(driver)
    expected = expected_section(record)
    assert set(values) == set(expected)
    for key, (raw, text) in expected.items():
        assert values[key][0] == text, (key, values[key], raw)
        shown_raw = values[key][1] if key == "timepoint" else None if values[key][1] == "" else \
            json.loads(values[key][1])
        assert shown_raw == raw, (key, values[key], raw)
    # the numbers read as the course: delivered + remaining = adapted
    course = driver.find_element("css selector", "#adaptive-course tr[data-course='adapted']").text
    assert f"delivered {record['delivered_n_fractions']} \u00d7" in course
    assert f"+ remaining {record['remaining_n_fractions']} \u00d7" in course
    rows = [r.text for r in driver.find_elements("css selector", "#adaptive-response tbody tr")]
    assert rows[0].startswith("Before (planning)") and rows[1].startswith(f"Now ({TIMEPOINT})")
    # the adaptation's flags, each with its plain-language text (or "no change")
    shown_flags = [e.get_attribute("data-flag") for e in driver.find_elements("css selector", "#adaptive-flags li")]
    wanted = [f for f in record["flags"] if f in ADAPTIVE_FLAGS]
    assert shown_flags == (wanted or [""])
    for item in driver.find_elements("css selector", "#adaptive-flags li"):
        assert len(item.text) > 40, item.text
    # the record's own fields as for any upload
    assert driver.find_element("css selector", "#result [data-field='patient_id']").text == parts["patient_id"]
    assert "adaptation endpoint" in driver.find_element("id", "plot-caption").text
    assert [e for e in driver.get_log("browser") if e["level"] in {"SEVERE", "WARNING"}] == []
    folder = Path(os.environ.get("RADIOGENOMICS_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / "planner-page-adaptive.png"
    height = int(driver.execute_script("return document.documentElement.scrollHeight;"))
    driver.set_window_size(1400, max(1100, height + 140))  # the whole section in the viewport
    assert driver.find_element("id", "adaptive").screenshot(str(shot)) and shot.stat().st_size > 10_000
    driver.set_window_size(1400, 1100)
    print(f"baseline-vs-adapted screenshot: {shot}")

    # a normal prescription (a feature-table patient) hides the section
    timepoint.clear()
    wait_for(driver, lambda d: d.find_element("id", "patient").get_attribute("data-loaded"), "the patient list")
    Select(driver.find_element("id", "patient")).select_by_index(0)
    driver.find_element("id", "prescribe").click()
    wait_for(driver, lambda d: d.find_elements("css selector", "#plot svg path[data-series='tcp']"), "the plot")
    assert not driver.find_element("id", "adaptive").is_displayed()
    assert driver.find_element("id", "adaptive").get_attribute("hidden") is not None


def test_bad_timepoint_shows_the_422(server: tuple[str, str], driver: Any, parts: dict[str, Any]) -> None:
    base, token = server
    open_page(driver, base, token)
    wait_for(driver, lambda d: d.find_element("id", "upload-submit").is_enabled(), "the connection")
    driver.find_element("css selector", "#upload summary").click()
    driver.find_element("id", "upload-patient-id").send_keys("AD-003")
    driver.find_element("id", "upload-files").send_keys(str(parts["files"]["ct.nii.gz"]))
    driver.execute_script("arguments[0].value = arguments[1];", driver.find_element("id", "upload-manifest"), "{}")
    driver.find_element("id", "upload-timepoint").send_keys("planning")
    driver.find_element("id", "upload-submit").click()
    box = wait_for(driver, lambda d: d.find_element("id", "error") if d.find_element("id", "error").is_displayed()
                   else None, "the error box")
    assert box.get_attribute("data-status") == "422", box.text
    assert "body.timepoint" in box.text and "fraction_K" in box.text, box.text
    assert driver.find_element("id", "result").get_attribute("hidden") is not None
