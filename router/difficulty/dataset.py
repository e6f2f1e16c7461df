"""Reading prompt files (JSON lines, optionally gzip) with errors that name the line."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_DATA = Path(__file__).resolve().parent / "data" / "labelled_prompts.jsonl.gz"


class PromptFileError(ValueError):
    """A prompt file line that is not a JSON object with the required fields."""

    def __init__(self, path: Path, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


@dataclass(frozen=True, slots=True)
class LabelledPrompt:
    prompt: str
    domain: str
    source: str
    weak_correct: bool
    strong_correct: bool


def read_objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; each must be a JSON object with a prompt."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PromptFileError(path, number, f"not valid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict):
                raise PromptFileError(path, number, "expected a JSON object")
            if not isinstance(obj.get("prompt"), str):
                raise PromptFileError(path, number, "missing string field 'prompt'")
            yield number, obj


def _flag(path: Path, number: int, obj: dict[str, Any], field: str) -> bool:
    value = obj.get(field)
    if not isinstance(value, bool):
        raise PromptFileError(path, number, f"field {field!r} must be true or false, got {value!r}")
    return value


def read_labelled(path: Path) -> list[LabelledPrompt]:
    """Prompts with ``weak_correct``/``strong_correct`` outcomes; ``domain``/``source`` default to ''."""
    rows = []
    for number, obj in read_objects(path):
        rows.append(
            LabelledPrompt(
                prompt=obj["prompt"],
                domain=str(obj.get("domain", "")),
                source=str(obj.get("source", "")),
                weak_correct=_flag(path, number, obj, "weak_correct"),
                strong_correct=_flag(path, number, obj, "strong_correct"),
            )
        )
    if not rows:
        raise PromptFileError(path, 0, "no prompts in file")
    return rows
