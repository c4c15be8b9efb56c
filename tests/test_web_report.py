"""The web report (``index.html``) in a real browser: headless Debian Chromium driven by Selenium
over a small real leaderboard (jpeg and webp on three Kodak crops, on the session's local Ray),
opened from file:// with name resolution and the proxy dead. A screenshot of each page is kept
in ``test-artefacts/web-report/`` at the repository root (git-ignored)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import start_local_ray
from selenium import webdriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from harness.errors import HarnessError
from harness.leaderboard.kept import CROPS_DIR
from harness.leaderboard.config import LeaderboardConfig
from harness.leaderboard.results import RESULTS_FILE, read as read_results
from harness.leaderboard.run import run
from harness.pixels.images import load_rgb, save_png
from harness.report.build import build_report
from harness.report.web import PAGE, PLOTLY_FILE

REPO = Path(__file__).resolve().parents[1]
ARTEFACTS = REPO / "test-artefacts" / "web-report"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def web_run(tmp_path_factory, kodak_dir: Path) -> Path:
    """A real leaderboard run (jpeg, webp; 4-point ladders, 3 crops kept per image) and its report."""
    start_local_ray()
    images = tmp_path_factory.mktemp("web-images")
    for name in ("kodim03.png", "kodim19.png", "kodim23.png"):
        save_png(np.ascontiguousarray(load_rgb(kodak_dir / name).pixels[64:256, 64:256]), images / name)
    reports = tmp_path_factory.mktemp("web-reports")
    run(LeaderboardConfig(datasets=(f"folder:{images}",), codecs=("jpeg", "webp"), run_name="web",
                          reports_dir=reports, progress=False, checkpoint_s=0.0))
    build_report(reports / "web", "jpeg", resamples=50)
    return reports / "web"


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are missing: `make setup` installs chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,2400",
                     # No network at all: every name resolves nowhere and every proxied request dies.
                     "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
                     "--disable-background-networking", "--disable-component-update"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)))
    yield driver
    driver.quit()


def _open(browser, page: Path, shot: str):
    """Load ``page`` from file://; returns (console errors, URLs requested) and keeps a screenshot."""
    browser.get_log("performance")  # drop what earlier pages logged
    browser.get_log("browser")
    browser.get(page.as_uri())
    WebDriverWait(browser, 20).until(lambda b: b.execute_script(
        "return document.readyState === 'complete' && [...document.querySelectorAll('.rd-plot')]"
        ".every((p) => p.data !== undefined)"))
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTEFACTS / shot))
    errors = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    requests = [json.loads(entry["message"])["message"] for entry in browser.get_log("performance")]
    urls = [m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"]
    return errors, urls


def test_the_page_loads_offline_with_one_trace_per_codec_sortable_tables_and_crops(web_run: Path, browser):
    page = web_run / PAGE
    assert (web_run / PLOTLY_FILE).stat().st_size > 1_000_000  # plotly's bundle, shipped beside the page
    errors, urls = _open(browser, page, "index.png")
    assert urls and all(url.startswith(("file://", "data:", "blob:")) for url in urls), urls
    assert errors == []

    # Each RD plot: one trace per codec of the run (a folder dataset has no published curves).
    traces = browser.execute_script(
        "return [...document.querySelectorAll('.dataset .plots .rd-plot')].map((p) => p.data.map((t) => t.name))")
    assert len(traces) == 2  # psnr and msssim
    for names in traces:
        assert sorted(names) == ["jpeg [anchor]", "webp"]

    # Sorting a BD-rate column orders its rows by value, numerically, then reversed.
    table = browser.find_element("css selector", "table.bdrate.metric-psnr")
    header = table.find_elements("css selector", "th")[4]  # Akima
    values = lambda: [float(v) for v in browser.execute_script(  # noqa: E731
        "return [...arguments[0].tBodies[0].rows].map((r) => r.cells[4].dataset.value)", table)]
    header.click()
    assert values() == sorted(values())
    header.click()
    assert values() == sorted(values(), reverse=True)
    before = values()
    assert len(before) == 2 and before[0] != before[1]

    # Choosing an image shows that image's crops: the original and one per codec.
    select = browser.find_element("css selector", ".image-select")
    Select(select).select_by_visible_text("kodim19.png")
    grid = browser.find_element("css selector", ".crops")
    assert grid.get_attribute("data-image") == "kodim19.png"
    sources = [img.get_attribute("src") for img in grid.find_elements("css selector", "img")]
    sha = read_results(web_run / RESULTS_FILE).set_index("image")["image_sha256"].loc["kodim19.png"].iloc[0]
    assert len(sources) == 3 and all("/crops/" in src and sha in src for src in sources), sources
    assert browser.execute_script(
        "return [...arguments[0].querySelectorAll('img')].every((i) => i.complete && i.naturalWidth === 128)", grid)
    browser.execute_script("arguments[0].scrollIntoView()", select)
    browser.save_screenshot(str(ARTEFACTS / "kodim19.png"))


def _copy_run(run_dir: Path, to: Path, keep=lambda rows: rows) -> Path:
    """``run_dir``'s results (filtered by ``keep``) and crops in a new run folder."""
    shutil.copytree(run_dir / CROPS_DIR, to / CROPS_DIR)
    rows = keep(read_results(run_dir / RESULTS_FILE))
    rows.to_parquet(to / RESULTS_FILE, index=False)
    return to


def test_bad_runs_still_give_a_page_that_says_what_is_missing(web_run: Path, browser, tmp_path: Path):
    # One codec only: curves and crops, and no BD-rate to show, said in words.
    one = _copy_run(web_run, tmp_path / "one", lambda rows: rows[rows["codec"] == "jpeg"])
    build_report(one, "jpeg", resamples=10)
    errors, urls = _open(browser, one / PAGE, "one-codec.png")
    assert errors == [] and all(url.startswith(("file://", "data:", "blob:")) for url in urls)
    assert "no curve besides the anchor, so no BD-rate" in browser.find_element("tag name", "body").text

    # A crop deleted after the page was built is named as missing; the other views stay.
    sha = read_results(web_run / RESULTS_FILE).set_index("image")["image_sha256"].loc["kodim03.png"].iloc[0]
    missing = next((web_run / CROPS_DIR / "jpeg").rglob(f"{sha}-*-q15.webp"))
    moved = missing.rename(tmp_path / "moved.webp")
    try:
        errors, _ = _open(browser, web_run / PAGE, "missing-crop.png")
        Select(browser.find_element("css selector", ".image-select")).select_by_visible_text("kodim03.png")
        browser.find_element("css selector", ".bpp-select").send_keys(*["\ue012"] * 50)  # left arrow: lowest rate
        shown = browser.find_element("css selector", ".crops").text
    finally:
        moved.rename(missing)
    assert len(errors) == 1 and missing.name in errors[0]  # the browser's own line on the missing file
    assert f"crop missing: {missing.relative_to(web_run).as_posix()}" in shown, shown
    assert "webp: ladder 10" in shown and shown.count("crop missing") == 1  # the other views stay

    # No ok rows: the one-line error as before, and a page that says why it is empty.
    none = _copy_run(web_run, tmp_path / "none", lambda rows: rows.assign(status="error", error="broken"))
    with pytest.raises(HarnessError, match="has no rows with status 'ok'.*nothing to report$"):
        build_report(none, "jpeg", resamples=10)
    errors, _ = _open(browser, none / PAGE, "no-ok-rows.png")
    assert errors == [] and "Nothing to show" in browser.find_element("tag name", "body").text
    assert "has no rows with status 'ok'" in browser.find_element("css selector", ".notes").text
