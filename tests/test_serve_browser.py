"""The `serve` page in a real browser: the system's chromium, headless, driven by playwright's Python API.

Types a prompt, presses Generate, waits for the piano roll, downloads the MIDI and reads it with mido, and takes a
screenshot (tmp_path/page.png; MIDILLM_SCREENSHOT=path keeps a copy to look at). Playwright never downloads a
browser here: it is pointed at chromium from the system (Debian: apt install chromium), or at $MIDILLM_CHROMIUM.
Without either the test skips and says which is missing.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import mido
import pytest

pytestmark = pytest.mark.slow

BROWSERS = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_MS = 180_000


def find_browser() -> str | None:
    given = os.environ.get("MIDILLM_CHROMIUM")
    if given:
        return given if Path(given).exists() else None
    for name in BROWSERS:
        found = name if Path(name).is_file() else shutil.which(name)
        if found:
            return found
    return None


def _load_serve():
    spec = importlib.util.spec_from_file_location("load_serve", Path(__file__).parents[1] / "scripts" / "load_serve.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["load_serve"] = module
    spec.loader.exec_module(module)
    return module


def test_the_page_generates_shows_and_downloads(tiny_gguf, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip: the test extra)")
    browser_path = find_browser()
    if browser_path is None:
        pytest.skip("no chromium found (apt install chromium, or set MIDILLM_CHROMIUM to a Chromium binary)")
    load_serve = _load_serve()
    # --audio: the suite's MIDILLM_AUDIO=none (tests/conftest.py) is for gen; here the page's player is tested too.
    with load_serve.ServerProcess(tiny_gguf(), tmp_path / "out", "--threads", "2", "--audio", "ogg") as server:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=browser_path, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1100, "height": 1000}, accept_downloads=True)
                problems: list[str] = []
                page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: problems.append(str(e)))
                page.on("request", lambda r: None if r.url.startswith((server.url, "blob:", "data:"))
                        else problems.append(f"outside request: {r.url}"))  # fmt: skip
                page.goto(server.url + "/")
                # Arrow functions, not expressions: playwright eval()s an expression on every poll, which the page's CSP
                # (no unsafe-eval) refuses once the first check is false; a function is compiled once, by devtools.
                page.wait_for_function("() => document.querySelector('#model').textContent.startsWith('model:')")
                page.fill("#prompt", "A gentle piece for solo piano.")
                page.fill("[name=n]", "1")
                page.fill("[name=max_tokens]", "60")
                page.fill("[name=seed]", "3")
                page.click("#generate")
                page.wait_for_selector(".output img", timeout=TIMEOUT_MS)
                page.wait_for_function("() => document.querySelector('.output img').naturalWidth > 0")
                assert page.text_content("#status").startswith("done")
                with page.expect_download() as info:
                    page.click(".output a.midi")
                saved = tmp_path / "download.mid"
                info.value.save_as(saved)
                assert info.value.suggested_filename.endswith("_gen_1.mid")
                (folder,) = (tmp_path / "out").iterdir()
                served = next(folder.rglob("gen_1.mid"))  # under rejected/ if the random model stacked notes
                assert saved.read_bytes() == served.read_bytes()
                assert mido.MidiFile(saved).tracks
                if "rejected" not in served.parts:  # audio is rendered for usable outputs only, as gen does
                    assert served.with_suffix(".ogg").is_file()
                    # The browser decodes the served file: its player knows the duration of the music.
                    page.wait_for_function("() => document.querySelector('.output audio').duration > 0.5",
                                           timeout=TIMEOUT_MS)  # fmt: skip
                page.wait_for_selector("#recent li")
                shot = tmp_path / "page.png"
                page.screenshot(path=str(shot), full_page=True)
                if os.environ.get("MIDILLM_SCREENSHOT"):
                    shutil.copy(shot, os.environ["MIDILLM_SCREENSHOT"])
                assert not problems, problems
            finally:
                browser.close()
        assert server.stop() == 0
