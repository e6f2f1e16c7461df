"""Where Switchyard finds its shipped files and keeps its data."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
POLICIES_DIR = REPO_ROOT / "policies"


def default_data_dir() -> Path:
    """``$SWITCHYARD_DATA_DIR``, else ``~/.cache/switchyard``."""
    env = os.environ.get("SWITCHYARD_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "switchyard"
