"""The `serve` page in a real browser: the system's chromium, headless, driven by playwright's Python API.

Types a prompt, presses Generate, waits for the piano roll, downloads the MIDI and reads it with mido; rewrites a
span of an uploaded file and accompanies its piano; takes screenshots (tmp_path/page.png, infill.png, accompany.png;
MIDILLM_SCREENSHOTS=DIR keeps copies to look at). Playwright never downloads a browser here: it is pointed at
chromium from the system (Debian: apt install chromium), or at $MIDILLM_CHROMIUM. Without either the test skips and
says which is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import mido
import pytest

from midillm_lite.amt.midi import read_midi

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


@contextmanager
def served_page(tiny_gguf, tmp_path: Path, *serve_args: str, prompt: str):
    """`serve` on the tiny model, the system's chromium on its page with `prompt` and a short, seeded request filled
    in; yields (page, problems): console errors, page errors and requests that leave the server."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip: the test extra)")
    browser_path = find_browser()
    if browser_path is None:
        pytest.skip("no chromium found (apt install chromium, or set MIDILLM_CHROMIUM to a Chromium binary)")
    load_serve = _load_serve()
    with load_serve.ServerProcess(tiny_gguf(), tmp_path / "out", "--threads", "2", *serve_args) as server:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=browser_path, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1100, "height": 1200}, accept_downloads=True)
                problems: list[str] = []
                page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: problems.append(str(e)))
                page.on("request", lambda r: None if r.url.startswith((server.url, "blob:", "data:"))
                        else problems.append(f"outside request: {r.url}"))  # fmt: skip
                page.goto(server.url + "/")
                # Arrow functions, not expressions: playwright eval()s an expression on every poll, which the page's CSP
                # (no unsafe-eval) refuses once the first check is false; a function is compiled once, by devtools.
                page.wait_for_function("() => document.querySelector('#model').textContent.startsWith('model:')")
                page.fill("#prompt", prompt)
                page.fill("[name=n]", "1")
                page.fill("[name=max_tokens]", "60")
                page.fill("[name=seed]", "3")
                yield page, problems
            finally:
                browser.close()
        assert server.stop() == 0


def keep_screenshot(page, path: Path) -> None:
    """A full-page screenshot at `path`; a copy in the folder $MIDILLM_SCREENSHOTS, when set, to look at."""
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("MIDILLM_SCREENSHOTS"):
        shutil.copy(path, Path(os.environ["MIDILLM_SCREENSHOTS"]) / path.name)


def test_the_page_generates_shows_and_downloads(tiny_gguf, tmp_path: Path) -> None:
    # --audio: the suite's MIDILLM_AUDIO=none (tests/conftest.py) is for gen; here the page's player is tested too.
    with served_page(tiny_gguf, tmp_path, "--audio", "ogg", prompt="A gentle piece for solo piano.") as (
        page,
        problems,
    ):
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
        keep_screenshot(page, tmp_path / "page.png")
        assert not problems, problems


def test_the_page_rewrites_a_span_of_an_uploaded_file(tiny_gguf, tmp_path: Path) -> None:
    """Infill from the page: the mode's inputs appear, the ones that do not go with it are not sent (Seconds has a
    value and Keep instruments was typed under accompany: the server refuses both with infill), and the output keeps
    the file's notes outside the span."""
    piece = Path(__file__).parent / "data" / "strawberry.mid"
    with served_page(tiny_gguf, tmp_path, prompt="A pop song.") as (page, problems):
        page.click("details summary")
        assert not page.is_visible("[name=to_seconds]")
        page.set_input_files("[name=midi]", str(piece))
        page.select_option("#mode", "accompany")
        assert page.is_visible("[name=keep_instruments]") and page.is_disabled("#seconds")
        page.fill("[name=keep_instruments]", "piano")
        page.select_option("#mode", "infill")
        assert not page.is_visible("[name=keep_instruments]") and page.is_visible("[name=to_seconds]")
        page.fill("[name=from_seconds]", "150")
        page.fill("[name=to_seconds]", "160")
        page.click("#generate")
        page.wait_for_selector(".output .new-notes", timeout=TIMEOUT_MS)
        assert page.text_content("#status").startswith("done"), page.text_content("#status")
        told = page.text_content(".output .new-notes")
        keep_screenshot(page, tmp_path / "infill.png")
        assert not problems, problems
    (stats_path,) = (tmp_path / "out").rglob("generation_stats.json")
    stats = json.loads(stats_path.read_text())
    assert stats["anticipation"]["mode"] == "infill", stats["anticipation"]
    (output,) = stats["outputs"]
    kept = output["notes"] - output["new_notes"]
    new = output["new_notes"]
    assert told == f"{new} new note{'' if new == 1 else 's'}, {kept} kept from the file"
    assert stats["anticipation"]["kept_notes"] == kept > 2700

    def outside(path: Path) -> Counter:  # the notes that start outside the span, as AMT reads them
        return Counter(n for n in read_midi(path).notes if not 15_000 <= n.onset < 16_000)

    (written,) = (tmp_path / "out").rglob("gen_1.mid")
    assert outside(written) == outside(piece)


def test_the_page_accompanies_the_kept_instruments_of_an_uploaded_file(tiny_gguf, tmp_path: Path) -> None:
    """Accompany from the page: the instruments typed in Keep instruments (a GM family name here) become the
    controls. The song is 270 s, so one pass does its first 95 s: the page says where to go on from, as gen does;
    the output holds the file's piano notes in those 95 s and every note after them, each exactly as it was, and
    the page's count line adds up."""
    piece = Path(__file__).parent / "data" / "strawberry.mid"
    # the file's only Piano-family program is 0; the notes from 95 s on are outside the span, kept as they are
    kept = Counter(n for n in read_midi(piece).notes if n.instrument == 0 or n.onset >= 9_500)
    with served_page(tiny_gguf, tmp_path, prompt="A pop band around a piano.") as (page, problems):
        page.click("details summary")
        page.set_input_files("[name=midi]", str(piece))
        page.select_option("#mode", "accompany")
        assert page.is_visible("[name=keep_tracks]") and page.is_disabled("#seconds")
        page.fill("[name=keep_instruments]", "piano")
        page.click("#generate")
        page.wait_for_selector(".output .new-notes", timeout=TIMEOUT_MS)
        assert page.text_content("#status").startswith("done"), page.text_content("#status")
        told = page.text_content(".output .new-notes")
        warned = page.text_content("#results .warning")
        keep_screenshot(page, tmp_path / "accompany.png")
        assert not problems, problems
    assert warned == "accompanying 0-95 s (one pass writes 95 s); go on from 95 s with the output as the input"
    (stats_path,) = (tmp_path / "out").rglob("generation_stats.json")
    stats = json.loads(stats_path.read_text())
    assert stats["anticipation"]["mode"] == "accompany" and stats["anticipation"]["span_seconds"] == [0, 95]
    (output,) = stats["outputs"]
    new = output["new_notes"]
    assert told == f"{new} new note{'' if new == 1 else 's'}, {output['notes'] - new} kept from the file"
    assert output["notes"] - new == stats["anticipation"]["kept_notes"] == sum(kept.values())
    (written,) = (tmp_path / "out").rglob("gen_1.mid")
    notes = Counter(read_midi(written).notes)
    assert notes & kept == kept  # every kept note, exactly as it was
    assert sum(notes.values()) == sum(kept.values()) + new
