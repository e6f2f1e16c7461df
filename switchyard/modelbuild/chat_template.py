"""The demo models' chat format, as a Hugging Face Jinja template and as the same thing in Python.

``<|bos|>`` then one tagged turn per message (``<|system|>``, ``<|user|>``, ``<|assistant|>``), each
assistant turn closed by ``<|eos|>``; a generation prompt is a bare ``<|assistant|>``. Training
formats its samples with :func:`render_chat`, and a test holds it equal to the Jinja template that
the engine renders at serving time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from switchyard.modelbuild.tokenizer import ASSISTANT, BOS, EOS, SYSTEM, USER

Role = Literal["system", "user", "assistant"]
_TAGS: dict[str, str] = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    + SYSTEM
    + "{% elif message['role'] == 'user' %}"
    + USER
    + "{% elif message['role'] == 'assistant' %}"
    + ASSISTANT
    + "{% else %}{{ raise_exception('unknown role: ' + message['role']) }}{% endif %}"
    "{{ message['content'] | trim }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}" + ASSISTANT + "{% endif %}"
)


def render_chat(messages: Sequence[tuple[Role, str]], *, add_generation_prompt: bool) -> str:
    """What :data:`CHAT_TEMPLATE` renders for ``messages`` with this model's BOS and EOS."""
    parts = [BOS]
    for role, content in messages:
        parts.append(_TAGS[role] + content.strip())
        if role == "assistant":
            parts.append(EOS)
    if add_generation_prompt:
        parts.append(ASSISTANT)
    return "".join(parts)


def tokenizer_config(model_max_length: int) -> dict[str, object]:
    """The body of ``tokenizer_config.json``."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": "<|pad|>",
        "add_bos_token": False,
        "add_eos_token": False,
        "model_max_length": model_max_length,
        "chat_template": CHAT_TEMPLATE,
    }
