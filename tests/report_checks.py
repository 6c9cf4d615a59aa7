"""Checks of a self-contained HTML report, shared by tests/test_report.py and tests/test_demo.py."""

from __future__ import annotations

import base64
import html as html_lib
import io
import re
from pathlib import Path

#: Attributes that make a browser fetch something.
_FETCHING = re.compile(r"""\b(?:src|href|srcset|poster|data|action)\s*=\s*["']?\s*(?!data:|#)([^"'\s>]+)""", re.I)


def external_references(html: str) -> list[str]:
    """Every src/href/... value that is not a data URI or an in-page anchor, plus CSS url(...) and @import."""
    found = _FETCHING.findall(html)
    found += [u for u in re.findall(r"url\(\s*['\"]?([^'\")]+)", html, flags=re.I) if not u.startswith("data:")]
    found += re.findall(r"@import\s+([^;]+);", html, flags=re.I)
    return found


def embedded_pngs(html: str) -> list[tuple[int, int]]:
    """(width, height) of every embedded PNG, decoded with Pillow (raises when one does not decode)."""
    from PIL import Image

    sizes = []
    for payload in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html):
        with Image.open(io.BytesIO(base64.b64decode(payload, validate=True))) as image:
            image.load()
            sizes.append(image.size)
    return sizes


def section_texts(html: str) -> dict[str, str]:
    """Visible text of each <section id=...>, tags stripped."""
    out = {}
    for key, body in re.findall(r'<section id="([^"]+)">(.*?)</section>', html, flags=re.S):
        out[key] = " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", body)).split())
    return out


def browser_render(path: Path, screenshot: Path) -> dict[str, object]:
    """Open ``path`` in headless Chromium, save a full-page screenshot; what the page loaded and showed."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(path.resolve().as_uri())
        height = int(driver.execute_script("return document.documentElement.scrollHeight"))
        driver.set_window_size(1280, height + 120)
        driver.save_screenshot(str(screenshot))
        return {
            "images": driver.execute_script(
                "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])"),
            "resources": driver.execute_script(
                "return performance.getEntriesByType('resource').map(e => e.name)"),
            "headings": driver.execute_script(
                "return Array.from(document.querySelectorAll('h2')).map(h => h.innerText)"),
            "flagged_rows": int(driver.execute_script("return document.querySelectorAll('tr.flagged').length")),
            "height": height,
        }
    finally:
        driver.quit()
