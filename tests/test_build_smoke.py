"""Smoke test of the llama.cpp build: quantized GGUFs load and decode in a child process.

A miscompiled llama.cpp (e.g. GGML_NATIVE with AMX on some Xeons) segfaults
inside llama_decode on Q8_0 and K-quant models; running the decode in a
subprocess turns that crash into a failed test instead of a dead pytest.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from midillm_lite.amt import vocab

pytestmark = pytest.mark.slow
DECODE_STEPS = 4
CHILD_TIMEOUT_S = 120

# Runs in the child: load, evaluate a prompt, greedily decode a few tokens, report logits statistics.
CHILD = r"""
import json, sys
import numpy as np
from llama_cpp import Llama

path, prompt, steps = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
llm = Llama(model_path=path, n_ctx=128, n_batch=64, n_threads=2, logits_all=True, verbose=False)
llm.eval(prompt)
decoded, finite, spread = [], True, []
for _ in range(steps):
    logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
    finite &= bool(np.isfinite(logits).all())
    spread.append(float(logits.std()))
    token = int(logits.argmax())
    decoded.append(token)
    llm.eval([token])
print(json.dumps({"decoded": decoded, "finite": finite, "std": min(spread), "n_vocab": llm.n_vocab()}))
"""


def decode_in_child(model: Path) -> dict:
    prompt = [128000, 32, 71314, 27374, 62684, 220, vocab.MIDI_AUTOREGRESS_ID]  # BOS "A cheerful piano melody " AR
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(model), json.dumps(prompt), str(DECODE_STEPS)],
        capture_output=True, text=True, timeout=CHILD_TIMEOUT_S,
    )  # fmt: skip
    assert proc.returncode == 0, f"llama.cpp child exited {proc.returncode} (negative: killed by signal)\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("quant", ["q8_0", "q4_k_m", "q5_k_m", "q6_k", "q4_0"])
def test_quantized_model_loads_and_decodes(tiny_gguf, quant: str) -> None:
    result = decode_in_child(tiny_gguf(quant))
    assert result["n_vocab"] == vocab.FULL_VOCAB_SIZE
    assert result["finite"], "llama.cpp produced NaN or infinite logits"
    assert result["std"] > 0.1, "logits are (nearly) constant: the weights did not load"
    assert len(result["decoded"]) == DECODE_STEPS
    assert all(0 <= t < vocab.FULL_VOCAB_SIZE for t in result["decoded"])
