"""Refusals: answers in which the model declined the task instead of doing it.

A refusal rate that climbs is one of the first signs that inputs moved somewhere the model (or its
provider's filter) will not go, so every chat answer is read for one, and a refused call carries a
``refusal`` event in its trace (``how``: ``content_filter``, ``refusal`` or ``phrase``). Metrics count
them and drift compares their rate.

Three signals, strongest first:

- the provider's own: ``finish_reason: content_filter`` (OpenAI, Azure; Anthropic's ``stop_reason:
  refusal`` arrives translated to it);
- OpenAI's ``refusal`` field on the message (structured outputs) or on a streamed delta;
- the answer's opening words: the stock phrasings of a refusal ("I'm sorry, but I can't help ...", "I
  cannot assist with ...", "As an AI language model, I ...", and their Spanish, French, German and
  Portuguese counterparts), where what cannot be done is the task itself ("Unfortunately, I cannot find
  that order" is an answer, not a refusal). Only the first ``HEAD_CHARS`` characters are read, and only a sentence that *starts*
  like a refusal counts: an answer that quotes one later, or explains what it cannot do after doing the
  task, does not. A heuristic, so it is named as one: ``how: phrase``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["HEAD_CHARS", "detect", "of_completion"]

HEAD_CHARS = 240
"""How much of the start of an answer is read."""

_CANT = (r"(?:can(?:no|')t|can not|won't be able to|will not be able to|won't|will not|am unable to|'m unable to|"
         r"am not able to|'m not able to|must decline(?: to)?)")
_TASK = (r"(?:help(?! but)|assist|comply|provide|do (?:that|this)|fulfil|fulfill|answer|support|share|create|"
         r"write|generate|discuss|engage|give|offer|produce|continue|complete|process|respond)\b")
_PHRASES = re.compile(
    "|".join((
        rf"(?:(?:i'm|i am) sorry|sorry|unfortunately|apologies),? (?:but )?i {_CANT} {_TASK}",
        r"(?:(?:i'm|i am) sorry|sorry),? (?:but )?that's not something i can",
        rf"i {_CANT} {_TASK}",
        rf"i {_CANT} (?:with|in) (?:that|this)\b",
        r"as an ai(?: language model| assistant| model)?,? i (?:can(?:no|')t|cannot|am not able|don't|do not|won't)",
        r"lo siento,? (?:pero )?no (?:puedo|me es posible)",
        r"(?:je suis )?d[ée]sol[ée]e?,? (?:mais )?je ne (?:peux|suis pas en mesure)",
        r"(?:es tut mir leid|entschuldigung),? (?:aber )?(?:ich kann|das kann ich|ich darf)",
        r"(?:desculpe|sinto muito),? (?:mas )?(?:n[ãa]o posso|eu n[ãa]o posso)",
    )),
    re.IGNORECASE,
)
_LEAD = re.compile(r"^[\s>*_#\"'`\-]*")


def detect(text: str | None, *, finish_reason: str | None = None, refusal: Any = None) -> str | None:
    """How the answer is a refusal (``content_filter``, ``refusal`` or ``phrase``), or None."""
    if finish_reason == "content_filter":
        return "content_filter"
    if refusal:
        return "refusal"
    if not text:
        return None
    head = text[:HEAD_CHARS].replace("\u2019", "'").replace("\u2018", "'")
    head = head[_LEAD.match(head).end():]  # type: ignore[union-attr] - the pattern always matches
    return "phrase" if _PHRASES.match(head) else None


def of_completion(completion: Any) -> str | None:
    """``detect`` on a chat completion (the first choice)."""
    try:
        choice = completion["choices"][0]
    except (KeyError, IndexError, TypeError):
        return None
    message = choice.get("message") if isinstance(choice, Mapping) else None
    if not isinstance(message, Mapping):
        return None
    content = message.get("content")
    return detect(content if isinstance(content, str) else None, finish_reason=choice.get("finish_reason"),
                  refusal=message.get("refusal"))
