"""The allowed range of every numeric setting: one owner for the library's checks and the CLI's option parsers.

Each limit is where a number stops making sense or starts to break something
below it; the CLI states these ranges in its messages, and the library checks
them again (errors.check_range) for Python callers. Nothing here imports
llama.cpp, so the CLI can read the limits without loading it.
"""

from __future__ import annotations

from .amt.vocab import DELTA_SECONDS, MAX_TIME_SECONDS, MIDI_VOCAB_SIZE, TOKENS_PER_NOTE

MAX_OUTPUTS = 32  # each sequence holds its own ~2k-token KV cache; beyond this memory, not speed, is the limit
MAX_CONTEXT = 131_072  # Llama 3.2's context length: no MIDI-LLM sequence holds more
MIN_NEW_TOKENS = TOKENS_PER_NOTE  # fewer cannot hold one note
MAX_NEW_TOKENS = MAX_CONTEXT  # the model's own context may allow fewer
MAX_SECONDS = MAX_TIME_SECONDS  # a --seconds stop: AMT arrival times end at 100 s, a longer limit is never reached
# One infilling/accompaniment pass: the span and the controls 5 s past it must fit AMT's 100 s of arrival times.
MAX_SPAN_SECONDS = MAX_TIME_SECONDS - DELTA_SECONDS
MAX_INPUT_SECONDS = 86_400  # a time inside an existing piece (cut, start): a day, far past music, far from overflow
# mido holds every message of a file as an object (about 270 bytes of memory per byte of a dense file: a 20 MB file
# took 5.6 GB), so MIDI files are bounded before parsing: 2 MiB (~350k notes, far past what AMT's 100 s windows use)
# peaked at 0.61 GB; 4 MiB took 1.19 GB.
MAX_MIDI_BYTES = 2 * 1024 * 1024
MAX_TOP_K = MIDI_VOCAB_SIZE  # keeping every MIDI id is the same as no top-k
MAX_SEED = 2**64 - 1  # seeds are recorded in the JSON stats; 64 bits stay exact for any reader of those
MAX_THREADS = 512  # ggml's GGML_MAX_N_THREADS: its thread pool holds no more
MAX_WORKERS = 4096  # gen --cluster: each worker holds a model copy (~1 GB); far past the paper's 896-prompt scale
ALL_LAYERS = -1  # llama.cpp: offload every layer
MAX_GPU_LAYERS = 1024  # more layers than any Llama has; llama.cpp takes a count past the model's as "all"

# `serve`: what one HTTP request may ask of a shared box (a Raspberry Pi answers several people at once).
MAX_PROMPT_CHARS = 2000  # a description far past any caption MIDI-LLM learned from; the token check comes later
SERVE_MAX_OUTPUTS = 8  # outputs per request: each holds its own KV cache, and one request must not fill every slot
SERVE_MAX_TOKENS = 4096  # twice the trained 2,048-token sequence: more only repeats what the model never saw
SERVE_MAX_QUEUE = 16  # requests waiting for the model; past this a client is told to come back (429)
MAX_BODY_BYTES = MAX_MIDI_BYTES + 64 * 1024  # one MIDI upload plus the form's text fields
MAX_SLOTS = MAX_OUTPUTS  # sequences decoded together across requests (the scheduler's --slots)

# Audio (midillm_lite.audio): target loudness in LUFS (quieter is barely above BS.1770's -70 LUFS gate; louder cannot
# stay clean under a -1 dBFS ceiling), and the longest piece rendered by default and at all: samples are held in
# memory (float32 stereo, 127 MB at 6 minutes, a few copies while processed); generated pieces last under 2 minutes.
MIN_LOUDNESS, MAX_LOUDNESS = -60.0, -6.0
MAX_RENDER_SECONDS = 360.0
MAX_RENDER_SECONDS_LIMIT = 3600.0
MAX_QUEUE = 100_000  # requests waiting for a batch scheduler: far past any real queue, far from memory trouble
