"""The text companion of a midi-head model: the Llama-3 tokenizer and the text rows of the token embedding.

llama.cpp loads the companion vocabulary-only (no weights) and tokenizes the
prompt with it. The prompt's input vectors are the rows of token_embd for its
tokens, read from the memory-mapped file and dequantized by ggml's own
`to_float` for the type: the same bytes and the same arithmetic as llama.cpp's
row lookup in a standard file, so the midi-head model sees identical input
(gguf-py's numpy dequantizers round differently in the last bit for K-quants).
"""

from __future__ import annotations

import os
from pathlib import Path

import gguf
import numpy as np

from .errors import UserError
from .llamacpp import VERBOSE, ggml_to_float, llama_cpp, signals_deferred
from .modelinfo import COMPANION_EMBEDDING, read_gguf_metadata


class TextCompanion:
    """Tokenizer (a llama.cpp vocabulary) plus text embedding rows; close() releases both."""

    def __init__(self, path: Path, width: int):
        self.path = path
        meta = read_gguf_metadata(path)
        entry = next((t for t in meta.tensors if t.name == COMPANION_EMBEDDING), None)
        if entry is None or len(entry.shape) != 2:
            raise UserError(f"{path} is not a midi-head text companion (no {COMPANION_EMBEDDING} matrix); reconvert")
        self.n_embd, self.n_rows = entry.shape  # ggml order: the fastest dimension first
        # read_model_info checked the pair; a file swapped since then must not reach llama.cpp either.
        if self.n_embd != width:
            raise UserError(f"{path} holds {self.n_embd}-wide text embeddings, not the model's {width}; reconvert")
        self.qtype = gguf.GGMLQuantizationType(entry.type)
        block, type_size = gguf.GGML_QUANT_SIZES[self.qtype]
        self.row_bytes = self.n_embd // block * type_size
        self._start = meta.data_offset + entry.offset
        # Rows are read, not memory-mapped: a file changed under us is then an error, not a SIGBUS.
        self._file = open(path, "rb")  # noqa: SIM115 - held until close()
        if self._start + self.n_rows * self.row_bytes > os.fstat(self._file.fileno()).st_size:
            self._file.close()
            raise UserError(f"{path} is truncated: its embedding rows run past the end of the file")
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        with signals_deferred():  # nested in load_model's; deferring here too keeps it safe on its own
            self.handle = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not self.handle:
            self._file.close()
            raise UserError(f"llama.cpp could not read the tokenizer in {path}; its log says why (", VERBOSE, ")")
        self.vocab = llama_cpp.llama_model_get_vocab(self.handle)

    def rows(self, token_ids: list[int]) -> np.ndarray:
        """float32 input vectors, one row per token id."""
        if any(not 0 <= t < self.n_rows for t in token_ids):
            raise ValueError(f"text token ids must be in 0..{self.n_rows - 1}")
        picked = np.empty((len(token_ids), self.row_bytes), dtype=np.uint8)
        for i, token in enumerate(token_ids):
            self._file.seek(self._start + token * self.row_bytes)
            data = self._file.read(self.row_bytes)
            if len(data) != self.row_bytes:
                raise UserError(f"{self.path} changed on disk while in use (a row read came back short); reload it")
            picked[i] = np.frombuffer(data, dtype=np.uint8)
        return ggml_to_float(picked, self.qtype, self.n_embd)

    def close(self) -> None:
        if self.handle:
            with signals_deferred():
                llama_cpp.llama_model_free(self.handle)
            self.handle = None
        self._file.close()
