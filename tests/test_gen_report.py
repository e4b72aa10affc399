"""What gen says about its outputs without a model: failed and rejected judgments, the outcome line, progress/ETA."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from midillm_lite.amt.vocab import DUR_OFFSET, NOTE_OFFSET, TIME_OFFSET
from midillm_lite.cli.gen_cmds import outcome_line
from midillm_lite.cli.progress import ProgressPlan, format_duration, progress_text
from midillm_lite.engine import Timings
from midillm_lite.errors import UserError
from midillm_lite.generate import (
    MAX_OUTPUTS,
    TIME_CEILING_TICKS,
    OutputProgress,
    _make_output,
    _time_limit,
    _time_stop,
    check_settings,
    setting_warnings,
)
from midillm_lite.sampling import NoteState, SamplingParams


def note(onset: int, pitch: int = 60) -> list[int]:
    return [TIME_OFFSET + onset, DUR_OFFSET + 10, NOTE_OFFSET + pitch]


def test_tokens_that_decode_to_no_notes_are_a_failed_output_not_a_rejected_one():
    # Free mode's shape of failure on the demo: one arrival time over and over (each one an incomplete
    # triplet). The old raw-token test saw 100 equal values at the time slots and called that "more than
    # 64 notes at one onset" although the file holds none.
    times_only = [TIME_OFFSET + 88] * 300
    output = _make_output(0, times_only, None, partial=False)
    assert output.summary.notes == 0 and output.summary.repairs["incomplete_triplet"] == 299
    assert output.failed == "its 300 tokens decode to no notes"
    assert output.rejected is None and not output.usable
    assert _make_output(0, [], None, partial=True).failed == "no tokens were generated"


def test_rejection_counts_the_notes_the_file_holds():
    crowded = [t for pitch in range(70) for t in note(5, pitch)]
    output = _make_output(0, crowded, None, partial=False)
    assert output.rejected == "70 notes at one onset (the reference rejects more than 64)"
    assert output.failed is None and output.summary.notes == 70
    spread = [t for pitch in range(70) for t in note(pitch, pitch)]
    assert _make_output(0, spread, None, partial=False).usable


def test_strict_mode_ends_an_output_at_the_last_arrival_time():
    stop = _time_stop(_time_limit(None, strict=True))
    state = NoteState(position=1)
    assert stop is not None
    assert not stop(0, [TIME_OFFSET + 9998], state)
    assert stop(0, [TIME_OFFSET + 9999], state)  # past it, every note would stack on one tick
    assert _time_limit(None, strict=False) is None  # free mode samples as the reference does
    assert _time_stop(_time_limit(5, strict=False))(0, [TIME_OFFSET + 500], state)
    assert _time_limit(120, strict=True) == TIME_CEILING_TICKS  # a limit past 100 s cannot lift the end


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": "  "}, "the description is empty"),
        ({"n": 0}, "n must be an integer in 1..32"),
        ({"n": MAX_OUTPUTS + 1}, "n must be an integer in 1..32"),
        ({"top_p": 0.0}, "top_p must be a finite number in (0, 1]"),
        ({"top_k": -1}, "top_k must be 0"),
        ({"temperature": float("inf")}, "temperature must be a finite number"),
        ({"max_tokens": 2}, "max_tokens must be an integer in 3..131072"),
        ({"seconds": float("nan")}, "seconds must be a finite number in (0, 100]"),
        ({"seconds": float("inf")}, "seconds must be a finite number in (0, 100]"),
    ],
)
def test_settings_are_checked_without_a_model(kwargs, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_settings(**kwargs)


def test_greedy_with_several_outputs_is_said():
    assert setting_warnings(n=2, temperature=0.0) == [
        "a temperature of 0 is greedy decoding: all 2 outputs will be the same"
    ]
    assert setting_warnings(n=1, temperature=0.0) == [] and setting_warnings(n=4, temperature=1.0) == []


class _Result:
    def __init__(self, outputs, strict=True):
        self.outputs = outputs
        self.params = SamplingParams(strict=strict)


def _outputs(*kinds: str):
    made = []
    for i, kind in enumerate(kinds):
        tokens = {"ok": note(0), "failed": [NOTE_OFFSET] * 3, "rejected": [t for p in range(65) for t in note(0, p)]}
        made.append(_make_output(i, tokens[kind], None, partial=False))
    return made


def test_outcome_line_says_plainly_when_every_output_is_unusable():
    assert outcome_line(_Result(_outputs("ok", "ok")), demo=True, seconds=None) is None
    every = outcome_line(_Result(_outputs("rejected", "rejected")), demo=True, seconds=None)
    assert every is not None and every.startswith("no usable output: all 2 outputs were rejected")
    assert "--seconds 60" in every and "`midillm-lite models`" in every and "card" in every
    some = outcome_line(_Result(_outputs("ok", "failed", "rejected"), strict=False), demo=False, seconds=30)
    assert some == (
        "1 of 3 outputs failed (no notes) and 1 of 3 outputs was rejected (more than 64 notes at one onset); they are "
        "kept under rejected/. Try a shorter --seconds, --strict (the default: well-formed notes only), another "
        "prompt or a better model (`midillm-lite models`)."
    )
    one = outcome_line(_Result(_outputs("failed")), demo=False, seconds=None)
    assert one is not None and one.startswith("no usable output: the output failed (no notes); it is kept under")
    some = outcome_line(_Result(_outputs("ok", "rejected")), demo=False, seconds=None)
    assert some is not None and some.startswith("1 of 2 outputs was rejected (more than 64 notes at one onset); it is")


def test_progress_shows_total_percentage_and_time_left():
    plan = ProgressPlan(n=2, max_tokens=100, may_stop_early=False)
    outputs = [OutputProgress(tokens=50, notes=16), OutputProgress(tokens=50, notes=16)]
    text = progress_text(plan, outputs, Timings(generated=100, steps=50, steps_s=10.0))
    assert text == "100 tokens, 32 notes, 50% of 200 tokens, 10.0 tokens/s, 10s left"
    outputs[0].done = True  # finished early: its unused tokens leave the total
    early = ProgressPlan(n=2, max_tokens=100, may_stop_early=True)
    assert progress_text(early, outputs, Timings(generated=100, steps=50, steps_s=10.0)) == (
        "100 tokens, 32 notes, 67% of 150 tokens, 10.0 tokens/s, at most 10s left"
    )
    first = progress_text(plan, outputs, Timings(generated=2, steps=1, steps_s=0.001))
    assert first == "2 tokens, 32 notes, 1% of 150 tokens"  # one step says nothing about the rate yet


@given(st.floats(min_value=0, max_value=1e6))
def test_durations_read_as_clock_parts(seconds):
    text = format_duration(seconds)
    whole = round(seconds)
    assert text.endswith(("s", "m"))
    if whole < 60:
        assert text == f"{whole}s"
    elif whole < 3600:
        minutes, rest = text[:-1].split("m")
        assert int(minutes) * 60 + int(rest) == whole


def test_final_table_on_a_narrow_terminal_never_cuts_a_file_name(monkeypatch, capsys):
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    from midillm_lite.cli.progress import Progress

    monkeypatch.setenv("COLUMNS", "60")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    outputs = [*_outputs("ok", "ok", "rejected"), _make_output(3, [NOTE_OFFSET] * 3, None, partial=False)]
    folder = Path("/a/long/way/down/midillm-out/20261129-195500-a-fiddle-tune-played-on-acoustic-guitar")
    paths = [folder / ("" if o.usable else "rejected") / f"gen_{o.index}.mid" for o in outputs]
    result = SimpleNamespace(outputs=outputs, seed=1, timings=Timings(generated=9, steps_s=1.0, prompt_tokens=5))
    Progress.final_table(result, paths, folder)
    shown = capsys.readouterr().out
    assert str(folder) in shown.replace("\n", "")  # the folder once, whole
    for name in ("gen_1.mid", "gen_2.mid", "rejected/gen_3.mid", "rejected/gen_4.mid"):
        assert name in shown
    assert "rejected/gen_3.mid: rejected: 65 notes at one onset" in shown
    assert "rejected/gen_4.mid: failed: its 3 tokens decode to no notes" in shown
    assert "4 outputs in" in shown
