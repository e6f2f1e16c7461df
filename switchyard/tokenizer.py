"""A model folder's tokenizer and chat template: ``tokenizer.json`` + ``tokenizer_config.json``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from switchyard.textstream import ByteTableDecoder, byte_level_table
from switchyard.token_segments import SegmentEncoder
from switchyard.wire import ChatMessage

# Used when a model folder ships no template: plain role-tagged turns.
DEFAULT_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


class ChatTokenizer:
    """Encodes chats for one model and decodes what it generates."""

    def __init__(self, model_dir: Path) -> None:
        from tokenizers import Tokenizer  # heavy-ish native library: import where used

        self._tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        cfg_path = model_dir / "tokenizer_config.json"
        cfg: dict[str, Any] = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
        self.bos_token = _token_text(cfg.get("bos_token"))
        self.eos_token = _token_text(cfg.get("eos_token"))
        self.eos_id = self._tok.token_to_id(self.eos_token) if self.eos_token else None
        # Control tokens (role markers, padding) must never appear in a reply; EOS ends it instead.
        self.banned_ids = tuple(
            sorted(
                i
                for i, tok in self._tok.get_added_tokens_decoder().items()
                if tok.special and i != self.eos_id
            )
        )
        self.byte_table = self._byte_table(model_dir / "tokenizer.json")
        template = cfg.get("chat_template") or DEFAULT_CHAT_TEMPLATE
        if isinstance(template, list):  # HF allows a list of named templates
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
            template = template or DEFAULT_CHAT_TEMPLATE
        self._template = _compile(str(template))
        self._segments = SegmentEncoder.build(
            self._encode_whole, self._tok.get_added_tokens_decoder(), self._self_check_samples()
        )

    def _byte_table(self, path: Path) -> list[bytes] | None:
        """Each token's bytes, when this is a byte-level BPE tokenizer whose decoding is exactly those
        bytes (checked on a sample); ``None`` otherwise, and streaming decodes the slow general way."""
        raw = json.loads(path.read_text())
        decoder = raw.get("decoder") or {}
        model = raw.get("model") or {}
        if decoder.get("type") != "ByteLevel" or model.get("type") != "BPE" or raw.get("normalizer"):
            return None
        added = self._tok.get_added_tokens_decoder()
        special = {i for i, tok in added.items() if tok.special}
        plain = {i: tok.content for i, tok in added.items() if not tok.special}
        try:
            table = byte_level_table(model["vocab"], special, plain)
        except (KeyError, TypeError, ValueError):
            return None
        sample = list(range(min(len(table), 4096)))
        stream = ByteTableDecoder(table)
        fast = "".join(stream.push(i) for i in sample) + stream.flush()
        return table if fast == self.decode(sample) else None

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size())

    def render(self, messages: Sequence[ChatMessage]) -> str:
        rendered: str = self._template.render(
            messages=[{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True,
            bos_token=self.bos_token or "",
            eos_token=self.eos_token or "",
        )
        return rendered

    def encode(self, text: str) -> list[int]:
        # Special tokens in the rendered template are real tokens; the template adds BOS itself.
        if self._segments is not None:
            return self._segments.encode(text)
        return self._encode_whole(text)

    def _encode_whole(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def _self_check_samples(self) -> list[str]:
        """Rendered chats whose pieces start and end with spaces, newlines and non-ASCII text."""
        from jinja2 import TemplateError

        turns = [
            "hello there",
            " leading space",
            "trailing space ",
            "two\nlines\n",
            "caf\u00e9 \u4e2d\u6587 \U0001f600",
        ]
        samples = []
        for i in range(len(turns)):
            chat = [ChatMessage("user" if j % 2 == 0 else "assistant", t) for j, t in enumerate(turns[i:])]
            try:
                samples.append(self.render([ChatMessage("system", " be brief "), *chat]))
            except (ValueError, TemplateError):  # a template that refuses a system turn or this order
                samples.append(self.render(chat[:1]))
        return samples

    def encode_chat(self, messages: Sequence[ChatMessage]) -> list[int]:
        return self.encode(self.render(messages))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=True))


def _token_text(raw: Any) -> str | None:
    if isinstance(raw, dict):  # HF's AddedToken serialisation
        raw = raw.get("content")
    return raw if isinstance(raw, str) and raw else None


def _compile(source: str) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message: str) -> None:
        raise ValueError(f"chat template: {message}")

    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)
