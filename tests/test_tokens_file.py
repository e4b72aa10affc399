"""The token-file parser: the formats people paste, and nothing else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from midillm_lite.amt.tokens_file import format_tokens, parse_tokens, read_tokens, write_tokens
from midillm_lite.errors import UserError


@pytest.mark.parametrize(
    "text",
    ["1\n2\n-3\n", "1 2 -3", "1, 2, -3", "[1, 2, -3]", "  [1,\n 2,\t-3]\n\n", "1\r\n2\r\n-3\r\n", "+1 2 -3"],
)
def test_accepted_layouts(text):
    assert parse_tokens(text) == [1, 2, -3]


@pytest.mark.parametrize("text", ["", "   \n\n", "[]"])
def test_empty(text):
    assert parse_tokens(text) == []


@pytest.mark.parametrize(
    ("text", "where"),
    [("1\n2\nx\n", "line 3: 'x'"), ("1.5", "'1.5'"), ("١٢", "'١٢'"), ("1 2e3", "'2e3'"), ("9" * 40, "...")],
)
def test_rejected_with_the_line_and_token(text, where):
    with pytest.raises(UserError, match="is not a token id") as info:
        parse_tokens(text, name="t.txt")
    assert where in str(info.value) and str(info.value).startswith("t.txt, line")


@given(st.lists(st.integers(min_value=-(10**20), max_value=10**20)))
def test_format_then_parse_is_the_identity(ids):
    assert parse_tokens(format_tokens(ids)) == ids


@given(st.text())
def test_any_text_parses_or_is_a_user_error(text):
    try:
        ids = parse_tokens(text)
    except UserError as exc:
        assert "\n" not in str(exc)
    else:
        assert all(isinstance(i, int) for i in ids)


def test_files(tmp_path):
    path = tmp_path / "t.txt"
    write_tokens(path, [5, 6])
    assert path.read_text() == "5\n6\n" and read_tokens(path) == [5, 6]
    with pytest.raises(UserError, match="already exists"):
        write_tokens(path, [7])
    write_tokens(path, [7], force=True)
    assert read_tokens(path) == [7]
    with pytest.raises(UserError, match="no such file"):
        read_tokens(tmp_path / "missing.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe1")
    with pytest.raises(UserError, match="not UTF-8"):
        read_tokens(tmp_path / "bin.txt")
