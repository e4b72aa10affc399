"""Prompts files (numbered lines, seeds, folder names), `--cluster` specs and a cluster run's folder plan: no model,
no Ray."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from midillm_lite.cluster.plan import COMPLETE_NAME, MANIFEST_NAME, STAGING_PREFIX, plan_run
from midillm_lite.cluster.ray_run import ClusterSpec
from midillm_lite.errors import UserError
from midillm_lite.limits import MAX_SEED
from midillm_lite.promptfile import decode_lines, line_folder_name, prompt_seed, read_prompt_file

LINES = st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")), max_size=10)


@given(LINES)
def test_prompt_lines_keep_their_numbers(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("p") / "prompts.txt"
    data = b"".join(line + b"\n" for line in lines)
    path.write_bytes(data)
    try:
        prompts = read_prompt_file(path)
    except UserError as exc:
        nul = b"\0" in data
        assert ("a NUL byte on line" in str(exc)) if nul else "holds no prompts" in str(exc)
        return
    decoded, _ = decode_lines(data)
    assert [p.number for p in prompts.lines] == sorted({p.number for p in prompts.lines})
    for line in prompts.lines:
        assert line.text == decoded[line.number - 1].strip() and line.text and line.text[0] != "#"
    kept = {n for n, t in enumerate(decoded, start=1) if t.strip() and not t.strip().startswith("#")}
    assert {p.number for p in prompts.lines} == kept


@given(st.integers(0, MAX_SEED), st.integers(1, 10**6))
def test_each_line_has_its_own_seed_in_range(run_seed, line):
    seed = prompt_seed(run_seed, line)
    assert 0 <= seed <= MAX_SEED and seed == prompt_seed(run_seed, line)
    assert seed not in (prompt_seed(run_seed, line + 1), prompt_seed(run_seed + 1, line))


@given(st.integers(1, 10**6), st.text(min_size=1, max_size=80))
def test_folder_names_are_safe_and_start_with_the_line(number, text):
    from midillm_lite.promptfile import PromptLine

    name = line_folder_name(PromptLine(number, text))
    assert re.fullmatch(r"\d{5,}-[a-z0-9-]+", name) and int(name.split("-")[0]) == number


@given(st.text(max_size=30))
def test_cluster_specs(text):
    try:
        spec = ClusterSpec.parse(text)
    except UserError as exc:
        assert "give ray (a local cluster) or ray:ADDRESS" in str(exc)
        assert not (text == "ray" or (text.startswith("ray:") and text[4:].strip()))
        return
    assert spec.address == (text[4:].strip() or None)


def test_a_plan_skips_complete_lines_redoes_partial_ones_and_keeps_its_seed(tmp_path):
    prompts_path = tmp_path / "p.txt"
    prompts_path.write_text("a waltz\n\na march\na reel\n")
    prompts, out = read_prompt_file(prompts_path), tmp_path / "out"
    first = plan_run(out, prompts, seed=None, settings={"n": 4}, force=False)
    assert [j.line.number for j in first.todo] == [1, 3, 4] and not first.done
    assert first.todo[1].folder == out / "00003-a-march"
    first.todo[0].folder.mkdir()
    (first.todo[0].folder / COMPLETE_NAME).write_text("{}")  # line 1 finished
    first.todo[1].staging.mkdir()  # line 3 was being written when the run stopped
    first.todo[2].folder.mkdir()  # line 4: a folder without its marker
    again = plan_run(out, prompts, seed=None, settings={"n": 4}, force=False)
    assert again.run_seed == first.run_seed and again.todo == first.todo[1:] and again.done == first.todo[:1]
    assert again.redone == [3, 4] and not any(p.name.startswith(STAGING_PREFIX) for p in out.iterdir())
    assert json.loads((out / MANIFEST_NAME).read_text())["run_seed"] == first.run_seed
    with pytest.raises(UserError, match=r"holds a run with n 4, not 8; give the same"):
        plan_run(out, prompts, seed=None, settings={"n": 8}, force=False)
    with pytest.raises(UserError, match=rf"holds a run with seed {first.run_seed}"):
        plan_run(out, prompts, seed=first.run_seed + 1, settings={"n": 4}, force=False)


def test_a_plan_refuses_a_folder_of_other_files(tmp_path):
    prompts_path = tmp_path / "p.txt"
    prompts_path.write_text("a waltz\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"holds other files and no cluster_run\.json; use force=True"):
        plan_run(tmp_path / "out", read_prompt_file(prompts_path), seed=1, settings={}, force=False)
