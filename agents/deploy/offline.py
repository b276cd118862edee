"""How the offline model plays the deploy agent, from the blocks it is shown."""

from __future__ import annotations

import re

from bot.domain.model import ModelCall, ModelRequest
from bot.models.offline import call, last_block

DEPLOY = re.compile(
    r"\bdeploy\s+(?P<service>[a-z][\w-]*)(?:\s+v?(?P<version>\d[\w.]*))?"
    r"(?:\s+(?:to|on|in)\s+(?P<env>prod(?:uction)?|staging))?",
    re.I,
)
ROLLBACK = re.compile(r"\broll\s*back\s+(?P<service>[a-z][\w-]*)\s+(?:in|on)\s+(?P<env>\w+)", re.I)
VERSION = re.compile(r"v?(\d+(?:\.\d+)+)")
HELP = (
    "I can deploy and roll back services. Try: 'deploy api 1.5.0 to production', "
    "'rollback api in production', or 'list services'."
)


def _env(raw: str | None) -> str:
    return "production" if (raw or "production").lower().startswith("prod") else "staging"


def script(request: ModelRequest) -> list[ModelCall]:
    last = last_block(request, "user_message", "human_answer", "tool_result", "errors")
    if last is None:
        return call("reply", text=HELP)
    if last.tag == "errors":
        return call("reply", text=f"Something went wrong: {last.body}")
    if last.tag == "tool_result":
        return _after_result(last.attrs["tool"], last.attrs["outcome"], last.body)
    if last.tag == "human_answer":
        asked = last_block(request, "ask_human")
        user = last_block(request, "user_message")
        if asked and user and "version" in asked.body and (m := VERSION.search(last.body)):
            d = DEPLOY.search(user.body)
            if d:
                return call(
                    "deploy", service=d["service"], version=m[1], environment=_env(d["env"])
                )
        return call("reply", text=f"Thanks, noted: {last.body}", final=True)
    text = last.body
    if m := ROLLBACK.search(text):
        return call("rollback", service=m["service"], environment=_env(m["env"]))
    if m := DEPLOY.search(text):
        if not m["version"]:
            return call(
                "ask_human",
                question=f"Which version of {m['service']} should I deploy?",
                format="free_text",
            )
        return call(
            "deploy", service=m["service"], version=m["version"], environment=_env(m["env"])
        )
    if re.search(r"\b(list|status|versions?|services)\b", text, re.I):
        return call("list_services")
    return call("reply", text=HELP)


def _after_result(tool: str, outcome: str, body: str) -> list[ModelCall]:
    if outcome == "rejected":
        return call("reply", text=f"Not done. {body.splitlines()[0]}", final=True)
    if outcome == "unknown":
        return call("reply", text=f"The {tool} call was interrupted; a human is checking.")
    if tool == "list_services":
        return call("reply", text=f"Running now: {body}", final=True)
    return call("reply", text=f"Done: {body}", final=True)
