"""Validation of names, topics and topic patterns (PROTOCOL.md, "Addresses").

A name is 1 to 128 characters of ``A-Z a-z 0-9 . _ - : @``. Topics are names
whose ``.``-separated segments are all non-empty (``a..b`` and ``.a`` are
refused: an empty segment can never be matched on purpose). Patterns add
``*`` (exactly one segment) and ``>`` (one or more trailing segments, last only).
"""

from __future__ import annotations

import re
from typing import TypeGuard

MAX_NAME = 128
_NAME = re.compile(r"[A-Za-z0-9._\-:@]{1,128}")
_SEGMENT = re.compile(r"[A-Za-z0-9_\-:@]+")


def is_name(value: object) -> TypeGuard[str]:
    """True for a valid client, device, consumer, session or tag name."""
    return type(value) is str and _NAME.fullmatch(value) is not None


def is_topic(value: object) -> TypeGuard[str]:
    """True for a concrete topic (what ``publish`` takes)."""
    if not is_name(value):
        return False
    return all(_SEGMENT.fullmatch(seg) for seg in value.split("."))


def is_pattern(value: object) -> TypeGuard[str]:
    """True for a subscription pattern: segments, ``*`` wildcards, a final ``>``."""
    if type(value) is not str or not 1 <= len(value) <= MAX_NAME:
        return False
    segments = value.split(".")
    last = len(segments) - 1
    for i, seg in enumerate(segments):
        if seg == "*" or (seg == ">" and i == last):
            continue
        if not _SEGMENT.fullmatch(seg):
            return False
    return True
