"""Developer tools that tests, benchmark scripts and the demo export share (not part of the installed package).

`checkpoints`: random-weight MIDI-LLM checkpoints in Hugging Face layout,
written with numpy from the real Llama-3 BPE vocabulary in `devkit/data/`.
"""
