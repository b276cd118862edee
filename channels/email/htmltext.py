"""HTML-only mail as the text a person sees: hidden elements dropped, then html2text. Pure.

Mail HTML hides text in many ways (preheaders, tracking spans, Outlook's
``mso-hide``); a reader that converted it all would read words nobody saw,
such as a hidden "APPROVE". Hidden elements are removed with everything inside
them before conversion. Unclosed hidden elements hide the rest of the
document: dropping too much only ever makes a reply unclear, never a decision.
"""

from __future__ import annotations

import re
from collections import Counter
from html.parser import HTMLParser

import html2text

_VOID = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "param",
    "source",
    "track",
    "wbr",
}
_NEVER_SHOWN = {"head", "title", "style", "script", "template"}
_ZERO = r":0(?:\.0*)?[a-z%]*(?:!important)?(?:;|$)"
_HIDING_STYLE = re.compile(
    rf"(?:^|;)(?:display:none|visibility:(?:hidden|collapse)|mso-hide:all|font-size{_ZERO}"
    rf"|opacity{_ZERO})"
)
# A box of no height or width hides its text only when what overflows is clipped.
_NO_BOX = re.compile(rf"(?:^|;)(?:max-)?(?:height|width){_ZERO}")
_CLIPPED = re.compile(r"(?:^|;)overflow(?:-[xy])?:hidden")


def to_text(html: str) -> str:
    """HTML-only mail as plain text, blockquotes as ``>`` lines, for the reply reader."""
    converter = html2text.HTML2Text()
    converter.body_width = 0
    converter.ignore_images = True
    converter.ignore_links = True
    converter.ignore_emphasis = True
    return str(converter.handle(to_visible(html)))


def to_visible(html: str) -> str:
    """The HTML without its hidden elements, comments and non-content (head, style, script)."""
    parser = _Visible()
    parser.feed(html)
    parser.close()
    return "".join(parser.out)


def is_hidden(tag: str, attrs: list[tuple[str, str | None]]) -> bool:
    """Whether an element, by its tag and attributes alone, shows nothing of what it holds."""
    if tag in _NEVER_SHOWN:
        return True
    for name, value in attrs:
        if name == "hidden":
            return True
        if name == "style" and value and _is_hiding_style(re.sub(r"\s+", "", value.lower())):
            return True
    return False


def _is_hiding_style(style: str) -> bool:
    if _HIDING_STYLE.search(style):
        return True
    return bool(_NO_BOX.search(style) and _CLIPPED.search(style))


class _Visible(HTMLParser):
    """Re-emits the markup as written, except inside hidden elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.out: list[str] = []
        self._open: list[str] = []
        self._counts: Counter[str] = Counter()
        self._hidden_at: int | None = None
        """How many elements were open when the outermost hidden one opened; None: shown."""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            self.handle_startendtag(tag, attrs)
            return
        if self._hidden_at is None and is_hidden(tag, attrs):
            self._hidden_at = len(self._open)
        self._emit(self.get_starttag_text() or "")
        self._open.append(tag)
        self._counts[tag] += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if not is_hidden(tag, attrs):
            self._emit(self.get_starttag_text() or "")

    def handle_endtag(self, tag: str) -> None:
        if self._counts[tag]:
            # Close it and whatever was left open inside it, as browsers do.
            while (closed := self._open.pop()) != tag:
                self._counts[closed] -= 1
            self._counts[tag] -= 1
        self._emit(f"</{tag}>")
        if self._hidden_at is not None and len(self._open) <= self._hidden_at:
            self._hidden_at = None

    def handle_data(self, data: str) -> None:
        self._emit(data)

    def handle_entityref(self, name: str) -> None:
        self._emit(f"&{name};")

    def handle_charref(self, name: str) -> None:
        self._emit(f"&#{name};")

    def _emit(self, text: str) -> None:
        if self._hidden_at is None:
            self.out.append(text)
