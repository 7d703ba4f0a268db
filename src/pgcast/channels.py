"""Raw channel names and the patterns that allow them: the one matcher pgcast uses.

A channel name is what PostgreSQL accepts unquoted in ``LISTEN`` (and ``pg_notify``
takes): ``[A-Za-z_][A-Za-z0-9_]*``, at most 63 characters. A pattern (``channels``
setting, ``[rules.channels]``) holds only ``[A-Za-z0-9_*]``, so ``*`` is its only
metacharacter, and it matches case-sensitively, like PostgreSQL's quoted channel
names (``fnmatch`` would fold case on Windows).
"""

from __future__ import annotations

import functools
import re
from typing import Final

__all__ = ["CHANNEL_NAME", "CHANNEL_PATTERN", "MAX_CHANNEL_LENGTH", "channel_matches"]

MAX_CHANNEL_LENGTH: Final = 63  # PostgreSQL's NAMEDATALEN - 1: longer names are truncated
CHANNEL_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
CHANNEL_PATTERN: Final = re.compile(r"[A-Za-z0-9_*]+")


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


def channel_matches(pattern: str, name: str) -> bool:
    """Whether channel ``name`` matches ``pattern`` (``*``: any run of characters)."""
    return _compiled(pattern).fullmatch(name) is not None
