"""An English training corpus that every machine already has: the standard library's own prose.

Docstrings of standard-library modules, their classes and functions, plus the language reference
topics that ``pydoc`` ships, cleaned down to paragraphs of sentences: code, doctest lines, tables,
reST markup and signatures are dropped. Deterministic for a given Python version.
"""

from __future__ import annotations

import importlib
import inspect
import re
import warnings
from collections.abc import Iterator
from types import ModuleType

# Imported for their docstrings; none has import-time side effects (no GUI, browser or printing).
STDLIB_MODULES: tuple[str, ...] = (
    "abc", "argparse", "ast", "asyncio", "asyncio.base_events", "asyncio.events", "asyncio.locks",
    "asyncio.queues", "asyncio.streams", "asyncio.tasks", "base64", "bdb", "binascii", "bisect",
    "builtins", "bz2", "calendar", "cmath", "cmd", "code", "codecs", "codeop", "collections",
    "colorsys", "compileall", "concurrent.futures", "concurrent.futures.thread", "configparser",
    "contextlib", "contextvars", "copy", "cProfile", "csv", "ctypes", "dataclasses", "datetime", "dbm",
    "decimal", "difflib", "dis", "doctest", "email", "email.headerregistry", "email.message",
    "email.policy", "email.utils", "enum", "errno", "faulthandler", "filecmp", "fileinput", "fnmatch",
    "fractions", "ftplib", "functools", "gc", "getopt", "gettext", "glob", "graphlib", "gzip",
    "hashlib", "heapq", "hmac", "html", "html.parser", "http.client", "http.cookiejar", "http.cookies",
    "http.server", "imaplib", "importlib", "importlib.abc", "importlib.machinery", "importlib.metadata",
    "importlib.resources", "inspect", "io", "ipaddress", "itertools", "json", "linecache", "locale",
    "logging", "logging.handlers", "lzma", "mailbox", "math", "mimetypes", "mmap", "modulefinder",
    "multiprocessing", "multiprocessing.managers", "multiprocessing.pool", "netrc", "numbers",
    "operator", "optparse", "os", "pathlib", "pdb", "pickle", "pickletools", "pkgutil", "platform",
    "plistlib", "poplib", "posixpath", "pprint", "profile", "pstats", "py_compile", "pydoc", "queue",
    "quopri", "random", "re", "reprlib", "runpy", "sched", "secrets", "select", "selectors", "shelve",
    "shlex", "shutil", "signal", "site", "smtplib", "socket", "socketserver", "sqlite3", "ssl", "stat",
    "statistics", "string", "stringprep", "struct", "subprocess", "symtable", "sys", "sysconfig",
    "tarfile", "tempfile", "textwrap", "threading", "time", "timeit", "tokenize", "tomllib", "trace",
    "traceback", "tracemalloc", "types", "typing", "unicodedata", "unittest", "unittest.case",
    "unittest.loader", "unittest.mock", "unittest.runner", "unittest.suite", "urllib.error",
    "urllib.parse", "urllib.request", "urllib.robotparser", "uuid", "warnings", "wave", "weakref",
    "wsgiref.handlers", "wsgiref.simple_server", "xml.dom", "xml.dom.minidom", "xml.etree.ElementTree",
    "xml.sax", "xmlrpc.client", "xmlrpc.server", "zipapp", "zipfile", "zipimport", "zlib", "zoneinfo",
)  # fmt: skip

_CODEISH = re.compile(
    r"(>>>|\.\.\.\s|::|=|\{|\}|\[|\]|\\|`|\|  |->|__|\w\(|\w\.\w+\(|^\s*[-*+#@]|^\s*\d+[.)]\s)"
)
_SPACE = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_ALLOWED = re.compile(r"[A-Za-z0-9 ,.;:'\"()!?%-]+")


def _is_prose(paragraph: str) -> bool:
    words = paragraph.split()
    if len(words) < 4 or not paragraph[0].isupper() or paragraph[-1] not in ".!?":
        return False
    if not _ALLOWED.fullmatch(paragraph) or paragraph.count("(") != paragraph.count(")"):
        return False
    letters = sum(c.isalpha() for c in paragraph)
    return letters > 0.75 * len(paragraph)


def clean(text: str) -> Iterator[str]:
    """Prose paragraphs of ``text``, each joined onto one line.

    Indented blocks (code samples, definition lists) go whole; elsewhere sentences that look like
    code go one by one, and the prose around them stays.
    """
    for block in re.split(r"\n\s*\n", text):
        lines = block.splitlines()
        if any(line.startswith(("    ", "\t")) or line.lstrip().startswith(">>>") for line in lines):
            continue
        kept = [
            sentence
            for sentence in _SENTENCE_END.split(_SPACE.sub(" ", " ".join(lines)).strip())
            if not _CODEISH.search(sentence) and _is_prose(sentence)
        ]
        paragraph = " ".join(kept)
        if len(paragraph.split()) >= 6:
            yield paragraph


def _docstrings(module: ModuleType) -> Iterator[str]:
    yield inspect.getdoc(module) or ""
    for _, member in sorted(vars(module).items()):
        if getattr(member, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(member):
            yield inspect.getdoc(member) or ""
            for _, attribute in sorted(vars(member).items()):
                if inspect.isfunction(attribute) or inspect.ismethoddescriptor(attribute):
                    yield attribute.__doc__ or ""
        elif inspect.isfunction(member) or inspect.isbuiltin(member):
            yield member.__doc__ or ""


def _raw_texts(modules: tuple[str, ...], topics: bool) -> Iterator[str]:
    if topics:
        from pydoc_data.topics import topics as pydoc_topics

        for _, text in sorted(pydoc_topics.items()):
            yield text
    for name in modules:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(name)
        except ImportError:  # a stripped-down Python may lack a few (sqlite3, ssl, lzma)
            continue
        for doc in _docstrings(module):
            yield inspect.cleandoc(doc)


def build_corpus(*, max_chars: int = 3_000_000, modules: tuple[str, ...] = STDLIB_MODULES) -> list[str]:
    """Unique prose paragraphs in a fixed order, at most ``max_chars`` characters in all."""
    seen: set[str] = set()
    paragraphs: list[str] = []
    size = 0
    for text in _raw_texts(modules, topics=True):
        for paragraph in clean(text):
            if paragraph in seen:
                continue
            seen.add(paragraph)
            paragraphs.append(paragraph)
            size += len(paragraph) + 1
            if size >= max_chars:
                return paragraphs
    return paragraphs
