"""Fuzz the token-file parser: any text -> a list of integers or a UserError naming a line, nothing else."""

from __future__ import annotations

import pytest
from fuzzing import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from midillm_lite.amt.tokens_file import format_tokens, parse_tokens
from midillm_lite.errors import UserError

PIECES = st.one_of(
    st.integers(-(10**35), 10**35).map(str),
    st.sampled_from([" ", ",", "\n", "\r\n", "\t", "[", "]", "+", "-", "\x0b", "\u2028", "\x1c", "\u00a0", "٣", "1e5"]),
    st.text(max_size=5),
)
TEXTS = st.one_of(st.text(max_size=300), st.lists(PIECES, max_size=80).map("".join))


@fuzz_settings()
@given(TEXTS)
def test_any_text_parses_or_is_a_user_error(text: str) -> None:
    try:
        ids = parse_tokens(text, name="fuzz")
    except UserError as exc:
        message = str(exc)
        assert message.startswith("fuzz, line ") and "\n" not in message.strip()
        return
    assert all(isinstance(i, int) for i in ids)


@fuzz_settings()
@given(st.lists(st.integers(-(10**29), 10**29), max_size=200), st.sampled_from(["\n", " ", ", ", ",\n"]), st.booleans())
def test_written_lists_read_back(ids: list[int], separator: str, brackets: bool) -> None:
    text = separator.join(map(str, ids))
    if brackets:
        text = f"[{text}]"
    assert parse_tokens(text) == ids
    assert parse_tokens(format_tokens(ids)) == ids


def test_error_names_the_line() -> None:
    with pytest.raises(UserError, match=r"line 2: 'x'"):
        parse_tokens("1\nx\n")
