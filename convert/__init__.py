"""Conversion stage: MIDI-LLM Hugging Face checkpoints to GGUF (installed as `midillm_lite.convert`)."""
