"""Chat templates of in-process models: rendering a request into prompt tokens, one request
at a time, so a template error or a prompt too long fails that request alone.

Every prompt template has a system part, but some models' templates refuse a system turn
(Gemma's raise "System role not supported"). For those the system text is folded into the
first user turn, the way Gemma 3's own template does it: system text, a blank line, the
user's text. Whether a template refuses is asked once per tokenizer, by rendering a probe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tasks.engines.base import PROMPT_TOO_LONG, TEMPLATE_ERROR, Completion, Message

_PROBE = [{"role": "system", "content": "probe"}, {"role": "user", "content": "probe"}]


def accepts_system_role(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template renders a system turn (Gemma's raise instead)."""
    try:
        tokenizer.apply_chat_template(_PROBE, tokenize=False, add_generation_prompt=True)
    except Exception:  # jinja2's TemplateError from raise_exception, or whatever a template raises
        return False
    return True


def fold_system_into_user(messages: Sequence[Message]) -> tuple[Message, ...]:
    """The conversation without system turns: their text opens the first user turn."""
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    rest = [m for m in messages if m.role != "system"]
    if not system:
        return tuple(rest)
    first_user = next((i for i, m in enumerate(rest) if m.role == "user"), None)
    if first_user is None:
        return (Message(role="user", content=system), *rest)
    folded = Message(role="user", content=f"{system}\n\n{rest[first_user].content}")
    return (*rest[:first_user], folded, *rest[first_user + 1:])


def chat_prompt(tokenizer: Any, messages: Sequence[Message], prefill: str = "") -> str:
    """The chat-templated prompt text up to the assistant's turn (plus any prefilled answer start)."""
    conversation = [{"role": m.role, "content": m.content} for m in messages]
    return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True) + prefill


def encode_prompt(tokenizer: Any, messages: Sequence[Message], *, fold_system: bool, context_length: int | None,
                  answer_tokens: int, prefill: str = "") -> list[int] | Completion:
    """The prompt's token ids, or a failed Completion saying why this request cannot run:
    its template raised (`template_error`), or prompt plus `answer_tokens` exceed the
    context (`prompt_too_long`; counted by the model's own tokenizer, before any batch)."""
    if fold_system:
        messages = fold_system_into_user(messages)
    try:
        text = chat_prompt(tokenizer, messages, prefill)
    except Exception as error:  # a template raises what it likes; it concerns this request only
        return Completion.failed(f"the chat template refused the conversation: {error}", reason=TEMPLATE_ERROR)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]  # the template wrote any special tokens
    if context_length is not None and len(ids) + answer_tokens > context_length:
        return Completion.failed(
            f"{PROMPT_TOO_LONG}: the prompt has {len(ids)} tokens and its answer may take {answer_tokens}; "
            f"the model takes at most {context_length}", reason=PROMPT_TOO_LONG)
    return ids
