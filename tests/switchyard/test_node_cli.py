"""The node commands refuse to serve a reachable address without a cluster secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_open_node_on_a_public_address_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SWITCHYARD_CLUSTER_SECRET"}
    cmd = [
        sys.executable,
        "-m",
        "switchyard.cli",
        "edge",
        "--model",
        str(tmp_path),
        "--host",
        "0.0.0.0",
        "--port",
        "1",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--allow-no-secret" in done.stderr
