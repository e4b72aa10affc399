"""The AMT arrival-time vocabulary inside MIDI-LLM's extended Llama-3 vocabulary: the one owner of token numbers.

The layout follows the Anticipatory Music Transformer (Thickstun et al.): each
note is a triplet (arrival time, duration, instrument-pitch), times in 10 ms
ticks. Offsets are chained, each computed from the one before, so that a change
to one block moves the rest with it. `python -m midillm_lite.amt.vocab` prints the
table.
"""

from __future__ import annotations

# --- units -------------------------------------------------------------------
TIME_RESOLUTION = 100  # ticks per second: one tick is 10 ms
MAX_TIME_SECONDS = 100  # arrival times address the first 100 s of a window
MAX_DURATION_SECONDS = 10
MAX_TIME = TIME_RESOLUTION * MAX_TIME_SECONDS  # 10,000 arrival-time tokens (0..9,999 ticks)
MAX_DUR = TIME_RESOLUTION * MAX_DURATION_SECONDS  # 1,000 duration tokens (0..999 ticks)
MAX_PITCH = 128  # MIDI pitches 0..127
MAX_INSTR = 129  # General MIDI programs 0..127, plus one slot for drums
DRUM_INSTRUMENT = 128  # AMT's instrument number for anything on the drum channel
MAX_NOTE = MAX_PITCH * MAX_INSTR  # 16,512 instrument-pitch tokens

# --- event block ---------------------------------------------------------------
EVENT_OFFSET = 0
TIME_OFFSET = EVENT_OFFSET
DUR_OFFSET = TIME_OFFSET + MAX_TIME  # 10,000
NOTE_OFFSET = DUR_OFFSET + MAX_DUR  # 11,000
REST = NOTE_OFFSET + MAX_NOTE  # 27,512: a note slot that sounds nothing

# --- anticipated-control block: mirrors the event block ------------------------
CONTROL_OFFSET = REST + 1  # 27,513
ATIME_OFFSET = CONTROL_OFFSET
ADUR_OFFSET = ATIME_OFFSET + MAX_TIME  # 37,513
ANOTE_OFFSET = ADUR_OFFSET + MAX_DUR  # 38,513
CONTROL_END = ANOTE_OFFSET + MAX_NOTE  # 55,025 (exclusive)

# --- special tokens ------------------------------------------------------------
SPECIAL_OFFSET = CONTROL_END
SEPARATOR = SPECIAL_OFFSET  # 55,025: a triplet of these starts a new segment
AUTOREGRESS = SEPARATOR + 1  # 55,026: sequence starts in autoregressive mode
ANTICIPATE = AUTOREGRESS + 1  # 55,027: sequence starts in anticipatory mode
AMT_VOCAB_SIZE = ANTICIPATE + 1  # 55,028 ids that AMT defines

# --- MIDI-LLM's extended Llama-3 vocabulary --------------------------------------
TEXT_VOCAB_SIZE = 128_256  # Llama 3 text tokens; MIDI token 0 is full id 128,256
MIDI_VOCAB_SIZE = 55_030  # MIDI-LLM reserves two ids beyond AMT's 55,028
FULL_VOCAB_SIZE = TEXT_VOCAB_SIZE + MIDI_VOCAB_SIZE  # 183,286
MIDI_AUTOREGRESS_ID = TEXT_VOCAB_SIZE + AUTOREGRESS  # 183,282: ends every prompt
MIDI_ANTICIPATE_ID = TEXT_VOCAB_SIZE + ANTICIPATE  # 183,283: ends an infilling or accompaniment prompt

# --- anticipation (AMT's config.DELTA and ops.pad) ----------------------------------
DELTA_SECONDS = 5  # AMT's anticipation interval
DELTA = DELTA_SECONDS * TIME_RESOLUTION  # 500 ticks: a control enters the sequence this long before its time
PAD_DENSITY = TIME_RESOLUTION  # AMT pads events with REST triplets so that one comes at least every second

# --- what the model was trained on ---------------------------------------------------
SYSTEM_PROMPT = "You are a world-class composer. Please compose some music according to the following description: "
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 0.98
DEFAULT_MAX_TOKENS = 2046
TRAIN_CONTEXT_LENGTH = 2048
TOKENS_PER_NOTE = 3


def to_amt(token_id: int) -> int:
    """Map a full-vocabulary id to its AMT id; AMT ids pass through unchanged."""
    return token_id - TEXT_VOCAB_SIZE if token_id >= TEXT_VOCAB_SIZE else token_id


def to_full(amt_id: int) -> int:
    """Map an AMT id to MIDI-LLM's full-vocabulary id."""
    return TEXT_VOCAB_SIZE + amt_id


def _table() -> list[tuple[str, int, int]]:
    return [
        ("arrival time", TIME_OFFSET, DUR_OFFSET),
        ("duration", DUR_OFFSET, NOTE_OFFSET),
        ("instrument-pitch", NOTE_OFFSET, REST),
        ("rest", REST, REST + 1),
        ("control time", ATIME_OFFSET, ADUR_OFFSET),
        ("control duration", ADUR_OFFSET, ANOTE_OFFSET),
        ("control note", ANOTE_OFFSET, CONTROL_END),
        ("separator", SEPARATOR, SEPARATOR + 1),
        ("autoregress", AUTOREGRESS, AUTOREGRESS + 1),
        ("anticipate", ANTICIPATE, ANTICIPATE + 1),
        ("reserved", AMT_VOCAB_SIZE, MIDI_VOCAB_SIZE),
    ]


if __name__ == "__main__":
    print(f"{'block':<18}{'AMT ids':>18}{'full ids':>20}")
    for name, start, end in _table():
        print(f"{name:<18}{start:>8}..{end - 1:<8}{to_full(start):>10}..{to_full(end - 1):<8}")
