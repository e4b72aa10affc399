"""Audio: what the rendered sound measures (pitch, length, loudness, drums, sixteen instruments), the formats read
back, the soundfont lookup, bad input as one line, and gen's audio end to end (with and without a synthesizer).

The checks are functions, and test_checks_fail_on_a_silent_renderer runs every one of them against a synthesizer
that writes zeros: none may pass, so no test here can pass on silence.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile
from clirun import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from midillm_lite.amt.gm import DRUM_CHANNEL
from midillm_lite.audio import AudioSettings, RenderStopped, prepare
from midillm_lite.audio import soundfont as sflookup
from midillm_lite.audio import synth as synths
from midillm_lite.audio.process import PEAK_CEILING, integrated_loudness, limit_peaks, trim_silence
from midillm_lite.errors import UserError

RATE = synths.SAMPLE_RATE
PACKAGE_SF = sflookup.package_soundfont()
SYNTHS = [name for name in (synths.FLUIDSYNTH, synths.TINYSOUNDFONT) if synths._available(name)]
pytestmark = pytest.mark.skipif(PACKAGE_SF is None or not SYNTHS, reason="no synthesizer or soundfont installed")
FLUTE, PIANO, SNARE, A4 = 73, 0, 38, 69
LOUDNESS_TOLERANCE_LU = 0.5


def make_midi(notes: list[tuple[int, int, int, float, float]]) -> mido.MidiFile:
    """A type-0 file at 120 BPM from (channel, program, pitch, start s, duration s)."""
    midi = mido.MidiFile(type=0, ticks_per_beat=480)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    events = [(0.0, 0, mido.Message("program_change", channel=ch, program=prog)) for ch, prog, *_ in notes]
    for ch, _, pitch, start, dur in notes:
        events += [(start, 2, mido.Message("note_on", channel=ch, note=pitch, velocity=72)),
                   (start + dur, 1, mido.Message("note_off", channel=ch, note=pitch))]  # fmt: skip
    now = 0
    for time_s, _, message in sorted(events, key=lambda e: (e[0], e[1])):
        tick = round(time_s * 960)  # 120 BPM: 960 ticks a second
        track.append(message.copy(time=tick - now))
        now = tick
    return midi


def render(midi: mido.MidiFile, tmp_path: Path, *, synth: str, fmt: str = "wav", loudness: float = -18.0):
    """Render through the whole pipeline; the samples as read back from the file, and the stats entry."""
    renderer = prepare(AudioSettings(fmt, PACKAGE_SF, loudness, synth))
    result = renderer.render(midi, tmp_path / f"out.{fmt}")
    samples, rate = soundfile.read(result.path, always_2d=True)
    assert rate == RATE
    return samples, result


def raw(midi: mido.MidiFile, *, synth: str) -> np.ndarray:
    """The synthesizer's own samples, before trimming and normalization (levels and timing as played)."""
    renderer = prepare(AudioSettings("wav", PACKAGE_SF, synth=synth))
    player = synths.open_synth(renderer.synth, renderer.soundfont)
    return synths.render_messages(player, synths.timed_messages(midi))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if len(x) else 0.0


def flatness(x: np.ndarray) -> float:
    """Spectral flatness: near 1 for noise (a snare), near 0 for a tone."""
    spectrum = np.abs(np.fft.rfft(x.mean(axis=1))) + 1e-12
    return float(np.exp(np.mean(np.log(spectrum))) / np.mean(spectrum))


# --- the checks ---------------------------------------------------------------------------------------------------


def check_a4(tmp_path: Path, synth: str) -> None:
    """A 1 s flute A4 after 0.5 s of rest: the trimmed file lasts about the note, peaks near 440 Hz, is at -18 LUFS."""
    samples, result = render(make_midi([(0, FLUTE, A4, 0.5, 1.0)]), tmp_path, synth=synth)
    assert 0.9 <= len(samples) / RATE <= 2.0, len(samples) / RATE  # the rest is trimmed, the release is short
    assert abs(result.seconds - len(samples) / RATE) < 0.01
    spectrum = np.abs(np.fft.rfft(samples.mean(axis=1) * np.hanning(len(samples))))
    peak_hz = np.argmax(spectrum) * RATE / len(samples)
    assert abs(peak_hz - 440) < 5, peak_hz
    assert abs(integrated_loudness(samples, RATE) - -18) <= LOUDNESS_TOLERANCE_LU
    assert np.abs(samples).max() <= PEAK_CEILING + 1e-3


def check_drums(tmp_path: Path, synth: str) -> None:
    """A snare on channel 10 sounds at its time (raw level), and as a drum: noisy, unlike the same key on a piano."""
    drum = raw(make_midi([(DRUM_CHANNEL, 0, SNARE, 0.5, 0.2)]), synth=synth)
    hit, before = drum[int(0.5 * RATE) : int(0.8 * RATE)], drum[: int(0.45 * RATE)]
    assert rms(hit) > 1e-3 and rms(hit) > 100 * rms(before), (rms(hit), rms(before))
    piano = raw(make_midi([(0, PIANO, SNARE, 0.5, 0.2)]), synth=synth)[int(0.5 * RATE) : int(0.8 * RATE)]
    assert rms(piano) > 1e-3 and flatness(hit) > 2.5 * flatness(piano), (flatness(hit), flatness(piano))


def sixteen() -> mido.MidiFile:
    """Channels 0-15 in turn, 0.3 s each: fifteen GM families (program 8*i) and the drums on channel 10."""
    return make_midi([(ch, 8 * ch, SNARE if ch == DRUM_CHANNEL else 60 + ch, 0.3 * ch, 0.25) for ch in range(16)])


def check_sixteen(tmp_path: Path, synth: str) -> None:
    """Every one of the 16 channels is heard in its own slot of time."""
    played = raw(sixteen(), synth=synth)
    for ch in range(16):
        start = int((0.3 * ch + 0.02) * RATE)
        assert rms(played[start : start + int(0.2 * RATE)]) > 1e-3, f"channel {ch + 1} is silent"


def check_loudness_targets(tmp_path: Path, synth: str) -> None:
    for target in (-23.0, -12.0):
        samples, result = render(sixteen(), tmp_path, synth=synth, loudness=target)
        assert abs(integrated_loudness(samples, RATE) - target) <= LOUDNESS_TOLERANCE_LU, target
        assert abs(result.loudness_lufs - target) <= LOUDNESS_TOLERANCE_LU
        assert np.abs(samples).max() <= PEAK_CEILING + 1e-3  # -12 LUFS needs the limiter on this music


def check_formats(tmp_path: Path, synth: str) -> None:
    """Each format reads back (soundfile) at the wav's length and loudness."""
    wav, _ = render(sixteen(), tmp_path, synth=synth, fmt="wav")
    for fmt in ("mp3", "flac", "ogg"):
        back, result = render(sixteen(), tmp_path, synth=synth, fmt=fmt)
        assert result.path.suffix == f".{fmt}" and soundfile.info(result.path).format == fmt.upper()
        assert abs(len(back) - len(wav)) < 0.06 * RATE, fmt  # an MP3 decoder may pad a frame
        assert abs(integrated_loudness(back, RATE) - -18) <= LOUDNESS_TOLERANCE_LU, fmt


CHECKS = [check_a4, check_drums, check_sixteen, check_loudness_targets, check_formats]


@pytest.mark.parametrize("synth", SYNTHS)
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_rendered_audio(check, synth, tmp_path):
    check(tmp_path, synth)


class _Silent:
    def __init__(self, *args):
        pass

    def __getattr__(self, name):
        return lambda *args: None

    def render(self, out):
        out[:] = 0


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_checks_fail_on_a_silent_renderer(check, tmp_path, monkeypatch):
    monkeypatch.setattr(synths, "open_synth", lambda *args: _Silent())  # for raw()
    monkeypatch.setattr("midillm_lite.audio.render.open_synth", lambda *args: _Silent())  # for the pipeline
    with pytest.raises((AssertionError, UserError)):
        check(tmp_path, SYNTHS[0])


def test_auto_prefers_fluidsynth_where_it_is_installed():
    assert synths.select_synth("auto").name == SYNTHS[0]


# --- processing -----------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.floats(1.0, 40.0), st.integers(0, 2**32 - 1))
def test_the_limiter_never_lets_a_peak_through(scale, seed):
    noise = np.random.default_rng(seed).standard_normal((4000, 2)).astype(np.float32) * np.float32(scale)
    limited = limit_peaks(noise, RATE)
    assert np.abs(limited).max() <= PEAK_CEILING * (1 + 1e-6)
    assert np.all(np.abs(limited) <= np.abs(noise) + 1e-7)  # only ever turned down


def test_trim_keeps_the_sound_and_drops_the_silence():
    tone = np.sin(np.arange(RATE) * 2 * np.pi * 440 / RATE)[:, None].repeat(2, axis=1)
    padded = np.concatenate([np.zeros((RATE, 2)), tone, np.full((RATE, 2), 1e-3)])  # -60 dB hiss after
    trimmed = trim_silence(padded)
    assert abs(len(trimmed) - RATE) < 2048 and rms(trimmed) > 0.5
    assert len(trim_silence(np.zeros((RATE, 2)))) == 0


# --- soundfont lookup and bad input ---------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_the_soundfont_check_refuses_any_short_or_foreign_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("sf") / "x.sf2"
    path.write_bytes(data)
    with pytest.raises(UserError):
        sflookup.check_soundfont(path)


def fake_soundfont(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF" + (4).to_bytes(4, "little") + b"sfbk")
    return path


def test_lookup_order(tmp_path, monkeypatch):
    system = fake_soundfont(tmp_path / "sys" / "FluidR3_GM.sf2")
    fake_soundfont(tmp_path / "sys" / "TimGM6mb.sf2")
    monkeypatch.setattr(sflookup, "SYSTEM_DIRS", (str(tmp_path / "none"), str(tmp_path / "sys")))
    monkeypatch.delenv(sflookup.ENV_VAR, raising=False)
    assert sflookup.find_soundfont().path == system  # the best name first
    env = fake_soundfont(tmp_path / "env.sf2")
    monkeypatch.setenv(sflookup.ENV_VAR, str(env))
    assert sflookup.find_soundfont().path == env
    given_sf = fake_soundfont(tmp_path / "given.sf3")
    assert sflookup.find_soundfont(given_sf).path == given_sf
    monkeypatch.setenv(sflookup.ENV_VAR, str(tmp_path / "missing.sf2"))
    with pytest.raises(UserError, match=r"\$MIDILLM_SOUNDFONT .*missing.sf2: no such file"):
        sflookup.find_soundfont()  # a named one that is bad is never passed over
    monkeypatch.delenv(sflookup.ENV_VAR)
    monkeypatch.setattr(sflookup, "SYSTEM_DIRS", ())
    assert sflookup.find_soundfont().path == PACKAGE_SF  # what `make install` brought


def bad_soundfonts(tmp_path: Path) -> dict[str, Path]:
    truncated = tmp_path / "cut.sf2"
    truncated.write_bytes(PACKAGE_SF.read_bytes()[:100_000])
    text = tmp_path / "notes.sf2"
    text.write_text("not a soundfont\n")
    return {"missing": tmp_path / "nope.sf2", "truncated": truncated, "not a soundfont": text}


@pytest.mark.parametrize("kind", ["missing", "truncated", "not a soundfont"])
def test_a_bad_soundfont_is_one_line(kind, tmp_path, capsys):
    midi = tmp_path / "a.mid"
    make_midi([(0, 0, 60, 0, 1)]).save(midi)
    code, _, err = run_cli(["render", str(midi), "--soundfont", str(bad_soundfonts(tmp_path)[kind])], capsys)
    assert code == 2 and err.startswith("error: --soundfont ") and len(err.strip().splitlines()) == 1, err
    assert {"missing": "no such file", "truncated": "truncated", "not a soundfont": "not a SoundFont"}[kind] in err
    assert not list(tmp_path.glob("a.mp3*")) and not list(tmp_path.glob(".a.mp3*"))


@pytest.mark.parametrize("synth", SYNTHS)
def test_a_soundfont_whose_header_is_right_but_body_is_not_is_one_line(synth, tmp_path, capfd):
    body = b"sfbk" + b"LIST" + (20).to_bytes(4, "little") + b"junk" * 5
    bad = tmp_path / "bad.sf2"
    bad.write_bytes(b"RIFF" + len(body).to_bytes(4, "little") + body)
    midi = tmp_path / "a.mid"
    make_midi([(0, 0, 60, 0, 1)]).save(midi)
    code, _, err = run_cli(["render", str(midi), "--soundfont", str(bad), "--synth", synth], capfd)
    assert code == 2 and err.startswith("error: ") and "could not load the soundfont" in err, err
    assert len(err.strip().splitlines()) == 1, err  # the C library's own messages are kept off the terminal


@pytest.mark.parametrize(
    ("notes", "message"),
    [([], "has no notes"), ([(0, 19, 60, 0.0, 600.0)], "longer than the 360 s audio limit")],
    ids=["no-notes", "10-minute-note"],
)
def test_music_that_cannot_be_rendered_is_one_line(notes, message, tmp_path, capsys):
    midi = tmp_path / "a.mid"
    make_midi(notes).save(midi)
    code, _, err = run_cli(["render", str(midi)], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert [p.name for p in tmp_path.iterdir()] == ["a.mid"]


def test_unwritable_output_is_one_line(tmp_path, capsys):
    midi = tmp_path / "a.mid"
    make_midi([(0, 0, 60, 0, 0.5)]).save(midi)
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run_cli(["render", str(midi), "-o", str(blocker / "x.mp3")], capsys)
    assert code == 2 and err.startswith("error: cannot write in ") and len(err.strip().splitlines()) == 1, err


def test_render_a_folder_and_refuse_to_overwrite(tmp_path, capsys):
    for name in ("a", "b"):
        make_midi([(0, 0, 60, 0, 0.5)]).save(tmp_path / f"{name}.mid")
    code, out, err = run_cli(["render", str(tmp_path), "--format", "flac"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.glob("*.flac")) == ["a.flac", "b.flac"] and out.count("wrote") == 2
    code, _, err = run_cli(["render", str(tmp_path), "--format", "flac"], capsys)
    assert code == 2 and "already exists; use --force" in err


def test_the_output_name_picks_the_format_unless_they_disagree(tmp_path, capsys):
    midi = tmp_path / "a.mid"
    make_midi([(0, 0, 60, 0, 0.5)]).save(midi)
    code, out, err = run_cli(["render", str(midi), "-o", str(tmp_path / "x.flac"), "--json"], capsys)
    assert code == 0 and soundfile.info(tmp_path / "x.flac").format == "FLAC", err
    assert json.loads(out)["format"] == "flac" and json.loads(out)["sample_rate"] == RATE
    code, _, err = run_cli(["render", str(midi), "-o", str(tmp_path / "y.flac"), "--format", "ogg"], capsys)
    assert code == 2 and "named .flac but --format ogg was asked for" in err and not (tmp_path / "y.flac").exists()


def test_the_render_phase_shows_on_a_terminal(monkeypatch, tmp_path):
    from midillm_lite.cli import progress

    monkeypatch.setattr(progress, "is_terminal", lambda stream: True)
    shown = []
    with progress.AudioProgress(enabled=True) as display:
        monkeypatch.setattr(display.live, "update", lambda text, refresh: shown.append(text))
        display.update(2, 4, tmp_path / "gen_2.mp3", 0.0)
        display.update(2, 4, tmp_path / "gen_2.mp3", 1.0)
    assert shown == ["rendering audio 2 of 4: gen_2.mp3, 0%", "rendering audio 2 of 4: gen_2.mp3, 100%"]
    monkeypatch.setattr(progress, "is_terminal", lambda stream: False)
    with progress.AudioProgress(enabled=True) as display:
        assert display.live is None  # off a terminal: nothing drawn


def test_a_stop_request_mid_render_leaves_nothing(tmp_path):
    calls = []
    renderer = prepare(AudioSettings("mp3", PACKAGE_SF))
    with pytest.raises(RenderStopped):
        renderer.render(sixteen(), tmp_path / "x.mp3", stop=lambda: calls.append(1) or len(calls) > 3)
    assert list(tmp_path.iterdir()) == []


def test_models_says_which_soundfont(capsys, monkeypatch):
    monkeypatch.setenv(sflookup.ENV_VAR, str(PACKAGE_SF))
    code, out, _ = run_cli(["models"], capsys)
    assert code == 0 and f"with {PACKAGE_SF} (from $MIDILLM_SOUNDFONT)" in out


# --- gen ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tiny_gguf) -> str:
    return str(tiny_gguf())


@pytest.fixture(autouse=True)
def audio_by_default(monkeypatch):
    monkeypatch.delenv("MIDILLM_AUDIO", raising=False)  # tests/conftest.py turns gen's audio off for other tests


FAST = ["-n", "2", "--max-tokens", "45", "--seconds", "20", "--threads", "2", "--quiet", "--seed", "5", "--no-png"]


def test_gen_renders_audio_beside_each_midi(model, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(sflookup.ENV_VAR, str(PACKAGE_SF))
    out = tmp_path / "run"
    code, _, err = run_cli(["gen", "A march", "-m", model, *FAST, "-o", str(out), "--audio", "ogg"], capsys)
    assert code == 0, err
    stats = json.loads((out / "generation_stats.json").read_text())
    for entry in stats["outputs"]:
        audio = entry["audio"]
        assert Path(audio["file"]) == Path(entry["file"]).with_suffix(".ogg")
        samples, rate = soundfile.read(audio["file"], always_2d=True)
        assert rate == audio["sample_rate"] == RATE and rms(samples) > 0.01
        assert abs(integrated_loudness(samples, rate) - -18) <= LOUDNESS_TOLERANCE_LU
        assert audio["soundfont"] == str(PACKAGE_SF) and len(audio["soundfont_sha256_prefix"]) == 16
        assert audio["synthesizer"].startswith(SYNTHS[0]) and abs(audio["loudness_lufs"] - -18) <= 0.5
    code, _, err = run_cli(["gen", "A march", "-m", model, *FAST, "-o", str(tmp_path / "b"), "--no-audio"], capsys)
    assert code == 0 and not list((tmp_path / "b").glob("*.ogg")) and list((tmp_path / "b").glob("*.mid"))
    monkeypatch.setenv("MIDILLM_AUDIO", "none")
    code, _, err = run_cli(["gen", "A march", "-m", model, *FAST, "-o", str(tmp_path / "c")], capsys)
    assert code == 0 and not list((tmp_path / "c").glob("*.mp3")) and list((tmp_path / "c").glob("*.mid"))


def test_gen_without_a_synthesizer_writes_midi_and_says_why_once(model, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(synths, "_available", lambda name: None)
    prompts = tmp_path / "p.txt"
    prompts.write_text("A march\nA march\n")
    args = ["gen", "--prompts-file", str(prompts), "-m", model, *FAST, "--seed", "1", "-o", str(tmp_path / "runs")]
    code, _, err = run_cli([a for a in args if a != "--quiet"], capsys)
    assert code == 0, err
    assert err.count("note: no audio: no SoundFont synthesizer is installed; run `make install`") == 1, err
    assert len(list((tmp_path / "runs").rglob("gen_*.mid"))) == 4 and not list((tmp_path / "runs").rglob("*.mp3"))


def test_a_signal_while_rendering_skips_the_rest_cleanly(model, tmp_path, capsys, monkeypatch):
    real = synths.render_messages

    def render_then_signal(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # the Ctrl-C of a person waiting on the audio
        return real(*args, **kwargs)

    monkeypatch.setattr(synths, "render_messages", render_then_signal)
    monkeypatch.setattr("midillm_lite.audio.render.render_messages", render_then_signal)
    out = tmp_path / "run"
    code, _, err = run_cli(["gen", "A march", "-m", model, *FAST, "-o", str(out)], capsys)
    assert code == 130 and "audio stopped by a signal: 2 of 2 outputs not rendered" in err, err
    assert sorted(p.name for p in out.iterdir()) == [
        "gen_1.mid", "gen_1_tokens.txt", "gen_2.mid", "gen_2_tokens.txt", "generation_stats.json", "prompt.txt",
    ]  # fmt: skip
    assert "skipped" in json.loads((out / "generation_stats.json").read_text())["audio"]


def test_gen_refuses_a_bad_soundfont_before_loading_the_model(tmp_path, capsys):
    bad = bad_soundfonts(tmp_path)["not a soundfont"]
    code, _, err = run_cli(["gen", "x", "-m", str(tmp_path / "absent.gguf"), "--soundfont", str(bad)], capsys)
    assert code == 2 and "not a SoundFont" in err
