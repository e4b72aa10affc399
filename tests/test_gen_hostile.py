"""`gen` against hostile text and odd stops (issue 14): bytes that are not UTF-8, quiet prompt loops, token counts.

Text that is not UTF-8 is not refused: each undecodable byte becomes U+FFFD and
one warning per source says where (the argument, FILE line N, standard input
line N). Run as subprocesses under LC_ALL=C, where the bytes arrive as Python's
lone surrogates, as a user's Latin-1 terminal would send them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from clirun import run_cli
from hypothesis import given
from hypothesis import strategies as st

from midillm_lite import promptfile
from midillm_lite.amt.ops import is_time, time_ticks
from midillm_lite.amt.tokens_file import read_tokens
from midillm_lite.cli import gen_cmds
from midillm_lite.generate import TRIM_MAX_TOKENS, TRIM_SECONDS, _trim

FAST = ["--max-tokens", "6", "--threads", "2", "-n", "1"]
LATIN1_PROMPT = "café piano".encode("latin-1")  # b"caf\xe9 piano": not UTF-8
REPLACED = "caf\ufffd piano"
C_LOCALE = {**os.environ, "LC_ALL": "C", "LANG": "C"}


@pytest.fixture(scope="module")
def model(tiny_gguf) -> str:
    return str(tiny_gguf())


def _gen(args: list[bytes | str], **kwargs) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "midillm_lite", "gen", *args]
    return subprocess.run(argv, capture_output=True, timeout=120, env=C_LOCALE, **kwargs)


def _one_warning(stderr: bytes, where: str) -> None:
    lines = stderr.decode("utf-8", "replace").splitlines()
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 1 and where in warnings[0] and "U+FFFD" in warnings[0], lines
    assert not any("error" in line for line in lines), lines


@pytest.mark.slow
def test_a_latin1_prompt_argument_becomes_replacement_characters(model, tmp_path):
    run = _gen([LATIN1_PROMPT, "-m", model, "-o", str(tmp_path / "o"), "-q", *FAST])
    assert run.returncode == 0, run.stderr
    _one_warning(run.stderr, "the PROMPT argument")
    assert (tmp_path / "o" / "prompt.txt").read_text(encoding="utf-8").strip() == REPLACED


@pytest.mark.slow
def test_a_prompts_file_with_invalid_utf8_names_its_lines(model, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(b"a fine waltz\n" + LATIN1_PROMPT + b"\n")
    run = _gen(["--prompts-file", str(prompts), "-m", model, "-o", str(tmp_path / "o"), "-q", *FAST])
    assert run.returncode == 0, run.stderr
    _one_warning(run.stderr, f"{prompts} line 2")
    written = sorted(p.read_text(encoding="utf-8").strip() for p in (tmp_path / "o").glob("*/prompt.txt"))
    assert written == sorted(["a fine waltz", REPLACED])


@pytest.mark.slow
def test_interactive_stdin_with_invalid_utf8_names_its_line(model, tmp_path):
    run = _gen(["-i", "-m", model, "-o", str(tmp_path), "-q", *FAST], input=b"a march\n" + LATIN1_PROMPT + b"\n\n")
    assert run.returncode == 0, run.stderr
    _one_warning(run.stderr, "standard input line 2")
    assert len(list(tmp_path.iterdir())) == 2


@pytest.mark.slow
def test_quiet_interactive_prints_no_question(model, tmp_path):
    prompts = b"".join(b"tune %d\n" % i for i in range(3)) + b"\n"
    quiet = _gen(["-i", "-m", model, "-o", str(tmp_path / "q"), "-q", *FAST], input=prompts)
    assert quiet.returncode == 0 and quiet.stdout == b"" and quiet.stderr == b"", quiet.stderr
    assert len(list((tmp_path / "q").iterdir())) == 3


@given(st.text(max_size=40))
def test_valid_text_keeps_every_character_but_lone_surrogates(text):
    cleaned, replaced = gen_cmds._valid_text(text)
    cleaned.encode("utf-8")  # always encodable: what the tokenizer and prompt.txt need
    assert len(cleaned) == len(text) and replaced == (cleaned != text)
    assert all(a == b or (b == "\ufffd" and 0xD800 <= ord(a) < 0xE000) for a, b in zip(text, cleaned, strict=True))


@given(st.lists(st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")), max_size=8))
def test_decode_lines_names_exactly_the_lines_that_are_not_utf8(lines):
    decoded, bad = promptfile.decode_lines(b"".join(line + b"\n" for line in lines))
    assert decoded == [line.decode("utf-8", "replace") for line in lines]
    assert bad == [n for n, line in enumerate(lines, start=1) if line.decode("utf-8", "replace").encode() != line]


@pytest.mark.slow
@pytest.mark.parametrize("max_tokens", [10, 11, 12])
def test_stats_count_the_tokens_written(model, tmp_path, capsys, max_tokens):
    code, out, err = run_cli(["gen", "x", "-m", model, "-o", str(tmp_path), "--json", "--seed", "1",
                              *FAST[2:], "--max-tokens", str(max_tokens)], capsys)  # fmt: skip
    assert code == 0, err
    stats = json.loads(out)
    entry = stats["outputs"][0]
    written = read_tokens(Path(tmp_path) / "gen_1_tokens.txt")
    assert entry["tokens"] == len(written)
    assert entry["tokens_generated"] == max_tokens == stats["timings"]["tokens_generated"]
    assert entry["tokens_trimmed"] == max_tokens - len(written)
    assert (entry["trimmed_reason"] is None) == (len(written) == max_tokens)


@given(
    tokens=st.lists(st.integers(0, 27_511), max_size=20),
    partial=st.booleans(),
    strict=st.booleans(),
    limit=st.none() | st.integers(0, 10_000),
)
def test_trim_leaves_out_only_an_unfinished_last_note(tokens, partial, strict, limit):
    kept, reason = _trim(tokens, partial=partial, strict=strict, limit=limit)
    assert kept == tokens[: len(kept)] and len(tokens) - len(kept) < 3
    assert (reason is None) == (kept == tokens)
    if partial:
        assert reason is None  # an interrupted output loses nothing
    elif strict:
        assert len(kept) % 3 == 0
    if reason == TRIM_SECONDS:
        assert len(tokens) % 3 == 1 and is_time(tokens[-1]) and time_ticks(tokens[-1]) >= limit
    assert reason in (None, TRIM_SECONDS, TRIM_MAX_TOKENS)
