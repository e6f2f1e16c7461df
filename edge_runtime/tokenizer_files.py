"""Copy a Hugging Face folder's tokenizer into an exported folder in the form ``ChatTokenizer`` reads.

``switchyard.tokenizer.ChatTokenizer`` reads ``tokenizer.json`` and the ``chat_template`` field of
``tokenizer_config.json``. Folders saved by recent transformers keep the template in
``chat_template.jinja`` (or ``chat_template.json``) instead, and older GPT-2 folders ship only
``vocab.json`` + ``merges.txt``; both are brought into the one shape here.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

TOKENIZER_NAME = "tokenizer.json"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
# Copied unchanged when present: the default sampling settings and the model card.
_PASSED_THROUGH = ("generation_config.json", "README.md", "LICENSE")


def copy_tokenizer(hf_dir: Path, out_dir: Path) -> None:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` (with its chat template) to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if (hf_dir / TOKENIZER_NAME).exists():
        shutil.copyfile(hf_dir / TOKENIZER_NAME, out_dir / TOKENIZER_NAME)
    else:
        _convert_to_fast(hf_dir, out_dir)
    config_path = hf_dir / TOKENIZER_CONFIG_NAME
    config: dict[str, Any] = (
        json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
    )
    if not config.get("chat_template"):
        template = _separate_template(hf_dir)
        if template is not None:
            config["chat_template"] = template
    (out_dir / TOKENIZER_CONFIG_NAME).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    for name in _PASSED_THROUGH:
        if (hf_dir / name).exists():
            shutil.copyfile(hf_dir / name, out_dir / name)


def _separate_template(hf_dir: Path) -> str | None:
    jinja = hf_dir / _TEMPLATE_FILES[0]
    if jinja.exists():
        return jinja.read_text(encoding="utf-8")
    wrapped = hf_dir / _TEMPLATE_FILES[1]
    if wrapped.exists():
        template = json.loads(wrapped.read_text(encoding="utf-8")).get("chat_template")
        return template if isinstance(template, str) else None
    return None


def _convert_to_fast(hf_dir: Path, out_dir: Path) -> None:
    """Build ``tokenizer.json`` from a vocabulary-and-merges tokenizer with transformers (offline)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(
            f"{hf_dir}: no {TOKENIZER_NAME}, and transformers could not build one: {exc}"
        ) from exc
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer.save_pretrained(scratch)
        built = Path(scratch) / TOKENIZER_NAME
        if not built.exists():
            raise FileNotFoundError(f"{hf_dir}: no {TOKENIZER_NAME}, and {type(tokenizer).__name__} has none")
        shutil.copyfile(built, out_dir / TOKENIZER_NAME)
