"""File names in a drop folder: which are safe to handle, how derived names stay valid, how names are shown.

Anyone who can write to INBOX chooses the names. A name may be longer than the
names the watcher derives from it can be (`NAME-2.mp4`, `NAME.error.json`,
`NAME.mp4.report.json` add bytes to a name already near the file system's 255), it
may not be valid UTF-8 (Python holds such bytes as lone surrogates), and it may
hold control characters (a newline would forge a line of the log).

- `unsafe_reason`: names the watcher will not process (moved to `failed/` under
  `sanitized(name)`, with an error file naming the original, escaped);
- `fit`: a derived name shortened to fit the limit, with a short hash of what was
  cut so that two long names stay apart;
- `display`: a name as printable text for logs and messages (escapes, never raises).

The journal stores names byte-exactly (`latentsync.watch.journal`).
"""
from __future__ import annotations

import hashlib
import os
import unicodedata
from typing import Optional

from ..engine.limits import MAX_NAME_BYTES

_HASH_CHARS = 8


def name_bytes(name: str) -> bytes:
    """The bytes of a file name as the OS has them (undecodable bytes kept as they were)."""
    return os.fsencode(name)


def is_text(name: str) -> bool:
    """Valid UTF-8 (no bytes Python had to smuggle in as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _control(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") and ch not in ("\u200d",)


def display(name: str) -> str:
    """Printable text for a name: undecodable bytes as \\xNN, control characters escaped."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(ch.encode("unicode_escape").decode("ascii") if _control(ch) else ch for ch in text)


def unsafe_reason(name: str) -> Optional[str]:
    """Why the watcher will not process a file under this name (None: it will)."""
    if not is_text(name):
        return "its name is not valid UTF-8 text"
    if any(_control(ch) for ch in name):
        return "its name holds control characters (a line break, a tab, ...)"
    if len(name_bytes(name)) > MAX_NAME_BYTES:
        return f"its name is longer than {MAX_NAME_BYTES} bytes"
    return None


def _short_hash(text: str) -> str:
    return hashlib.sha256(name_bytes(text)).hexdigest()[:_HASH_CHARS]


def _cut(text: str, budget: int) -> str:
    """The longest prefix of `text` whose UTF-8 encoding fits `budget` bytes (whole characters)."""
    data = text.encode("utf-8", "surrogateescape")[:max(budget, 0)]
    return data.decode("utf-8", "ignore")


def fit(stem: str, tail: str = "", limit: int = MAX_NAME_BYTES) -> str:
    """`stem + tail`, with the stem shortened (plus `~` and a hash of the full stem) to fit `limit` bytes."""
    if len(name_bytes(stem + tail)) <= limit:
        return stem + tail
    budget = limit - len(name_bytes(tail)) - 1 - _HASH_CHARS
    return _cut(stem, budget) + "~" + _short_hash(stem) + tail


def sanitized(name: str, limit: int = MAX_NAME_BYTES) -> str:
    """A safe stand-in for an unsafe name: valid UTF-8, printable, fits `limit`, tells apart names that differ."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    clean = "".join("_" if (_control(ch) or ch in "/\\\ufffd") else ch for ch in text).strip() or "file"
    if clean.startswith("."):
        clean = "_" + clean[1:]
    if clean == text and len(name_bytes(clean)) <= limit:
        return clean
    base, extension = os.path.splitext(clean)
    if len(name_bytes(extension)) > 16:
        base, extension = clean, ""
    candidate = f"{base}~{_short_hash(name)}{extension}"
    return fit(f"{base}~{_short_hash(name)}", extension, limit) if len(name_bytes(candidate)) > limit else candidate
