"""The house rules a newcomer relies on: one owner per concept, checked where a copy would otherwise creep back in.

- token kinds: `amt.ops` agrees with the vocabulary's blocks for every AMT id;
- errors: the library names keyword arguments, the CLI spells each as a flag that exists;
- GGUF keys: the converter writes, and the reader requires, exactly what `gguf_keys.KEYS` says.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import typer
from hypothesis import given
from hypothesis import strategies as st

from midillm_lite import cli, gguf_keys
from midillm_lite.amt import ops, vocab
from midillm_lite.cli import app, flag
from midillm_lite.errors import Opt, UserError

ROOT = Path(__file__).resolve().parents[1]
FLAG = r"(^|[\s(`'\"])--[a-z]"  # a flag spelled out in a message
LIBRARY = [p for p in (*ROOT.glob("midillm_lite/**/*.py"), *ROOT.glob("convert/*.py")) if "cli" not in p.parts]


@given(st.integers(0, vocab.MIDI_VOCAB_SIZE - 1))
def test_token_kinds_match_the_vocabulary_blocks(amt_id: int) -> None:
    kinds = [ops.is_time(amt_id), ops.is_duration(amt_id), ops.is_note(amt_id), ops.is_control(amt_id)]
    assert sum(kinds) <= 1
    in_events = vocab.TIME_OFFSET <= amt_id < vocab.REST
    assert any(kinds[:3]) == (in_events and amt_id != vocab.REST)
    assert ops.is_control(amt_id) == (vocab.CONTROL_OFFSET <= amt_id < vocab.CONTROL_END)
    if ops.is_control(amt_id):
        assert ops.as_event(amt_id) == amt_id - vocab.CONTROL_OFFSET
        assert not ops.is_control(ops.as_event(amt_id))


@given(st.integers(0, vocab.MAX_INSTR - 1), st.integers(0, vocab.MAX_PITCH - 1))
def test_note_tokens_round_trip(instrument: int, pitch: int) -> None:
    token = ops.note_token(instrument, pitch)
    assert ops.is_note(token)
    assert ops.instrument_pitch(token) == (instrument, pitch)
    assert ops.instrument_of(token) == instrument
    lo, hi = ops.note_range(instrument)
    assert lo <= token < hi and hi - lo == vocab.MAX_PITCH


def test_time_values() -> None:
    last = vocab.DUR_OFFSET - 1
    assert ops.time_ticks(last) == vocab.MAX_TIME - 1
    assert ops.time_seconds(vocab.TIME_OFFSET + vocab.TIME_RESOLUTION) == 1.0
    assert ops.duration_ticks(vocab.DUR_OFFSET + 7) == 7


def test_error_reads_as_python_and_as_flags() -> None:
    error = UserError("out of room; lower ", Opt("max_tokens"), " or use ", Opt("device", "cpu"), Opt("force", True))
    assert str(error) == "out of room; lower max_tokens or use device='cpu'force=True"
    assert error.render(flag) == "out of room; lower --max-tokens or use --device cpu--force"
    assert flag(Opt("n")) == "--n-outputs" and flag(Opt("from_seconds")) == "--from"


def _cli_flags() -> set[str]:
    cli._register()  # each verb's module adds itself to the app on import
    command = typer.main.get_command(app)
    found = {opt for param in command.params for opt in getattr(param, "opts", [])}
    for sub in command.commands.values():
        for param in sub.params:
            found |= set(getattr(param, "opts", [])) | set(getattr(param, "secondary_opts", []))
    return found


def test_every_option_the_library_names_is_a_real_flag() -> None:
    named = {m for path in LIBRARY for m in re.findall(r'Opt\("(\w+)"', path.read_text(encoding="utf-8"))}
    assert named, "the library names no options: the scan is broken"
    flags = _cli_flags()
    missing = {name: flag(Opt(name)) for name in named if flag(Opt(name)) not in flags}
    assert not missing, f"library messages name options the CLI lacks: {missing}"


def _user_error_strings(path: Path) -> list[tuple[int, str]]:
    """Every string constant inside a UserError(...) call in `path`, with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "UserError":
            for inner in ast.walk(node):
                if isinstance(inner, ast.Constant) and isinstance(inner.value, str):
                    found.append((inner.lineno, inner.value))
    return found


def test_library_messages_name_no_flags() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for path in LIBRARY
        for line, text in _user_error_strings(path)
        if re.search(FLAG, text)
    ]
    assert not offenders, "library errors spell CLI flags; name the keyword with Opt(...) instead"


def test_the_flag_scan_sees_a_flag(tmp_path: Path) -> None:
    # The scan above must be able to fail: a multi-line message that spells a flag is caught.
    sample = tmp_path / "sample.py"
    sample.write_text('raise UserError(\n    f"{x} exists; "\n    "use --force to overwrite"\n)\n')
    assert [text for _, text in _user_error_strings(sample) if re.search(FLAG, text)] == [
        " exists; use --force to overwrite"
    ]


def test_gguf_key_table_is_what_the_converter_writes() -> None:
    written = [name for name, _, _ in gguf_keys.converter_values(gguf_keys.Provenance("r", "v", "0"))]
    assert written == [key.name for key in gguf_keys.KEYS if key.source is not None]
    assert set(gguf_keys.REQUIRED) <= set(written)
    assert gguf_keys.COMPANION not in gguf_keys.REQUIRED  # written by the midi-head split, not the converter
    assert len(gguf_keys.BY_NAME) == len(gguf_keys.KEYS)
    assert all(name.startswith(gguf_keys.NAMESPACE + ".") for name in gguf_keys.BY_NAME)


def test_amt_vocab_size_names_one_number() -> None:
    assert vocab.AMT_VOCAB_SIZE == vocab.ANTICIPATE + 1  # AMT's own ids
    values = dict((n, v) for n, v, _ in gguf_keys.converter_values(gguf_keys.Provenance("r", "v", "0")))
    assert values[gguf_keys.MIDI_VOCAB_SIZE] == vocab.MIDI_VOCAB_SIZE
    assert not hasattr(gguf_keys, "AMT_VOCAB_SIZE")
