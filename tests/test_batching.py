"""BatchScheduler: concurrent requests share decode steps and still give Generator.generate's tokens, seed for seed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from clirun import run_cli

from midillm_lite.amt.codec import decode_tokens
from midillm_lite.amt.midi import read_midi
from midillm_lite.amt.tokens_file import read_tokens
from midillm_lite.amt.vocab import ADUR_OFFSET, ANOTE_OFFSET, ATIME_OFFSET
from midillm_lite.batching import BatchScheduler, QueueFull, SchedulerClosed
from midillm_lite.errors import UserError
from midillm_lite.generate import Generator
from midillm_lite.promptfile import prompt_seed

# Concurrent requests: more sequences than slots, so some wait and reuse the slots others freed. llama.cpp's CPU
# kernels round a decode of one token differently from a decode of several (on this F32 model every decode of 2+
# tokens gives the same logits, whatever else shares it; BENCHMARKS.md, "Continuous batching"). So these requests
# have n >= 2 and no early stop (free mode, no seconds): every decode carries 2+ tokens, here and in
# Generator.generate, and equal tokens are then required whatever the threads' timing.
REQUESTS = [
    ("a slow piano ballad", dict(n=2, seed=1, max_tokens=60, strict=False)),
    ("a fast fiddle reel", dict(n=3, seed=2, max_tokens=45, strict=False, temperature=0.8, top_k=40)),
    ("a jazz trio", dict(n=2, seed=3, max_tokens=90, strict=False)),
    ("a march", dict(n=2, seed=4, max_tokens=30, strict=False, top_p=0.9)),
]
# One at a time through the scheduler, the decodes are Generator.generate's: strict stops and n=1 must match too.
SINGLE = [
    ("a chorale", dict(n=3, seed=5, max_tokens=75, seconds=4.0)),
    ("x", dict(n=1, seed=6, max_tokens=45)),
    ("a march", dict(n=1, seed=4, max_tokens=30, temperature=0.8, top_k=40)),
]
LONG = dict(n=2, seed=9, max_tokens=600, strict=False)  # runs until cancelled in these tests
STARTED_WITHIN_S = 60


@pytest.fixture(scope="module")
def generator(tiny_gguf):
    # F32: llama.cpp's CPU kernels then give the same logits whatever else shares the batch (BENCHMARKS.md).
    with Generator(tiny_gguf(), threads=2) as gen:
        yield gen


def run_all(scheduler: BatchScheduler, requests, **extra) -> list:
    """Every request from its own thread, all at once; results (or the exception) in request order."""
    results: list = [None] * len(requests)

    def one(i: int) -> None:
        prompt, kwargs = requests[i]
        try:
            results[i] = scheduler.generate(prompt, **kwargs, **extra)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return results


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + STARTED_WITHIN_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {STARTED_WITHIN_S} s")
        time.sleep(0.01)


def test_concurrent_requests_give_generate_tokens(generator):
    expected = [generator.generate(prompt, **kwargs) for prompt, kwargs in REQUESTS]
    with BatchScheduler(generator, slots=4) as scheduler:
        results = run_all(scheduler, REQUESTS)
        stats = scheduler.stats
    for want, got in zip(expected, results, strict=True):
        assert not isinstance(got, Exception), got
        assert [o.tokens for o in got.outputs] == [o.tokens for o in want.outputs]
        assert [o.generated for o in got.outputs] == [o.generated for o in want.outputs]
        assert got.seed == want.seed and not got.interrupted
        assert got.stats()["outputs"] == want.stats()["outputs"]  # same files, summaries and flags
    assert stats.requests == len(REQUESTS) and stats.generated == sum(r.timings.generated for r in results)
    # Shared steps: fewer decodes than the requests' steps one after another.
    assert stats.steps < sum(r.timings.steps for r in results)
    assert any(r.timings.queue_s > 0 for r in results)


def test_one_request_at_a_time_gives_generate_tokens(generator):
    with BatchScheduler(generator, slots=4) as scheduler:
        for prompt, kwargs in SINGLE:
            want, got = generator.generate(prompt, **kwargs), scheduler.generate(prompt, **kwargs)
            assert [o.tokens for o in got.outputs] == [o.tokens for o in want.outputs]
            assert got.stats()["outputs"] == want.stats()["outputs"]


def _control_triplet(seq: int, tokens: list[int], state) -> list[int]:
    """After every 4th complete note, a control triplet (a note the music must hold later, as AMT anticipation
    inserts them) at the current time: the model never samples these ids, the engine feeds them."""
    if state.slot == 0 and len(tokens) % 12 == 0:
        return [ATIME_OFFSET + state.last_onset + 100, ADUR_OFFSET + 10, ANOTE_OFFSET + 60 + seq]
    return []


def test_inject_feeds_several_tokens_and_matches_the_engine(generator):
    prompt, kwargs = "an etude", dict(n=2, seed=11, max_tokens=60, strict=False)
    plan = generator.prepare(prompt, **kwargs)
    plan.generation.inject = _control_triplet
    reference = plan.generation.run()
    expected = generator.finish(plan, interrupted=False)
    plain = generator.prepare(prompt, **kwargs).generation.run()
    with BatchScheduler(generator, slots=4) as scheduler:
        results = run_all(scheduler, [(prompt, kwargs), *REQUESTS[:2]], inject=_control_triplet)
    got = results[0]
    assert [o.tokens for o in got.outputs] == [o.tokens for o in expected.outputs]
    assert [o.generated for o in got.outputs] == [len(t) for t in reference.tokens]
    for tokens, before, seq in zip(reference.tokens, plain.tokens, range(2), strict=True):
        assert tokens[:12] == before[:12]  # the same run until the first injection...
        assert tokens[12:15] == _control_triplet(seq, tokens[:12], _state_at_note_start(tokens[:12]))  # ...then it
        assert len(tokens) == 60 and tokens[15:] != before[12:57]  # and the sequence went on from there


def _state_at_note_start(tokens: list[int]):
    from midillm_lite.sampling import NoteState

    return NoteState().extend(tokens)


def test_cancel_ends_one_request_others_unchanged(generator):
    expected = [generator.generate(prompt, **kwargs) for prompt, kwargs in REQUESTS[:2]]
    cut_short = dict(LONG, max_tokens=200)
    whole = generator.generate("endless", **cut_short)
    cancel = threading.Event()

    def cancel_at_step_10(progress, timings) -> None:
        if timings.steps >= 10:
            cancel.set()

    with BatchScheduler(generator, slots=4) as scheduler:
        extra = dict(cancel=cancel, on_step=cancel_at_step_10)
        results = run_all(scheduler, [("endless", dict(cut_short, **extra)), *REQUESTS[:2]])
    part = results[0]
    assert part.interrupted
    for cut, full in zip(part.outputs, whole.outputs, strict=True):
        assert cut.partial and 10 <= len(cut.tokens) < len(full.tokens)
        assert cut.tokens == full.tokens[: len(cut.tokens)]  # the same music, cut short
    for want, got in zip(expected, results[1:], strict=True):
        assert [o.tokens for o in got.outputs] == [o.tokens for o in want.outputs] and not got.interrupted


def test_limits_are_clear_errors(generator):
    with BatchScheduler(generator, slots=2, max_queue=1) as scheduler:
        with pytest.raises(UserError, match=r"^n is 3 but the batch scheduler decodes 2 sequences"):
            scheduler.generate("x", n=3)
        cancel = threading.Event()
        runner = threading.Thread(target=scheduler.generate, args=("long",), kwargs=dict(LONG, cancel=cancel))
        runner.start()
        wait_until(lambda: scheduler.active == 2, "the first request's start")
        waiter = threading.Thread(target=scheduler.generate, args=("queued",), kwargs=dict(n=1, max_tokens=30))
        waiter.start()
        wait_until(lambda: scheduler.waiting == 1, "the second request's queueing")
        with pytest.raises(QueueFull, match="waiting already"):
            scheduler.generate("one too many", n=1, max_tokens=30)
        cancel.set()
        runner.join(timeout=60)
        waiter.join(timeout=60)
    with pytest.raises(SchedulerClosed):
        scheduler.generate("after close", n=1)
    with pytest.raises(UserError, match=r"^slots must be"):
        BatchScheduler(generator, slots=0)


def test_failing_hooks_and_callbacks_end_only_their_request(generator):
    def broken(seq, tokens, state):
        raise ValueError("broken hook")

    def progress_then_fail(progress, timings):
        if timings.steps >= 3:
            raise RuntimeError("callback failed")

    prompt, kwargs = REQUESTS[0]
    expected = generator.generate(prompt, **kwargs)
    with BatchScheduler(generator, slots=2) as scheduler:
        with pytest.raises(ValueError, match="broken hook"):
            scheduler.generate("x", n=2, max_tokens=30, inject=broken)
        with pytest.raises(RuntimeError, match="callback failed"):
            scheduler.generate("x", on_step=progress_then_fail, **LONG)
        assert scheduler.active == 0
        assert [o.tokens for o in scheduler.generate(prompt, **kwargs).outputs] == [o.tokens for o in expected.outputs]


def test_interrupt_in_the_caller_returns_a_partial_result(generator):
    def interrupt(progress, timings):
        if timings.steps >= 5:
            raise KeyboardInterrupt  # what Ctrl-C raises in the caller's thread while it waits

    with BatchScheduler(generator, slots=2) as scheduler:
        result = scheduler.generate("x", on_step=interrupt, **LONG)
        assert scheduler.active == 0
    assert result.interrupted and all(o.partial and 5 <= len(o.tokens) < 600 for o in result.outputs)


def test_close_cancels_running_and_waiting(generator):
    scheduler = BatchScheduler(generator, slots=2)
    requests = [("first", LONG), ("second", LONG)]
    results: list = []
    thread = threading.Thread(target=lambda: results.extend(run_all(scheduler, requests)))
    thread.start()
    wait_until(lambda: scheduler.active == 2 and scheduler.waiting == 1, "one running, one waiting")
    scheduler.close()
    thread.join(timeout=60)
    assert all(r.interrupted for r in results)
    # The running one keeps what it made; the waiting one never started: no outputs at all.
    assert sorted(len(r.outputs) for r in results) == [0, 2]
    assert all(0 < len(o.tokens) < 600 and o.partial for r in results for o in r.outputs)


# --- gen --prompts-file ---------------------------------------------------------------------------------------------
PROMPTS = ["A slow piano ballad", "A fast fiddle reel", "A jazz trio"]
CLI_FAST = ["-n", "2", "--free", "--max-tokens", "45", "--threads", "2", "--seed", "5"]  # 2+ tokens a decode


def _folders(root: Path) -> dict[str, Path]:
    return {folder.name.split("-", 2)[2]: folder for folder in root.iterdir()}


def test_prompts_file_runs_batched_with_the_tokens_of_single_runs(tiny_gguf, tmp_path, capsys):
    model = str(tiny_gguf())
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    code, _, err = run_cli(["gen", "--prompts-file", str(prompts), "-m", model, *CLI_FAST, "--slots", "4",
                            "-o", str(tmp_path / "batch")], capsys)  # fmt: skip
    # Free mode on random weights may make no notes (exit 1, the outputs kept under rejected/): tokens still count.
    assert code in (0, 1) and "Traceback" not in err, err
    assert "prompts done" in err  # the batch's own progress line (stderr is not a terminal here)
    # A prompts file gives each line its own seed, from --seed and the line number: the fiddle reel is line 2.
    alone = [*CLI_FAST[:-1], str(prompt_seed(int(CLI_FAST[-1]), 2))]
    code, _, err = run_cli(["gen", PROMPTS[1], "-m", model, *alone, "-q", "-o", str(tmp_path / "one")], capsys)
    assert code in (0, 1), err
    batch = _folders(tmp_path / "batch")
    assert sorted(batch) == ["a-fast-fiddle-reel", "a-jazz-trio", "a-slow-piano-ballad"]
    for name in ("gen_1_tokens.txt", "gen_2_tokens.txt"):
        [mine] = batch["a-fast-fiddle-reel"].rglob(name)
        [single] = (tmp_path / "one").rglob(name)
        assert mine.relative_to(batch["a-fast-fiddle-reel"]) == single.relative_to(tmp_path / "one")
        assert read_tokens(mine) == read_tokens(single) and len(read_tokens(mine)) == 45
    code, _, err = run_cli(["gen", "--prompts-file", str(prompts), "-m", model, *CLI_FAST, "--slots", "1",
                            "-o", str(tmp_path / "x")], capsys)  # fmt: skip
    assert code == 2 and err.strip() == "error: --slots is 1 but each prompt has 2 outputs, decoded together; " \
                                        "give --slots 2 or more"  # fmt: skip


def test_interrupting_a_batch_keeps_every_running_prompt(tiny_gguf, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "midillm_lite", "gen", "--prompts-file", str(prompts), "-m", str(tiny_gguf()),
         "-n", "1", "--slots", "2", "--max-tokens", "2046", "--free", "--threads", "2", "-o", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    seen = []
    try:
        deadline = time.monotonic() + STARTED_WITHIN_S
        for line in proc.stderr:  # off a terminal, a progress line comes whenever a prompt starts or ends
            seen.append(line)
            if "2 generating" in line or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=60)
    finally:
        proc.kill()
    stderr = "".join(seen) + rest
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    folders = list(out.iterdir())
    assert len(folders) == 2 and stderr.count("interrupted: partial outputs written to") == 2  # the third waited
    for folder in folders:
        stats = json.loads((folder / "generation_stats.json").read_text())
        assert stats["interrupted"] and stats["outputs"][0]["partial"]
        midi = Path(stats["outputs"][0]["file"])
        tokens = read_tokens(midi.with_name(f"{midi.stem}_tokens.txt"))
        assert 0 < len(tokens) < 2046 and len(read_midi(midi).notes) == len(decode_tokens(tokens).notes)


def test_a_failed_decode_ends_the_batch_not_the_scheduler(generator, monkeypatch):
    prompt, kwargs = REQUESTS[0]
    expected = generator.generate(prompt, **kwargs)
    with BatchScheduler(generator, slots=4) as scheduler:
        context = scheduler._ctx
        real = context.decode
        calls = []

        def fail_the_third_step(items):
            calls.append(len(items))
            if len(calls) == 5:  # two prompt decodes, two steps, then this one fails
                raise RuntimeError("llama_decode failed with code -3")
            return real(items)

        monkeypatch.setattr(context, "decode", fail_the_third_step)
        with pytest.raises(RuntimeError, match="code -3"):
            scheduler.generate(prompt, **kwargs)
        assert scheduler.active == 0 and scheduler.running == 0
        assert [o.tokens for o in scheduler.generate(prompt, **kwargs).outputs] == [o.tokens for o in expected.outputs]
