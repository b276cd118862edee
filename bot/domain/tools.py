"""Tools are pydantic models (factor 4): their schema is what the model sees.

Besides an agent's own tools, every agent has the built-in human-contact and
prose tools: ``ask_human`` (factor 7) and ``reply`` (factor 1).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from bot.domain.errors import InvalidInputError
from bot.domain.model import ToolSpec
from bot.domain.policy import NEVER, ApprovalPolicy
from bot.domain.validate import check_answer_schema


@dataclass(frozen=True)
class ToolContext:
    """What a running tool is given besides its arguments."""

    thread_id: str
    call_id: str
    idempotency_key: str
    """Stable across re-runs of the same call: pass it to the system acted on."""


Runner = Callable[[Any, ToolContext], Awaitable[Any]]


@dataclass(frozen=True)
class Tool:
    """A tool an agent may call.

    Attributes:
        name: what the model calls it.
        description: what it does, for the model.
        args: the pydantic model of its arguments; its JSON schema is shown.
        run: the coroutine that does the work; its return value is the result.
        approval: when the call needs approval, and whose.
        idempotent: safe to run twice; a run cut by a crash is simply re-run.
    """

    name: str
    description: str
    args: type[BaseModel]
    run: Runner
    approval: ApprovalPolicy = NEVER
    idempotent: bool = False

    @cached_property
    def spec(self) -> ToolSpec:
        """The tool as the model sees it (schema generation is slow: built once)."""
        return ToolSpec(self.name, self.description, self.args.model_json_schema())

    def validate(self, raw: dict[str, Any]) -> BaseModel:
        """Validate arguments, raising ``InvalidInputError`` with the schema errors."""
        try:  # ``model_validate`` without its wrapper: this runs two or three times a cycle
            valid: BaseModel = self.args.__pydantic_validator__.validate_python(raw)
            return valid
        except ValidationError as exc:
            errors = [
                {"field": ".".join(str(p) for p in e["loc"]), "error": e["msg"]}
                for e in exc.errors(include_url=False)
            ]
            raise InvalidInputError(
                f"invalid arguments for {self.name}: "
                + "; ".join(f"{e['field'] or '(root)'}: {e['error']}" for e in errors),
                errors=errors,
            ) from exc


class AskHuman(BaseModel):
    """Ask a person for information the agent lacks. The thread waits for the answer."""

    question: str = Field(description="The question, short and specific.")
    context: str | None = Field(None, description="What the person needs to know to answer.")
    urgency: Literal["low", "normal", "high"] = "normal"
    format: Literal["free_text", "yes_no", "choices"] = "free_text"
    choices: list[str] = Field(default_factory=list, description="Options when format=choices.")
    answer_schema: dict[str, Any] | None = Field(
        None,
        description=(
            "For a structured answer (with format free_text): a JSON Schema; the person "
            "fills in a form and you receive the answer as JSON matching it. Supported: "
            'type string (format "date" for a date), number, integer, boolean, an enum of '
            "strings (one choice), an array whose items are an enum (several choices), and "
            "objects of these with properties and required; title and description label "
            "the fields."
        ),
    )

    @field_validator("answer_schema")
    @classmethod
    def _supported(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                check_answer_schema(value)
            except InvalidInputError as exc:
                raise ValueError(exc.message) from exc
        return value

    @model_validator(mode="after")
    def _typed(self) -> AskHuman:
        if self.answer_schema is not None and self.format != "free_text":
            raise ValueError("answer_schema is for format free_text (a typed answer)")
        return self


class Reply(BaseModel):
    """Say something to the user. ``final`` when the task is complete."""

    text: str = Field(description="The message for the user.")
    final: bool = Field(False, description="True when the task is complete.")


ASK_HUMAN = "ask_human"
REPLY = "reply"


async def _never_run(args: Any, ctx: ToolContext) -> Any:  # pragma: no cover - loop handles these
    raise RuntimeError("built-in tools are handled by the loop")


BUILTINS: tuple[Tool, ...] = (
    Tool(ASK_HUMAN, AskHuman.__doc__ or "", AskHuman, _never_run),
    Tool(REPLY, Reply.__doc__ or "", Reply, _never_run),
)
