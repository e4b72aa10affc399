"""Shared model fixtures (tiny MIDI-LLM checkpoints and their GGUF conversions, built once per session), and the
rules that split the suite into two lanes and keep it out of the checkout.

Lanes. `make test` runs everything (what CI runs); `make check` runs `pytest -m "not slow or e2e"`, the edit loop.
Which tests are `slow` is decided here at collection, by a rule rather than a list: a test is slow when it requests,
directly or through any chain of fixtures, one of MODEL_FIXTURES. Those build the tiny checkpoint (the full
183,286-token vocabulary) or convert it with llama.cpp, and every test that converts, loads or samples a model starts
from one of them. Tests that are slow for another reason (a bundled model loaded in-process, a subprocess smoke test)
carry `@pytest.mark.slow` by hand. One test is marked `e2e`: a tiny convert-then-gen run that `make check` keeps on
purpose although the rule marks it slow. The rule is checked by measurement too: after a run, a test that is not
slow yet took longer than FAST_TEST_S is named in the summary, so a new expensive fixture shows up at once.

Nothing written in the checkout. The pytest cache (pyproject's `cache_dir`) and hypothesis's home (example database,
caches) live in the virtual environment, `.venv/`: per checkout, out of git's way, gone with `make clean` (without a
virtual environment, hypothesis's home is in the temp folder). Every path that appears in the checkout during a run
(outside `.venv/`, `.git` and `__pycache__/`) fails the run and is listed at its end: tests write under `tmp_path`.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import hypothesis
import pytest
from hypothesis.configuration import set_hypothesis_home_dir
from midillm_lite.convert import QUANTS, convert

from devkit.checkpoints import make_checkpoint

# K-quants need rows of 256 values to use real K blocks (llama.cpp falls back per tensor otherwise).
KQUANT_SHAPE = {"hidden": 256, "ffn": 512, "heads": 4, "kv_heads": 2, "layers": 1}
LLAMA_THREADS = 2  # the test machine has two cores, shared

MODEL_FIXTURES = frozenset({"checkpoint_factory", "tiny_checkpoint", "tiny_gguf"})
FAST_TEST_S = 5.0  # a test outside the slow lane that takes longer than this is reported (setup + call)
NOT_CHECKOUT = frozenset({".venv", ".git", "__pycache__"})  # not the checkout's content: skipped by the leftover check
# gen renders audio by default, which would cost more than the sampling in every gen test (a tiny model's outputs
# last up to 100 s each); tests/test_audio.py turns it back on where audio is what is tested. Set in the environment,
# so the CLI's subprocesses inherit it.
os.environ["MIDILLM_AUDIO"] = "none"


def _hypothesis_home() -> Path:
    in_venv = sys.prefix != sys.base_prefix
    return Path(sys.prefix) / "hypothesis" if in_venv else Path(tempfile.gettempdir()) / "midillm-lite-hypothesis"


set_hypothesis_home_dir(_hypothesis_home())
# No deadline anywhere: a shared two-core machine stalls single examples for seconds, and that is not a failure.
hypothesis.settings.register_profile("midillm", deadline=None)
hypothesis.settings.load_profile("midillm")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if MODEL_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


# --- the leftover check and the measured side of the slow rule ------------------------------------------------------

_BEFORE = pytest.StashKey[set]()  # the checkout's paths when the session started
_APPEARED = pytest.StashKey[list]()  # the paths that were not there then
_SECONDS: dict[str, float] = {}  # setup + call time of every test outside the slow lane


def _checkout_paths(root: Path) -> set[str]:
    paths = set()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in NOT_CHECKOUT]
        rel = Path(folder).relative_to(root)
        paths.update(str(rel / name) for name in (*dirs, *files))
    return paths


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_BEFORE] = _checkout_paths(session.config.rootpath)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "teardown" and "slow" not in report.keywords:
        _SECONDS[report.nodeid] = _SECONDS.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    appeared = sorted(_checkout_paths(config.rootpath) - config.stash.get(_BEFORE, set()))
    config.stash[_APPEARED] = appeared
    if appeared and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    long = sorted(((s, nodeid) for nodeid, s in _SECONDS.items() if s > FAST_TEST_S), reverse=True)
    if long:
        terminalreporter.section(f"not slow, yet over {FAST_TEST_S:.0f} s: see the slow rule in tests/conftest.py")
        for seconds, nodeid in long:
            terminalreporter.write_line(f"{seconds:6.1f} s  {nodeid}")
    appeared = config.stash.get(_APPEARED, [])
    if appeared:
        terminalreporter.section("new in the checkout during the run (tests write under tmp_path)", red=True)
        for path in appeared:
            terminalreporter.write_line(path)


# --- model fixtures -------------------------------------------------------------------------------------------------


def is_k_quant(quant: str) -> bool:
    return QUANTS[quant].matrix_type is None


@pytest.fixture(scope="session")
def checkpoint_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """make_checkpoint(**kwargs) cached per distinct kwargs for the whole session."""
    cache: dict[tuple, Path] = {}

    def build(**kwargs) -> Path:
        key = tuple(sorted(kwargs.items()))
        if key not in cache:
            cache[key] = make_checkpoint(tmp_path_factory.mktemp("checkpoint"), **kwargs)
        return cache[key]

    return build


@pytest.fixture(scope="session")
def tiny_checkpoint(checkpoint_factory: Callable[..., Path]) -> Path:
    """The default tiny checkpoint: hidden 64, 2 layers, 4/2 heads, tied, MIDI tokens in tokenizer.json."""
    return checkpoint_factory()


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory, checkpoint_factory: Callable[..., Path]) -> Callable[..., Path]:
    """tiny_gguf(quant="f32", **checkpoint_kwargs) -> a converted tiny MIDI-LLM GGUF, cached per session.

    K-quants default to a 256-wide checkpoint so llama.cpp writes real K blocks.
    """
    cache: dict[tuple, Path] = {}

    def build(quant: str = "f32", **checkpoint_kwargs) -> Path:
        if not checkpoint_kwargs and is_k_quant(quant):
            checkpoint_kwargs = dict(KQUANT_SHAPE)
        key = (quant, tuple(sorted(checkpoint_kwargs.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp("gguf") / f"tiny-{quant}.gguf"
            convert(checkpoint_factory(**checkpoint_kwargs), out, quant=quant, threads=LLAMA_THREADS)
            cache[key] = out
        return cache[key]

    return build
