"""The HTML leaderboard in a real browser (headless Chromium through Selenium): renders, sorts, escapes.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them). Without
them the test is skipped, except under CI (``CI=true``), where their absence is a failure.
The screenshot is written to ``$SIMCLIP_SCREENSHOT_DIR`` when set (CI uploads it), else under tmp.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from _leaderboard_data import HASH_A, HASH_B, model_rows, write_results

from simclip_bench.leaderboard.render import render_leaderboard

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
EVIL = "<script>window.pwned=1</script>evil"

if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
    if os.environ.get("CI", "").lower() == "true":
        raise RuntimeError("CI needs chromium and chromium-driver: apt-get install -y chromium chromium-driver")
    pytest.skip("chromium / chromium-driver not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    rows = model_rows("tiny-clip", 0.90, 0.40, 0.10) + model_rows(EVIL, 0.80, 0.70, 0.55, checkpoint_hash=HASH_B)
    rows += model_rows("runs/middle", 0.88, 0.55, 0.30, checkpoint_hash="c" * 64)
    rows[-1]["flags"] = "zero-gradients(3/200)"
    cards = [{"model": "tiny-clip", "checkpoint_sha256": HASH_A, "name": "tiny-clip", "arch": "simclip-tiny",
              "tag": "builtin", "source": "shipped with simclip-bench"}]
    directory = write_results(tmp / "results", rows, cards)
    render_leaderboard(directory, directory)
    driver = _open(directory / "leaderboard.html", "1280,1000")
    yield driver
    driver.quit()


def _open(page: Path, window_size: str):
    """Headless Chromium showing ``page``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={window_size}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.get(page.resolve().as_uri())
    return driver


def _names(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [td.text.splitlines()[0] for td in driver.find_elements(By.CSS_SELECTOR, "#leaderboard tbody td.name")]


def _header(driver, label: str):
    from selenium.webdriver.common.by import By

    return next(th for th in driver.find_elements(By.CSS_SELECTOR, "#leaderboard th.sortable") if th.text == label)


def test_the_table_renders_a_row_per_model_ranked_by_robust_score(page):
    assert _names(page) == [EVIL, "runs/middle", "tiny-clip"]


def test_a_script_in_a_model_name_shows_as_text_and_never_runs(page):
    assert EVIL in _names(page)
    assert page.execute_script("return window.pwned") is None


def test_clicking_a_column_header_sorts_by_it_and_again_reverses(page):
    header = _header(page, "clean")
    header.click()
    assert _names(page) == ["tiny-clip", "runs/middle", EVIL]  # clean accuracy, highest first
    assert header.get_attribute("aria-sort") == "descending"
    header.click()
    assert _names(page) == [EVIL, "runs/middle", "tiny-clip"]
    assert header.get_attribute("aria-sort") == "ascending"


def test_masking_flags_are_visible_in_red(page):
    from selenium.webdriver.common.by import By

    flag = page.find_element(By.CSS_SELECTOR, "#leaderboard .flag")
    assert flag.is_displayed() and flag.text == "zero-gradients(3/200)"
    assert flag.value_of_css_property("color") == "rgba(176, 0, 32, 1)"


def test_a_model_links_to_its_card_on_the_page(page):
    from selenium.webdriver.common.by import By

    link = page.find_element(By.LINK_TEXT, "tiny-clip")
    card = page.find_element(By.ID, link.get_attribute("href").split("#", 1)[1])
    assert "simclip-tiny" in card.text


def test_screenshot_of_the_page(page, tmp_path):
    _header(page, "4/255").click()
    out = Path(os.environ.get("SIMCLIP_SCREENSHOT_DIR") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "leaderboard-browser.png"
    assert page.save_screenshot(str(path))
    assert path.stat().st_size > 10_000


# --- the showcase page: a column per protocol, intervals, the quoted published numbers ---------------------

EVIL_QUOTE = "<img src=x onerror=window.pwnedQuote=1>FARE⁴"


@pytest.fixture(scope="module")
def showcase(tmp_path_factory):
    from test_showcase import _two_protocols

    from simclip_bench.leaderboard import render_html, render_md
    from simclip_bench.leaderboard.published import QuotedTable

    tmp = tmp_path_factory.mktemp("showcase")
    quoted = (QuotedTable("evil", "A <b>quoted</b> table", "https://example.org/?a=1&b=<x>", "APGD <100>",
                          ("Model", "clean"), ((EVIL_QUOTE, "79.7"),)),)
    directory = _two_protocols(tmp / "results")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(render_html, "QUOTED_TABLES", quoted)
        mp.setattr(render_md, "QUOTED_TABLES", quoted)
        render_leaderboard(directory, directory)
    driver = _open(directory / "leaderboard.html", "1400,1000")
    yield driver
    driver.quit()


def _column_values(driver, label: str) -> list[str]:
    from selenium.webdriver.common.by import By

    heads = driver.find_elements(By.CSS_SELECTOR, "#leaderboard th.sortable")
    col = next(int(th.get_attribute("data-col")) for th in heads if " ".join(th.text.split()) == label)
    return [tr.find_elements(By.TAG_NAME, "td")[col].text.splitlines()[0]
            for tr in driver.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr")]


def test_each_zero_shot_protocol_has_its_own_sortable_column_naming_and_linking_its_protocol(showcase):
    from selenium.webdriver.common.by import By

    heads = {" ".join(th.text.split()): th
             for th in showcase.find_elements(By.CSS_SELECTOR, "#leaderboard th.sortable")}
    assert {"2/255 robustvlm", "4/255 robustvlm", "2/255 autoattack", "4/255 autoattack"} <= set(heads)
    link = heads["4/255 autoattack"].find_element(By.TAG_NAME, "a")
    assert link.get_attribute("href").endswith("#protocol-autoattack")
    click_eps_text = "arguments[0].firstChild.parentNode.dispatchEvent(new MouseEvent('click', {bubbles: true}))"
    showcase.execute_script(click_eps_text, heads["4/255 autoattack"])  # on the header, not on its link
    assert _column_values(showcase, "4/255 autoattack") == ["45.0", "8.0"]
    showcase.execute_script(click_eps_text, heads["4/255 autoattack"])
    assert _column_values(showcase, "4/255 autoattack") == ["8.0", "45.0"]


def test_each_score_shows_its_interval_under_it(showcase):
    from selenium.webdriver.common.by import By

    cell = showcase.find_elements(By.CSS_SELECTOR, "#leaderboard tbody td small.ci")[0]
    assert cell.is_displayed() and re.fullmatch(r"\d+\.\d–\d+\.\d", cell.text)


def test_the_quoted_numbers_stand_apart_marked_as_quoted_and_their_text_is_escaped(showcase):
    from selenium.webdriver.common.by import By

    section = showcase.find_element(By.ID, "published")
    assert section.is_displayed() and "quoted, not re-measured" in section.text
    assert EVIL_QUOTE in section.text and "A <b>quoted</b> table" in section.text
    assert showcase.execute_script("return window.pwnedQuote") is None
    assert EVIL_QUOTE not in showcase.find_element(By.ID, "leaderboard").text
    assert section.find_element(By.TAG_NAME, "a").get_attribute("href") == "https://example.org/?a=1&b=%3Cx%3E"
