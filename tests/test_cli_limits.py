"""Hostile numbers and usage mistakes (issue 14): every numeric option is finite and in a stated range, in every verb.

The parsers in cli/params.py are checked property-based against any text, the
library's own checks (errors.check_range) against any value, and the CLI end to
end: each bad number or usage mistake is one `error:` line on stderr and exit 2,
before any model loads (so no model is needed here).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import typer
from clirun import run_cli
from hypothesis import given
from hypothesis import strategies as st

from midillm_lite import limits
from midillm_lite.amt.continuation import prepare_continuation
from midillm_lite.amt.transcode import encode_file
from midillm_lite.cli import params
from midillm_lite.errors import UserError, check_range
from midillm_lite.generate import check_settings

DATA = Path(__file__).parent / "data"
STRAWBERRY = str(DATA / "strawberry.mid")
ALL_BOUNDS = [getattr(params, name) for name in dir(params) if isinstance(getattr(params, name), params.Bounds)]
HOSTILE_NUMBERS = ["inf", "-inf", "nan", "NaN", "1e308", "-1e308", "1e309", "-1", "0", str(2**40), str(2**64), "1e3",
                   "0x10", "", " ", "٣", "9" * 5000]  # fmt: skip


def _in_range(bounds: params.Bounds, value: float) -> bool:
    low_ok = bounds.lo < value if bounds.lo_open else bounds.lo <= value
    return low_ok and value <= bounds.hi and (isinstance(value, int) or math.isfinite(value))


@given(
    bounds=st.sampled_from(ALL_BOUNDS),
    raw=st.one_of(
        st.text(max_size=30),
        st.sampled_from(HOSTILE_NUMBERS),
        st.integers().map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
    ),
)
def test_option_parsers_return_a_number_in_range_or_a_usage_error(bounds, raw) -> None:
    try:
        value = bounds.parse(raw)
    except typer.BadParameter as exc:
        message = exc.format_message()
        assert "\n" not in message and bounds.describe() in message
        return
    assert isinstance(value, int if bounds.integer else float) and _in_range(bounds, value)


@given(bounds=st.sampled_from(ALL_BOUNDS), value=st.one_of(st.integers(), st.floats()))
def test_library_range_checks_agree_with_the_cli(bounds, value) -> None:
    if bounds.integer and isinstance(value, float):
        value = int(value) if math.isfinite(value) else value
    try:
        cli_value = bounds.parse(str(value))
    except typer.BadParameter:
        cli_value = None
    try:
        check_range("x", value, bounds.lo, bounds.hi, lo_open=bounds.lo_open, integer=bounds.integer)
        library_ok = True
    except UserError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("x must be")
        library_ok = False
    assert library_ok == (cli_value is not None)


@pytest.mark.parametrize(
    "call",
    [
        lambda: check_settings(n=1, seconds=math.inf),
        lambda: check_settings(n=1, seconds=1e308),
        lambda: check_settings(n=1, seconds=math.nan),
        lambda: check_settings(n=0),
        lambda: prepare_continuation(STRAWBERRY, from_seconds=math.inf),
        lambda: prepare_continuation(STRAWBERRY, from_seconds=math.nan),
        lambda: prepare_continuation(STRAWBERRY, from_seconds=1e308),
        lambda: encode_file(STRAWBERRY, "-", start=math.inf),
        lambda: encode_file(STRAWBERRY, "-", start=math.nan),
    ],
)
def test_library_refuses_non_finite_and_huge_numbers(call) -> None:
    with pytest.raises(UserError, match="must be"):
        call()


NUMERIC_CASES = [
    (["gen", "x", "--seconds", "inf"], "(0, 100]"),
    (["gen", "x", "--seconds", "1e308"], "(0, 100]"),
    (["gen", "x", "--continue", STRAWBERRY, "--from", "inf"], "[0, 86400]"),
    (["gen", "x", "--continue", STRAWBERRY, "--from", "nan"], "[0, 86400]"),
    (["gen", "x", "--continue", STRAWBERRY, "--from", "1e308"], "[0, 86400]"),
    (["encode", STRAWBERRY, "-o", "-", "--start", "inf"], "[0, 86400]"),
    (["encode", STRAWBERRY, "-o", "-", "--start", "-1"], "[0, 86400]"),
    (["gen", "x", "--seed", "-1"], f"0..{2**64 - 1}"),
    (["gen", "x", "--seed", str(2**64)], f"0..{2**64 - 1}"),
    (["gen", "x", "--threads", str(2**40)], f"1..{limits.MAX_THREADS}"),
    (["bench", "--threads", str(2**40)], f"1..{limits.MAX_THREADS}"),
    (["convert", "x", "-o", "y.gguf", "-t", str(2**40)], f"1..{limits.MAX_THREADS}"),
    (["convert", "x", "-o", "y.gguf", "-t", "0"], f"1..{limits.MAX_THREADS}"),
    (["bench", "--n", "1,64"], f"1..{limits.MAX_OUTPUTS}"),
    (["gen", "x", "-n", "64"], f"1..{limits.MAX_OUTPUTS}"),
    (["bench", "--steps", "1"], f"{params.STEPS.describe()}"),
    (["gen", "x", "--max-tokens", "0"], "3..131072"),
    (["gen", "x", "--gpu-layers", str(2**40)], "-1..1024"),
    (["gen", "x", "--top-k", "-1"], "0..55030"),
    (["gen", "x", "--temperature", "inf"], "any finite number"),
]


@pytest.mark.parametrize(("args", "allowed"), NUMERIC_CASES)
def test_bad_numbers_are_one_line_stating_the_range(args, allowed, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(args, capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert allowed in err and "internal error" not in err and out == ""
    assert not list(tmp_path.iterdir())


USAGE_CASES = [
    (["gen", "--bogus"], "No such option: --bogus"),
    (["encode"], "Missing argument 'MIDI'"),
    (["gen", "x", "--device", "tpu"], "'tpu' is not one of"),
    (["gen", "x", "-n", "abc"], "'abc' is not an integer"),
    (["convert", "x", "-o", "y.gguf", "--quant", "q3"], "'q3' is not one of"),
    (["nosuchverb"], "No such command 'nosuchverb'"),
    (["decode"], "Missing argument 'TOKENS'"),
    (["gen", "x", "--model"], "Option '--model' requires an argument"),
]


@pytest.mark.parametrize(("args", "message"), USAGE_CASES)
def test_usage_errors_are_one_line(args, message, capsys) -> None:
    code, out, err = run_cli(args, capsys)
    assert code == 2 and out == "", err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert "--help" in err  # where to look next, on the same line


def test_a_bare_command_still_shows_its_help(capsys) -> None:
    code, out, err = run_cli([], capsys)
    assert "Usage:" in out + err and "gen" in out + err and code in (0, 2)
