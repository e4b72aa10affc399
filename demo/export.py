"""Trained demo weights -> a Hugging Face folder -> GGUF through `midillm-lite convert` (the stage users run), and
back: a demo GGUF -> the torch network, so that a later training stage can start from a shipped model.

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
from .model import CompactVocab, DemoLlama, Shape, full_weights
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


LSTSQ_RCOND = 1e-3  # read_gguf: singular values of the tick codes below this share of the largest are dropped


def read_gguf(path: Path, compact: CompactVocab, seed: int = 0) -> DemoLlama:
    """The network a demo GGUF was exported from, for the rows of `compact` (the training data's): the inverse of
    `write_hf_folder` + `convert`, up to the file's quantisation.

    Arrival-time rows are computed in the network (`DemoLlama`), so their maps are fitted to the file's rows by least
    squares (the rows come back to about 1e-4, as they are those maps' image; codes that are nearly zero at every
    tick get weight 0), and the control markers are the mean difference between control and event rows; Q and K
    rows go back from llama.cpp's rotary layout.
    """
    import gguf
    import numpy as np
    import torch
    from gguf.quants import dequantize

    reader = gguf.GGUFReader(path)
    meta = {k: f.parts[f.data[0]].tolist()[0] for k, f in reader.fields.items() if k.startswith("llama.") and f.data}
    shape = Shape(hidden=meta["llama.embedding_length"], layers=meta["llama.block_count"],
                  heads=meta["llama.attention.head_count"], kv_heads=meta["llama.attention.head_count_kv"],
                  ffn=meta["llama.feed_forward_length"], rope_theta=meta["llama.rope.freq_base"],
                  max_positions=meta["llama.context_length"])  # fmt: skip
    if abs(meta["llama.attention.layer_norm_rms_epsilon"] - shape.rms_eps) > 1e-9:
        raise ValueError(f"{path}: RMS epsilon {meta['llama.attention.layer_norm_rms_epsilon']}, not {shape.rms_eps}")
    tensors = {t.name: dequantize(t.data, t.tensor_type).reshape(tuple(reversed(t.shape.tolist())))
               for t in reader.tensors}  # fmt: skip
    model = DemoLlama(shape, compact, seed=seed)
    rows = tensors["token_embd.weight"][compact.full_ids()]
    table, controls = rows[: compact.control_base], rows[compact.control_base :]
    times = slice(model.time_base, model.time_base + vocab.MAX_TIME)
    time_codes, insert_codes = model.time_codes.numpy(), model.insert_codes.numpy()
    # The codes' singular values span 1e8: an exact least-squares map weighs the near-null ones by thousands, which
    # bf16 autocast then turns into nonsense (arrival-time CE of hundreds of nats). Cutting them leaves the same
    # misfit and a map of the size training makes.
    time_map, *_ = np.linalg.lstsq(time_codes, table[times], rcond=LSTSQ_RCOND)
    misfit = np.linalg.norm(time_codes @ time_map - table[times]) / np.linalg.norm(table[times])
    if misfit > 0.05:  # Q8_0 leaves about 0.005
        raise ValueError(f"{path}: its arrival-time rows are no map of their tick codes ({misfit:.0%} off): not a demo")
    control_rows = controls[: vocab.MAX_TIME] - insert_codes @ time_map
    control_time_map, *_ = np.linalg.lstsq(time_codes, control_rows, rcond=LSTSQ_RCOND)
    events = table[times.stop : times.stop + vocab.MAX_DUR + vocab.MAX_NOTE]  # durations, then instrument-pitch
    marked = controls[vocab.MAX_TIME :] - events
    markers = np.stack([marked[: vocab.MAX_DUR].mean(0), marked[vocab.MAX_DUR :].mean(0)])

    def unrotate(weights: np.ndarray, heads: int) -> np.ndarray:  # convert.tensors.rope_permute's inverse
        return weights.reshape(heads, weights.shape[0] // heads // 2, 2, -1).swapaxes(1, 2).reshape(weights.shape)

    state = {"embed.weight": np.concatenate([table[: times.start], table[times.stop :]]),
             "embed_time.weight": time_map.T, "embed_control_time.weight": control_time_map.T,
             "embed_control": markers, "norm.weight": tensors["output_norm.weight"]}  # fmt: skip
    names = {"attn_q": "q_proj", "attn_k": "k_proj", "attn_v": "v_proj", "attn_output": "o_proj",
             "ffn_gate": "gate_proj", "ffn_up": "up_proj", "ffn_down": "down_proj",
             "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}  # fmt: skip
    for i in range(shape.layers):
        for ours, theirs in names.items():
            weights = tensors[f"blk.{i}.{ours}.weight"]
            if ours in ("attn_q", "attn_k"):
                weights = unrotate(weights, shape.heads if ours == "attn_q" else shape.kv_heads)
            state[f"layers.{i}.{theirs}.weight"] = weights
    with torch.no_grad():
        for name, value in state.items():
            model.get_parameter(name).copy_(torch.from_numpy(np.array(value, dtype=np.float32)))
    return model


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
