"""Piano-roll pictures of notes: one PNG per output (`gen`) or MIDI file (`plot`), drawn with Pillow alone.

Why Pillow and not matplotlib (measured on this machine, Python 3.11, fresh venv): Pillow imports in about 0.1 s and
installs 22 MB (wheels for Linux x86-64/aarch64, macOS, Windows, a Raspberry Pi included); matplotlib.pyplot imports
in 1-2.7 s and installs about 96 MB with its dependencies (fontTools, kiwisolver, contourpy, pyparsing, dateutil,
and Pillow itself). A piano roll is rectangles, lines and text, which Pillow draws directly.

The picture: melodic notes by pitch (a row per semitone, C's labelled), drums in their own band below (a row per
drum key used), one colour per instrument with a legend of GM names, a seconds axis, bar lines when the grid is
known, the prompt as title.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import mido
from PIL import Image, ImageDraw, ImageFont

from .amt import gm
from .amt.codec import Note
from .amt.grid import Grid
from .amt.midi import load_midi_file, midi_to_notes
from .amt.vocab import DRUM_INSTRUMENT, TIME_RESOLUTION
from .errors import UserError
from .fsutil import atomic_path, check_writable_target

WIDTH = 1600
MARGIN_LEFT = 56  # pitch labels
MARGIN_RIGHT = 250  # legend
MARGIN_TOP = 48  # title
MARGIN_BOTTOM = 40  # seconds axis
ROW_PX = 5  # one semitone
DRUM_ROW_PX = 8
DRUM_HIT_PX = 4  # drum notes are hits: drawn this wide whatever their duration
DRUM_GAP_PX = 14
PITCH_PAD = 2  # semitones of room above and below the notes
MIN_PITCH_ROWS = 24
FONT_PX = 14
TITLE_PX = 18
SECOND_STEPS = (1, 2, 5, 10, 15, 20, 30, 60)  # axis tick spacings, seconds
MAX_AXIS_TICKS = 16
MIN_BAR_PX = 6  # closer bar lines than this are left out (they would grey the picture)
OCTAVE = 12
MIDDLE_C_OCTAVE = -1  # MIDI 60 is C4
BACKGROUND = (255, 255, 255)
PANEL = (248, 248, 250)
SPAN = (255, 244, 214)  # behind the span that infilling or accompaniment wrote: where the new notes are
GRID_LINE = (215, 218, 224)
BAR_LINE = (170, 176, 190)
TEXT = (30, 30, 30)
# Sixteen distinct colours (Tableau 10 and six more): instruments in order of first appearance.
PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (57, 59, 121), (173, 73, 74),
    (99, 121, 57), (206, 109, 189), (0, 0, 0), (140, 162, 82),
)  # fmt: skip
PNG_SUFFIX = ".png"


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled scalable font (needs FreeType, in every wheel)
    except (OSError, TypeError):  # a Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def draw_pianoroll(
    notes: Sequence[Note], *, grid: Grid | None = None, title: str = "", span: tuple[int, int] | None = None
) -> Image.Image:
    """The piano roll of notes (AMT units) as an RGB image; `span` (ticks) is shaded behind the notes."""
    melodic = [n for n in notes if n.instrument != DRUM_INSTRUMENT]
    drums = [n for n in notes if n.instrument == DRUM_INSTRUMENT]
    low, high = _pitch_span(melodic)
    drum_keys = sorted({n.pitch for n in drums}, reverse=True)
    roll_h = (high - low + 1) * ROW_PX if melodic or not drums else 0
    drums_h = len(drum_keys) * DRUM_ROW_PX
    height = MARGIN_TOP + roll_h + (DRUM_GAP_PX if roll_h and drums_h else 0) + drums_h + MARGIN_BOTTOM
    image = Image.new("RGB", (WIDTH, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font, title_font = _font(FONT_PX), _font(TITLE_PX)
    seconds = max([n.end for n in notes] + [TIME_RESOLUTION]) / TIME_RESOLUTION
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT

    def x_of(ticks: float) -> float:
        return MARGIN_LEFT + plot_w * ticks / TIME_RESOLUTION / seconds

    roll_top = MARGIN_TOP
    drums_top = roll_top + roll_h + (DRUM_GAP_PX if roll_h and drums_h else 0)
    bottom = drums_top + drums_h
    if roll_h:
        draw.rectangle([MARGIN_LEFT, roll_top, MARGIN_LEFT + plot_w, roll_top + roll_h - 1], fill=PANEL)
        for pitch in range(low, high + 1):
            if pitch % OCTAVE == 0:
                y = roll_top + (high - pitch + 1) * ROW_PX - 1
                draw.line([MARGIN_LEFT, y, MARGIN_LEFT + plot_w, y], fill=GRID_LINE)
                draw.text((MARGIN_LEFT - 6, y), f"C{pitch // OCTAVE + MIDDLE_C_OCTAVE}", fill=TEXT, font=font,
                          anchor="rb")  # fmt: skip
    if drums_h:
        draw.rectangle([MARGIN_LEFT, drums_top, MARGIN_LEFT + plot_w, bottom - 1], fill=PANEL)
        draw.text((MARGIN_LEFT - 6, (drums_top + bottom) / 2), "Drums", fill=TEXT, font=font, anchor="rm")
    if span is not None:
        draw.rectangle([x_of(span[0]), MARGIN_TOP, min(x_of(span[1]), MARGIN_LEFT + plot_w), bottom - 1], fill=SPAN)
    _bar_lines(draw, grid, seconds, x_of, MARGIN_TOP, bottom)
    colours = _colours(notes)
    for n in melodic:
        y = roll_top + (high - n.pitch) * ROW_PX
        _note(draw, x_of(n.onset), x_of(n.end), y, ROW_PX, colours[n.instrument])
    for n in drums:
        y = drums_top + drum_keys.index(n.pitch) * DRUM_ROW_PX
        _note(draw, x_of(n.onset), x_of(n.onset) + DRUM_HIT_PX, y, DRUM_ROW_PX, colours[n.instrument])
    _axis(draw, seconds, x_of, bottom, font)
    _legend(draw, colours, font)
    draw.text((MARGIN_LEFT, MARGIN_TOP / 2), _fit(draw, title, title_font, WIDTH - 2 * MARGIN_LEFT), fill=TEXT,
              font=title_font, anchor="lm")  # fmt: skip
    return image


def _pitch_span(melodic: Sequence[Note]) -> tuple[int, int]:
    if not melodic:
        return 60 - MIN_PITCH_ROWS // 2, 60 + MIN_PITCH_ROWS // 2 - 1
    low = max(0, min(n.pitch for n in melodic) - PITCH_PAD)
    high = min(127, max(n.pitch for n in melodic) + PITCH_PAD)
    missing = MIN_PITCH_ROWS - (high - low + 1)
    if missing > 0:
        low, high = max(0, low - missing // 2), min(127, high + missing - missing // 2)
    return low, high


def _colours(notes: Sequence[Note]) -> dict[int, tuple[int, int, int]]:
    colours: dict[int, tuple[int, int, int]] = {}
    for n in sorted(notes, key=lambda n: n.onset):
        if n.instrument not in colours:
            colours[n.instrument] = PALETTE[len(colours) % len(PALETTE)]
    return colours


def _note(draw: ImageDraw.ImageDraw, x0: float, x1: float, y: float, h: int, colour) -> None:
    edge = tuple(c * 2 // 3 for c in colour)
    draw.rectangle([x0, y, max(x1 - 1, x0 + 1), y + h - 1], fill=colour, outline=edge)


def _bar_lines(draw, grid: Grid | None, seconds: float, x_of, top: int, bottom: int) -> None:
    if grid is None:
        return
    bar = grid.bar_seconds()
    if x_of(bar * TIME_RESOLUTION) - x_of(0) < MIN_BAR_PX:
        return
    count = int(seconds / bar) + 1
    for k in range(count):
        x = x_of(k * bar * TIME_RESOLUTION)
        draw.line([x, top, x, bottom - 1], fill=BAR_LINE)


def _axis(draw, seconds: float, x_of, y: int, font) -> None:
    step = next((s for s in SECOND_STEPS if seconds / s <= MAX_AXIS_TICKS), SECOND_STEPS[-1])
    draw.line([x_of(0), y, x_of(seconds * TIME_RESOLUTION), y], fill=TEXT)
    t = 0
    while t <= seconds:
        x = x_of(t * TIME_RESOLUTION)
        draw.line([x, y, x, y + 4], fill=TEXT)
        draw.text((x, y + 6), f"{t}", fill=TEXT, font=font, anchor="mt")
        t += step
    draw.text((x_of(seconds * TIME_RESOLUTION), y + 22), "seconds", fill=TEXT, font=font, anchor="rt")


def _legend(draw, colours: dict[int, tuple[int, int, int]], font) -> None:
    x = WIDTH - MARGIN_RIGHT + 16
    for row, (instrument, colour) in enumerate(colours.items()):
        y = MARGIN_TOP + row * (FONT_PX + 6)
        draw.rectangle([x, y + 2, x + 12, y + 14], fill=colour)
        draw.text((x + 18, y), gm.instrument_name(instrument), fill=TEXT, font=font)


def _fit(draw, text: str, font, width: int) -> str:
    """The text, cut with an ellipsis to fit `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


# --- files -------------------------------------------------------------------------------------


def save_pianoroll(
    notes: Sequence[Note],
    path: str | os.PathLike[str],
    *,
    grid: Grid | None = None,
    title: str = "",
    force: bool = True,
    span: tuple[int, int] | None = None,
) -> Path:
    """Draw and write a PNG atomically (never half-written under its final name)."""
    path = Path(path)
    image = draw_pianoroll(notes, grid=grid, title=title, span=span)
    with atomic_path(path, force=force) as tmp:
        image.save(tmp, format="PNG", optimize=True)
    return path


def plot_midi(
    midi: mido.MidiFile,
    path: str | os.PathLike[str],
    *,
    title: str = "",
    force: bool = True,
    span: tuple[int, int] | None = None,
) -> Path:
    """The piano roll of a MIDI file in memory (e.g. gen's output), with bar lines when it states one tempo."""
    try:
        notes = midi_to_notes(midi).notes
    except Exception as exc:  # a file mido parsed but cannot play back (a broken tempo, ...)
        raise UserError(f"{title or 'the MIDI file'} cannot be read for a piano roll ({type(exc).__name__})") from exc
    return save_pianoroll(notes, path, grid=grid_of(midi), title=title, force=force, span=span)


def grid_of(midi: mido.MidiFile) -> Grid | None:
    """The grid a MIDI file states, when it states one tempo (bar lines would lie under a tempo map)."""
    tempos = {m.tempo for track in midi.tracks for m in track if m.type == "set_tempo"}
    meters = [(m.numerator, m.denominator) for track in midi.tracks for m in track if m.type == "time_signature"]
    if len(tempos) > 1 or len(set(meters)) > 1:
        return None
    bpm = mido.tempo2bpm(tempos.pop()) if tempos else 120.0
    return Grid(bpm, meters[0] if meters else (4, 4))


def plot_file(
    midi_path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *, title: str | None = None,
    force: bool = False,
) -> Path:  # fmt: skip
    """A MIDI file's piano roll, next to it as NAME.png unless `out` says where."""
    midi_path = Path(midi_path)
    target = Path(out) if out is not None else midi_path.with_suffix(PNG_SUFFIX)
    check_writable_target(target, force=force)  # before any work: a taken name fails fast
    return plot_midi(load_midi_file(midi_path), target, title=title or midi_path.name, force=force)
