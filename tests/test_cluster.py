"""`gen --prompts-file --cluster ray`: on one local Ray cluster shared by this module (2 workers x 1 thread, tiny
model): the same music as plain --prompts-file, a killed worker, an interrupted driver resumed, bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from clirun import run_cli

from midillm_lite.amt.tokens_file import read_tokens
from midillm_lite.cluster import plan as cluster_plan
from midillm_lite.cluster.plan import MANIFEST_NAME, STAGING_PREFIX, SUMMARY_NAME, is_complete
from midillm_lite.errors import UserError
from midillm_lite.promptfile import prompt_seed

ray = pytest.importorskip("ray", reason="the [cluster] extra (make install adds it)")

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [f"{style} for {band}" for style in ("A waltz", "A march", "A lullaby", "A reel")
           for band in ("piano", "strings", "brass band")]  # fmt: skip
SEED = "5"
SETTINGS = ["-n", "1", "--max-tokens", "60", "--seed", SEED, "--no-png"]
CLUSTER = ["--workers", "2", "--threads-per-worker", "1"]
RUN_S = 240  # a loaded machine starts a worker in seconds; this only bounds a hung run


@pytest.fixture(scope="module")
def model(tiny_gguf) -> str:
    return str(tiny_gguf())


@pytest.fixture(scope="module")
def address():
    """One local Ray cluster for the module (starting one takes ~10 s): the in-process runs use it as it is,
    the subprocess runs connect to it with ray:ADDRESS."""
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}}
    )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "captions.txt"
    lines = ["# twelve captions, blank lines between some"]
    for i, text in enumerate(PROMPTS):
        lines += [text] + ([""] if i % 4 == 3 else [])
    path.write_text("\n".join(lines) + "\n")
    return path


def line_numbers(path: Path) -> dict[str, int]:
    return {text: n for n, text in enumerate(path.read_text().splitlines(), start=1) if text and text[0] != "#"}


@pytest.fixture(scope="module")
def reference(model, prompts_file, tmp_path_factory) -> dict[str, list[int]]:
    """Plain `gen --prompts-file` (no cluster), same seed and threads, one prompt at a time (--slots = -n: batched
    prompts share decodes, which llama.cpp may round differently): each prompt's tokens."""
    out = tmp_path_factory.mktemp("plain")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(out)
        code = _in_process(["--prompts-file", str(prompts_file), "-m", model, *SETTINGS, "--threads", "1", "-q",
                            "--slots", "1"])  # fmt: skip
    assert code == 0
    folders = [f for f in out.joinpath("midillm-out").iterdir()]
    assert len(folders) == len(PROMPTS)
    return {(f / "prompt.txt").read_text().strip(): read_tokens(f / "gen_1_tokens.txt") for f in folders}


def _in_process(args: list[str]) -> int:
    from midillm_lite.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["gen", *args])
        raise SystemExit(0)
    return exit_info.value.code or 0


def cluster_args(model: str, prompts: Path, out: Path, cluster: str = "ray") -> list[str]:
    return ["--prompts-file", str(prompts), "-m", model, *SETTINGS, "--cluster", cluster, *CLUSTER, "-o", str(out)]


def check_run(out: Path, prompts: Path, reference: dict[str, list[int]]) -> dict:
    """Every prompt has exactly one folder, complete, named by its line, holding the plain run's tokens."""
    numbers = line_numbers(prompts)
    folders = sorted(p for p in out.iterdir() if p.is_dir())
    assert not [f for f in folders if f.name.startswith(STAGING_PREFIX)]
    assert [int(f.name.split("-")[0]) for f in folders] == sorted(numbers.values())
    for folder in folders:
        assert is_complete(folder)
        text = (folder / "prompt.txt").read_text().strip()
        assert folder.name.startswith(f"{numbers[text]:05d}-")
        assert read_tokens(folder / "gen_1_tokens.txt") == reference[text], text
        stats = json.loads((folder / "generation_stats.json").read_text())
        assert stats["sampling"]["seed"] == prompt_seed(int(SEED), numbers[text])
    return json.loads((out / SUMMARY_NAME).read_text())


def test_a_cluster_run_gives_the_plain_runs_music_and_a_second_run_does_nothing(
    model, address, prompts_file, reference, tmp_path, capsys
):
    out = tmp_path / "out"
    code, _, err = run_cli(["gen", *cluster_args(model, prompts_file, out)], capsys)
    assert code == 0, err
    summary = check_run(out, prompts_file, reference)
    assert summary["complete"] == summary["done_this_run"] == len(PROMPTS) and not summary["failed"]
    workers = summary["workers"]
    assert len(workers) == 2 and sum(w["prompts"] for w in workers) == len(PROMPTS)
    generated = [json.loads(f.read_text())["timings"]["tokens_generated"] for f in out.glob("*/generation_stats.json")]
    assert sum(w["tokens"] for w in workers) == summary["tokens"] == sum(generated) > 0
    assert all(w["tokens_per_s"] > 0 for w in workers) and summary["wall_s"] > 0
    assert f"{len(PROMPTS)} of {len(PROMPTS)} prompts complete in {out}" in err
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    code, _, err = run_cli(["gen", *cluster_args(model, prompts_file, out)], capsys)
    assert code == 0 and "nothing to do" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # not one file written again


def test_slots_let_a_worker_batch_several_prompts(model, address, prompts_file, tmp_path, capsys):
    # --slots 3 at n=1: each worker's BatchScheduler decodes 3 prompts together (the tokens may then differ from
    # a one-at-a-time run at the bit level, so only completeness and the seeds are checked here).
    from midillm_lite.cluster.ray_run import prompts_per_worker

    assert [prompts_per_worker(s, n) for s, n in ((1, 1), (3, 1), (4, 2), (5, 2), (2, 4))] == [1, 3, 2, 2, 1]
    out = tmp_path / "out"
    code, _, err = run_cli(["gen", *cluster_args(model, prompts_file, out), "--slots", "3"], capsys)
    assert code == 0, err
    numbers = line_numbers(prompts_file)
    folders = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(folders) == len(PROMPTS) and all(is_complete(f) for f in folders)
    for folder in folders:
        stats = json.loads((folder / "generation_stats.json").read_text())
        text = (folder / "prompt.txt").read_text().strip()
        assert stats["sampling"]["seed"] == prompt_seed(int(SEED), numbers[text])
        assert read_tokens(folder / "gen_1_tokens.txt")
    code, _, err = run_cli(["gen", *cluster_args(model, prompts_file, tmp_path / "b"), "-n", "2", "--slots", "1"],
                           capsys)  # fmt: skip
    assert code != 0 and "--slots is 1 but each prompt has 2 outputs" in err


def _driver(model, prompts, out, address) -> subprocess.Popen:
    args = cluster_args(model, prompts, out, cluster=f"ray:{address}")
    return subprocess.Popen([sys.executable, "-m", "midillm_lite", "gen", *args], cwd=ROOT, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)  # fmt: skip


def test_a_worker_killed_mid_run_loses_nothing(model, address, prompts_file, reference, tmp_path):
    out = tmp_path / "out"
    driver = _driver(model, prompts_file, out, address)
    pids, killed, lines = {}, None, []
    for line in driver.stderr:
        lines.append(line)
        if ready := re.match(r"worker (\d+) ready on .*, pid (\d+)", line):
            pids[int(ready[1])] = int(ready[2])
        if line.startswith("[1/") and killed is None:
            killed = pids[1]
            os.kill(killed, signal.SIGKILL)  # while it holds prompts: two are given to each worker at a time
    assert driver.wait(timeout=RUN_S) == 0, "".join(lines)
    summary = check_run(out, prompts_file, reference)
    assert summary["complete"] == len(PROMPTS) and not summary["failed"]
    first = summary["workers"][0]
    assert first["deaths"] == 1 and killed == first["pids"][0]  # (Ray restarts it: the run may be over by then)
    assert summary["retried_after_worker_death"] >= 1
    assert any("died" in line and "is retried" in line for line in lines)


def test_an_interrupted_run_resumes_with_the_rest_only(model, address, prompts_file, reference, tmp_path, capsys):
    out = tmp_path / "out"
    driver = _driver(model, prompts_file, out, address)
    lines = []
    for line in driver.stderr:
        lines.append(line)
        if line.startswith("[3/"):
            driver.send_signal(signal.SIGINT)
            break
    lines += driver.stderr.readlines()
    assert driver.wait(timeout=RUN_S) == 130, "".join(lines)
    assert lines[-1].startswith("interrupted: ") and "run the same command" in lines[-1]
    done = {p.name for p in out.iterdir() if p.is_dir() and is_complete(p)}
    assert 3 <= len(done) < len(PROMPTS)
    code, _, err = run_cli(["gen", *cluster_args(model, prompts_file, out, cluster=f"ray:{address}")], capsys)
    assert code == 0, err
    summary = check_run(out, prompts_file, reference)  # the same music as an uninterrupted run
    assert summary["skipped_already_complete"] == len(done)
    assert summary["done_this_run"] == len(PROMPTS) - len(done)


def _error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: "), err
    return lines[-1]


def test_an_unreachable_address_fails_at_once_naming_it(model, prompts_file, tmp_path, capsys):
    code, _, err = run_cli(["gen", *cluster_args(model, prompts_file, tmp_path / "o", cluster="ray:127.0.0.1:9")],
                           capsys)  # fmt: skip
    assert code == 2 and err.count("\n") == 1
    assert _error_line(err).startswith("error: cannot reach the Ray cluster at 127.0.0.1:9 (")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow  # starts two workers
def test_a_model_missing_on_the_workers_names_the_worker(address, prompts_file, tmp_path, capsys):
    code, _, err = run_cli(["gen", *cluster_args(str(tmp_path / "nowhere.gguf"), prompts_file, tmp_path / "o")],
                           capsys)  # fmt: skip
    line = _error_line(err)
    assert code == 2 and re.match(r"error: worker \d on .+ \(.+\): ", line) and "nowhere.gguf" in line, err


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"a waltz\n\x00\x01binary\n", "is not a text file (a NUL byte on line 2)"),
     (b"\n  \n# only a comment\n", "holds no prompts")],
    ids=["binary", "blank"],
)  # fmt: skip
def test_an_unusable_prompts_file_fails_before_ray_starts(model, tmp_path, capsys, content, message):
    prompts = tmp_path / "p.txt"
    prompts.write_bytes(content)
    code, _, err = run_cli(["gen", *cluster_args(model, prompts, tmp_path / "o")], capsys)
    assert code == 2 and message in _error_line(err) and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_a_bad_line_fails_alone_and_the_rest_stay_complete(model, address, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_bytes(b"a waltz\n\n" + b"piano " * 4000 + b"\na caf\xe9 tango\n")  # a line past the context
    out = tmp_path / "o"
    code, _, err = run_cli(["gen", *cluster_args(model, prompts, out)], capsys)
    assert code == 2 and f"warning: {prompts} line 4 is not valid UTF-8" in err
    assert _error_line(err).startswith("error: 1 of 3 prompts failed (line 3: the prompt is ")
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["00001-a-waltz", "00004-a-caf-tango"]
    assert json.loads((out / SUMMARY_NAME).read_text())["failed"].keys() == {"3"}
    code, _, err = run_cli(["gen", *cluster_args(model, prompts, out)], capsys)  # retried, and still too long
    assert code == 2 and "2 already complete" in err and "1 of 3 prompts failed (line 3" in err


def test_an_unwritable_out_fails_before_ray_starts(model, prompts_file, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    code, _, err = run_cli(["gen", *cluster_args(model, prompts_file, tmp_path / "file" / "o")], capsys)
    assert code == 2 and _error_line(err).startswith(f"error: cannot create {tmp_path / 'file' / 'o'}")


def test_a_write_failure_mid_run_stops_it_and_keeps_what_was_done(
    model, address, prompts_file, reference, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "o"
    real = cluster_plan.save_generation
    written = []

    def disk_full_after_four(folder, result, prompt, **kwargs):
        if len(written) == 4:
            raise UserError(f"no space left on the device while writing {folder}/gen_1.mid; nothing was written")
        written.append(prompt)
        return real(folder, result, prompt, **kwargs)

    monkeypatch.setattr(cluster_plan, "save_generation", disk_full_after_four)
    code, _, err = run_cli(["gen", *cluster_args(model, prompts_file, out)], capsys)
    assert code == 2 and "error: no space left on the device" in _error_line(err)
    assert sorted(p.name for p in out.iterdir() if is_complete(p)) == sorted(
        f"{line_numbers(prompts_file)[t]:05d}-" + t.lower().replace(" ", "-") for t in written
    )
    monkeypatch.undo()
    code, _, err = run_cli(["gen", *cluster_args(model, prompts_file, out)], capsys)
    assert code == 0, err
    summary = check_run(out, prompts_file, reference)
    assert summary["skipped_already_complete"] == 4 and summary["done_this_run"] == len(PROMPTS) - 4


def test_a_resumed_run_with_other_settings_is_refused(model, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a waltz\n")
    out = tmp_path / "o"
    out.mkdir()
    (out / MANIFEST_NAME).write_text(json.dumps({"run_seed": 5, "prompts_sha256": "0" * 64, "settings": {}}))
    code, _, err = run_cli(["gen", *cluster_args(model, prompts, out)], capsys)
    assert code == 2 and "holds a run of another prompts file" in _error_line(err)


def test_cluster_flags_need_a_prompts_file_and_ray(tmp_path, capsys):
    cases = [
        (["x", "--cluster", "ray", "-o", str(tmp_path)], "--cluster runs a --prompts-file"),
        (["x", "--workers", "2"], "--workers and --threads-per-worker go with --cluster"),
        (["--prompts-file", "p", "--cluster", "slurm", "-o", str(tmp_path)], "unknown cluster 'slurm'"),
        (["--prompts-file", "p", "--cluster", "ray", "--threads", "2", "-o", "o"], "not --threads"),
        (["--prompts-file", "p", "--cluster", "ray"], "--cluster needs --out FOLDER"),
    ]
    for args, message in cases:
        code, _, err = run_cli(["gen", *args], capsys)
        assert code == 2 and message in err and err.count("\n") == 1, (args, err)


def test_without_ray_the_cluster_flag_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a waltz\n")
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without the [cluster] extra has
    code, _, err = run_cli(["gen", "--prompts-file", str(prompts), "--cluster", "ray", "-o", str(tmp_path)], capsys)
    assert (
        code == 2
        and err == "error: Ray is not installed: pip install 'midillm-lite[cluster]' (on every node of the cluster)\n"
    )
