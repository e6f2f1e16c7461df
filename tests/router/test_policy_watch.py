"""Hot reload of the policy file: valid edits swap in, invalid ones keep the old policy."""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter

from router.policy_watch import PolicyWatcher

GOOD = "version: 1\nname: {name}\nrules:\n  - name: all\n    route: {route}\n"


def _write(path: Path, text: str, bump: int) -> None:
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump * 1_000_000_000))  # a distinct mtime


def test_valid_edit_is_swapped_in_and_invalid_edit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD.format(name="one", route="edge"))
    reloads = Counter("reloads", "test", ["outcome"], registry=CollectorRegistry())
    watcher = PolicyWatcher(path, reloads)
    assert watcher.current().name == "one"
    assert watcher.check() is False  # unchanged

    _write(path, GOOD.format(name="two", route="cloud"), 1)
    assert watcher.check() is True
    assert watcher.current().name == "two"
    assert watcher.current().rules[0].route == "cloud"

    _write(path, "version: 1\nname: broken\nrules:\n  - name: all\n    route: moon\n", 2)
    assert watcher.check() is False
    assert watcher.current().name == "two"  # the old policy stays
    assert reloads.labels("invalid")._value.get() == 1
    assert reloads.labels("ok")._value.get() == 1

    _write(path, "rules: [", 3)  # not even YAML
    assert watcher.check() is False
    assert watcher.current().name == "two"

    _write(path, GOOD.format(name="three", route="edge"), 4)
    assert watcher.check() is True
    assert watcher.current().name == "three"
