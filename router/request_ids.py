"""Request ids: unique across router replicas and restarts, and cheap enough to make per request.

A random 64-bit prefix per process and a counter, 32 hex digits like a UUID. ``uuid4`` asks the
kernel for 16 random bytes on every call (a ``getrandom`` syscall per request). Request ids name a
request in logs and headers; they grant nothing, so they need to be unique, not unguessable.
Session ids, which do grant access to a conversation, are made elsewhere from a CSPRNG.
"""

from __future__ import annotations

import itertools
import os

_PREFIX = os.urandom(8).hex()
_COUNTER = itertools.count()


def new_request_id() -> str:
    return f"{_PREFIX}{next(_COUNTER):016x}"
