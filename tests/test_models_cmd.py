"""The model registry (bundled entries, validation), the default model (best present first), `midillm-lite models`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from clirun import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from midillm_lite import models
from midillm_lite.errors import UserError

PROMPT = "A slow piano ballad"
QUICK = ["-n", "1", "--max-tokens", "6", "--threads", "2", "--seed", "1"]
DEMO = "midillm-demo-q8_0"
REGISTRY = {
    "models": {
        "best": {"repo": "o/r", "quant": "q8_0", "file": "best.gguf", "description": "the best"},
        "small": {"repo": "o/r", "quant": "q4_k_m", "file": "small.gguf"},
        DEMO: {"bundled": True, "file": f"{DEMO}.gguf", "description": "demo: tiny"},
    }
}


@pytest.fixture
def dirs(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """(the repository's models/ folder, the user model folder), both empty but for the registry above."""
    repo, home = tmp_path / "repo_models", tmp_path / "home" / "models"
    repo.mkdir()
    home.mkdir(parents=True)
    (repo / "registry.json").write_text(json.dumps(REGISTRY))
    monkeypatch.setattr(models, "REPO_MODELS", repo)
    monkeypatch.setattr(models, "REGISTRY", repo / "registry.json")
    monkeypatch.setenv("MIDILLM_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(models, "_unreadable", lambda path: None)  # touch() files stand in for models here
    return repo, home


def touch(path: Path, size: int = 1) -> Path:
    path.write_bytes(b"x" * size)
    return path


# --- the registry ---------------------------------------------------------------------------------------------------


def test_the_shipped_registry_ends_with_the_bundled_demo():
    entries = models.registry()
    assert entries[-1].name == DEMO and entries[-1].bundled and entries[-1].repo is None
    assert entries[-1].file == f"{DEMO}.gguf" and "demo" in entries[-1].description
    assert all(e.repo and e.quant and not e.bundled for e in entries[:-1])


def test_a_bundled_entry_needs_no_repo(tmp_path):
    path = tmp_path / "registry.json"
    path.write_text(json.dumps({"models": {"d": {"bundled": True, "file": "d.gguf"}}}))
    assert models.registry(path) == [models.RegistryEntry(name="d", file="d.gguf", bundled=True)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not a valid model registry"),
        ("[]", '{"models"'),
        ('{"models": []}', '{"models"'),
        ('{"models": {"x": 3}}', "'x' must be an object"),
        ('{"models": {"x": {"file": "x.gguf"}}}', "'repo' must be a hub repo id"),
        ('{"models": {"x": {"file": "x.gguf", "repo": "o/r"}}}', "'quant' must be"),
        ('{"models": {"x": {"file": "x.gguf", "repo": "not a repo", "quant": "q8_0"}}}', "'repo' must be"),
        ('{"models": {"x": {"repo": "o/r", "quant": "q8_0"}}}', "no 'file'"),
        ('{"models": {"x": {"file": "../x.gguf", "bundled": true}}}', "without folders"),
        ('{"models": {"x": {"file": "x.bin", "bundled": true}}}', "without folders"),
        ('{"models": {"x": {"file": "x.gguf", "bundled": "yes"}}}', "'bundled' must be a bool"),
        ('{"models": {"x": {"file": "x.gguf", "bundled": true, "size": 3}}}', "unknown field 'size'"),
        ('{"models": {"x": {"file": "x.gguf", "bundled": true, "name": "y"}}}', "unknown field 'name'"),
    ],
    ids=lambda v: v if len(v) < 30 else None,
)
def test_a_broken_registry_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "registry.json"
    path.write_text(content)
    with pytest.raises(UserError, match="is not a valid model registry") as info:
        models.registry(path)
    assert message in str(info.value) and "\n" not in str(info.value)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELD = st.sampled_from(["file", "repo", "quant", "bundled", "description", "name"]) | st.text(max_size=6)
VALUE = JSON | st.sampled_from(["o/r", "x.gguf", "../x.gguf", "q8_0", "a/b/c", ""])
NEAR_VALID = st.fixed_dictionaries(  # mostly right, so that some registries parse
    {
        "file": st.sampled_from(["x.gguf", "y.gguf", "z.gguf", ".gguf", "a/x.gguf"]),
        "repo": st.sampled_from(["o/r", "a-b/c.d", "o/r2", "o/../r", "o"]),
        "quant": st.sampled_from(["q8_0", "q4_k_m", "q 8"]),
    },
    optional={"bundled": st.booleans(), "description": st.text(max_size=12)},
)
ENTRY = st.one_of(NEAR_VALID, NEAR_VALID, st.dictionaries(FIELD, VALUE, max_size=6), JSON)
MODELS = st.dictionaries(st.sampled_from(["a", "b", "c"]) | st.text(max_size=8), ENTRY, max_size=3)
REGISTRY_LIKE = st.one_of(JSON, st.fixed_dictionaries({"models": MODELS}), st.fixed_dictionaries({"models": MODELS}))


@settings(max_examples=300, deadline=None)
@given(content=REGISTRY_LIKE | st.binary(max_size=40))
def test_any_registry_parses_or_is_a_user_error(tmp_path_factory, content):
    path = tmp_path_factory.getbasetemp() / "fuzzed-registry.json"
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    try:
        entries = models.registry(path)
    except UserError as exc:
        assert "is not a valid model registry" in str(exc)
        return
    for entry in entries:
        assert entry.file.endswith(".gguf") and "/" not in entry.file
        assert entry.bundled or (models.is_repo_id(entry.repo or "") and entry.quant)


# --- the default model ----------------------------------------------------------------------------------------------


def test_nothing_here_is_a_clear_error(dirs):
    with pytest.raises(UserError, match="no model found") as info:
        models.default_model()
    message = str(info.value)
    assert f"{DEMO}.gguf is missing too" in message and "midillm-lite convert o/r -q q4_k_m" in message


def test_the_demo_when_nothing_else(dirs):
    repo, _ = dirs
    demo = touch(repo / f"{DEMO}.gguf")
    choice = models.default_model()
    assert choice == models.ModelChoice(DEMO, demo, models.registry()[-1]) and choice.bundled
    assert models.resolve_model(None) == demo


def test_a_converted_midi_llm_beats_the_demo(dirs):
    repo, home = dirs
    touch(repo / f"{DEMO}.gguf")
    hub = touch(home / "o--r-q4_k_m.gguf")  # what `gen --model o/r` converts to
    touch(home / "o--r-q4_k_m.text.gguf")  # a midi-head companion is no model
    touch(home / "unrelated.gguf")  # not a conversion of a registry repo: never the default
    choice = models.default_model()
    assert (choice.name, choice.path, choice.entry) == ("o--r-q4_k_m", hub, None) and not choice.bundled
    small = touch(home / "small.gguf")
    assert models.default_model().path == small  # registry conversions rank before other ones
    best = touch(repo / "best.gguf")
    assert models.default_model().name == "best" and models.default_model().path == best


def test_explicit_choices_keep_their_names(dirs, tmp_path):
    repo, home = dirs
    demo = touch(repo / f"{DEMO}.gguf")
    assert models.find_model(str(demo)).bundled  # the demo by path is still the demo
    assert models.find_model(DEMO).path == demo
    mine = touch(tmp_path / "mine.gguf")
    assert models.find_model(str(mine)) == models.ModelChoice("mine", mine)
    touch(home / "o--r-q4_k_m.gguf")
    assert models.find_model("o/r", allow_download=False).name == "o--r-q4_k_m"
    demo.unlink()
    with pytest.raises(UserError, match="bundled with midillm-lite"):
        models.find_model(DEMO)


# --- gen says which model it used -----------------------------------------------------------------------------------


def test_gen_says_which_model_it_used(dirs, tiny_gguf, tmp_path, capsys):
    repo, home = dirs
    shutil.copy(tiny_gguf(), repo / f"{DEMO}.gguf")
    code, _, err = run_cli(["gen", PROMPT, *QUICK, "-o", str(tmp_path / "a")], capsys)
    assert code == 0, err
    assert err.splitlines()[0] == (
        f"model: {DEMO} (demo model bundled with midillm-lite; run `midillm-lite models` to get MIDI-LLM)"
    )
    stats = json.loads((tmp_path / "a" / "generation_stats.json").read_text())
    assert stats["model"]["name"] == DEMO and stats["model"]["path"] == str(repo / f"{DEMO}.gguf")

    shutil.copy(tiny_gguf(), home / "small.gguf")
    code, _, err = run_cli(["gen", PROMPT, *QUICK, "-o", str(tmp_path / "b")], capsys)
    assert code == 0 and err.splitlines()[0] == f"model: small ({home / 'small.gguf'}; f32, 2 threads)", err

    code, out, err = run_cli(["gen", PROMPT, *QUICK, "-o", str(tmp_path / "c"), "--json"], capsys)
    result = json.loads(out)
    assert code == 0 and "model:" not in err
    assert result["model"]["name"] == "small" and result["model"]["path"] == str(home / "small.gguf")

    code, _, err = run_cli(["gen", PROMPT, *QUICK, "-o", str(tmp_path / "d"), "--quiet"], capsys)
    assert code == 0 and err == ""


# --- `midillm-lite models` ------------------------------------------------------------------------------------------


def test_models_lists_present_bundled_and_convertible(dirs, capsys):
    repo, home = dirs
    touch(repo / f"{DEMO}.gguf", 26_000_000)
    touch(home / "small.gguf", 900)
    touch(home / "mine.gguf")
    touch(home / "mine.text.gguf")
    code, out, err = run_cli(["models"], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    make_best = f"midillm-lite convert o/r -q q8_0 --layout midi-head -o {home / 'best.gguf'}"
    assert lines[0] == f"  best{' ' * 15}not here: {make_best}"
    assert "`midillm-lite gen --model best` downloads and converts it on first use" in out
    assert f"* small{' ' * 14}present at {home / 'small.gguf'} (900 B, not a readable MIDI-LLM GGUF)" in lines
    demo_line = f"bundled at {repo / DEMO}.gguf (26.0 MB, not a readable MIDI-LLM GGUF)"
    assert any(line.startswith(f"  {DEMO}") and demo_line in line for line in lines)
    assert "demo: tiny" in out and "the best" in out
    assert "other GGUF files here:" in lines and "mine.text" not in out and f"present at {home / 'mine.gguf'}" in out
    assert lines[-1] == "* what `midillm-lite gen` uses without --model"


def test_models_json(dirs, capsys):
    repo, home = dirs
    touch(repo / f"{DEMO}.gguf", 10)
    touch(home / "o--r-q8_0.gguf", 20)
    code, out, _ = run_cli(["models", "--json"], capsys)
    listing = {item["name"]: item for item in json.loads(out)}
    assert code == 0 and list(listing) == ["best", "small", DEMO, "o--r-q8_0"]
    assert listing["best"]["status"] == "absent" and listing["best"]["size_bytes"] is None
    assert listing["best"]["convert_command"] == (
        f"midillm-lite convert o/r -q q8_0 --layout midi-head -o {home / 'best.gguf'}"
    )
    assert listing[DEMO]["status"] == "bundled" and listing[DEMO]["bundled"] and listing[DEMO]["size_bytes"] == 10
    extra = listing["o--r-q8_0"]
    assert extra["status"] == "present" and not extra["in_registry"]
    assert (extra["repo"], extra["quant"]) == ("o/r", "q8_0")
    assert [name for name, item in listing.items() if item["default"]] == ["o--r-q8_0"]


def test_models_with_nothing_here(dirs, capsys):
    code, out, _ = run_cli(["models"], capsys)
    assert code == 0 and f"not here: bundled with midillm-lite, expected at {dirs[0] / DEMO}.gguf" in out
    assert out.splitlines()[-1].startswith("`midillm-lite gen` needs --model") and "* " not in out
    code, out, _ = run_cli(["models", "--json"], capsys)
    assert code == 0 and not any(item["default"] for item in json.loads(out))


def test_models_with_a_broken_registry(dirs, capsys):
    (dirs[0] / "registry.json").write_text('{"models": {"x": {"file": "x.gguf"}}}')
    code, out, err = run_cli(["models"], capsys)
    assert code == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1 and "'repo'" in err


def test_an_unreadable_file_is_skipped_for_the_default(dirs, monkeypatch, caplog):
    repo, home = dirs
    monkeypatch.undo()  # the real check, on real files
    monkeypatch.setattr(models, "REPO_MODELS", repo)
    monkeypatch.setattr(models, "REGISTRY", repo / "registry.json")
    monkeypatch.setenv("MIDILLM_HOME", str(home.parent))
    shipped = Path(models.__file__).resolve().parents[1] / "models" / f"{DEMO}.gguf"
    shutil.copy(shipped, repo / f"{DEMO}.gguf")
    (home / "best.gguf").write_bytes(shipped.read_bytes()[: 1 << 20])  # a truncated download
    choice = models.default_model()
    assert choice.name == DEMO
    assert "skipped" in caplog.text and "best.gguf" in caplog.text
    listing = {item.name: item for item in models.list_models()}
    assert listing[DEMO].default and not listing["best"].default
    assert listing[DEMO].layout == "standard" and listing["best"].layout is None


def test_registry_conversions_are_shown_in_the_cache_layout(dirs):
    listing = {item.name: item for item in models.list_models()}
    assert f"--layout {models.CACHE_LAYOUT}" in listing["best"].convert_command
    assert models.CACHE_LAYOUT == "midi-head"


def test_hub_conversions_for_the_cache_are_midi_head(dirs, monkeypatch):
    import midillm_lite.convert

    calls = []
    monkeypatch.setattr(midillm_lite.convert, "convert", lambda *args, **kwargs: calls.append((args, kwargs)))
    choice = models.find_model("best")
    assert calls == [(("o/r", choice.path), {"quant": "q8_0", "layout": "midi-head", "progress": None})]
