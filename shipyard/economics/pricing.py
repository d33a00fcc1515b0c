"""What a call costs: a price table (USD per million tokens), token estimates, and costs in nano-USD.

Money is counted in integer nano-USD (1e-9 USD) everywhere below the API, so that budgets add up exactly
across thousands of calls and across processes (Redis keeps integers exactly up to 2**53, 9 million USD).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

NANO = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million input (prompt) and output (completion) tokens."""

    input: float
    output: float

    def cost_nano(self, prompt_tokens: int, completion_tokens: int) -> int:
        # USD per million tokens * 1000 = nano-USD per token
        return round(prompt_tokens * self.input * 1000 + completion_tokens * self.output * 1000)


# List prices (USD per million tokens) of well-known models. Config ``pricing:`` overrides any of them.
# A dated or tagged name (gpt-4o-2024-08-06, claude-3-5-sonnet-20241022, ...-latest) takes its base's price.
DEFAULT_PRICES: dict[str, Price] = {
    # OpenAI
    "gpt-5": Price(1.25, 10.0),
    "gpt-5-mini": Price(0.25, 2.0),
    "gpt-5-nano": Price(0.05, 0.40),
    "gpt-4.1": Price(2.0, 8.0),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-4o": Price(2.50, 10.0),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4-turbo": Price(10.0, 30.0),
    "gpt-4": Price(30.0, 60.0),
    "gpt-3.5-turbo": Price(0.50, 1.50),
    "o1": Price(15.0, 60.0),
    "o1-mini": Price(1.10, 4.40),
    "o3": Price(2.0, 8.0),
    "o3-mini": Price(1.10, 4.40),
    "o4-mini": Price(1.10, 4.40),
    "text-embedding-3-small": Price(0.02, 0.0),
    "text-embedding-3-large": Price(0.13, 0.0),
    "text-embedding-ada-002": Price(0.10, 0.0),
    # Anthropic
    "claude-opus-4-5": Price(5.0, 25.0),
    "claude-opus-4-1": Price(15.0, 75.0),
    "claude-opus-4": Price(15.0, 75.0),
    "claude-sonnet-4-5": Price(3.0, 15.0),
    "claude-sonnet-4": Price(3.0, 15.0),
    "claude-haiku-4-5": Price(1.0, 5.0),
    "claude-3-7-sonnet": Price(3.0, 15.0),
    "claude-3-5-sonnet": Price(3.0, 15.0),
    "claude-3-5-haiku": Price(0.80, 4.0),
    "claude-3-opus": Price(15.0, 75.0),
    "claude-3-haiku": Price(0.25, 1.25),
    # Google
    "gemini-2.5-pro": Price(1.25, 10.0),
    "gemini-2.5-flash": Price(0.30, 2.50),
    "gemini-2.0-flash": Price(0.10, 0.40),
    "gemini-1.5-pro": Price(1.25, 5.0),
    "gemini-1.5-flash": Price(0.075, 0.30),
    # Mistral
    "mistral-large-latest": Price(2.0, 6.0),
    "mistral-small-latest": Price(0.20, 0.60),
}

# Dated and versioned names: -2024-08-06, -20241022, -0125, -002, -0125-preview, -latest, @20240620.
_SUFFIX = re.compile(r"^(-\d{4}-\d{2}-\d{2}|-\d{8}|-\d{3,4}|-\d{4}-preview|-latest|-preview|@\d{8})$")


class PriceTable:
    """Prices by ``provider/model``, then ``model``, then the built-in table (with dated names)."""

    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        self.overrides = dict(overrides or {})

    def lookup(self, provider: str, model: str) -> Price | None:
        """Exact names first (config, then built-in), then the longest base of a dated name (config first)."""
        for key in (f"{provider}/{model}", model):
            if key in self.overrides:
                return self.overrides[key]
        if model in DEFAULT_PRICES:
            return DEFAULT_PRICES[model]
        for table, prefix in ((self.overrides, f"{provider}/"), (self.overrides, ""), (DEFAULT_PRICES, "")):
            name = prefix + model
            bases = [b for b in table if name.startswith(b) and _SUFFIX.match(name[len(b):])]
            if bases:
                return table[max(bases, key=len)]
        return None


# -- token estimates ----------------------------------------------------------------------------------

# Roughly how BPE tokenizers (cl100k/o200k) split text: words, numbers in groups of up to three digits,
# runs of punctuation, whitespace folded into the next piece.
_PIECES = re.compile(r"[^\W\d_]+|\d{1,3}|[^\w\s]+|_+", re.UNICODE)


def estimate_tokens(text: str) -> int:
    """An estimate of the tokens in ``text`` for a GPT-style tokenizer, for when the provider does not say.

    Short common words are one token; longer ones about one per four characters; non-Latin scripts
    about one per character. Used for budget reservations, tpm admission and streams without usage;
    traces mark such counts as estimated."""
    n = 0
    for match in _PIECES.finditer(text):
        piece = match.group()
        if piece.isascii():
            n += 1 if len(piece) <= 6 else math.ceil(len(piece) / 4)
        else:
            n += len(piece)
    return n


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def estimate_prompt_tokens(body: Mapping[str, Any]) -> int:
    """Tokens of a chat request (messages, tools) or an embedding request (input), estimated."""
    if "messages" in body and isinstance(body["messages"], list):
        n = 3  # every reply is primed with <|start|>assistant<|message|>
        for message in body["messages"]:
            if isinstance(message, dict):
                n += 4 + estimate_tokens(_content_text(message.get("content")))
                tool_calls = message.get("tool_calls")
                if tool_calls:
                    n += estimate_tokens(str(tool_calls))
        if body.get("tools"):
            n += estimate_tokens(str(body["tools"]))
        return n
    data = body.get("input")
    if isinstance(data, list):
        return sum(estimate_tokens(x) if isinstance(x, str) else len(x) if isinstance(x, list) else 1 for x in data)
    return estimate_tokens(data) if isinstance(data, str) else 0


def max_output_tokens(body: Mapping[str, Any], default: int) -> int:
    """The most tokens the answer may take: the request's own cap, else the feature's default."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return default


def usd(nano: int | None) -> float | None:
    return None if nano is None else nano / NANO
