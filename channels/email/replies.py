"""Reading a reply: only the new text, and a decision only when it is unmistakable. Pure.

Quoted history, attribution lines and signatures are stripped by
mail-parser-reply (several languages). A reply that starts with the quote
(bottom-posted, or answered inline) is read as what is not quoted. Outlook on
the web's separator (a line of underscores, then From:/Sent:) ends the new text.
The decision is read from the first non-empty line with anchored keywords;
anything else, negations included, is ``UNCLEAR`` and is never an approval.
For risky requests only the keyword itself counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from mailparser_reply import EmailReplyParser

LANGUAGES = ["en", "de", "fr", "es", "it", "nl", "sv", "da", "pl", "cs"]
_PARSER = EmailReplyParser(languages=LANGUAGES)
_SPACES = str.maketrans({"\u00a0": " ", "\u202f": " ", "\u2007": " ", "\u200b": ""})

APPROVE_WORDS = {
    "approve",
    "approved",
    "yes",
    "lgtm",
    "👍",
    "+1",
    "genehmigt",
    "freigegeben",
    "ja",
    "approuvé",
    "approuve",
    "oui",
    "sí",
}
REJECT_WORDS = {
    "reject",
    "rejected",
    "deny",
    "denied",
    "decline",
    "declined",
    "👎",
    "abgelehnt",
    "ablehnen",
    "rejeté",
    "refusé",
    "refuse",
    "rechazado",
}
# For risky requests: the keyword as the prompt asks for it, and its past tense.
EXACT_APPROVE = {"approve", "approved"}
EXACT_REJECT = {"reject", "rejected"}
# Short words that start many unrelated sentences ("no problem", "non-urgent")
# count only alone or followed by punctuation.
REJECT_SHORT = {"no", "nein", "non"}

_WORD = re.compile(r"[\w+]+|👍|👎", re.UNICODE)
_DECORATION = re.compile(r"^[\s*_>~`\"'“”]+|[\s*_~`\"'“”]+$")
_SKIN_TONES = re.compile("[\U0001f3fb-\U0001f3ff\ufe0f]")
_EXACT_END = re.compile(r"[.!]?")
# Outlook on the web: a line of underscores, then the original's From:/Sent:/To: block.
_SEPARATOR = re.compile(r"^_{20,}[ \t]*$")
_HEADER_LINE = re.compile(r"^\*?[^\s:*][^:]{0,30}:\*?\s")
_REJECT = re.compile(
    r"^(?P<word>\w+|👎)(?:(?P<sep>\s*[:\-\u2013\u2014,.!;]\s*)|(?P<space>\s+)|$)(?P<rest>.*)$",
    re.UNICODE | re.DOTALL,
)


class Kind(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    UNCLEAR = "unclear"


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    reason: str | None = None


def to_new_text(body: str) -> str:
    """What the sender wrote in this message, without quotes, attributions or signature."""
    text = _cut_separator(body.translate(_SPACES).replace("\r\n", "\n"))
    if not text.strip():
        return ""
    if _starts_with_quote(text):
        text = _unquoted(text)
        if not text.strip():
            return ""
    replies = _PARSER.read(text).replies
    # The parser drops an empty first fragment: then the "first reply" is the quote.
    if not replies or replies[0].headers:
        return ""
    return _drop_quote(replies[0].body).strip()


def read_verdict(text: str, *, exact: bool = False) -> Verdict:
    """The decision a reply states, read from its first non-empty line.

    With ``exact`` (a risky request), only APPROVE or REJECT[: reason] counts:
    no synonym, no emoji, no other word on the line.
    """
    lines = [ln.strip() for ln in text.splitlines()]
    first_at = next((i for i, ln in enumerate(lines) if ln), None)
    if first_at is None:
        return Verdict(Kind.UNCLEAR)
    first = _SKIN_TONES.sub("", _DECORATION.sub("", lines[first_at]))
    approves, rejects = (EXACT_APPROVE, EXACT_REJECT) if exact else (APPROVE_WORDS, REJECT_WORDS)
    words = [w.lower() for w in _WORD.findall(first)]
    if exact:
        if len(words) == 1 and words[0] in approves and _EXACT_END.fullmatch(_WORD.sub("", first)):
            return Verdict(Kind.APPROVE)
    elif words and all(w in approves for w in words) and _only_punctuation(first):
        return Verdict(Kind.APPROVE)
    match = _REJECT.match(first)
    if match is None:
        return Verdict(Kind.UNCLEAR)
    word = match["word"].lower()
    short = set() if exact else REJECT_SHORT
    if word in short and match["space"]:
        return Verdict(Kind.UNCLEAR)
    if word not in rejects | short:
        return Verdict(Kind.UNCLEAR)
    reason = match["rest"].strip()
    if not reason:
        reason = "\n".join(ln for ln in lines[first_at + 1 :]).strip()
    return Verdict(Kind.REJECT, reason or None)


def _cut_separator(text: str) -> str:
    """Everything above Outlook's separator line, when one is followed by a header line."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not _SEPARATOR.match(line.strip()):
            continue
        after = next((ln.strip() for ln in lines[i + 1 : i + 4] if ln.strip()), "")
        if _HEADER_LINE.match(after):
            return "\n".join(lines[:i])
    return text


def _starts_with_quote(text: str) -> bool:
    """Whether the quote comes first (bottom-posting, inline answers): nothing but an
    attribution ("On …, … wrote:", perhaps wrapped in two lines) above the first ``>`` line."""
    lines = text.split("\n")
    at = next((i for i, ln in enumerate(lines) if ln.startswith(">")), None)
    if at is None:
        return False
    above = [ln.rstrip() for ln in lines[:at]]
    while above and not above[-1]:
        above.pop()
    while above and not above[0]:
        above.pop(0)
    if not above:
        return True
    if not above[-1].endswith(":"):
        return False
    # One line, or two without a blank between: the client wrapped it.
    return len(above) == 1 or (
        len(above) == 2 and all(above) and _is_wrapped_attribution(above[0], above[1])
    )


def _unquoted(text: str) -> str:
    """The lines that are not quoted, without the attribution above the first quote."""
    lines = text.split("\n")
    first = next(i for i, ln in enumerate(lines) if ln.startswith(">"))
    return "\n".join(ln for ln in lines[first:] if not ln.startswith(">"))


def _only_punctuation(line: str) -> bool:
    """True when the line is keywords separated by spaces and light punctuation."""
    rest = _WORD.sub("", line)
    return all(ch in " \t,.!;:-\u2013\u2014" for ch in rest)


def _drop_quote(text: str) -> str:
    """Cut at the first ``>`` line and the attribution just above it, for clients the
    parser does not know (wrapped or localised "… wrote:" lines)."""
    lines = text.split("\n")
    cut = next((i for i, ln in enumerate(lines) if ln.startswith(">")), len(lines))
    kept = lines[:cut]
    while kept and not kept[-1].strip():
        kept.pop()
    if cut < len(lines) and kept and kept[-1].rstrip().endswith(":"):
        attribution = kept.pop()
        if kept and _is_wrapped_attribution(kept[-1], attribution):
            kept.pop()
    return "\n".join(kept)


def _is_wrapped_attribution(upper: str, lower: str) -> bool:
    """An "On <date>, <name> <address> wrote:" line that the client wrapped in two."""
    return bool(re.search(r"\d", upper)) and ("@" in upper + lower or "<" in upper)
