"""Trained demo weights -> a Hugging Face folder -> GGUF through `midillm-lite convert` (the stage users run).

The folder is written by the same numpy writer the test checkpoints use
(devkit/checkpoints.py: config, Llama-3 tokenizer.json with the MIDI tokens,
safetensors), with float32 weights. The shipped file is Q8_0; F32 and
Q4_K_M copies go to build/ for the fidelity measurements.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

from midillm_lite.amt import vocab

from .data import ROOT
from .model import DemoLlama, full_weights
from .train import OUT as TRAIN_OUT
from .train import load_model

log = logging.getLogger("demo.export")
HF_DIR = TRAIN_OUT.parent / "midillm-demo"
GGUF_DIR = TRAIN_OUT.parent / "gguf"
SHIPPED = ROOT / "models" / "midillm-demo-q8_0.gguf"
QUANTS = ("f32", "q8_0", "q4_k_m")


def write_hf_folder(model: DemoLlama, folder: Path) -> Path:
    sys.path.insert(0, str(ROOT))  # devkit/ is a folder of the repository, not an installed package
    from devkit import checkpoints

    s = model.shape
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": s.hidden,
        "intermediate_size": s.ffn, "num_hidden_layers": s.layers, "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads, "head_dim": s.head_dim, "hidden_act": "silu", "rms_norm_eps": s.rms_eps,
        "max_position_embeddings": s.max_positions, "vocab_size": vocab.FULL_VOCAB_SIZE, "tie_word_embeddings": True,
        "bos_token_id": 128000, "eos_token_id": checkpoints.EOS_IDS[0], "rope_theta": s.rope_theta,
        "rope_scaling": None, "torch_dtype": "float32",
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 128000, "eos_token_id": list(checkpoints.EOS_IDS), "temperature": vocab.DEFAULT_TEMPERATURE,
         "top_p": vocab.DEFAULT_TOP_P, "max_new_tokens": vocab.DEFAULT_MAX_TOKENS}))  # fmt: skip
    (folder / "tokenizer.json").write_text(checkpoints.llama3_tokenizer_json(True), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": checkpoints.BOS_TEXT, "eos_token": checkpoints.EOT_TEXT, "model_max_length": s.max_positions,
         "tokenizer_class": "PreTrainedTokenizerFast"}))  # fmt: skip
    checkpoints.write_safetensors(folder / "model.safetensors", full_weights(model), dtype="F32")
    return folder


def convert(folder: Path, target: Path, quant: str) -> None:
    """Runs the installed CLI, exactly as a user would."""
    command = [sys.executable, "-m", "midillm_lite", "convert", str(folder), "-q", quant, "-o", str(target), "--force"]
    log.info("%s", " ".join(command))
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=TRAIN_OUT / "model.pt")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    folder = write_hf_folder(load_model(args.checkpoint), HF_DIR)
    GGUF_DIR.mkdir(parents=True, exist_ok=True)
    for quant in QUANTS:
        convert(folder, GGUF_DIR / f"midillm-demo-{quant}.gguf", quant)
    convert(folder, SHIPPED, "q8_0")
    print(f"wrote {folder}, {GGUF_DIR} and {SHIPPED} ({SHIPPED.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
