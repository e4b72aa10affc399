"""The demo training set: music21 corpus scores -> MIDI -> AMT events (our encoder) with captions; `make demo-data`.

Each score goes through music21's MIDI export and `midillm_lite.amt.midi` /
`codec`, the path any user MIDI takes. Parts become placeholder programs
(part index), so a rendering can re-orchestrate in note space; time scales
to the rendering's tempo. Pieces (not windows) are split into train and
held-out by a hash of their corpus path, so no held-out piece leaks. The
output is `dataset.npz` (token ids) plus `examples.jsonl` (captions and
provenance) and `stats.json`, deterministic for a given corpus and seed.

Every training window is autoregressive, and a share of them also has a copy
in AMT's anticipation mode (the prompt ends with ANTICIPATE; some notes become
controls, laid out by `midillm_lite.amt.anticipation`'s `pad` and
`anticipate`, the functions the runtime's infilling uses), with AMT's
augmentations after AMT's (`augment`); held-out windows stay autoregressive.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import multiprocessing
import random
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import mido
import numpy as np

from midillm_lite.amt import anticipation, gm, vocab
from midillm_lite.amt.codec import Note, encode_notes
from midillm_lite.amt.midi import midi_to_notes

from .captions import PieceInfo, Rendering, choose_rendering

log = logging.getLogger("demo.data")

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "demo" / "data"
VOCAB_GGUF = ROOT / "devkit" / "data" / "ggml-vocab-llama-bpe.gguf"  # the Llama-3 BPE vocabulary llama.cpp ships
MAX_NOTES = vocab.DEFAULT_MAX_TOKENS // vocab.TOKENS_PER_NOTE  # 682: one window fills one default generation
MIN_NOTES = 24
HELD_OUT_EVERY = 20  # one piece in 20 is held out
# CPU seconds, not wall-clock: a busy machine must not drop a piece (a wall-clock limit dropped one under load,
# making the dataset depend on what else ran); no piece takes near this long on a quiet one.
PARSE_TIMEOUT_S = 90
RENDERINGS = 3  # renderings of each training piece: the score's tempo, then two drawn ones

# --- anticipation-mode windows (AMT's tokenize.py) ---------------------------------------------------------------
# AMT's tokenizer writes each piece 10 times, each copy drawn from its augmentations: 1 plain (autoregressive),
# 1 span, 4 random and 4 instrument. The demo keeps every training window autoregressive, exactly the rows the
# autoregressive-only demo was trained on, and adds an anticipated copy of a share of them (ANTICIPATION_SHARE), after
# all the autoregressive rows so that those keep their indices. `make demo-model` trains on the autoregressive rows
# first, then on both (demo/train.py).
ANTICIPATION_SHARE = 1.0
AUTOREGRESSIVE, SPAN, RANDOM, INSTRUMENT = "autoregressive", "span", "random", "instrument"
# The anticipated copies weigh span and instrument controls above AMT's random ones: those are the two shapes the
# runtime asks for (`gen --infill` is a span, `--accompany` instruments); a first retrain with AMT's 1:4:4 learned
# neither, and training on fewer random copies made the instrument controls help (BENCHMARKS.md, "Demo model:
# anticipation retrains"). AMT keeps a one-instrument piece drawn for the instrument augmentation without
# controls (rare on Lakh MIDI); here most windows are one instrument (solo and organ renderings, tunes), so they take
# the span augmentation instead.
ONE_INSTRUMENT = "span, drawn as instrument with one instrument"
AUGMENTATIONS = ((SPAN, 4), (RANDOM, 1), (INSTRUMENT, 4))
SPAN_TICKS = vocab.DELTA  # AMT's spans last DELTA (5 s)
# AMT's spans recur through the piece (on average 20 s after the last one ended), and the 5 s of each have no events,
# only REST: trained on that, the demo learnt that controls announce a gap, and wrote sparser music before them
# (measured on the span's last 5 s of held-out infill requests: an expected arrival step of 28 ticks with the
# controls, 20 without, 19 in the data). Here a span starts at a random note and the window ends with it, the shape
# `gen --infill` lays out: the events up to the span, the span's notes as controls, nothing after (the same
# measure then: 23 ticks with the controls, 20 without; BENCHMARKS.md, "Demo model: anticipation retrains").
SPAN_FROM = 0.25  # the span starts at a note drawn from those past the window's first quarter
# A span copy leaves only its last 5 s of events beside controls (the rest of the window comes before the first
# control): 12% of the span copies' notes. Each span draw also makes SHORT_SPANS copies cut to a few seconds of events
# before a span of their own (SHORT_HISTORY ticks), in which a third to a half of the events see controls. With two,
# stages on the span copies alone (`demo.train --modes span`) brought infill's controls from hurting to helping, but
# the autoregressive music lost instrument words; six give a stage on all windows about as many tokens beside
# controls (BENCHMARKS.md, "Demo model: anticipation retrains", fifth and sixth rounds).
SHORT_SPANS = 6
SHORT_SPAN = "span, cut to the seconds before it"
SHORT_HISTORY = (2 * SPAN_TICKS, 4 * SPAN_TICKS)
RANDOM_RATES = 10  # AMT's ANTICIPATION_RATES: each note is a control with probability r/10, r drawn from 1..9
MAX_TOKENS = vocab.DEFAULT_MAX_TOKENS  # anticipated windows (REST padding added) are cut to a default generation

# (collection folder, file suffixes, files taken, scores taken per file, genre words, composer)
SOURCES = (
    ("bach", (".mxl",), 410, 1, "Baroque chorale", "J. S. Bach"),
    ("palestrina", (".krn",), 260, 1, "Renaissance mass movement", "Palestrina"),
    ("monteverdi", (".mxl",), 49, 1, "Italian madrigal", "Monteverdi"),
    ("trecento", (".xml",), 60, 1, "medieval Italian song", None),
    ("haydn", (".mxl",), 9, 1, "Classical string quartet movement", "Haydn"),
    ("mozart", (".mxl",), 16, 1, "Classical string quartet movement", "Mozart"),
    ("beethoven", (".mxl",), 8, 1, "string quartet movement", "Beethoven"),
    ("ryansMammoth", (".abc",), 260, 1, "fiddle tune", None),
    ("oneills1850", (".abc",), 8, 40, "Irish folk tune", None),
    ("essenFolksong", (".abc",), 8, 40, "European folk song", None),
    ("airdsAirs", (".abc",), 6, 20, "Scottish air", None),
)


@dataclass
class ParsedPiece:
    piece_id: str  # corpus-relative path, plus the opus number for collections
    info: PieceInfo
    notes: np.ndarray  # (n, 4) int32: onset, duration, part, pitch (part index as placeholder program)


def corpus_files(seed: int) -> list[tuple[Path, tuple]]:
    """The files each source takes: a seeded sample of its sorted paths."""
    from music21 import corpus

    paths = corpus.getPaths()
    chosen: list[tuple[Path, tuple]] = []
    for source in SOURCES:
        folder, suffixes, take = source[0], source[1], source[2]
        files = sorted(p for p in paths if folder in p.parts and p.suffix in suffixes)
        random.Random(f"{seed}:{folder}").shuffle(files)
        chosen += [(p, source) for p in sorted(files[:take])]
    return chosen


def _key_text(score) -> str | None:
    try:
        key = score.analyze("key")
    except Exception:  # music21's analysis fails on some unpitched or empty scores
        return None
    return f"{key.tonic.name.replace('-', 'b')} {key.mode}"


def _first(score, cls):
    found = score.recurse().getElementsByClass(cls)
    return found.first() if found else None


def _placeholder_programs(midi: mido.MidiFile) -> int:
    """Give part track k program k on its own channel; returns the part count (music21 writes one track a part)."""
    channels = list(gm.MELODIC_CHANNELS)
    parts = 0
    for track in midi.tracks:
        if not any(m.type == "note_on" for m in track):
            continue  # the conductor track
        if parts >= len(channels):
            raise ValueError("more parts than MIDI channels")
        channel = channels[parts]
        kept = [m for m in track if m.type != "program_change"]
        for m in kept:
            if hasattr(m, "channel"):
                m.channel = channel
        track[:] = [mido.Message("program_change", channel=channel, program=parts, time=0), *kept]
        parts += 1
    return parts


def score_to_piece(score, piece_id: str, source: tuple) -> ParsedPiece | None:
    from music21 import meter, tempo
    from music21.midi import translate

    _folder, _suffixes, _take, _per_file, genre, composer = source
    raw = translate.streamToMidiFile(score).writestr()
    midi = mido.MidiFile(file=io.BytesIO(raw))
    voices = _placeholder_programs(midi)
    notes = sorted(midi_to_notes(midi).notes)
    if voices == 0 or len(notes) < MIN_NOTES:
        return None
    mark = _first(score, tempo.MetronomeMark)
    bpm = float(mark.getQuarterBPM()) if mark is not None and mark.number else 120.0  # music21 plays 120 without one
    signature = _first(score, meter.TimeSignature)
    title = (score.metadata.title if score.metadata else None) or Path(piece_id).stem
    info = PieceInfo(
        collection=source[0], genre=genre, composer=composer, title=str(title), key=_key_text(score),
        meter=signature.ratioString if signature is not None else None, bpm=round(bpm, 1), voices=voices,
    )  # fmt: skip
    array = np.array([(n.onset, n.duration, n.instrument, n.pitch) for n in notes], dtype=np.int32)
    return ParsedPiece(piece_id, info, array)


def _alarm(_signum, _frame):
    raise TimeoutError(f"parse took over {PARSE_TIMEOUT_S} CPU seconds")


def parse_file(job: tuple[Path, tuple]) -> list[ParsedPiece]:
    """All pieces of one corpus file (an ABC collection holds many); a file music21 cannot read gives none."""
    from music21 import converter, stream

    path, source = job
    relative = "/".join(path.parts[path.parts.index("corpus") + 1 :])
    signal.signal(signal.SIGPROF, _alarm)
    signal.setitimer(signal.ITIMER_PROF, PARSE_TIMEOUT_S)  # this worker's CPU time
    pieces: list[ParsedPiece] = []
    try:
        parsed = converter.parse(path)
        scores = list(parsed.scores)[: source[3]] if isinstance(parsed, stream.Opus) else [parsed]
        for number, score in enumerate(scores):
            piece_id = f"{relative}#{number}" if len(scores) > 1 else relative
            try:
                piece = score_to_piece(score, piece_id, source)
            except TimeoutError:
                raise
            except Exception as exc:  # music21 raises many types on odd scores; skip the score, keep the file
                log.warning("skipped %s: %s", piece_id, exc)
                continue
            if piece is not None:
                pieces.append(piece)
    except Exception as exc:  # a file music21 cannot parse at all (or one over the time limit)
        log.warning("skipped %s: %s", relative, exc)
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
    return pieces


def is_held_out(piece_id: str) -> bool:
    digest = hashlib.sha256(piece_id.encode()).digest()
    return int.from_bytes(digest[:4], "little") % HELD_OUT_EVERY == 0


def render_notes(notes: np.ndarray, rendering: Rendering) -> list[Note]:
    """The piece's notes with the rendering's programs and time scale."""
    scale = rendering.time_scale
    out = [
        Note(round(onset * scale), max(1, round(duration * scale)), rendering.ensemble.program(part), pitch)
        for onset, duration, part, pitch in notes.tolist()
    ]
    return sorted(out)


def windows(notes: list[Note]) -> list[list[Note]]:
    """Consecutive windows of at most MAX_NOTES notes and MAX_TIME ticks, each shifted to start at 0."""
    out, start = [], 0
    while len(notes) - start >= MIN_NOTES:
        origin = notes[start].onset
        end = start
        while end < len(notes) and end - start < MAX_NOTES and notes[end].onset - origin < vocab.MAX_TIME:
            end += 1
        out.append([Note(n.onset - origin, n.duration, n.instrument, n.pitch) for n in notes[start:end]])
        start = end
    return out


def span_controls(notes: list[Note], rng: random.Random) -> tuple[list[Note], list[bool], int]:
    """A SPAN_TICKS span from a random note on becomes controls, and the window ends with it: (notes up to the
    span's end, which of them are controls, the span's start tick)."""
    start = notes[rng.randrange(int(len(notes) * SPAN_FROM), len(notes))].onset
    kept = [n for n in notes if n.onset < start + SPAN_TICKS]
    return kept, [n.onset >= start for n in kept], start


def short_span_controls(notes: list[Note], rng: random.Random) -> tuple[list[Note], list[bool], int]:
    """As `span_controls`, the window cut to start SHORT_HISTORY ticks before the span (shifted to start at 0)."""
    kept, mask, start = span_controls(notes, rng)
    cut = start - rng.randrange(*SHORT_HISTORY)
    kept, mask = zip(*[(n, c) for n, c in zip(kept, mask, strict=True) if n.onset >= cut], strict=True)
    origin = kept[0].onset
    return [Note(n.onset - origin, n.duration, n.instrument, n.pitch) for n in kept], list(mask), start - origin


def random_controls(notes: list[Note], rng: random.Random) -> list[bool]:
    """AMT's `extract_random`: each note a control with probability r/10, r drawn once from 1..9."""
    rate = rng.randrange(1, RANDOM_RATES) / RANDOM_RATES
    return [rng.random() < rate for _ in notes]


def instrument_controls(notes: list[Note], rng: random.Random) -> list[bool] | None:
    """AMT's instrument augmentation: at least one instrument but not all become controls (None with only one)."""
    instruments = sorted({n.instrument for n in notes})
    if len(instruments) < 2:
        return None
    chosen = rng.sample(instruments, 1 + rng.randrange(len(instruments) - 1))
    return anticipation.instrument_mask(notes, frozenset(chosen))


def anticipation_tokens(notes: list[Note], controls: list[bool], end_time: int | None = None) -> list[int]:
    """The AMT ids after ANTICIPATE, as AMT's tokenizer lays out a window: the events padded with REST to `end_time`
    (default the window's last onset), the controls interleaved `DELTA` ahead (`anticipation.pad`,
    `anticipation.anticipate`), then the controls no event reached."""
    events = encode_notes([n for n, c in zip(notes, controls, strict=True) if not c]).tokens
    control_ids = anticipation.control_tokens([n for n, c in zip(notes, controls, strict=True) if c])
    end_time = max(n.onset for n in notes) if end_time is None else end_time
    assert end_time < vocab.MAX_TIME, "window the notes first (`windows`)"  # REST past it would not be a time token
    tokens, left = anticipation.anticipate(anticipation.pad(events, end_time), control_ids)
    return (tokens + left)[:MAX_TOKENS]


def augment(notes: list[Note], rng: random.Random) -> list[tuple[str, list[int]]]:
    """[(augmentation, AMT ids after ANTICIPATE)]: the anticipated copies of a training window, one drawn from
    AUGMENTATIONS (and SHORT_SPANS short ones with a span); a copy is left out when the draw left no event to learn
    from (every note a control)."""
    kind = rng.choices([k for k, _ in AUGMENTATIONS], weights=[w for _, w in AUGMENTATIONS])[0]
    controls = None
    if kind == RANDOM:
        controls = random_controls(notes, rng)
    elif kind == INSTRUMENT:
        controls = instrument_controls(notes, rng)
    if controls is None:  # a span, or a one-instrument window drawn for the instrument augmentation
        kind = SPAN if kind == SPAN else ONE_INSTRUMENT
        copies = [(kind, *span_controls(notes, rng))]  # the events pad to the span's start, as infill's
        copies += [(SHORT_SPAN, *short_span_controls(notes, rng)) for _ in range(SHORT_SPANS)]
    else:
        copies = [(kind, notes, controls, None)]
    out = [(kind, anticipation_tokens(kept, mask, end)) for kind, kept, mask, end in copies]
    return [(kind, tokens) for kind, tokens in out if any(t < vocab.REST for t in tokens[2::3])]


def base_mode(mode: str) -> str:
    """The augmentation an examples.jsonl `mode` trains (a one-instrument window drawn as instrument, and a short
    span copy, are spans)."""
    return SPAN if mode in (ONE_INSTRUMENT, SHORT_SPAN) else mode


def stage_windows(ids: list[int], kinds: list[str], modes: frozenset[str] | None, repeat: dict[str, int]) -> list[int]:
    """A training stage's windows (`demo.train --modes/--repeat`): those whose base_mode is in `modes` (None: all),
    each of a `repeat` mode listed that many times."""
    return [i for i in ids if modes is None or kinds[i] in modes for _ in range(repeat.get(kinds[i], 1))]


class CaptionTokenizer:
    """Prompt ids exactly as `engine.build_prompt` makes them: BOS, system prompt + caption + " ", then
    AUTOREGRESS (or ANTICIPATE, as `build_prompt(..., anticipate=True)`)."""

    def __init__(self, vocab_gguf: Path = VOCAB_GGUF):
        import llama_cpp

        self._llama = llama_cpp.Llama(model_path=str(vocab_gguf), vocab_only=True, verbose=False)

    def prompt(self, caption: str, anticipate: bool = False) -> list[int]:
        text = (vocab.SYSTEM_PROMPT + caption + " ").encode()
        ids = self._llama.tokenize(text, add_bos=False, special=False)
        return [self._llama.token_bos(), *ids, vocab.MIDI_ANTICIPATE_ID if anticipate else vocab.MIDI_AUTOREGRESS_ID]


def build(out: Path, *, seed: int, renderings: int, workers: int, share: float = ANTICIPATION_SHARE) -> dict:
    start = time.monotonic()
    jobs = corpus_files(seed)
    log.info("parsing %d corpus files with %d workers", len(jobs), workers)
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pieces = [p for batch in pool.imap(parse_file, jobs, chunksize=4) for p in batch]
    parse_s = time.monotonic() - start
    tokenizer = CaptionTokenizer()
    prompts: list[list[int]] = []
    events: list[list[int]] = []
    records: list[dict] = []
    anticipated: list[tuple[list[int], list[int], dict]] = []  # appended after every autoregressive row
    for piece in pieces:
        held_out = is_held_out(piece.piece_id)
        rng = random.Random(f"{seed}:{piece.piece_id}")
        # Its own generator, so that the renderings and captions are the ones drawn without augmentation.
        augment_rng = random.Random(f"{seed}:{piece.piece_id}:anticipation")
        for r in range(1 if held_out else renderings):
            rendering = choose_rendering(piece.info, rng, original=r == 0)
            for w, window in enumerate(windows(render_notes(piece.notes, rendering))):
                record = {"piece": piece.piece_id, "collection": piece.info.collection, "window": w,
                          "split": "test" if held_out else "train", "caption": rendering.caption,
                          "ensemble": rendering.ensemble.name, "bpm": rendering.bpm}  # fmt: skip
                prompts.append(tokenizer.prompt(rendering.caption))
                events.append(encode_notes(window).tokens)
                records.append(record | {"mode": AUTOREGRESSIVE})
                if held_out or augment_rng.random() >= share:
                    continue
                anticipated += [(tokenizer.prompt(rendering.caption, anticipate=True), tokens, record | {"mode": mode})
                                for mode, tokens in augment(window, augment_rng)]  # fmt: skip
    for prompt, tokens, record in anticipated:
        prompts.append(prompt)
        events.append(tokens)
        records.append(record)
    out.mkdir(parents=True, exist_ok=True)
    _save(out, prompts, events, records)
    stats = _stats(pieces, records, events, parse_s, time.monotonic() - start, seed) | {
        "renderings": renderings,
        "anticipation": anticipation_stats(records, events, share),
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    (out / "pieces.jsonl").write_text(
        "".join(json.dumps({"piece": p.piece_id, **asdict(p.info)}) + "\n" for p in pieces)
    )
    return stats


def _save(out: Path, prompts: list[list[int]], events: list[list[int]], records: list[dict]) -> None:
    def flat(seqs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(s) for s in seqs])
        return np.fromiter((t for s in seqs for t in s), dtype=np.int32, count=int(offsets[-1])), offsets

    prompt_ids, prompt_offsets = flat(prompts)
    event_ids, event_offsets = flat(events)
    split = np.array([r["split"] == "test" for r in records], dtype=np.uint8)
    np.savez_compressed(out / "dataset.npz", prompt_ids=prompt_ids, prompt_offsets=prompt_offsets,
                        event_ids=event_ids, event_offsets=event_offsets, held_out=split)  # fmt: skip
    (out / "examples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def read_examples(folder: Path) -> list[dict]:
    """examples.jsonl's records (caption, provenance, augmentation `mode`), in dataset row order."""
    return [json.loads(line) for line in (folder / "examples.jsonl").read_text().splitlines()]


def anticipation_stats(records: list[dict], sequences: list[list[int]], share: float) -> dict:
    """How many training windows each augmentation made, and how their tokens divide into events, REST and
    controls (the card states the shares)."""
    modes: dict[str, dict[str, int]] = {}
    for record, seq in zip(records, sequences, strict=True):
        if record["split"] != "train":
            continue
        entry = modes.setdefault(record["mode"], {"windows": 0, "event_notes": 0, "rests": 0, "controls": 0})
        entry["windows"] += 1
        notes = seq[2::3]
        entry["controls"] += sum(t >= vocab.CONTROL_OFFSET for t in notes)
        entry["rests"] += sum(t == vocab.REST for t in notes)
        entry["event_notes"] += sum(t < vocab.REST for t in notes)
    return {"share": share, "augmentations": dict(AUGMENTATIONS), "span_from": SPAN_FROM,
            "span_seconds": SPAN_TICKS / vocab.TIME_RESOLUTION, "modes": modes}  # fmt: skip


def _stats(pieces, records, events, parse_s: float, total_s: float, seed: int) -> dict:
    by_split = {s: [i for i, r in enumerate(records) if r["split"] == s] for s in ("train", "test")}
    collections: dict[str, dict[str, int]] = {}
    for piece in pieces:
        entry = collections.setdefault(piece.info.collection, {"pieces": 0, "held_out": 0, "notes": 0})
        entry["pieces"] += 1
        entry["held_out"] += is_held_out(piece.piece_id)
        entry["notes"] += len(piece.notes)
    return {
        "seed": seed, "pieces": len(pieces), "held_out_pieces": sum(is_held_out(p.piece_id) for p in pieces),
        "examples": {s: len(ix) for s, ix in by_split.items()},
        "event_tokens": {s: int(sum(len(events[i]) for i in ix)) for s, ix in by_split.items()},
        "collections": collections, "parse_seconds": round(parse_s, 1), "total_seconds": round(total_s, 1),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--renderings", type=int, default=RENDERINGS, help="renderings of each training piece")
    parser.add_argument("--workers", type=int, default=max(1, multiprocessing.cpu_count()))
    parser.add_argument("--anticipation-share", type=float, default=ANTICIPATION_SHARE,
                        help="share of training windows that also get a copy in AMT anticipation mode")  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    stats = build(args.out, seed=args.seed, renderings=args.renderings, workers=args.workers,
                  share=args.anticipation_share)  # fmt: skip
    print(json.dumps({k: v for k, v in stats.items() if k != "collections"}))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
