"""The demo network in torch: a small Llama with Hugging Face's exact conventions, and the strict-slot loss.

Only the rows the model can touch are trained: the text tokens the captions
use, the AMT event tokens (arrival times, durations, instrument-pitch, REST),
AUTOREGRESS and ANTICIPATE, and the anticipated controls, packed into a
compact table (arrival-time rows computed from codes of their tick, control
rows from the event rows they mirror, see `DemoLlama`); `full_weights`
scatters them back into the 183,286-row MIDI-LLM layout for export. The
output layer is tied to the embedding (as Llama 3.2 1B) and evaluated only
over the candidates of each triplet slot (arrival times, durations or
instrument-pitch): the cost saving. Only events are predicted: controls are
inputs, which the runtime inserts (AMT's `sample.generate`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from midillm_lite.amt import vocab

EVENT_ROWS = vocab.REST + 1  # AMT ids 0..27,512: arrival times, durations, instrument-pitch, REST
CONTROL_ROWS = vocab.CONTROL_END - vocab.CONTROL_OFFSET  # mirror ids 0..27,511 (no control REST)
# The strict masks `gen` samples under: REST is not among the note slot's candidates.
SLOT_RANGES = ((vocab.TIME_OFFSET, vocab.DUR_OFFSET), (vocab.DUR_OFFSET, vocab.NOTE_OFFSET),
               (vocab.NOTE_OFFSET, vocab.REST))  # fmt: skip
# Training scores the note slot as AMT's sampler allows it (`safe_logits`): instrument-pitch or REST, which pads
# anticipation-mode sequences (`anticipation.pad`). REST is the last candidate, index MAX_NOTE.
TRAIN_NOTE_RANGE = (vocab.NOTE_OFFSET, vocab.REST + 1)
REST_TARGET = vocab.REST - vocab.NOTE_OFFSET


@dataclass(frozen=True)
class Shape:
    # Sized for the ~32 MB budget: the 183,286-row Q8_0 embedding (32-value blocks, so hidden is a multiple of
    # 32) plus ~9 MB of tokenizer dominate the file; the layers are cheap.
    hidden: int = 96
    layers: int = 12
    heads: int = 3
    kv_heads: int = 3
    ffn: int = 288
    rope_theta: float = 10_000.0
    rms_eps: float = 1e-5
    max_positions: int = 4096

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def to_dict(self) -> dict:
        return asdict(self)


class CompactVocab:
    """Full-vocabulary ids <-> rows of the compact table.

    Rows: [text ids in use] + [AMT events and REST] + [AUTOREGRESS, ANTICIPATE] + [AMT controls].
    """

    def __init__(self, text_ids: list[int]):
        self.text_ids = sorted(set(text_ids))
        self.event_base = len(self.text_ids)
        self.autoregress_row = self.event_base + EVENT_ROWS
        self.anticipate_row = self.autoregress_row + 1
        self.control_base = self.anticipate_row + 1
        self.rows = self.control_base + CONTROL_ROWS
        self._lookup = np.full(vocab.FULL_VOCAB_SIZE, -1, dtype=np.int64)
        full = self.full_ids()
        self._lookup[full] = np.arange(len(full))

    def rows_of(self, full_ids: np.ndarray) -> np.ndarray:
        rows = self._lookup[full_ids]
        if (rows < 0).any():
            raise ValueError(f"ids outside the compact vocabulary: {np.unique(full_ids[rows < 0])[:5]}")
        return rows

    def full_ids(self) -> np.ndarray:
        """The full-vocabulary id of every compact row, in row order."""
        return np.concatenate(
            [
                np.array(self.text_ids, dtype=np.int64),
                vocab.TEXT_VOCAB_SIZE + np.arange(EVENT_ROWS),
                [vocab.MIDI_AUTOREGRESS_ID, vocab.MIDI_ANTICIPATE_ID],
                vocab.TEXT_VOCAB_SIZE + vocab.CONTROL_OFFSET + np.arange(CONTROL_ROWS),
            ]
        )


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)).to(dtype) * self.weight.to(dtype)


class Block(nn.Module):
    def __init__(self, s: Shape):
        super().__init__()
        self.s = s
        self.input_layernorm = RMSNorm(s.hidden, s.rms_eps)
        self.q_proj = nn.Linear(s.hidden, s.heads * s.head_dim, bias=False)
        self.k_proj = nn.Linear(s.hidden, s.kv_heads * s.head_dim, bias=False)
        self.v_proj = nn.Linear(s.hidden, s.kv_heads * s.head_dim, bias=False)
        self.o_proj = nn.Linear(s.heads * s.head_dim, s.hidden, bias=False)
        self.post_attention_layernorm = RMSNorm(s.hidden, s.rms_eps)
        self.gate_proj = nn.Linear(s.hidden, s.ffn, bias=False)
        self.up_proj = nn.Linear(s.hidden, s.ffn, bias=False)
        self.down_proj = nn.Linear(s.ffn, s.hidden, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        s = self.s
        h = self.input_layernorm(x)
        q = self.q_proj(h).view(b, n, s.heads, s.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(b, n, s.kv_heads, s.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(b, n, s.kv_heads, s.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + self.o_proj(attn.transpose(1, 2).reshape(b, n, -1))
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


TIME_FEATURES = 256  # sinusoidal codes per arrival tick; the model learns which 96-dim mix of them to use


def sinusoids(values: torch.Tensor, width: int, longest: float) -> torch.Tensor:
    """(len(values), width) sin/cos codes, wavelengths geometric from 2 to ~`longest` units."""
    k = torch.arange(width // 2, dtype=torch.float32)
    freq = (2 * math.pi / 2) / longest ** (k / (width // 2))
    angle = values.float()[:, None] * freq[None, :]
    return torch.cat((angle.sin(), angle.cos()), dim=1)


class DemoLlama(nn.Module):
    """The network; its compact table is `table()`: free rows, except arrival times, which are computed.

    Arrival times are absolute (tick 0..9,999) and late ticks are rare in the data. Learned freely (even from a
    smooth start) the rows of rarely seen ticks drift apart from the often seen ones, the model cannot put its
    time mass "just after now" everywhere, and the heavy tail it leaves is what ratchets samples to 100 s
    (measured on the first shipped model over the held-out set: 1.7% of the strict time mass more than 10 s
    ahead, an expected step of 0.93 s where the data steps 0.20 s; with this change 0.03% and 0.23 s).
    So every tick's row is one learned linear map of fixed sinusoidal codes of the tick: all ticks share what is
    learned, and "a little after tick t" is the same rotation for every t. The rows are materialised into the
    ordinary embedding at export, so the GGUF is a plain Llama.

    Control rows (AMT's anticipated notes): a control's duration and instrument-pitch rows are the event rows they
    mirror plus one learned vector per slot kind (a control means the same note as its event, marked as given
    ahead); free control rows would be 27,512 more rows, the rarely seen ones drifting as free time rows did. A
    control's arrival-time row is the event row of the tick it is inserted at (its time minus DELTA: never after
    "now", which the model reads from the latest times it saw) plus a learned map of its own tick's codes that
    starts at zero. Earlier designs (the event row of its own time plus one vector; a free map of its codes) made
    a control read as a time up to 5 s ahead of "now", and the events after it scored worse, arrival times most,
    than with no controls at all. This one costs nothing before training on controls, but alone it did not change
    that after it either; the shape of the span copies mattered more (demo/data.py; BENCHMARKS.md, "Demo model:
    anticipation retrains").
    """

    def __init__(self, shape: Shape, compact: CompactVocab, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.shape, self.compact, self.seed = shape, compact, seed
        self.time_base = compact.event_base + vocab.TIME_OFFSET  # first arrival-time row of the compact table
        self.embed = nn.Embedding(compact.control_base - vocab.MAX_TIME, shape.hidden)  # free rows
        self.embed_control = nn.Parameter(torch.empty(2, shape.hidden))  # duration, pitch: what makes a control
        kinds = np.searchsorted([vocab.DUR_OFFSET, vocab.NOTE_OFFSET], np.arange(CONTROL_ROWS), side="right")
        self.register_buffer("control_kind", torch.from_numpy(kinds), persistent=False)
        self.embed_time = nn.Linear(TIME_FEATURES, shape.hidden, bias=False)
        self.embed_control_time = nn.Linear(TIME_FEATURES, shape.hidden, bias=False)  # controls' arrival times
        ticks = torch.arange(vocab.MAX_TIME)
        self.register_buffer("time_codes", sinusoids(ticks, TIME_FEATURES, 2.0 * vocab.MAX_TIME), persistent=False)
        self.register_buffer("insert_codes", sinusoids(ticks - vocab.DELTA, TIME_FEATURES, 2.0 * vocab.MAX_TIME),
                             persistent=False)  # fmt: skip
        self.layers = nn.ModuleList(Block(shape) for _ in range(shape.layers))
        self.norm = RMSNorm(shape.hidden, shape.rms_eps)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02 if name.startswith("embed") else 1 / math.sqrt(p.shape[1]))
        # Time rows start with the same typical size as the free rows: each code value is +-1 in half of them.
        for time_map in (self.embed_time, self.embed_control_time):
            nn.init.normal_(time_map.weight, std=0.02 / math.sqrt(TIME_FEATURES / 2))
        nn.init.zeros_(self.embed_control_time.weight)  # after the draws above, so the other weights are unchanged
        self._init_event_rows()
        inv = 1.0 / shape.rope_theta ** (torch.arange(0, shape.head_dim, 2).float() / shape.head_dim)
        self.register_buffer("inv_freq", inv, persistent=False)

    @torch.no_grad()
    def _init_event_rows(self) -> None:
        """Start duration and instrument-pitch rows from smooth codes of their numbers, plus noise.

        Neighbouring durations and pitches then start similar (a per-instrument vector is added to the pitch code
        of instrument-pitch rows); unlike arrival times these rows are all well trained, so they stay free.
        """
        base, width, scale = self.time_base, self.shape.hidden, 0.02
        weight = self.embed.weight  # arrival-time rows are not in it: durations start at `base`
        durations = slice(base, base + vocab.MAX_DUR)
        notes = slice(durations.stop, durations.stop + vocab.MAX_NOTE)
        weight[durations] += sinusoids(torch.arange(vocab.MAX_DUR), width, 2.0 * vocab.MAX_DUR) * scale
        pitch = torch.arange(vocab.MAX_NOTE) % vocab.MAX_PITCH
        instrument = torch.arange(vocab.MAX_NOTE) // vocab.MAX_PITCH
        per_instrument = torch.randn(vocab.MAX_INSTR, width) * scale
        weight[notes] += sinusoids(pitch, width, 2.0 * vocab.MAX_PITCH) * scale + per_instrument[instrument]

    def table(self) -> torch.Tensor:
        """The compact embedding (rows of `CompactVocab`), arrival-time and control rows computed."""
        weight = self.embed.weight
        times = self.embed_time(self.time_codes)
        rows = torch.cat((weight[: self.time_base], times, weight[self.time_base :]))
        events = rows[self.compact.event_base + vocab.MAX_TIME : self.compact.event_base + CONTROL_ROWS]
        kinds = self.control_kind[vocab.MAX_TIME :] - 1  # 0 duration, 1 instrument-pitch
        control_times = self.embed_time(self.insert_codes) + self.embed_control_time(self.time_codes)
        return torch.cat((rows, control_times, events + self.embed_control[kinds]))

    def hidden_states(self, rows: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(rows.shape[1], dtype=torch.float32)
        freqs = torch.outer(positions, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        x = F.embedding(rows, table)
        for layer in self.layers:
            x = layer(x, cos.to(x.dtype), sin.to(x.dtype))
        return self.norm(x)

    def slot_logits(self, h: torch.Tensor, table: torch.Tensor, slot: int, strict: bool = True) -> torch.Tensor:
        """Logits over one slot's candidates (AMT ids SLOT_RANGES[slot]; the note slot with REST unless strict)
        for hidden states h (n, hidden)."""
        lo, hi = SLOT_RANGES[slot] if strict or slot != 2 else TRAIN_NOTE_RANGE
        rows = table[self.compact.event_base + lo : self.compact.event_base + hi]
        return h @ rows.to(h.dtype).T


@dataclass
class Batch:
    rows: torch.Tensor  # (b, n) compact rows, right-padded
    positions: list[torch.Tensor]  # per slot: flat indices into (b*n) of the hidden state predicting it
    targets: list[torch.Tensor]  # per slot: target index within the slot's range (REST: REST_TARGET)
    floors: torch.Tensor  # per time target: the earliest arrival time strict mode allows
    rest: torch.Tensor  # per scored triplet: a REST triplet (padding), which strict mode never samples
    tokens: int  # scored MIDI tokens


def scored_events(tokens: np.ndarray) -> np.ndarray:
    """Per triplet: an event (REST included), which the loss scores; controls are inputs only."""
    return (tokens[0::3] < vocab.CONTROL_OFFSET) | (tokens[0::3] >= vocab.CONTROL_END)


def slot_targets(tokens: np.ndarray, scored: np.ndarray | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Per slot, target indices within the slot's range for the scored triplets (default: every event triplet);
    and each scored time target's strict floor: the latest event onset before it (controls do not move it)."""
    triplets = tokens.reshape(-1, 3)
    events = scored_events(tokens)
    scored = events if scored is None else scored
    assert not (scored & ~events).any(), "controls are never targets"
    times = np.where(events, triplets[:, 0], 0)
    floors = np.concatenate([[0], np.maximum.accumulate(times)[:-1]])[scored]
    targets = [triplets[scored, s] - (SLOT_RANGES[s][0] if s < 2 else vocab.NOTE_OFFSET) for s in range(3)]
    return targets, floors


def make_batch(
    compact: CompactVocab, examples: list[tuple[np.ndarray, np.ndarray]], scored: list[np.ndarray] | None = None
) -> Batch:
    """examples: (prompt full ids ending in AUTOREGRESS or ANTICIPATE, AMT ids after it: events, or events and
    controls interleaved). `scored` (per example, per triplet) limits the targets; default every event triplet."""
    length = max(len(p) + len(e) - 1 for p, e in examples)
    rows = np.zeros((len(examples), length), dtype=np.int64)
    positions: list[list[np.ndarray]] = [[], [], []]
    targets: list[list[np.ndarray]] = [[], [], []]
    floors, rests = [], []
    for b, (prompt, tokens) in enumerate(examples):
        seq = np.concatenate([prompt, vocab.TEXT_VOCAB_SIZE + tokens[:-1]])
        rows[b, : len(seq)] = compact.rows_of(seq)
        mask = scored_events(tokens) if scored is None else scored[b]
        where = (b * length + len(prompt) - 1 + np.arange(len(tokens))).reshape(-1, 3)[mask]
        slots, floor = slot_targets(tokens, mask)
        for slot in range(3):
            positions[slot].append(where[:, slot])
            targets[slot].append(slots[slot])
        floors.append(floor)
        rests.append(slots[2] == REST_TARGET)
    rest = np.concatenate(rests)
    return Batch(
        rows=torch.from_numpy(rows),
        positions=[torch.from_numpy(np.concatenate(p)) for p in positions],
        targets=[torch.from_numpy(np.concatenate(t).astype(np.int64)) for t in targets],
        floors=torch.from_numpy(np.concatenate(floors).astype(np.int64)),
        rest=torch.from_numpy(rest),
        tokens=3 * len(rest),
    )


def slot_losses(model: DemoLlama, batch: Batch, *, strict: bool = True) -> list[torch.Tensor]:
    """Summed cross-entropy per slot over the slot's candidates.

    strict=True is the evaluation measure: arrival times earlier than the latest onset are masked out and REST is
    no candidate, as `gen` samples (REST triplets, which only pad anticipation-mode sequences, are not scored).
    Training uses strict=False, scoring times against all 10,000 arrival-time tokens: under the mask the
    loss gives no reason to learn where "now" is, and a model that does not know spreads its time predictions
    over the whole piece; the mask then renormalises that onto the future and samples race to the 100 s ceiling
    (measured: 96% of the unmasked mass sat before the floor, and every 2,046-token sample ended stacked at 100 s).
    It also scores REST where AMT's sampler allows it (the note slot), as AMT trains on its padded sequences.
    """
    return slot_ce(scored_logits(model, batch, strict=strict), batch, strict=strict)


def slot_ce(logits: list[torch.Tensor], batch: Batch, *, strict: bool) -> list[torch.Tensor]:
    """Summed cross-entropy per slot of `scored_logits(..., strict=strict)` against the batch's targets."""
    keep = ~batch.rest if strict else torch.ones_like(batch.rest)
    return [F.cross_entropy(x, batch.targets[slot][keep], reduction="sum") for slot, x in enumerate(logits)]


def scored_logits(model: DemoLlama, batch: Batch, *, strict: bool) -> list[torch.Tensor]:
    """Per slot, float32 logits over the slot's candidates at each scored triplet (strict: REST triplets left out,
    arrival times before the floor masked), as `slot_losses` scores them."""
    table = model.table()
    h = model.hidden_states(batch.rows, table).reshape(-1, model.shape.hidden)
    keep = ~batch.rest if strict else torch.ones_like(batch.rest)
    out = []
    for slot in range(3):
        logits = model.slot_logits(h[batch.positions[slot][keep]], table, slot, strict).float()
        if slot == 0 and strict:
            columns = torch.arange(logits.shape[1])
            logits = logits.masked_fill(columns[None, :] < batch.floors[keep][:, None], float("-inf"))
        out.append(logits)
    return out


def distill_kl(student: list[torch.Tensor], teacher: list[torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
    """Summed KL(teacher || student) over the slots, at the scored triplets `rows` selects (non-strict logits from
    `scored_logits` of one batch)."""
    return sum(
        F.kl_div(F.log_softmax(s[rows], -1), F.log_softmax(t[rows], -1), log_target=True, reduction="sum")
        for s, t in zip(student, teacher, strict=True)
    )


def full_weights(model: DemoLlama) -> dict[str, np.ndarray]:
    """Hugging Face-named float32 weights with the 183,286-row tied embedding.

    Rows never trained (text tokens no caption used, AMT tokens strict mode never
    emits) get the mean trained text row and the mean event row respectively, so
    an unseen word in a prompt reads as an average word.
    """
    s = model.shape
    table = model.table().detach().float().numpy()
    full = np.empty((vocab.FULL_VOCAB_SIZE, s.hidden), dtype=np.float32)
    full[: vocab.TEXT_VOCAB_SIZE] = table[: model.compact.event_base].mean(0)
    full[vocab.TEXT_VOCAB_SIZE :] = table[model.compact.event_base : model.compact.event_base + vocab.REST].mean(0)
    full[model.compact.full_ids()] = table
    weights = {"model.embed_tokens.weight": full}
    for i, layer in enumerate(model.layers):
        p = f"model.layers.{i}"
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            weights[f"{p}.self_attn.{name}.weight"] = getattr(layer, name).weight.detach().float().numpy()
        for name in ("gate_proj", "up_proj", "down_proj"):
            weights[f"{p}.mlp.{name}.weight"] = getattr(layer, name).weight.detach().float().numpy()
        weights[f"{p}.input_layernorm.weight"] = layer.input_layernorm.weight.detach().float().numpy()
        weights[f"{p}.post_attention_layernorm.weight"] = layer.post_attention_layernorm.weight.detach().float().numpy()
    weights["model.norm.weight"] = model.norm.weight.detach().float().numpy()
    return weights
