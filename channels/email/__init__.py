"""The email channel: approve, reject and answer by replying; talk to agents by email.

Modules, one job each: ``tokens`` (signed reply addresses), ``replies`` (the
new text and the decision in it), ``headers`` (parsing, each header read in
bounded time), ``mime`` (raw bytes to a record), ``drafts`` (an email before
rendering, its threading headers), ``compose`` (which emails an event calls
for), ``render`` (templates to MIME), ``outbound`` (SMTP sending), ``inbound``
(what an email means), ``receiver`` (the SMTP server), ``routes`` (HTTP),
``channel`` (the adapter).
"""

from __future__ import annotations

from channels.email.channel import EmailChannel

__all__ = ["EmailChannel"]
