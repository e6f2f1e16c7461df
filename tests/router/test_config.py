"""The router's config file: the shipped example loads; mistakes name the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.config import ConfigError, load_config
from switchyard.paths import REPO_ROOT


def test_shipped_example_loads() -> None:
    cfg = load_config(REPO_ROOT / "deploy" / "router.yaml")
    assert cfg.policy.is_absolute() and cfg.policy.exists()
    assert {n.kind for n in cfg.nodes} == {"edge", "cloud"}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("port: many\n", "field port"),
        ("nodes: [{id: a, url: 'http://x/node', kind: edge}]\n", "must start with ws://"),
        ("nodes: [{id: a, url: 'http://x/v1', kind: cloud, protocol: openai}]\n", "model name"),
        ("colour: blue\n", "field colour"),
        ("limits: {default: {requests_per_s: 0, burst: 1}}\n", "requests_per_s"),
        ("- a list\n", "mapping"),
    ],
)
def test_bad_config_names_file_and_field(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert fragment in str(info.value)
