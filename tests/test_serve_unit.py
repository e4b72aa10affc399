"""`serve` without a model: the request parser (properties), the file listing, the token rules, the OpenAPI document."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midillm_lite.errors import UserError
from midillm_lite.limits import MAX_PROMPT_CHARS, SERVE_MAX_OUTPUTS, SERVE_MAX_TOKENS
from midillm_lite.server.access import MIN_TOKEN_CHARS, TOKEN_ENV, is_loopback, resolve_token
from midillm_lite.server.app import AppConfig, create_app
from midillm_lite.server.files import find_file, list_files
from midillm_lite.server.jobs import JobStore
from midillm_lite.server.openapi import schema
from midillm_lite.server.request import FIELDS, GenerationRequest, parse_request

TOKEN = "x" * MIN_TOKEN_CHARS

# --- the request parser ---------------------------------------------------------------------------------------------

json_values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=30),
                        st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                              max_size=2))  # fmt: skip
field_names = st.one_of(st.sampled_from(sorted(FIELDS)), st.text(max_size=12))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(field_names, json_values, max_size=6))
def test_any_json_body_is_a_request_or_one_user_error(fields: dict) -> None:
    try:
        request = parse_request(fields, form=False)
    except UserError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    assert isinstance(request, GenerationRequest) and request.prompt.strip()
    assert 1 <= request.n <= SERVE_MAX_OUTPUTS
    assert request.max_tokens is None or request.max_tokens <= SERVE_MAX_TOKENS


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(field_names, st.text(max_size=30), max_size=6))
def test_any_form_is_a_request_or_one_user_error(fields: dict) -> None:
    try:
        request = parse_request(fields, form=True)
    except UserError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    assert isinstance(request, GenerationRequest) and request.prompt.strip()


def test_form_and_json_give_the_same_request() -> None:
    as_json = {"prompt": "A march.", "n": 2, "seed": 7, "temperature": 0.9, "top_p": 0.95, "max_tokens": 300,
               "seconds": 20, "strict": False, "tempo": "100", "meter": "3/4"}  # fmt: skip
    as_form = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in as_json.items()}
    as_form["top_k"] = ""  # an empty input: not given
    assert parse_request(as_json, form=False) == parse_request(as_form, form=True)


@pytest.mark.parametrize(
    ("fields", "names"),
    [
        ({"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "prompt is"),
        ({"prompt": "ok", "n": SERVE_MAX_OUTPUTS + 1}, "n must be"),
        ({"prompt": "ok", "max_tokens": SERVE_MAX_TOKENS + 1}, "max_tokens must be"),
        ({"prompt": "ok", "n": True}, "n must be an integer"),
        ({"prompt": "ok", "n": 2.5}, "n must be an integer"),
        ({"prompt": "ok", "top_p": 2}, "top_p"),
        ({"prompt": "ok", "from_seconds": 3}, "from_seconds needs a MIDI file"),
        ({"prompt": "ok", "mode": "infill", "to_seconds": 2}, "mode infill needs a MIDI file"),
        ({"prompt": "ok", "mode": "remix"}, "mode must be one of continue, infill, accompany"),
        ({"prompt": "ok", "to_seconds": 3}, "to_seconds goes with mode infill or accompany"),
        ({"prompt": "ok", "keep_tracks": "1"}, "keep_tracks goes with mode infill or accompany"),
        ({"prompt": "ok", "meter": "banana"}, "meter"),
        ({"prompt": "ok", "max_token": 30}, "unknown field 'max_token'"),
        ({"n": 1}, "prompt is missing"),
        ({"prompt": "   "}, "empty"),
    ],
)
def test_a_bad_field_is_named(fields: dict, names: str) -> None:
    with pytest.raises(UserError, match=names):
        parse_request(fields, form=False)


@pytest.mark.parametrize(
    ("fields", "names"),
    [
        ({"mode": "infill", "from_seconds": 1}, "mode infill needs from_seconds and to_seconds"),
        ({"mode": "infill", "from_seconds": 1, "to_seconds": 2, "seconds": 5}, "leave out seconds"),
        ({"mode": "infill", "from_seconds": 1, "to_seconds": 2, "keep_tracks": "1"}, "go with mode accompany"),
        ({"mode": "accompany", "keep_instruments": "banjoo"}, "keep_instruments: unknown instrument"),
        ({"mode": "accompany", "keep_tracks": "one"}, "keep_tracks takes track numbers"),
        ({"mode": "accompany", "to_seconds": -1}, "to_seconds must be"),
    ],
)
def test_infill_and_accompany_fields_are_checked(fields: dict, names: str) -> None:
    with pytest.raises(UserError, match=names):
        parse_request({"prompt": "ok", **fields}, form=False, has_midi=True)
    assert parse_request({"prompt": "ok", "mode": "accompany", "keep_instruments": "piano,73"}, form=False,
                         has_midi=True).keep_instruments == "piano,73"  # fmt: skip


# --- the files offered --------------------------------------------------------------------------------------------


def test_listing_offers_regular_files_only(tmp_path: Path) -> None:
    (tmp_path / "gen_1.mid").write_bytes(b"MThd")
    (tmp_path / "gen_1_tokens.txt").write_text("1\n")
    (tmp_path / "gen_1.wav").write_bytes(b"RIFF")
    (tmp_path / ".gen_2.mid.123.abc.part").write_bytes(b"half")
    (tmp_path / "rejected").mkdir()
    (tmp_path / "rejected" / "gen_2.mid").write_bytes(b"MThd")
    secret = tmp_path.parent / "secret.txt"
    secret.write_text("no")
    os.symlink(secret, tmp_path / "link.txt")
    listed = {e.name: (e.kind, e.output) for e in list_files(tmp_path)}
    assert listed == {
        "gen_1.mid": ("midi", 1),
        "gen_1_tokens.txt": ("tokens", 1),
        "gen_1.wav": ("audio", 1),
        "rejected/gen_2.mid": ("midi", 2),
    }
    for name in ("../secret.txt", "link.txt", ".gen_2.mid.123.abc.part", "rejected/../gen_1.mid", "/etc/passwd"):
        assert find_file(tmp_path, name) is None
    assert find_file(tmp_path, "rejected/gen_2.mid") is not None


# --- who may connect ----------------------------------------------------------------------------------------------


def test_token_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert resolve_token("127.0.0.1", None, no_auth=False) is None
    assert resolve_token("::1", TOKEN, no_auth=False) == TOKEN
    assert resolve_token("0.0.0.0", None, no_auth=True) is None
    with pytest.raises(UserError, match="give a token"):
        resolve_token("0.0.0.0", None, no_auth=False)
    with pytest.raises(UserError, match="at least"):
        resolve_token("0.0.0.0", "short", no_auth=False)
    with pytest.raises(UserError, match="not both"):
        resolve_token("0.0.0.0", TOKEN, no_auth=True)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert resolve_token("192.168.1.5", None, no_auth=False) == TOKEN
    assert is_loopback("localhost") and is_loopback("127.0.0.2") and not is_loopback("0.0.0.0")


# --- the OpenAPI document ---------------------------------------------------------------------------------------


class _NoRunner:
    def generate(self, prompt, *, cancel=None, **kwargs):
        raise AssertionError("not called")

    def close(self) -> None:
        pass


def test_openapi_names_every_api_route_and_only_those(tmp_path: Path) -> None:
    store = JobStore(tmp_path, _NoRunner(), workers=0, max_queue=1)
    app = create_app(store, AppConfig(token=None, allowed_hosts=None, about={}))
    routes = {
        (route.path.replace("{name:path}", "{name}"), method.lower())
        for route in app.routes
        if route.path.startswith("/v1/")
        for method in getattr(route, "methods", None) or ()
        if method != "HEAD"
    }
    documented = {(path, method) for path, item in schema()["paths"].items() for method in item}
    assert routes == documented
    assert set(schema()["paths"]["/v1/generations"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "properties"]) == set(FIELDS)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_no_name_reaches_outside_the_folder(tmp_path_factory, name: str) -> None:
    folder = tmp_path_factory.mktemp("gen")
    (folder / "gen_1.mid").write_bytes(b"MThd")
    (folder / "rejected").mkdir()
    (folder / "rejected" / "gen_2.mid").write_bytes(b"MThd")
    found = find_file(folder, name)
    assert found is None or (found[0].resolve().parent in (folder, folder / "rejected") and found[0].is_file())


# --- what a restarted server reads back -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "shown"),
    [
        (
            ["accompanying 0-95 s (one pass writes 95 s); go on from 95 s"],
            ["accompanying 0-95 s (one pass writes 95 s); go on from 95 s"],
        ),
        ([], []),
        (None, []),
        ("go on", []),  # not a list: a hand-edited or foreign file
        (["kept", 3, None, {"a": 1}], ["kept"]),
    ],
)
def test_a_folder_read_back_shows_only_its_warning_lines(tmp_path: Path, written, shown) -> None:
    folder = tmp_path / "20261206-233240-a-band"
    folder.mkdir()
    stats = {"prompt": "a band", "outputs": []} | ({} if written is None else {"warnings": written})
    (folder / "generation_stats.json").write_text(json.dumps(stats))
    store = JobStore(tmp_path, _NoRunner(), workers=0, max_queue=1)
    assert store.get(folder.name).to_dict()["warnings"] == shown
