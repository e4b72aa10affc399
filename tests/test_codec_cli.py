"""`midillm-lite encode` / `decode` as a user runs them: summaries, defaults, --json, --force, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mido
import pytest
from clirun import run_cli

from midillm_lite.amt.midi import read_midi
from midillm_lite.amt.tokens_file import read_tokens
from midillm_lite.amt.vocab import DUR_OFFSET, NOTE_OFFSET, TEXT_VOCAB_SIZE

DATA = Path(__file__).parent / "data"
PIANO_C4 = [0, DUR_OFFSET + 50, NOTE_OFFSET + 60]


def test_encode_then_decode_a_real_file(tmp_path, capsys):
    tokens, midi = tmp_path / "s.txt", tmp_path / "s.mid"
    code, out, err = run_cli(["encode", str(DATA / "strawberry.mid"), "-o", str(tokens)], capsys)
    assert code == 0, err
    assert out.startswith(f"wrote {tokens}: 2847 tokens: 949 notes, 11 instruments (")
    assert "1919 notes past 100 s left out" in out
    code, out, err = run_cli(["decode", str(tokens), "-o", str(midi)], capsys)
    assert code == 0, err
    assert out.startswith(f"wrote {midi}: 949 notes, 11 instruments (") and "skipped" not in out
    assert len(read_midi(midi).notes) == 949


def test_decode_reference_style_full_ids_with_default_output(tmp_path, capsys):
    tokens = tmp_path / "gen_1_tokens.txt"
    tokens.write_text(" ".join(str(TEXT_VOCAB_SIZE + t) for t in PIANO_C4))
    code, out, _ = run_cli(["decode", str(tokens)], capsys)
    assert code == 0 and out.startswith(f"wrote {tmp_path / 'gen_1_tokens.mid'}: 1 note, 1 instrument")


def test_decode_reports_repairs_and_json(tmp_path, capsys):
    tokens = tmp_path / "t.txt"
    tokens.write_text("\n".join(map(str, [*PIANO_C4, 99_999, 5, 6])))
    code, out, _ = run_cli(["decode", str(tokens), "-o", str(tmp_path / "o.mid"), "--json"], capsys)
    result = json.loads(out)
    assert code == 0 and result["notes"] == 1
    assert result["repairs"] == {"incomplete_triplet": 1, "unfinished_note": 1, "unknown_id": 1}


def test_encode_start_and_full_ids(tmp_path, capsys):
    out_path = tmp_path / "late.txt"
    code, out, _ = run_cli(
        ["encode", str(DATA / "strawberry.mid"), "-o", str(out_path), "--start", "150", "--full-ids"], capsys
    )
    ids = read_tokens(out_path)
    assert code == 0 and "notes before --start left out" in out
    assert ids and all(TEXT_VOCAB_SIZE <= i < TEXT_VOCAB_SIZE + NOTE_OFFSET + 16_512 for i in ids)


def test_refuses_to_overwrite_without_force(tmp_path, capsys):
    tokens = tmp_path / "t.txt"
    tokens.write_text("\n".join(map(str, PIANO_C4)))
    target = tmp_path / "o.mid"
    target.write_bytes(b"precious")
    code, _, err = run_cli(["decode", str(tokens), "-o", str(target)], capsys)
    assert (
        code == 2
        and err.strip() == f"error: {target} already exists; use --force to overwrite it or choose another name"
    )
    assert target.read_bytes() == b"precious"
    code, _, _ = run_cli(["decode", str(tokens), "-o", str(target), "--force"], capsys)
    assert code == 0 and len(mido.MidiFile(target).tracks) == 2


def test_empty_midi_warns_and_writes_an_empty_token_file(tmp_path, capsys):
    silent = tmp_path / "silent.mid"
    mido.MidiFile(tracks=[mido.MidiTrack()]).save(silent)
    code, out, err = run_cli(["encode", str(silent), "-o", str(tmp_path / "t.txt")], capsys)
    assert code == 0 and "0 notes" in out and "holds no notes" in err
    assert (tmp_path / "t.txt").read_text() == ""


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    junk = tmp_path / "junk.mid"
    junk.write_text("MThd? no")
    words = tmp_path / "words.txt"
    words.write_text("1 2 three")
    cases = [
        (["encode", str(tmp_path / "missing.mid")], "no such file"),
        (["encode", str(junk)], "is not a readable MIDI file"),
        (["decode", str(words)], "line 1: 'three' is not a token id"),
        (["decode", str(tmp_path / "missing.txt")], "no such file"),
        (["decode", str(words), "-o", str(tmp_path)], "is a folder"),
        (["encode", str(DATA / "strawberry.mid"), "--start", "-1"], "--start"),
    ]
    for args, message in cases:
        code, out, err = run_cli(args, capsys)
        assert code == 2, (args, err)
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) <= 8, (args, err)
        assert out == ""
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*.part"))


def test_stdin_and_stdout_through_the_console_script(tmp_path):
    exe = [sys.executable, "-m", "midillm_lite"]
    encoded = subprocess.run([*exe, "encode", str(DATA / "strawberry.mid"), "-o", "-"], capture_output=True, text=True)
    assert encoded.returncode == 0 and encoded.stdout.count("\n") == 2847 and "2847 tokens" in encoded.stderr
    target = tmp_path / "piped.mid"
    decoded = subprocess.run(
        [*exe, "decode", "-", "-o", str(target)], input=encoded.stdout, capture_output=True, text=True
    )
    assert decoded.returncode == 0, decoded.stderr
    assert len(read_midi(target).notes) == 949


def test_decode_on_a_grid_keeps_every_note(tmp_path, capsys):
    tokens, plain, gridded = tmp_path / "s.txt", tmp_path / "plain.mid", tmp_path / "grid.mid"
    assert run_cli(["encode", str(DATA / "strawberry.mid"), "-o", str(tokens)], capsys)[0] == 0
    assert run_cli(["decode", str(tokens), "-o", str(plain)], capsys)[0] == 0
    code, out, err = run_cli(
        ["decode", str(tokens), "-o", str(gridded), "--tempo", "86", "--meter", "3/4", "--dynamics", "--json"], capsys
    )
    assert code == 0, err
    grid = json.loads(out)["grid"]
    assert (grid["meter"], grid["tempo_source"], grid["meter_source"]) == ("3/4", "flag", "flag")
    assert abs(grid["bpm"] - 86) < 0.01 and grid["dynamics"] == "beat accents"
    midi = mido.MidiFile(gridded)
    conductor = {m.type: m for m in midi.tracks[0]}
    assert abs(mido.tempo2bpm(conductor["set_tempo"].tempo) - 86) < 0.01
    assert (conductor["time_signature"].numerator, conductor["time_signature"].denominator) == (3, 4)
    velocities = {m.velocity for t in midi.tracks for m in t if m.type == "note_on"}
    assert len(velocities) > 1 and 72 not in velocities
    assert read_midi(gridded).notes == read_midi(plain).notes  # no note moved, lengthened or changed pitch
    for midi_file in (plain, gridded):  # so they encode alike (notes at one onset come back in track order in both)
        assert run_cli(["encode", str(midi_file), "-o", str(midi_file.with_suffix(".txt"))], capsys)[0] == 0
    assert read_tokens(gridded.with_suffix(".txt")) == read_tokens(plain.with_suffix(".txt"))


def test_decode_estimates_tempo_and_meter_on_request(tmp_path, capsys):
    tokens = tmp_path / "s.txt"
    assert run_cli(["encode", str(DATA / "strawberry.mid"), "-o", str(tokens)], capsys)[0] == 0
    code, out, _ = run_cli(["decode", str(tokens), "-o", str(tmp_path / "a.mid"), "--meter", "auto"], capsys)
    assert code == 0 and " BPM (estimate, fit " in out and "(estimate, fit" in out.split("BPM")[1]
    code, out, _ = run_cli(["decode", str(tokens), "-o", str(tmp_path / "p.mid"), "--json"], capsys)
    assert code == 0 and json.loads(out)["grid"] is None  # no option: 120 BPM 4/4, as decode always wrote
    conductor = {m.type: m for m in mido.MidiFile(tmp_path / "p.mid").tracks[0]}
    assert conductor["set_tempo"].tempo == 500_000 and conductor["time_signature"].numerator == 4


@pytest.mark.parametrize(
    "flags",
    [["--tempo", "0"], ["--tempo", "-5"], ["--tempo", "nan"], ["--tempo", "10000"], ["--meter", "0/4"],
     ["--meter", "7/0"], ["--meter", "x"]],
)  # fmt: skip
def test_bad_grid_options_are_one_line_before_anything_is_written(flags, tmp_path, capsys):
    tokens, target = tmp_path / "t.txt", tmp_path / "o.mid"
    tokens.write_text("\n".join(map(str, PIANO_C4)))
    code, out, err = run_cli(["decode", str(tokens), "-o", str(target), *flags], capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and flags[0] in err, err
    assert out == "" and not target.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]
