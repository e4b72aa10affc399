"""Piano rolls: where notes land in the picture, drums apart, legend colours, the `plot` verb and its bad input."""

from __future__ import annotations

import json
from pathlib import Path

import mido
import numpy as np
import pytest
from clirun import run_cli
from PIL import Image

from midillm_lite.amt.codec import Note
from midillm_lite.amt.grid import Grid
from midillm_lite.amt.midi import notes_to_midi
from midillm_lite.amt.vocab import DRUM_INSTRUMENT
from midillm_lite.pianoroll import MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, PALETTE, SPAN, WIDTH, draw_pianoroll

DATA = Path(__file__).parent / "data"


def pixels_of(image: Image.Image, colour) -> np.ndarray:
    """(y, x) of every pixel of exactly this colour."""
    return np.argwhere((np.asarray(image) == np.array(colour, dtype=np.uint8)).all(axis=2))


def test_notes_land_where_their_time_and_pitch_say():
    notes = [Note(0, 100, 0, 60), Note(500, 100, 40, 72)]  # piano 0-1 s at C4, violin 5-6 s at C5
    image = draw_pianoroll(notes, title="t")
    piano, violin = pixels_of(image, PALETTE[0]), pixels_of(image, PALETTE[1])
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    in_roll = piano[piano[:, 1] < WIDTH - MARGIN_RIGHT]  # the legend's swatch is the same colour
    assert in_roll[:, 1].min() == pytest.approx(MARGIN_LEFT, abs=2)
    assert in_roll[:, 1].max() == pytest.approx(MARGIN_LEFT + plot_w / 6, abs=3)  # 1 s of 6 (less the outline)
    violin_roll = violin[violin[:, 1] < WIDTH - MARGIN_RIGHT]
    assert violin_roll[:, 1].min() == pytest.approx(MARGIN_LEFT + plot_w * 5 / 6, abs=2)
    assert violin_roll[:, 0].max() < in_roll[:, 0].min()  # higher pitch, higher up
    assert len(pixels_of(image, PALETTE[2])) == 0  # two instruments, two colours


def test_drums_are_drawn_in_their_own_band_below():
    notes = [Note(0, 50, 0, 100), Note(0, 10, DRUM_INSTRUMENT, 36), Note(100, 10, DRUM_INSTRUMENT, 42)]
    image = draw_pianoroll(notes)
    piano, drums = pixels_of(image, PALETTE[0]), pixels_of(image, PALETTE[1])
    drums = drums[drums[:, 1] < WIDTH - MARGIN_RIGHT]
    piano = piano[piano[:, 1] < WIDTH - MARGIN_RIGHT]
    assert len(drums) and drums[:, 0].min() > piano[:, 0].max()
    assert len({*drums[:, 0].tolist()}) >= 2 * 6  # two drum keys, two rows


def test_bar_lines_only_with_a_grid():
    notes = [Note(0, 800, 0, 60)]
    bar = (170, 176, 190)
    assert len(pixels_of(draw_pianoroll(notes), bar)) == 0
    with_grid = pixels_of(draw_pianoroll(notes, grid=Grid(120, (4, 4))), bar)  # 8 s: bars at 0, 2, 4, 6, 8 s
    assert len({*with_grid[:, 1].tolist()}) == 5


def test_the_rewritten_span_is_shaded_behind_the_notes():
    notes = [Note(0, 1000, 0, 60)]  # 10 s
    shade = pixels_of(draw_pianoroll(notes, span=(200, 500)), SPAN)
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    assert shade[:, 1].min() == pytest.approx(MARGIN_LEFT + plot_w * 0.2, abs=1)
    assert shade[:, 1].max() == pytest.approx(MARGIN_LEFT + plot_w * 0.5, abs=1)
    assert len(pixels_of(draw_pianoroll(notes), SPAN)) == 0


@pytest.mark.parametrize("notes", [[], [Note(0, 60_000, 0, 60)], [Note(0, 0, DRUM_INSTRUMENT, 36)]],
                         ids=["no notes", "one ten-minute note", "drums only"])  # fmt: skip
def test_degenerate_music_still_draws(notes, tmp_path, capsys):
    path = tmp_path / "in.mid"
    notes_to_midi(notes).midi.save(path)
    code, out, err = run_cli(["plot", str(path)], capsys)
    assert code == 0, err
    assert Image.open(tmp_path / "in.png").size[0] == WIDTH and "wrote" in out


def test_plot_a_folder_and_refuse_to_overwrite(tmp_path, capsys):
    for name in ("a.mid", "b.mid"):
        notes_to_midi([Note(0, 50, 0, 60)]).midi.save(tmp_path / name)
    assert run_cli(["plot", str(tmp_path)], capsys)[0] == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["a.png", "b.png"]
    code, _, err = run_cli(["plot", str(tmp_path / "a.mid")], capsys)
    assert code == 2 and "--force" in err and err.count("\n") == 1


@pytest.mark.parametrize("content", [b"", b"MThd\x00\x00", b"not midi at all"], ids=["empty", "truncated", "text"])
def test_bad_midi_is_one_error_line_and_no_png(content, tmp_path, capsys):
    path = tmp_path / "bad.mid"
    path.write_bytes(content)
    code, _, err = run_cli(["plot", str(path)], capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert not list(tmp_path.glob("*.png*"))


def test_unwritable_output_is_one_error_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")  # unwritable even for root
    code, _, err = run_cli(["plot", str(DATA / "strawberry.mid"), "-o", str(blocker / "x.png")], capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1


def test_the_title_is_the_prompt_and_a_real_file_draws_every_instrument(tmp_path):
    midi = mido.MidiFile(DATA / "strawberry.mid")
    from midillm_lite.pianoroll import plot_midi

    path = plot_midi(midi, tmp_path / "s.png", title="A prompt")
    image = Image.open(path).convert("RGB")
    for colour in PALETTE[:13]:  # strawberry.mid has 13 instruments (drums included)
        assert len(pixels_of(image, colour)), colour
    assert len(pixels_of(image.crop((0, 0, WIDTH, MARGIN_TOP)), (30, 30, 30)))  # title text drawn


@pytest.fixture(scope="module")
def model(tiny_gguf) -> str:
    return str(tiny_gguf())


@pytest.mark.slow
def test_gen_draws_a_roll_per_output_unless_told_not_to(model, tmp_path, capsys):
    fast = ["-m", model, "-n", "2", "--max-tokens", "30", "--threads", "2", "--quiet"]
    code, _, err = run_cli(["gen", "A march", *fast, "-o", str(tmp_path / "a")], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "a").glob("*.png")) == ["gen_1.png", "gen_2.png"]
    stats = json.loads((tmp_path / "a" / "generation_stats.json").read_text())
    assert [Path(o["png"]).name for o in stats["outputs"]] == ["gen_1.png", "gen_2.png"]
    code, _, err = run_cli(["gen", "A march", *fast, "-o", str(tmp_path / "b"), "--no-png"], capsys)
    assert code == 0, err
    assert not list((tmp_path / "b").glob("*.png")) and list((tmp_path / "b").glob("*.mid"))
