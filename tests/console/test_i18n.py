"""Every key in both languages; no template text outside ``t()``."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.console import i18n

TEMPLATES = Path(i18n.__file__).parent / "templates"
# Names that read the same in every language (formats, the time zone).
UNTRANSLATED = {"CSV", "JSONL", "UTC"}


def test_both_languages_have_the_same_keys() -> None:
    assert set(i18n.MESSAGES["en"]) == set(i18n.MESSAGES["zh"])
    assert all(v.strip() for table in i18n.MESSAGES.values() for v in table.values())


def test_every_key_used_in_templates_exists() -> None:
    used: set[str] = set()
    for path in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"\bt\('([a-z_.]+)'\)", path.read_text()))
    assert used - set(i18n.MESSAGES["en"]) == set()


def test_templates_have_no_text_outside_t() -> None:
    for path in TEMPLATES.glob("*.html"):
        text = path.read_text()
        text = re.sub(r"\{#.*?#\}|\{%.*?%\}|\{\{.*?\}\}", " ", text, flags=re.S)
        text = re.sub(r"<[^>]*>", " ", text, flags=re.S)
        words = {w for w in re.findall(r"[^\s·–:/()#.,]+", text)} - UNTRANSLATED
        assert not words, f"{path.name}: untranslated text {sorted(words)}"
