"""The quantization table: each `--quant` name and how it is made (gguf-py's writer, or llama.cpp's K-quants)."""

from __future__ import annotations

from dataclasses import dataclass

import gguf

from midillm_lite.errors import UserError

Q = gguf.GGMLQuantizationType
F = gguf.LlamaFileType
DEFAULT_QUANT = "q4_k_m"


@dataclass(frozen=True)
class QuantSpec:
    """How one --quant target is produced: matrices' ggml type here, or a llama.cpp K-quant file type."""

    file_type: F
    matrix_type: Q | None = None  # written by gguf-py (None: produced by llama.cpp from an intermediate)
    llama_ftype_name: str | None = None  # attribute of llama_cpp for llama_model_quantize
    k_base_type: Q | None = None  # llama.cpp's default matrix type for this K-quant mix (an untied token_embd's)


QUANTS: dict[str, QuantSpec] = {
    "f32": QuantSpec(F.ALL_F32, Q.F32),
    "f16": QuantSpec(F.MOSTLY_F16, Q.F16),
    "bf16": QuantSpec(F.MOSTLY_BF16, Q.BF16),
    "q8_0": QuantSpec(F.MOSTLY_Q8_0, Q.Q8_0),
    "q4_0": QuantSpec(F.MOSTLY_Q4_0, Q.Q4_0),
    "q4_k_m": QuantSpec(F.MOSTLY_Q4_K_M, llama_ftype_name="LLAMA_FTYPE_MOSTLY_Q4_K_M", k_base_type=Q.Q4_K),
    "q5_k_m": QuantSpec(F.MOSTLY_Q5_K_M, llama_ftype_name="LLAMA_FTYPE_MOSTLY_Q5_K_M", k_base_type=Q.Q5_K),
    "q6_k": QuantSpec(F.MOSTLY_Q6_K, llama_ftype_name="LLAMA_FTYPE_MOSTLY_Q6_K", k_base_type=Q.Q6_K),
}
QUANT_NAMES = tuple(QUANTS)
K_TYPES = (Q.Q4_K, Q.Q5_K, Q.Q6_K)
# llama.cpp gives the output head (the token embedding, when tied) Q6_K in all three K mixes we offer.
K_OUTPUT_TYPE = Q.Q6_K


def quant_spec(quant: str) -> QuantSpec:
    try:
        return QUANTS[quant.lower()]
    except KeyError:
        raise UserError(f"unknown quantization {quant!r}; choose one of {', '.join(QUANT_NAMES)}") from None
