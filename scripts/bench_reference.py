#!/usr/bin/env python3
"""The reference generation path, timed: transformers on the CPU, as MIDI-LLM's generate_transformers.py runs it.

Runs in an interpreter that has torch and transformers (not midillm-lite's
venv: `make bench` builds one under ~/.cache/midillm-lite/ref-venv). Loads a
Hugging Face checkpoint folder, builds the reference prompt (tokenizer(system
prompt + description + " ") + the AUTOREGRESS MIDI token), samples with
temperature 1.0 / top_p 0.98 and `num_return_sequences=n`, and prints one JSON
line per repeat: tokens generated over all sequences, seconds, tokens/s.
Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

# Numbers restated here on purpose: this runs without midillm-lite installed.
SYSTEM_PROMPT = "You are a world-class composer. Please compose some music according to the following description: "
AUTOREGRESS_FULL_ID = 128_256 + 55_026


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--description", default="An upbeat jazz trio with piano, double bass and brushed drums")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(args.checkpoint)
    model = AutoModelForCausalLM.from_pretrained(args.checkpoint, dtype=getattr(torch, args.dtype)).eval()
    ids = tokenizer(SYSTEM_PROMPT + args.description + " ", return_tensors="pt")["input_ids"]
    ids = torch.cat([ids, torch.tensor([[AUTOREGRESS_FULL_ID]])], dim=1)
    settings = dict(do_sample=True, temperature=1.0, top_p=0.98, num_return_sequences=args.n,
                    pad_token_id=tokenizer.eos_token_id)  # fmt: skip
    with torch.no_grad():
        model.generate(input_ids=ids, max_new_tokens=2, min_new_tokens=2, **settings)  # warm-up
        for _ in range(args.repeats):
            started = time.perf_counter()
            out = model.generate(input_ids=ids, max_new_tokens=args.steps, min_new_tokens=args.steps, **settings)
            seconds = time.perf_counter() - started
            generated = int((out.shape[1] - ids.shape[1]) * out.shape[0])
            print(json.dumps({"n": args.n, "dtype": args.dtype, "threads": args.threads, "generated": generated,
                              "seconds": seconds, "tokens_per_s": generated / seconds,
                              "prompt_tokens": int(ids.shape[1])}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
