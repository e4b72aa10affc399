"""The bundled demo model (models/midillm-demo-q8_0.gguf): a fresh clone makes music with it, offline, by default."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from clirun import run_cli

from midillm_lite import models
from midillm_lite.amt import gm, vocab
from midillm_lite.amt.codec import decode_tokens
from midillm_lite.amt.tokens_file import read_tokens
from midillm_lite.modelinfo import read_model_info

DEMO = models.REPO_MODELS / "midillm-demo-q8_0.gguf"
MAX_MIB = 32
pytestmark = pytest.mark.slow


@pytest.fixture
def no_user_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user model folder with nothing in it: only what the repository ships is found."""
    monkeypatch.setenv(models.HOME_ENV, str(tmp_path / "home"))


def test_the_demo_model_ships_in_the_repository() -> None:
    assert DEMO.is_file(), "models/midillm-demo-q8_0.gguf is missing; `make demo-model` makes it"
    assert DEMO.stat().st_size < MAX_MIB * 2**20
    info = read_model_info(DEMO)
    assert info.n_vocab == vocab.FULL_VOCAB_SIZE
    assert info.quant == "q8_0"
    assert info.autoregress_token_id == vocab.MIDI_AUTOREGRESS_ID
    assert (models.REPO_MODELS / "midillm-demo.md").is_file()


def test_the_card_measures_the_prompt_make_demo_runs() -> None:
    """`make demo`'s prompt and time limit live in the Makefile and in demo/evaluate.py (which needs torch to
    import); the card's full-length table is written from the evaluation, so the Makefile's pair must appear in it."""
    makefile = (models.REPO_MODELS.parent / "Makefile").read_text()
    prompt = re.search(r"^DEMO_PROMPT \?= (.+)$", makefile, re.M).group(1).strip()
    seconds = re.search(r'gen "\$\(DEMO_PROMPT\)" .*--seconds (\d+)', makefile).group(1)
    card = (models.REPO_MODELS / "midillm-demo.md").read_text()
    assert f"| {prompt} | {seconds} |" in card


def test_gen_without_a_model_uses_the_demo_and_makes_clean_music(no_user_models, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    prompt = "A slow Baroque chorale for string quartet, at 60 BPM."
    args = ["gen", prompt, "-n", "3", "--seed", "3", "--max-tokens", "180", "--threads", "2", "-o", str(out)]
    code, stdout, stderr = run_cli(args, capsys)
    assert code == 0, stderr
    assert "midillm-demo-q8_0" in stdout + stderr  # gen says which model it used
    stats = json.loads((out / "generation_stats.json").read_text())
    assert Path(stats["model"]["path"]).resolve() == DEMO.resolve()
    for path in sorted(out.glob("gen_*_tokens.txt")):
        decoded = decode_tokens(read_tokens(path))
        assert decoded.repairs == {}
        assert len(decoded.notes) == 60
        # Not noise: the model keeps to a handful of instruments and a plausible register.
        assert len({n.instrument for n in decoded.notes}) <= 6
        assert 24 <= sum(n.pitch for n in decoded.notes) / len(decoded.notes) <= 96


def test_the_demo_follows_an_instrument_word(no_user_models, tmp_path, capsys) -> None:
    """A cheap version of the model card's prompt-following table: most notes come from the named family."""
    out = tmp_path / "piano"
    args = ["gen", "A gentle piece for solo piano.", "-n", "4", "--seed", "1", "--max-tokens", "150",
            "--threads", "2", "--quiet", "-o", str(out)]  # fmt: skip
    code, _, stderr = run_cli(args, capsys)
    assert code == 0, stderr
    notes = [n for p in sorted(out.glob("gen_*_tokens.txt")) for n in decode_tokens(read_tokens(p)).notes]
    share = sum(gm.family(n.instrument) == gm.family(0) for n in notes if n.instrument < 128) / len(notes)
    assert share > 0.5


def _density(out: Path) -> list[float]:
    """Notes per second of each output in a folder (onsets of its notes over the span they cover)."""
    rates = []
    for path in sorted(out.glob("gen_*_tokens.txt")):
        notes = decode_tokens(read_tokens(path)).notes
        span = max(n.onset for n in notes) / vocab.TIME_RESOLUTION
        rates.append(len(notes) / max(span, 1.0))
    return rates


def test_the_demo_follows_tempo_words_and_keeps_time(no_user_models, tmp_path, capsys) -> None:
    """A cheap version of the card's density table: the fast prompt is denser, and neither sample races ahead.

    The first shipped demo failed both (its arrival times jumped seconds at a time: 100 notes could span the whole
    100 s the time tokens address, whatever the tempo word)."""
    rates = {}
    for word, bpm in (("slow", 60), ("fast", 168)):
        out = tmp_path / word
        args = ["gen", f"A {word} fiddle tune for solo piano, at {bpm} BPM.", "-n", "4", "--seed", "5",
                "--max-tokens", "300", "--threads", "2", "--quiet", "-o", str(out)]  # fmt: skip
        code, _, stderr = run_cli(args, capsys)
        assert code == 0, stderr
        rates[word] = _density(out)
    assert sum(rates["fast"]) / 4 > 1.5 * sum(rates["slow"]) / 4, rates
    # 100 notes of a fast tune: the data's typical step (0.2 s) puts them around 10-30 s, far from the 100 s end.
    assert min(rates["fast"]) > 100 / 60, rates
