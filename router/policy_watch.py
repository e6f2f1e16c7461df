"""Hot reload of the routing policy file.

The watcher polls the file's modification time and size; on a change it loads and validates the
new file and swaps it in with one reference assignment, so a request sees either the old policy
or the new one, never a mix. An invalid file keeps the old policy, logs why and counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from prometheus_client import Counter

from router.policy import Policy, PolicyError, load_policy

log = logging.getLogger(__name__)

POLL_S = 1.0


class PolicyWatcher:
    def __init__(self, path: Path, reloads: Counter) -> None:
        self.path = path
        self._reloads = reloads
        self._policy = load_policy(path)  # the first load must succeed: fail fast at start-up
        self._stamp = _stamp(path)
        self._task: asyncio.Task[None] | None = None

    def current(self) -> Policy:
        return self._policy

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="policy-watch")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            self.check()

    def check(self) -> bool:
        """Reload if the file changed; return whether a new policy was swapped in."""
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            policy = load_policy(self.path)
        except PolicyError as exc:
            self._reloads.labels("invalid").inc()
            log.error("policy reload refused, keeping policy %r: %s", self._policy.name, exc)
            return False
        self._policy = policy
        self._reloads.labels("ok").inc()
        log.info("policy reloaded from %s: %r with %d rules", self.path, policy.name, len(policy.rules))
        return True


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size
