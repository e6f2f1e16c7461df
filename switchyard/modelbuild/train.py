"""Train the demo Llama models on CPU: packed windows of the corpus, part of it formatted as chats.

Each paragraph becomes one document: either plain text, or a chat whose user turn is the
paragraph's first sentence and whose assistant turn is what follows, closed by ``<|eos|>``. So the
models answer in English after ``<|assistant|>`` and learn to stop. Seeded and reproducible.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from cloud_backend.llama import LlamaForCausalLM
from switchyard.lm import ModelConfig
from switchyard.modelbuild.chat_template import Role, render_chat
from switchyard.modelbuild.tokenizer import BOS, EOS

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_SYSTEM_PROMPTS = (
    "You are a helpful assistant.",
    "Answer briefly.",
    "You explain Python clearly.",
)


@dataclass(frozen=True, slots=True)
class TrainSpec:
    config: ModelConfig
    steps: int
    batch_size: int = 16
    seq_len: int = 128
    learning_rate: float = 3e-3
    warmup_steps: int = 20
    seed: int = 0


# Called after each step with (step, loss).
StepCallback = Callable[[int, float], None]


def format_documents(paragraphs: Sequence[str], *, chat_fraction: float = 0.6, seed: int = 0) -> list[str]:
    """One training document per paragraph, in a seeded shuffled order."""
    rng = random.Random(seed)
    order = list(paragraphs)
    rng.shuffle(order)
    documents: list[str] = []
    for paragraph in order:
        sentences = _SENTENCE_END.split(paragraph)
        if len(sentences) >= 2 and rng.random() < chat_fraction:
            messages: list[tuple[Role, str]] = []
            if rng.random() < 0.1:
                messages.append(("system", rng.choice(_SYSTEM_PROMPTS)))
            messages.append(("user", sentences[0]))
            messages.append(("assistant", " ".join(sentences[1:4])))
            documents.append(render_chat(messages, add_generation_prompt=False))
        else:
            documents.append(BOS + paragraph + EOS)
    return documents


def encode_documents(tokenizer: Any, documents: Sequence[str]) -> torch.Tensor:
    """All documents' token ids, concatenated into one 1-D stream."""
    ids: list[int] = []
    for encoding in tokenizer.encode_batch(list(documents), add_special_tokens=False):
        ids.extend(encoding.ids)
    return torch.tensor(ids, dtype=torch.long)


def _init_weights(model: LlamaForCausalLM, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    residual_std = 0.02 / math.sqrt(2 * model.config.num_hidden_layers)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                std = residual_std if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
                param.normal_(0.0, std, generator=generator)


def _use_bf16() -> bool:
    # bf16 autocast roughly halves step time where the CPU has native bf16, and slows it elsewhere.
    supported = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(supported is not None and supported())


def train(spec: TrainSpec, tokens: torch.Tensor, on_step: StepCallback | None = None) -> LlamaForCausalLM:
    """Train a fresh model on random windows of ``tokens``; returns it in eval mode, fp32."""
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(spec.config)
    _init_weights(model, spec.seed)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=spec.learning_rate,
        betas=(0.9, 0.95),
    )
    generator = torch.Generator().manual_seed(spec.seed + 1)
    window = spec.seq_len + 1
    if tokens.numel() <= window:
        raise ValueError(f"{tokens.numel()} training tokens are fewer than one window of {window}")
    positions = torch.arange(spec.seq_len).expand(spec.batch_size, -1)
    offsets = torch.arange(window)
    bf16 = _use_bf16()
    for step in range(spec.steps):
        optimizer.param_groups[0]["lr"] = optimizer.param_groups[1]["lr"] = _learning_rate(spec, step)
        starts = torch.randint(0, tokens.numel() - window, (spec.batch_size,), generator=generator)
        batch = tokens[starts[:, None] + offsets]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, _ = model(batch[:, :-1], positions)
        loss = F.cross_entropy(logits.float().reshape(-1, spec.config.vocab_size), batch[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if on_step is not None:
            on_step(step, float(loss.detach()))
    return model.eval()


def _learning_rate(spec: TrainSpec, step: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < spec.warmup_steps:
        return spec.learning_rate * (step + 1) / spec.warmup_steps
    progress = (step - spec.warmup_steps) / max(1, spec.steps - spec.warmup_steps)
    return spec.learning_rate * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))
