"""Output folders (names, refusal, concurrency), model resolution (registry, paths, repo ids), continuation windows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from clirun import run_cli

from midillm_lite import models
from midillm_lite.amt.codec import Note, decode_tokens
from midillm_lite.amt.continuation import _last_window, prepare_continuation
from midillm_lite.amt.transcode import decoded_to_midi
from midillm_lite.amt.vocab import DUR_OFFSET, NOTE_OFFSET
from midillm_lite.errors import UserError
from midillm_lite.outputs import LOCK_NAME, claim_output_dir, new_output_dir, slug, write_output

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("A cheerful rock song with bright electric guitars", "a-cheerful-rock-song-with-bright"),
        ("Café déjà vu!", "cafe-deja-vu"),
        ("../../etc/passwd", "etc-passwd"),
        ("♪♪♪", "music"),
        ("", "music"),
    ],
)
def test_slug(prompt, expected):
    assert slug(prompt) == expected


def test_new_folders_never_collide(tmp_path):
    made: list[Path] = []
    threads = [threading.Thread(target=lambda: made.append(new_output_dir("same", root=tmp_path, now=0)))
               for _ in range(8)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 8 and all(p.parent == tmp_path and p.is_dir() for p in made)


def test_claim_output_dir(tmp_path):
    with claim_output_dir(tmp_path / "new", force=False) as claim:
        assert claim.folder.is_dir() and (claim.folder / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    assert list((tmp_path / "new").iterdir()) == []  # released: the lock is gone
    (tmp_path / "new" / "x").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        claim_output_dir(tmp_path / "new", force=False)
    assert not (tmp_path / "new" / LOCK_NAME).exists()  # a refused claim leaves nothing behind
    claim_output_dir(tmp_path / "new", force=True).release()
    with pytest.raises(UserError, match="is a file"):
        claim_output_dir(tmp_path / "new" / "x", force=True)


def test_a_claimed_folder_is_refused_to_a_second_run(tmp_path):
    # Issue 14: two gen with one -o both passed the emptiness check and wrote into one folder.
    out = tmp_path / "out"
    first = claim_output_dir(out, force=False)
    for force in (False, True):
        with pytest.raises(UserError, match=rf"in use by another generation \(process {os.getpid()}\)"):
            claim_output_dir(out, force=force)
    first.release()
    claim_output_dir(out, force=False).release()


def test_a_dead_runs_lock_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text(dead.stdout)
    with claim_output_dir(out, force=False) as claim:
        assert (claim.folder / LOCK_NAME).read_text() == f"{os.getpid()}\n"


def test_an_empty_lock_is_a_run_starting_until_it_is_old(tmp_path):
    # A run creates the lock (O_EXCL), then writes its pid: a second run that read the lock in between took it
    # as left behind and claimed the folder too (seen once in CI, test_racing_processes_one_claim).
    from midillm_lite import outputs

    out = tmp_path / "out"
    out.mkdir()
    lock = out / LOCK_NAME
    lock.write_text("")
    with pytest.raises(UserError, match=r"in use by another generation \(starting now\)"):
        claim_output_dir(out, force=False)
    old = time.time() - outputs.LOCK_WRITE_S - 1
    os.utime(lock, (old, old))
    with claim_output_dir(out, force=False) as claim:  # a run killed before writing its pid: taken over
        assert (claim.folder / LOCK_NAME).read_text() == f"{os.getpid()}\n"


CLAIM = """
import sys
from pathlib import Path
from midillm_lite.errors import UserError
from midillm_lite.outputs import claim_output_dir
try:
    claim_output_dir(Path(sys.argv[1]), force=False)  # held until this process ends
    print("claimed", flush=True)
except UserError as exc:
    print(exc, flush=True)
sys.stdin.readline()  # every racer holds what it got until all have tried
"""


def test_racing_processes_one_claim(tmp_path):
    # Separate processes, not a fork()ed pool: forking the test process, which has threads by now (other tests'
    # schedulers, Ray), can deadlock a child on a lock some thread held at the fork.
    args = [sys.executable, "-c", CLAIM, str(tmp_path / "out")]
    root = Path(__file__).parents[1]
    racers = [subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root)
              for _ in range(8)]  # fmt: skip
    outcomes = [racer.stdout.readline().strip() for racer in racers]
    for racer in racers:
        racer.communicate("\n", timeout=60)
    assert outcomes.count("claimed") == 1, outcomes
    assert all("in use by another generation" in o or "not empty" in o for o in outcomes if o != "claimed"), outcomes


def test_unwritable_output_root_fails_before_the_model_loads(tmp_path, monkeypatch, capsys):
    # Issue 14: a read-only working folder (or --prompts-file -o into one) failed only after generating.
    import errno

    from midillm_lite import generate, outputs

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(outputs.tempfile, "TemporaryFile", refuse)
    monkeypatch.setattr(generate, "Generator", no_load)
    monkeypatch.chdir(tmp_path)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("one\ntwo\n")
    for args in (["gen", "x"], ["gen", "--prompts-file", str(prompts), "-o", str(tmp_path / "batch")]):
        code, _, err = run_cli(args, capsys)
        assert code == 2 and err.startswith("error: cannot write in ") and "Read-only file system" in err, err


@pytest.fixture
def model_dirs(tmp_path, monkeypatch):
    repo = tmp_path / "repo_models"
    repo.mkdir()
    (repo / "registry.json").write_text(json.dumps({"models": {
        "best": {"repo": "o/r", "quant": "q8_0", "file": "best.gguf"},
        "small": {"repo": "o/r", "quant": "q4_k_m", "file": "small.gguf"},
    }}))  # fmt: skip
    monkeypatch.setattr(models, "REPO_MODELS", repo)
    monkeypatch.setattr(models, "REGISTRY", repo / "registry.json")
    monkeypatch.setenv("MIDILLM_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(models, "_unreadable", lambda path: None)  # one-byte files stand in for models here
    return repo, tmp_path / "home" / "models"


def test_default_is_the_best_present(model_dirs):
    repo, home = model_dirs
    with pytest.raises(UserError, match="no model found"):
        models.resolve_model(None)
    home.mkdir(parents=True)
    (home / "small.gguf").write_bytes(b"x")
    assert models.resolve_model(None) == home / "small.gguf"
    (repo / "best.gguf").write_bytes(b"x")
    assert models.resolve_model(None) == repo / "best.gguf"
    assert models.resolve_model("small") == home / "small.gguf"


def test_names_that_are_not_models(model_dirs, tmp_path):
    for name, message in [
        ("../../best", "no such model file"),
        ("/abs/missing.gguf", "no such model file"),
        ("nonsense", "is not a model file, a registry name (best, small)"),
        (str(tmp_path), "is a folder without config.json"),
    ]:
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
            models.resolve_model(name)


def test_no_model_hint_names_what_a_python_caller_passes(model_dirs):
    # The library speaks Python (model='o/r'); the CLI renders the same Opt as --model o/r.
    from midillm_lite.cli import flag

    with pytest.raises(UserError) as error:
        models.find_model(None)
    assert "pass model='o/r' to download and convert it once" in str(error.value)
    assert "--model" not in str(error.value) and "pass --model o/r to" in error.value.render(flag)
    assert "`midillm-lite convert o/r -q q4_k_m --layout midi-head -o " in str(error.value)


def test_a_checkpoint_folder_is_converted_once_and_reused(model_dirs, tiny_checkpoint, monkeypatch):
    import midillm_lite.convert as conversion

    made = []
    real = conversion.convert
    monkeypatch.setattr(conversion, "convert", lambda *a, **k: made.append(a) or real(*a, **k))
    first = models.find_model(str(tiny_checkpoint))
    assert first.path.is_file() and first.path.parent == models.user_model_dir()
    assert first.path.name.startswith("local--") and first.path.name.endswith("-q4_k_m.gguf")
    assert models.find_model(str(tiny_checkpoint)) == first and len(made) == 1  # the second time: no conversion


def test_an_unconverted_folder_without_conversion_says_how(model_dirs, tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    how = f"is not converted yet; run `midillm-lite convert {folder} -q q4_k_m --layout midi-head -o "
    with pytest.raises(UserError, match=how):
        models.find_model(str(folder), allow_download=False)


def test_a_changed_checkpoint_gets_a_new_file_name(tmp_path):
    folder = tmp_path / "my ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    before = models.local_file_name(folder)
    assert before.startswith("local--my-ckpt-") and before == models.local_file_name(folder)
    (folder / "model.safetensors").write_bytes(b"weights")
    assert models.local_file_name(folder) != before


def test_hub_ids_offline_say_how_to_convert(model_dirs):
    with pytest.raises(UserError, match="midillm-lite convert o/r -q q8_0"):
        models.resolve_model("best", allow_download=False)
    assert models.is_repo_id("slseanwu/MIDI-LLM_Llama-3.2-1B")
    assert not models.is_repo_id("../x") and not models.is_repo_id("a/../b") and not models.is_repo_id("a/b/c")


def test_window_takes_the_last_notes_within_both_limits():
    notes = [Note(100 * i, 50, 0, 60) for i in range(10)]
    assert _last_window(notes, max_notes=3, max_span=10_000) == notes[-3:]
    assert _last_window(notes, max_notes=100, max_span=250) == notes[-3:]  # onsets 700..900 span 200
    assert _last_window(notes[:1], max_notes=5, max_span=0) == notes[:1]


def test_continuation_of_a_long_piece():
    c = prepare_continuation(DATA / "strawberry.mid")  # 270 s: past AMT's 100 s
    assert 0 < len(c.prefix) <= 1023 and len(c.prefix) % 3 == 0
    assert c.window_start > 10_000 and c.prefix[0] == 0  # relative: the window starts at time 0
    back = c.reassemble([Note(0, 10, 0, 60)])
    assert back[-1] == Note(c.window_start, 10, 0, 60) and len(back) == len(c.notes) + 1


def test_continuation_errors(tmp_path):
    with pytest.raises(UserError, match="no notes before 0"):
        prepare_continuation(DATA / "strawberry.mid", from_seconds=0)
    with pytest.raises(UserError, match=r"from_seconds must be a finite number in \[0, 86400\], not -1"):
        prepare_continuation(DATA / "strawberry.mid", from_seconds=-1)
    with pytest.raises(UserError, match="no such file"):
        prepare_continuation(tmp_path / "none.mid")


def test_a_sample_the_reference_rejects_is_kept_under_rejected(tmp_path):
    from midillm_lite.generate import _make_output
    from midillm_lite.outputs import write_output

    crowded = [t for pitch in range(65) for t in (0, DUR_OFFSET + 10, NOTE_OFFSET + pitch)]  # 65 notes at time 0
    output = _make_output(0, crowded, None, partial=False)
    assert output.rejected == "65 notes at one onset (the reference rejects more than 64)"
    assert output.summary.notes == 65 and not output.summary.repairs
    midi_path, tokens_path = write_output(tmp_path, output.index, output.tokens, output.midi, rejected=True)
    assert midi_path == tmp_path / "rejected" / "gen_1.mid" and tokens_path.read_text().count("\n") == 195
    assert _make_output(0, crowded[:-3], None, partial=False).rejected is None  # 64 is still fine


def _smpte_midi(path: Path) -> Path:
    import io

    import mido

    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack([mido.Message("note_on", note=60, velocity=80), mido.Message("note_off", note=60, time=240)])
    midi.tracks.append(track)
    buffer = io.BytesIO()
    midi.save(file=buffer)
    data = bytearray(buffer.getvalue())
    data[12:14] = bytes([0xE7, 0x28])  # the header's division: SMPTE, 25 frames per second, 40 ticks per frame
    path.write_bytes(bytes(data))
    return path


def test_smpte_continuation_is_timed_in_seconds_and_reassembles(tmp_path):
    # Issue 14: gen --continue with an SMPTE file generated, then died writing the MIDI (negative times). The reader
    # now times SMPTE in seconds (25 fps x 40 ticks: a tick is 1 ms), so the window and the reassembled piece are
    # ordinary notes and the output MIDI writes.
    smpte = _smpte_midi(tmp_path / "smpte.mid")
    continuation = prepare_continuation(smpte)
    assert [(n.onset, n.duration, n.pitch) for n in continuation.notes] == [(0, 24, 60)]  # 240 ms in 10 ms ticks
    notes = continuation.reassemble([Note(0, 50, 0, 64)])
    midi, _ = decoded_to_midi(decode_tokens([]), notes=notes)
    write_output(tmp_path, 1, [], midi)
    assert (tmp_path / "gen_1.mid").is_file()


def test_a_midi_that_cannot_be_written_keeps_its_tokens(tmp_path):
    import mido

    from midillm_lite.outputs import write_output

    bad = mido.MidiFile()
    bad.tracks.append(mido.MidiTrack([mido.Message("note_on", note=60, time=-5)]))
    with pytest.raises(UserError, match=r"could not write .*gen_1\.mid .*its tokens are in .*gen_1_tokens\.txt"):
        write_output(tmp_path, 1, [0, 10000, 11000], bad)
    assert (tmp_path / "gen_1_tokens.txt").read_text() == "0\n10000\n11000\n"
    assert not (tmp_path / "gen_1.mid").exists()
