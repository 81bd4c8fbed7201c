"""Pool and model text for markdown elements: shown as typed, never as links, images, code or HTML."""

from __future__ import annotations

import re

_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def md_escape(text: str) -> str:
    """Text for a markdown element (captions, alerts) that shows as typed: no links, images, code or HTML."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", str(text))
