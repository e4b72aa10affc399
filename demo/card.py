"""The demo model's card (`models/midillm-demo.md`), its plots, and the fidelity section of BENCHMARKS.md.

Every number comes from build/demo's stats.json, history.json and eval.json;
nothing here measures anything.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections import Counter
from datetime import date
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from midillm_lite.amt import gm, vocab
from midillm_lite.amt.codec import decode_tokens

from .data import (
    AUTOREGRESSIVE,
    INSTRUMENT,
    ONE_INSTRUMENT,
    RANDOM,
    RENDERINGS,
    ROOT,
    SHORT_HISTORY,
    SHORT_SPAN,
    SOURCES,
    SPAN,
)
from .data import OUT as DATA
from .evaluate import DEMO_PROMPT, DEMO_SECONDS, DENSITY_WINDOW_S, EVAL_JSON
from .export import SHIPPED
from .model import TIME_FEATURES
from .train import OUT as TRAIN_OUT

MODELS = ROOT / "models"
# What made the release a stage read back with `demo.train --init FILE.gguf` (its card at that commit; the file
# carries no history). The Makefile's DEMO_BASE_COMMIT names the same commit.
BASE_COMMIT = "7e8ce7a"
BASE_MINUTES = 37.7
BASE_RELEASE = (f"the first release's demo model, commit {BASE_COMMIT}: 1,100 steps in {BASE_MINUTES} min on 2 CPU"
                " cores with bf16 autocast, 7.8 M MIDI tokens of the autoregressive windows, peak learning rate"
                " 0.003")  # fmt: skip
CARD = MODELS / "midillm-demo.md"
LOSS_PNG = MODELS / "midillm-demo-loss.png"
ROLL_PNG = MODELS / "midillm-demo-pianoroll.png"
SECTION = "## Demo model: quantization fidelity"
WIDTH = 118
LEGEND_INSTRUMENTS = 6


def stages(history: dict) -> list[dict]:
    """The training stages in order (demo/train.py keeps the earlier ones of an `--init` run in "stages")."""
    return [*history.get("stages", []), history]


def loss_plot(history: dict, unigram: float, path: Path) -> None:
    steps, losses, held, boundaries, offset = [], [], [], [], 0
    for stage in stages(history):  # one curve: each stage's tokens counted on from the previous stage's
        steps += [(offset + r["tokens"]) / 1e6 for r in stage["train"]]
        losses += [r["loss"] for r in stage["train"]]
        held += [{**r, "tokens": offset + r["tokens"]} for r in stage["held_out"]]
        offset += stage["train"][-1]["tokens"]
        boundaries.append(offset / 1e6)
    window = 20
    smooth = [sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1])
              for i in range(len(losses))]  # fmt: skip
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, losses, color="#bbbbbb", linewidth=0.6, label="training batch (times unmasked)")
    ax.plot(steps, smooth, color="#1f77b4", label=f"training (mean of {window})")
    for k, x in enumerate(boundaries[:-1]):  # one legend entry however many stages
        ax.axvline(x, color="#888888", linestyle=":", label=None if k else "next training stage")
    ax.plot([r["tokens"] / 1e6 for r in held], [r["ce"] for r in held], "o-", color="#d62728", label="held-out subset")
    ax.axhline(unigram, color="#2ca02c", linestyle="--", label="per-slot unigram (held-out)")
    ax.set_xlabel("MIDI tokens seen (millions)")
    ax.set_ylabel("cross-entropy, nats per MIDI token (strict masks)")
    ax.set_ylim(0, max(unigram * 1.6, min(12, max(losses[:5] or [unigram]))))
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def piano_roll(rolls: list[tuple[str, list[int]]], path: Path) -> None:
    fig, axes = plt.subplots(len(rolls), 1, figsize=(11, 2.6 * len(rolls)), dpi=90, squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, (prompt, tokens) in zip(axes[:, 0], rolls, strict=True):
        notes = decode_tokens(tokens).notes
        counts = Counter(n.instrument for n in notes)
        shown = [i for i, _ in counts.most_common(LEGEND_INSTRUMENTS)]
        for n in notes:
            color = cmap(shown.index(n.instrument)) if n.instrument in shown else "#999999"
            ax.broken_barh([(n.onset / 100, max(n.duration, 1) / 100)], (n.pitch - 0.4, 0.8), color=color)
        handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(k)) for k in range(len(shown))]
        labels = [f"{gm.instrument_name(i)} ({counts[i]})" for i in shown]
        if len(counts) > len(shown):
            handles.append(plt.Rectangle((0, 0), 1, 1, color="#999999"))
            labels.append(f"{len(counts) - len(shown)} others ({sum(counts.values()) - sum(counts[i] for i in shown)})")
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, title="notes")
        ax.set_xlim(left=0)
        ax.set_title(prompt, fontsize=9)
        ax.set_ylabel("pitch")
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def card_text(stats: dict, history: dict, ev: dict) -> str:
    ce = ev["ce"]
    gain = ce["unigram"]["ce"] - ce["trained_f32"]["ce"]
    shape = history["shape"]
    fid = ev["fidelity"]
    fol = ev["following"]
    size_mib = SHIPPED.stat().st_size / 2**20
    lines = [
        "# midillm-demo-q8_0 — the bundled demo model",
        "",
        "A small text-to-MIDI model with MIDI-LLM's exact interface (Llama-3 tokenizer, the 183,286-token vocabulary",
        "with the AMT MIDI tokens at 128,256.., the same system prompt, AUTOREGRESS and ANTICIPATE), trained on this",
        "repository's build machine so that `midillm-lite gen` makes music on a fresh clone with no download.",
        "It is a demonstration of the pipeline, far below the published MIDI-LLM (1.4B parameters, trained on",
        "Lakh MIDI with MidiCaps captions): expect short-range musical texture that follows instrument and tempo",
        "words, not composed pieces. `midillm-lite models` says how to get MIDI-LLM itself.",
        "",
        "## Model",
        "",
        f"- Llama architecture: {shape['layers']} layers, hidden {shape['hidden']}, {shape['heads']} heads "
        f"({shape['kv_heads']} key/value heads), feed-forward {shape['ffn']}, RoPE theta {shape['rope_theta']:g}, "
        "tied input/output embedding.",
        f"- File: `{SHIPPED.name}`, Q8_0, {size_mib:.1f} MiB, converted from the exported Hugging Face folder by",
        "  `midillm-lite convert` (the stage users run).",
        training_bullet(history),
        "- Loss on the MIDI tokens only, each token scored against the candidates of its triplet slot (all",
        "  arrival times, durations, instrument-pitch). Arrival times are scored unmasked in training so the model",
        "  learns where the music is: trained under the strict mask (no time earlier than the latest onset), an",
        "  earlier run put 96% of its time mass before that floor and every full-length sample raced to the 100 s",
        "  ceiling. Evaluation figures below use the strict masks `gen` samples under.",
        "- Arrival-time rows are not free parameters: each of the 10,000 ticks' rows is one learned linear map of",
        f"  {TIME_FEATURES} fixed sinusoidal codes of the tick (materialised into the ordinary embedding at export, so",
        "  the file is a plain Llama). Late ticks are rare in the data; learned row by row they drifted away from the",
        '  often-seen early ones and the model could not put its time mass just after "now" everywhere.',
        "- Sampling: the model's metadata carries MIDI-LLM's defaults (temperature 1.0, top_p 0.98). It was trained",
        "  for strict mode (the default); `--free` lets it pick AMT tokens it never saw.",
        *anticipation_bullets(stats),
        "",
        "## Data (all public domain)",
        "",
        "Scores from the corpus that ships with the `music21` package (BSD-licensed package; the corpus holds",
        "public-domain works, see music21's corpus documentation), turned into MIDI by music21 and into AMT events by",
        "midillm-lite's own encoder (`make demo-data`, `demo/data.py`).",
        "",
        "| collection | genre words | pieces | held out | notes |",
        "|---|---|---:|---:|---:|",
    ]
    genres = {s[0]: s[4] for s in SOURCES}
    for name, c in stats["collections"].items():
        lines.append(f"| {name} | {genres.get(name, '')} | {c['pieces']} | {c['held_out']} | {c['notes']:,} |")
    lines += [
        "",
        f"{stats['pieces']} pieces, {stats['held_out_pieces']} held out by piece (a hash of the corpus path; no",
        f"window of a held-out piece is trained on). Training pieces are rendered {_renderings(stats)} times: once at",
        "the score's",
        "tempo, then at random slow / moderate / fast tempi, each with a General MIDI ensemble drawn for the number of",
        "voices (solo piano, string quartet, string orchestra, woodwind quartet, brass ensemble, choir, church organ,",
        "harpsichord, guitar, harp, flute and strings; one-voice tunes get a solo instrument). Windows of at most 682",
        f"notes (one default generation) and 100 s. Examples: {stats['examples']['train']:,} train,",
        f"{stats['examples']['test']:,} held out; MIDI tokens: {stats['event_tokens']['train']:,} train,",
        f"{stats['event_tokens']['test']:,} held out.",
        "",
        "Captions are written from what is known or computed: collection/genre, composer, key and mode (music21's",
        "key analysis), meter, tempo word with BPM, and the instruments of the rendering, in MidiCaps-like sentences,",
        "with facts dropped at random so short prompts work. Example: `A slow Baroque chorale by J. S. Bach in G",
        "major, played by a string quartet (violin, viola and cello). It moves at a slow tempo of 60 BPM.`",
        "",
        "## Evaluation (`demo/evaluate.py`; figures from `build/demo/eval.json`)",
        "",
        f"Held-out cross-entropy, nats per MIDI token under the strict slot masks, {ev['held_out_examples']} held-out",
        f"examples ({ev['held_out_tokens']:,} tokens):",
        "",
        "| model | all | arrival time | duration | instrument-pitch |",
        "|---|---:|---:|---:|---:|",
    ]
    baselines = (
        ("per-slot unigram (train counts, add-0.5)", "unigram"),
        ("untrained network (same init)", "untrained"),
        ("trained, float32 (torch)", "trained_f32"),
    )
    for label, key in baselines:
        r = ce[key]
        lines.append(
            f"| {label} | {_fmt(r['ce'])} | {_fmt(r['ce_time'])} | {_fmt(r['ce_dur'])} | {_fmt(r['ce_note'])} |"
        )
    lines += [
        "",
        f"The trained model beats the unigram baseline by **{gain:.3f} nats per token** "
        f"({100 * gain / ce['unigram']['ce']:.0f}% lower; perplexity {_ppl(ce['unigram']['ce'])} → "
        f"{_ppl(ce['trained_f32']['ce'])}). The same figure from the shipped Q8_0 GGUF through llama.cpp on the first "
        f"{fid['sequences']} held-out examples: {_fmt(fid['ce']['q8_0'])} (F32 GGUF {_fmt(fid['ce']['f32'])}, "
        f"torch float32 on the same examples {_fmt(fid['ce']['torch_f32'])}).",
        "",
        f"Prompt following: {fol['instrument'][0]['samples']} samples per prompt from the shipped file "
        f"({fol['max_tokens']} tokens each, default sampling, strict mode).",
        "",
        f"| prompt | family named | mean share of notes in it | samples with a majority in it | stacked chords"
        f" (> {fol['stack_limit']} notes at one onset before 100 s) |",
        "|---|---|---:|---:|---:|",
    ]
    for r in fol["instrument"]:
        lines.append(f"| {r['prompt']} | {r['family']} | {r['mean_share']:.0%} | {r['majority']}/{r['samples']} "
                     f"| {r['stacked']}/{r['samples']} |")  # fmt: skip
    lines += ["", f"Note density (notes per second over the first {DENSITY_WINDOW_S} s of each sample):", "",
              "| slow prompt | fast prompt | notes/s slow (sd) | notes/s fast (sd) | P(fast sample denser) "
              "| p (permutation) |",
              "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in fol["tempo"]:
        lines.append(f"| {r['slow']} | {r['fast']} | {r['slow_density']:.2f} ({r['slow_sd']:.2f}) | "
                     f"{r['fast_density']:.2f} ({r['fast_sd']:.2f}) | {r['p_fast_denser']:.2f} | "
                     f"{r['p_value']:.4f} |")  # fmt: skip
    tk = ev["time_keeping"]
    lines += [
        "",
        f"Time keeping on the held-out examples ({tk['positions']:,} arrival-time positions, strict mask): the"
        f" model's expected step past the latest onset is {tk['model_mean_step'] / 100:.2f} s against the data's"
        f" {tk['data_mean_step'] / 100:.2f} s, with {tk['far_mass']:.2%} of its time mass more than"
        f" {tk['far_ticks'] / 100:.0f} s ahead.",
    ]
    lines += anticipation_section(ev["anticipation"])
    lines += [
        "",
        f"Strict-mode decoding: {fol['outputs']} outputs, {fol['repairs']} repairs. Of the {fol['short_outputs']}"
        f" {fol['max_tokens']}-token outputs above, {fol['ceiling']} ran to the 100 s ceiling of the AMT time tokens"
        f" (after which strict mode can only stack notes on the last tick) and {fol['stacked']} put more notes at one"
        f" onset than any training window has ({fol['stack_limit']}).",
        "",
        f"At `gen`'s default length ({vocab.DEFAULT_MAX_TOKENS} tokens, up to 682 notes), without a time limit and"
        f" with `make demo`'s `--seconds {DEMO_SECONDS:g}`:",
        "",
        f"| prompt | --seconds | samples | reached 100 s | stacked before it (> {fol['stack_limit']} at one onset) |"
        " rejected (> 64) | notes per sample |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r['prompt']} | {format(r['seconds'], 'g') if r['seconds'] else '–'} | {r['samples']} |"
            f" {r['ceiling']} | {r['stacked']} | {r['rejected']} | {r['notes']:.0f} |"
            for r in fol["full_length"]
        ),
        "",
        f"Quantization fidelity (also in BENCHMARKS.md): mean KL(F32 ‖ Q8_0) = {fid['kl']['q8_0']:.2e}, "
        f"KL(F32 ‖ Q4_K_M) = {fid['kl']['q4_k_m']:.2e} nats over {fid['positions']:,} next-token distributions.",
        "",
        "## Known limits",
        "",
        known_limits(ev, history),
        "",
        "![training loss](midillm-demo-loss.png)",
        "",
        "![piano rolls](midillm-demo-pianoroll.png)",
        "",
        "## Reproduce",
        "",
        f"`make demo-data` (about 10 min) then `make demo-model` (on 2 cores: {training_minutes(history):.0f} min of"
        f" training in {len(stages(history))} stages from the first release's network, which it reads from commit"
        f" {BASE_COMMIT} with `git show`, then export, conversion, evaluation and this card). Training uses torch"
        " through the `[train]` extra; nothing else needs it.",
        "",
        "## License",
        "",
        "The weights are derived only from public-domain music (music21's corpus) and are released with this",
        "repository under its MIT license. The tokenizer is Llama 3's (Meta Llama 3 Community License applies",
        "to the tokenizer vocabulary it carries).",
        "",
    ]
    return "\n".join(lines)


def training_minutes(history: dict) -> float:
    return sum(stage["minutes"] for stage in stages(history))


def base_file(history: dict) -> str | None:
    """The demo GGUF the first stage started from (`demo.train --init FILE.gguf`), if any."""
    return stages(history)[0].get("base")


def total_minutes(history: dict) -> float:
    """Training minutes, the release a stage started from (BASE_RELEASE) included."""
    return training_minutes(history) + (BASE_MINUTES if base_file(history) else 0.0)


def training_bullet(history: dict) -> str:
    """How long and on what each training stage ran."""
    parts = [
        f"{stage['steps']} steps ({stage['minutes']} min) on "
        f"{'the ' + ' and '.join(stage['modes']) + ' windows' if stage.get('modes') else 'all windows'}"
        + "".join(f", each {mode} window drawn {count} times" for mode, count in (stage.get("repeat") or {}).items())
        + f" at peak learning rate {stage['lr']}"
        + (
            f", its autoregressive predictions held to {stage['teacher']}'s (KL x {stage['teacher_weight']:g})"
            if stage.get("teacher")
            else ""
        )
        + (
            f", and on the network's own music ({stage['own_samples']}, KL x {stage['own_weight']:g} per token)"
            if stage.get("own_samples")
            else ""
        )
        + (" from there" if k else "")
        for k, stage in enumerate(stages(history))
    ]
    tokens = sum(stage["train"][-1]["tokens"] for stage in stages(history))
    base = base_file(history)
    start = f"Continued from the network of {base} ({BASE_RELEASE}): " if base else ""
    return (
        f"- {start}Trained {', then '.join(parts)} ({training_minutes(history):.1f} min on 2 CPU cores, bf16 autocast:"
        f" {history['bf16']}), {tokens / 1e6:.1f} M MIDI tokens seen, batches of up to {history['batch_tokens']}"
        " tokens, AdamW, cosine decay in each stage."
    )


def data_density(reach: dict, limited: list[dict]) -> str:
    """The training windows' density beside `make demo`'s, where eval.json has it: a sample as dense as the data
    takes longer than 100 s to fill a full generation."""
    if "late_notes_mean" not in reach:  # an eval.json from before demo.evaluate measured it
        return ""
    demo = [r for r in limited if r["prompt"] == DEMO_PROMPT]
    beside = f" (a `make demo` sample: {demo[0]['notes']:.0f})" if demo else ""
    seconds = reach["late_ticks"] / 100
    return (
        f"; only {reach['full_share']:.0%} hold 682 notes, and those that last {seconds:.0f} s have"
        f" {reach['late_notes_mean']:.0f} notes before {seconds:.0f} s on average{beside}"
    )


def tempo_followed(ev: dict) -> bool:
    """Every slow/fast pair measurably apart, the fast one denser (two-sided permutation p < 0.01)."""
    rows = ev["following"]["tempo"]
    return all(r["fast_density"] > r["slow_density"] and r["p_value"] < 0.01 for r in rows)


def known_limits(ev: dict, history: dict) -> str:
    """The limits paragraph, stated from the figures so that it cannot outlive them."""
    fol = ev["following"]
    full = fol["full_length"]
    unlimited = [r for r in full if not r["seconds"]]
    full_n = sum(r["samples"] for r in unlimited)
    full_ceiling = sum(r["ceiling"] for r in unlimited)
    reach = ev["data_reach"]
    parts = [
        "Instrument words are followed and the held-out cross-entropy is far below the baselines; this is still a"
        f" {SHIPPED.stat().st_size / 2**20:.0f} MiB model trained for {total_minutes(history):.0f} minutes on 2 CPU"
        " cores, so expect texture rather than composition."
    ]
    if tempo_followed(ev):
        parts.append("Tempo words change note density (table above).")
    else:
        parts.append("Tempo words do not reliably change note density (table above: not every slow/fast pair"
                     " differs at p < 0.01 with the fast prompt denser).")  # fmt: skip
    limited = [r for r in full if r["seconds"]]
    stacked_limited = "; ".join(f'"{r["prompt"]}"{" (`make demo`)" if r["prompt"] == DEMO_PROMPT else ""}:'
                           f' {r["stacked"]} of {r["samples"]} stacked, {r["rejected"]} rejected'
                           for r in limited)  # fmt: skip
    parts.append(
        f"Free-running samples drift into stacked chords, more for some prompts than others: {fol['stacked']} of"
        f" {fol['short_outputs']} {fol['max_tokens']}-token outputs put more than {fol['stack_limit']} notes (the most"
        " any training window has) on one onset before time ran out, and once a chord grows past what the data has,"
        " this small model keeps adding to it. A sample that passes 64 is rejected as the reference does (`gen`"
        f" keeps it under `rejected/`). At the default length with `--seconds {DEMO_SECONDS:g}`: {stacked_limited}."
    )
    parts.append(
        f"Without a time limit, at the default {vocab.DEFAULT_MAX_TOKENS} tokens, {full_ceiling} of {full_n} samples"
        " ran to the 100 s ceiling of the AMT time tokens."
    )
    if full_ceiling:
        parts.append(
            f"Reaching it is partly what the data does ({reach['late_share']:.0%} of the training windows have their"
            f" last onset past {reach['late_ticks'] / 100:.0f} s: slow renderings of sparse tunes fill the 100 s"
            f" before 682 notes{data_density(reach, limited)}). But no window continues past 100 s, so the model has"
            " not learned what follows: strict mode can only stack the remaining notes on the last tick. `make demo`"
            f" passes `--seconds {DEMO_SECONDS:g}`, which ends each output before that; do the same with slow prompts."
        )
    return " ".join(parts)


def anticipation_bullets(stats: dict) -> list[str]:
    """How the training data teaches AMT's anticipation mode, with the counts demo/data.py recorded."""
    a = stats["anticipation"]
    modes = {k: v["windows"] for k, v in a["modes"].items()}
    total = sum(modes.values())
    n = {k: modes.get(k, 0) for k in (AUTOREGRESSIVE, SPAN, RANDOM, INSTRUMENT, ONE_INSTRUMENT, SHORT_SPAN)}
    controls = sum(v["controls"] for v in a["modes"].values())
    notes = controls + sum(v["event_notes"] for v in a["modes"].values())
    anticipated = total - n[AUTOREGRESSIVE]
    w = a["augmentations"]
    return [
        f"- Infilling and accompaniment (AMT's anticipation mode): each of the {n[AUTOREGRESSIVE]:,} autoregressive"
        f" training windows is kept, and {a['share']:.0%} of them also get one copy whose prompt ends with ANTICIPATE"
        f" and whose notes are partly controls, three with a span ({anticipated:,} copies; AMT's tokenizer writes"
        " each piece ten times,"
        " one plain and nine anticipated). The controls follow AMT's tokenizer, split span"
        f" {w[SPAN]} : random {w[RANDOM]} : instrument {w[INSTRUMENT]} (AMT: 1 : 4 : 4; spans and instruments are"
        " the shapes `gen --infill` and `--accompany` ask for, and a retrain with AMT's split learned neither):"
        f" span ({n[SPAN]:,} copies: the notes of a {a['span_seconds']:g} s span from a"
        " random note on become controls and the window ends with the span, as `gen --infill` lays out a request;"
        " AMT's spans recur through the window, and the 5 s without events after each taught the demo that controls"
        f" announce a gap; and {n[SHORT_SPAN]:,} short span copies, the same shape cut to"
        f" {SHORT_HISTORY[0] / vocab.TIME_RESOLUTION:g}-{SHORT_HISTORY[1] / vocab.TIME_RESOLUTION:g} s of events"
        " before the span, in which a third to a half of the events see controls where a full copy has its last 5 s),"
        f" random ({n[RANDOM]:,}: each note a control with probability r/10, r drawn from 1-9),"
        f" instrument ({n[INSTRUMENT]:,}: some but not all of the window's instruments; {n[ONE_INSTRUMENT]:,}"
        " more copies drawn for it have one instrument and take span controls, where AMT would keep them without"
        f" controls); {controls / max(notes, 1):.0%} of all training notes are controls. Events are padded with REST"
        " as AMT pads them and controls interleaved 5 s ahead, by the functions `gen --infill` uses"
        " (`midillm_lite.amt.anticipation`). Only events (REST included) are scored: controls are inputs, which"
        " `gen` inserts. A control's duration and instrument-pitch rows are the rows of the events they mirror plus"
        " one learned vector per slot; its arrival-time row is the event row of the tick it is inserted at (its"
        " time minus 5 s) plus a learned map of its own tick's codes (see demo/model.py).",
    ]


def anticipation_section(a: dict) -> list[str]:
    """The held-out infilling and accompaniment figures (demo/anticipation_eval.py)."""
    lines = ["", "Infilling and accompaniment on the held-out windows: strict-slot cross-entropy of the re-written"
             " notes (nats per token, torch float32), the same notes scored with the controls `gen` gives (the span"
             " padded with REST as AMT writes it; REST is not scored), with the controls left out, and as plain"
             " continuation:", "",
             "| task | windows | tokens scored | with controls | ANTICIPATE, no controls | autoregressive |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    tasks = (("infill: the middle third (at most 15 s) re-written", "infill_ce"),
             ("accompaniment: the highest part kept, the others re-written", "accompany_ce"))  # fmt: skip
    for label, key in tasks:
        r = a[key]
        lines.append(f"| {label} | {r['windows']} | {r['tokens']:,} | {_fmt(r['with_controls'])} | "
                     f"{_fmt(r['anticipate_no_controls'])} | {_fmt(r['autoregressive'])} |")  # fmt: skip
    f = a["infill"]
    lines += [
        "",
        f"`--infill` on {f['pieces']} held-out windows ({f['samples']} outputs each from the shipped file, strict"
        f" mode): kept notes unchanged in the output file {f['kept_unchanged']:,} of {f['kept_notes']:,}"
        f" ({_share(f['kept_unchanged'], f['kept_notes'])}); generated notes inside the span"
        f" {f['generated_inside']:,} of {f['generated_notes']:,}"
        f" ({_share(f['generated_inside'], f['generated_notes'])});"
        f" onset density inside the span {f['new_density']:.2f} notes/s against the original's"
        f" {f['original_density']:.2f}.",
    ]
    return lines


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "none"


def _renderings(stats: dict) -> int:
    return stats.get("renderings", RENDERINGS)  # stats.json files written before the count was recorded


def _ppl(ce: float) -> str:
    import math

    return f"{math.exp(ce):,.0f}" if ce > 4 else f"{math.exp(ce):.1f}"


def reflow(markdown: str) -> str:
    """Re-wrap prose paragraphs and bullets to WIDTH; tables, headings, images and code stay as written."""
    out = []
    for block in markdown.split("\n\n"):
        first = block.lstrip()[:1]
        # A paragraph may open with inline code (`--infill` on ...); only a fence starts a code block.
        if first in ("|", "#", "!") or block.lstrip().startswith("```") or not block.strip():
            out.append(block)
        elif first == "-":
            items = ("\n" + block).split("\n- ")[1:]
            out.append("\n".join(textwrap.fill(" ".join(i.split()), WIDTH, initial_indent="- ",
                                                subsequent_indent="  ") for i in items))  # fmt: skip
        else:
            out.append(textwrap.fill(" ".join(block.split()), WIDTH))
    return "\n\n".join(out)


def benchmarks_section(ev: dict, history: dict) -> str:
    from scripts.bench_convert import machine

    fid = ev["fidelity"]
    hidden = history["shape"]["hidden"]
    return "\n".join(
        [
            SECTION,
            "",
            f"Measured {date.today().isoformat()} on {machine()} by "
            "`make demo-model` (demo/evaluate.py). The bundled demo model, converted from the same float32 export",
            f"to each type; {fid['sequences']} held-out sequences ({fid['positions']:,} positions predicting MIDI",
            "tokens),",
            "full-vocabulary next-token distributions from llama.cpp.",
            "",
            "| type | mean KL vs F32 (nats) | strict-slot CE (nats/token) |",
            "|---|---:|---:|",
            f"| F32 | 0 | {fid['ce']['f32']:.4f} |",
            f"| Q8_0 | {fid['kl']['q8_0']:.2e} | {fid['ce']['q8_0']:.4f} |",
            f"| Q4_K_M | {fid['kl']['q4_k_m']:.2e} | {fid['ce']['q4_k_m']:.4f} |",
            "",
            f"Hidden size {hidden} is not a multiple of the K-quant block (256), so llama.cpp's Q4_K_M falls back to"
            " other types for these matrices (see `midillm-lite info`).",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    stats = json.loads((DATA / "stats.json").read_text())
    history = json.loads((TRAIN_OUT / "history.json").read_text())
    ev = json.loads(EVAL_JSON.read_text())
    loss_plot(history, ev["ce"]["unigram"]["ce"], LOSS_PNG)
    piano_roll([tuple(r) for r in ev["following"]["rolls"]], ROLL_PNG)
    CARD.write_text(reflow(card_text(stats, history, ev)), encoding="utf-8")
    sys.path.insert(0, str(ROOT))  # scripts/ is a folder of modules, not an installed package
    from scripts.bench_convert import update_benchmarks

    update_benchmarks(reflow(benchmarks_section(ev, history)), title=SECTION)
    print(f"wrote {CARD}, {LOSS_PNG.name}, {ROLL_PNG.name} and the fidelity section of BENCHMARKS.md")


if __name__ == "__main__":
    main()
