"""The Anthropic adapter: one Messages API call per model turn, through the official SDK."""

from __future__ import annotations

import anthropic
from anthropic.types import CacheControlEphemeralParam, TextBlockParam, ToolParam, ToolUseBlock

from bot.domain.errors import ModelError
from bot.domain.model import ModelCall, ModelRequest, ModelTurn, ToolSpec

# Tools and system prompt are the same on every turn of an agent. The API caches the prefix
# tools -> system -> messages, so the breakpoint on the system block caches both, and the one on
# the last tool still hits when only the prompt changed.
_CACHED: CacheControlEphemeralParam = {"type": "ephemeral"}


class AnthropicModel:
    """Claude through the Messages API, forced to end every turn in a tool call.

    Retries are the SDK's: 408, 409, 429, every 5xx (529 overloaded included) and connection
    errors are retried ``max_retries`` times, waiting as long as ``retry-after-ms`` or
    ``retry-after`` says, else 0.5 s doubling up to 8 s. ``timeout`` bounds each attempt.

    Args:
        api_key: The Anthropic API key; it never appears in an error message.
        model: The model name, e.g. ``claude-sonnet-4-5``; also this adapter's ``name``.
        base_url: The API root; None lets the SDK read ``ANTHROPIC_BASE_URL``.
        timeout: Seconds allowed for one HTTP attempt.
        max_retries: Retries after the first attempt before giving up.
        max_tokens: The most tokens one turn may produce.
    """

    def __init__(
        self,
        *,
        api_key: str,
        model: str,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 4,
        max_tokens: int = 1024,
    ) -> None:
        self.name = model
        self._max_tokens = max_tokens
        self._timeout = timeout
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries
        )

    async def complete(self, request: ModelRequest) -> ModelTurn:
        """Send the rendered thread and tools; return the tool calls the model made.

        Raises:
            ModelError: the API failed after retries, or answered without a tool call.
        """
        system: TextBlockParam = {"type": "text", "text": request.system, "cache_control": _CACHED}
        try:
            message = await self._client.messages.create(
                model=self.name,
                max_tokens=self._max_tokens,
                system=[system],
                # We own the context window (factor 3): the whole thread is one user message.
                messages=[{"role": "user", "content": request.context_text()}],
                tools=to_tool_params(request.tools),
                tool_choice={"type": "any"},
            )
        except anthropic.APIError as err:
            raise self._to_model_error(err) from err
        calls = [
            ModelCall(block.name, dict(block.input), block.id)
            for block in message.content
            if isinstance(block, ToolUseBlock)
        ]
        if not calls:
            raise ModelError(
                f"{self.name} answered without a tool call (stop_reason={message.stop_reason})",
                model=self.name,
                stop_reason=message.stop_reason,
            )
        usage = message.usage
        return ModelTurn(
            calls,
            input_tokens=usage.input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
        )

    async def aclose(self) -> None:
        """Close the SDK's HTTP connections."""
        await self._client.close()

    def _to_model_error(self, err: anthropic.APIError) -> ModelError:
        if isinstance(err, anthropic.APIStatusError):
            return ModelError(
                f"Anthropic API answered HTTP {err.status_code} ({err.type or 'unknown error'}) "
                f"for model {self.name}: {err.api_message or 'no message'}"
                f" [request id {err.request_id}]",
                model=self.name,
                status=err.status_code,
                request_id=err.request_id,
            )
        if isinstance(err, anthropic.APITimeoutError):
            reason = f"timed out after {self._timeout:g} s"
        elif isinstance(err, anthropic.APIConnectionError):
            reason = f"could not be reached ({err.__cause__ or err.message})"
        else:
            reason = f"answered something unreadable ({type(err).__name__})"
        return ModelError(f"Anthropic API {reason} for model {self.name}", model=self.name)


def to_tool_params(specs: list[ToolSpec]) -> list[ToolParam]:
    """Convert tool specs to the API's tool definitions, the last one marked for caching."""
    tools: list[ToolParam] = [
        {"name": spec.name, "description": spec.description, "input_schema": spec.input_schema}
        for spec in specs
    ]
    if tools:
        tools[-1]["cache_control"] = _CACHED
    return tools
