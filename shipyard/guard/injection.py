"""Prompt-injection and jailbreak screening: does this text try to give the model new orders?

``screen(text)`` returns a ``Verdict``: a score in [0, 1], the names of the rules that fired and the
snippets they matched (for the trace). A feature screens its input and whatever retrieved or tool content
it marks as untrusted, and flags or blocks at ``DEFAULT_THRESHOLD`` or a threshold of its own.

How a text is read:

1. Normalized once: NFKC (fullwidth and mathematical letters), accents and zero-width or soft-hyphen
   characters dropped, lookalike Cyrillic and Greek letters folded to Latin inside otherwise Latin words,
   case folded, leetspeak digits folded inside words that also have letters ("1gn0r3" -> "ignore"), and
   letters spelled out one by one ("i g n o r e", "i.g.n.o.r.e") joined back.
2. Weighted rules, each a named regular expression over the normalized text (English plus German,
   French, Spanish, Italian, Portuguese, Dutch, Polish, Russian, Chinese and Japanese for the commonest
   phrasings). The patterns have bounded gaps and no nested quantifiers: time is linear in the text.
3. Hidden payloads: base64 and hex runs that decode to text, and the rot13 of the whole text, are screened
   by the same rules; a hit there counts as ``encoded_payload``. HTML comments are screened on their own
   too, and a rule firing inside one adds ``hidden_comment``.
4. The score is ``1 - prod(1 - w)`` over the strongest hit of each rule, halved when the text talks
   *about* injection or jailbreaks (a question, a blog post, a test) rather than doing it.

It errs towards recall on untrusted content: a false flag costs a trace entry or one refused call, a miss
hands the model to whoever wrote the document. ``bench/injection.py`` reports precision and recall on
the labeled set shipped in ``data/injection_eval.jsonl`` (``labeled_examples``).

Plain values in, plain values out; standard library only.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import importlib.resources
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_THRESHOLD", "RULES", "Verdict", "labeled_examples", "normalize", "screen"]

DEFAULT_THRESHOLD: float = 0.5
MAX_SNIPPET = 80
# Every rule reads the whole text (the patterns are linear); what is capped is the number of base64/hex
# runs decoded, HTML comments screened and matches of one rule examined, so a crafted text cannot make
# the screen do that work once per match.
_MAX_DECODE_RUNS = 32


@dataclass(frozen=True)
class Verdict:
    """What ``screen`` found. ``reasons`` and ``matched`` are parallel: rule names and their snippets."""

    score: float
    reasons: tuple[str, ...] = ()
    matched: tuple[str, ...] = ()

    def flagged(self, threshold: float = DEFAULT_THRESHOLD) -> bool:
        return self.score >= threshold


# --------------------------------------------------------------------------------------- normalization

_INVISIBLE = dict.fromkeys(
    map(
        ord,
        "\u00ad\u034f\u061c\u115f\u1160\u180e\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d"
        "\u202e\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\u3164\ufe0f\ufeff",
    ),
    None,
)
# Cyrillic and Greek letters that look like Latin ones.
_HOMOGLYPHS = {
    "а": "a",
    "в": "b",
    "е": "e",
    "ё": "e",
    "к": "k",
    "м": "m",
    "н": "h",
    "о": "o",
    "р": "p",
    "с": "c",
    "т": "t",
    "у": "y",
    "х": "x",
    "ѕ": "s",
    "і": "i",
    "ї": "i",
    "ј": "j",
    "һ": "h",
    "ԁ": "d",
    "ԛ": "q",
    "ԝ": "w",
    "ɡ": "g",
    "ı": "i",
    "α": "a",
    "β": "b",
    "ε": "e",
    "η": "n",
    "ι": "i",
    "κ": "k",
    "ν": "v",
    "ο": "o",
    "ρ": "p",
    "τ": "t",
    "υ": "u",
    "χ": "x",
    "γ": "y",
    "ѵ": "v",
    "ӏ": "l",
}
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_WORD_RE = re.compile(r"\w+", re.UNICODE)
_LEET_WORD_RE = re.compile(r"[a-z0-9@$]*[a-z][a-z0-9@$]*")
_SPELLED_RE = re.compile(r"(?<![a-z])[a-z]([ .\-_*|])(?:[a-z]\1){1,}[a-z](?![a-z])")
_SPACE_RE = re.compile(r"[ \t\f\v]{2,}|[\t\f\v]")  # what is not already one space: far fewer replacements
_LEET_CHAR_RE = re.compile(r"[0-9@$]")


def _fold_word(match: re.Match[str]) -> str:
    word = match.group()
    if word.isascii():
        return word
    foreign = [c for c in word if not c.isascii()]
    if any(c.isascii() and c.isalpha() for c in word) or all(c in _HOMOGLYPHS for c in foreign):
        # A Latin word with lookalikes in it (or made of lookalikes only): fold. Real Cyrillic or Greek
        # words keep their letters, since most of those have no Latin twin.
        return "".join(_HOMOGLYPHS.get(c, c) for c in word)
    return word


def _unleet(match: re.Match[str]) -> str:
    word = match.group()
    if word.isalpha():
        return word
    return word.translate(_LEET)


def _unspell(match: re.Match[str]) -> str:
    return re.sub(r"[ .\-_*|]", "", match.group())


def normalize(text: str) -> str:
    """The text as the rules read it (see the module docstring)."""
    if text.isascii():
        text = text.lower()
    else:
        text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE)
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
        text = unicodedata.normalize("NFC", text).casefold()
        text = _WORD_RE.sub(_fold_word, text)
    if _LEET_CHAR_RE.search(text):  # else every word is letters only, which _unleet leaves alone
        text = _LEET_WORD_RE.sub(_unleet, text)
    text = _SPELLED_RE.sub(_unspell, text)
    return _SPACE_RE.sub(" ", text)


# ------------------------------------------------------------------------------------------------ rules

_G = r"[^.!?\n]{0,40}?"  # a bounded gap inside one sentence
_IGNORE = (
    r"(?:ignore|ignoring|disregard|forget|skip|override|bypass|drop|abandon|discard|cancel|do not follow)"
)
_PRIOR = (
    r"(?:previous|prior|above|earlier|preceding|initial|original|old|all|any|your|system|developer|"
    r"everything|existing|current|given)"
)
_ORDERS = (
    r"(?:instructions?|prompts?|rules|directions?|guidelines?|directives?|constraints?|guardrails?|"
    r"programming|system prompt|task you were given|orders|content polic(?:y|ies)|safety filter(?:s|ing)?)"
)

# (name, weight, pattern). Weights were set on the "tune" split.
RULES: tuple[tuple[str, float, re.Pattern[str]], ...] = tuple(
    (name, weight, re.compile(pattern, re.MULTILINE))
    for name, weight, pattern in (
        # ignore / disregard previous instructions
        (
            "ignore_previous_instructions",
            0.9,
            (
                rf"\b{_IGNORE}\b(?:\s+[\w']+){{0,4}}?\s+{_PRIOR}(?:\s+(?!new\b|updated\b|following\b)[\w']+){{0,3}}?\s+"
                rf"{_ORDERS}\b"
            ),
        ),
        (
            "ignore_previous_instructions",
            0.9,
            rf"\b{_IGNORE}\b the {_ORDERS} (?:above|before|so far|you (?:were|have been|got) given)\b",
        ),
        (
            "ignore_previous_instructions",
            0.7,
            (
                r"\b(?:ignore|disregard|forget)\b (?:everything|all)(?: else)? (?:before|above|you were told|"
                r"you have been told|prior)"
            ),
        ),
        (
            "ignore_previous_instructions",
            0.8,
            (
                r"\b(?:your|all|any|the above|these|prior)(?: previous| prior| earlier| original| old)? "
                r"(?:instructions?|rules|directives?) (?:no longer apply|are (?:void|cancell?ed|"
                r"outdated|superseded)|have been (?:updated|changed|cancell?ed))"
            ),
        ),
        (
            "ignore_previous_instructions",
            0.8,
            (
                r"\b(?:supersedes?|overrides?) (?:your|all|any|the)(?: previous| prior| system)? "
                r"(?:instructions?|rules|prompt|guidelines)"
            ),
        ),
        (
            "ignore_previous_instructions",
            0.9,  # German
            (
                r"\b(?:ignorier\w*|vergiss\w*|missachte\w*)\b[^.!?\n]{0,40}?\b(?:anweisungen|instruktionen|"
                r"regeln|vorgaben|befehle)\b"
            ),
        ),
        (
            "ignore_previous_instructions",
            0.9,  # French
            (
                r"\b(?:ignore[zs]?|oublie[zs]?|ne tiens pas compte)\b[^.!?\n]{0,40}?\b(?:instructions?|"
                r"consignes?|regles)\b"
            ),
        ),
        (
            "ignore_previous_instructions",
            0.9,  # Spanish, Italian, Portuguese
            (
                r"\b(?:ignora\w*|ignore|olvida\w*|dimentica\w*|esque[cç]a\w*)\b[^.!?\n]{0,40}?\b(?:instrucciones|"
                r"istruzioni|instrucoes|reglas|regole|regras|indicaciones)\b"
            ),
        ),
        (
            "ignore_previous_instructions",
            0.9,  # Dutch, Polish
            (
                r"\b(?:negeer|vergeet|zignoruj|zapomnij)\b[^.!?\n]{0,40}?\b(?:instructies|regels|instrukcje|"
                r"polecenia|zasady)\b"
            ),
        ),
        (
            "ignore_previous_instructions",
            0.9,  # Russian
            r"(?:игнорируй\w*|забудь\w*|не обращай внимания)[^.!?\n]{0,40}?(?:инструкци\w*|правил\w*|указани\w*)",
        ),
        (
            "ignore_previous_instructions",
            0.9,  # Japanese, object first
            r"(?:指示|指令|命令|ルール|規則)[^。！？\n]{0,12}?(?:無視|忘れ)",
        ),
        (
            "ignore_previous_instructions",
            0.9,  # Chinese, Japanese
            r"(?:忽略|忽视|无视|忘记|忘掉|無視|忘れ)[^。！？\n]{0,20}?(?:指令|指示|说明|规则|提示|命令|ルール|命令)",
        ),
        # new orders for the model
        (
            "new_instructions",
            0.6,
            (
                r"(?:^|[\s*#\[(\-:])(?:new|updated|real|actual|true|important|additional|hidden|secret) "
                r"(?:system )?(?:instructions?|directives?|orders|task|rules)(?: for (?:the |any )?"
                r"(?:ai|assistant|model|llm|chatbot|agent|bot))?\s*(?::|-|are:|is:)\s*(?!\s*$)"
            ),
        ),
        (
            "new_instructions",
            0.55,
            (
                r"\byour (?:new|real|only|actual|true) (?:task|goal|purpose|job|role|instructions?|objective) "
                r"(?:is|are|will be|now)\b"
            ),
        ),
        (
            "new_instructions",
            0.5,
            (
                r"(?:^|[.!?:]\s*)(?:instead|rather),? (?:you (?:will|must|should) )?(?:write|say|reply|respond|"
                r"output|print|tell|answer|send)\b"
            ),
        ),
        (
            "addressed_to_model",
            0.6,
            (
                r"\b(?:note|message|instructions?|attention|p\.?s\.?|important)(?: is)? (?:to|for) (?:the |any |all )?"
                r"(?:ai|assistant|llm|language model|chatbot|model|agent|bot|automated \w+|copilot|gpt)s?\b"
            ),
        ),
        (
            "addressed_to_model",
            0.6,
            r"\b(?:if|when|whenever) you are an? (?:ai|llm|language model|assistant|chatbot|bot|agent)\b",
        ),
        (
            "addressed_to_model",
            0.55,
            (
                r"\b(?:ai|llm|language model|automated|gpt)(?: \w+){0,1} (?:assistants?|models?|agents?|reviewers?|"
                r"systems?|bots?)? ?(?:reading|processing|summari[sz]ing|reviewing|parsing|analy[sz]ing) this\b"
            ),
        ),
        (
            "addressed_to_model",
            0.55,
            (
                r"(?:^|[.!?\n]\s*|\b(?:hey|dear|hi|hello|attention|note to the) )(?:ai|llm|assistant|model|chatbot|"
                r"copilot|language model|ai reviewers?|llm instructions)\s*[:,]\s*(?:stop|ignore|disregard|forget|"
                r"override|new instructions|you must|do not|don't|when|before|the following|reveal|send)"
            ),
        ),
        (
            "conceal_from_user",
            0.5,
            (
                r"\b(?:do not|don't|never|without)\b (?:tell|telling|inform|informing|mention|mentioning|alert|"
                r"alerting|notify|notifying|let)(?:ing)? (?:the user|them|the reader|anyone)\b"
            ),
        ),
        (
            "conceal_from_user",
            0.5,
            r"\bdo not (?:tell|inform) the user (?:that )?you (?:were|have been) (?:asked|instructed|told)\b",
        ),
        # personas
        (
            "jailbreak_persona",
            0.9,
            (
                r"\b(?:you(?: are|'re)(?: now| going to (?:be|pretend to be|act as))?|pretend to be|act as|roleplay as|"
                r"become) (?:dan|stan|dude|aim|betterdan|evilbot|freedomgpt|mongo tom|jailbreak\w*)\b"
            ),
        ),
        (
            "jailbreak_persona",
            0.9,
            r"\bdo anything now\b|\bstrive to avoid norms\b|\balways intelligent and machiavellian\b",
        ),
        (
            "jailbreak_persona",
            0.8,
            (
                r"\b(?:developer|god|dan|opposite|maintenance|debug|jailbreak|unrestricted|sudo) mode\b[^.!?\n]{0,30}?"
                r"\b(?:enabled|on|activated|active|output|ignores?|no restrictions|restrictions are lifted|filters? "
                r"disabled|you)\b"
            ),
        ),
        (
            "jailbreak_persona",
            0.8,
            (
                r"\b(?:enable|enter|activate|switch to|you are (?:now )?in|you are in)\b (?:the )?(?:developer|god|"
                r"dan|opposite|jailbreak|unrestricted|sudo) mode\b"
            ),
        ),
        (
            "jailbreak_persona",
            0.75,
            (
                r"\b(?:unfiltered|uncensored|unrestricted|unmoderated|amoral|unaligned|unethical|jailbroken|evil)\b "
                r"(?:ai|assistant|model|chatbot|bot|version|llm|persona|language model)\b"
            ),
        ),
        (
            "jailbreak_persona",
            0.7,
            (
                r"\b(?:without|with no|free (?:of|from)|no longer bound by|not bound by|broken free of|lifted)\b "
                r"(?:any |all |the )?(?:your |its )?(?:restrictions|filters|limits|rules|guidelines|censorship|"
                r"ethical guidelines|moral limits|content polic(?:y|ies)|typical confines|safety)"
            ),
        ),
        ("jailbreak_persona", 0.6, r"\bstay in character\b|\bbreak(?:ing)? character\b"),
        ("jailbreak_persona", 0.6, r"\byou are jailbroken\b|\bjailbreak successful\b|\[.?jailbreak\]"),
        (
            "jailbreak_persona",
            0.5,
            (
                r"\b(?:safety|content) (?:filters?|settings|polic(?:y|ies)) (?:disabled|off|are off|lifted)|"
                r"\b(?:overrid\w*|disabl\w*) (?:your |all )?safety\b"
            ),
        ),
        ("jailbreak_persona", 0.4, r"\bgrand(?:ma|mother) (?:who )?used to (?:tell|read|recite)\b"),
        (
            "jailbreak_persona",
            0.6,
            r"\b(?:roleplay|role-play|pretend|act) (?:to be |as )?my (?:late |deceased |dead )?grand(?:ma|mother)\b",
        ),
        (
            "role_override",
            0.6,
            (
                r"\bi am (?:your|the) (?:developer|creator|administrator|admin|system administrator|owner|operator)\b"
                r"[^.!?\n]{0,60}?\b(?:authori[sz]e|overrid|disabl|grant|permission|command)"
            ),
        ),
        (
            "role_override",
            0.6,
            (
                r"\bas your (?:developer|creator|administrator|admin|system administrator|operator)\b[^.!?\n]{0,40}?"
                r"\b(?:overrid|authori[sz]|disabl|order|command)"
            ),
        ),
        (
            "role_override",
            0.6,
            (
                r"\byou are (?:now|no longer)\b[^.!?\n]{0,30}?\b(?:ai|assistant|bot|model|translator|bound|allowed|"
                r"restricted)\b[^.!?\n]{0,40}?\b(?:always|never|only|without|no|any)\b"
            ),
        ),
        (
            "role_override",
            0.5,
            (
                r"\bfrom now on,? you (?:will|must|are|shall)\b[^.!?\n]{0,40}?\b(?:ignore|only|never|always|answer "
                r"with|reply with|respond with|without)\b"
            ),
        ),
        ("role_override", 0.5, r"\b(?:system|admin|security) (?:override|notice|alert)\s*:"),
        (
            "role_override",
            0.45,
            r"\bthe user (?:has granted|is an? (?:admin|administrator|developer)|has (?:admin|root))",
        ),
        # exfiltration of the prompt
        (
            "system_prompt_exfiltration",
            0.85,
            (
                r"\b(?:reveal|show|print|repeat|output|tell|display|leak|give|write(?: out)?|dump|summari[sz]e|list|"
                r"quote|share|expose|provide|paste|type out|what (?:is|are|were))\b(?: me| us)?[^.!?\n]{0,30}?\b"
                r"(?:your|the) (?:full |entire |exact |complete |original |initial |hidden |secret |internal |"
                r"first |whole )*(?:system (?:prompt|message|instructions)|developer (?:message|prompt|notes)|"
                r"(?:hidden|initial|original|secret|internal) (?:instructions|prompt|rules)|configuration prompt|"
                r"system_prompt|pre-?prompt)\b"
            ),
        ),
        (
            "system_prompt_exfiltration",
            0.6,
            (
                r"\b(?:reveal|print|repeat|output|dump|leak|quote|show me|tell me|display)\b[^.!?\n]{0,20}?\byour "
                r"(?:prompt|instructions)\b"
            ),
        ),
        (
            "system_prompt_exfiltration",
            0.75,
            (
                r"\b(?:repeat|print|output|show|copy|dump)\b[^.!?\n]{0,20}?\b(?:the )?(?:text|words|everything|"
                r"all(?: of)? the instructions|instructions you were given|content|lines?)\b (?:above|before this|"
                r"prior)"
            ),
        ),
        ("system_prompt_exfiltration", 0.6, r"\bstarting with [\"'`]?you are\b"),
        (
            "system_prompt_exfiltration",
            0.7,
            (
                r"\b(?:what|which) (?:exact )?instructions (?:were you|did you|have you) (?:given|get|receive)|"
                r"\binstructions (?:your developers?|they|openai) gave you\b|\binstructions you were given before\b"
            ),
        ),
        (
            "system_prompt_exfiltration",
            0.6,
            r"\b(?:dump|print|output)\b[^.!?\n]{0,20}?\b(?:context window|conversation so far|configuration)\b",
        ),
        (
            "system_prompt_exfiltration",
            0.85,  # other languages
            (
                r"\b(?:systemprompt|prompt (?:systeme|de sistema|di sistema|do sistema)|mensaje de sistema|"
                r"prompt di sistema)\b|системн\w* (?:промпт|подсказк\w*|инструкци\w*)|系统提示|システムプロンプト"
            ),
        ),
        # fake chat-template and role markers
        (
            "delimiter_injection",
            0.8,
            r"<\|(?:im_start|im_end|endoftext|system|assistant|user|eot_id|start_header_id|end_header_id)\|>",
        ),
        ("delimiter_injection", 0.7, r"\[/?inst\]|<</?sys>>"),
        (
            "delimiter_injection",
            0.6,
            r"^\s*#{2,}\s*(?:system|instructions?|new system prompt|new instructions|system prompt)\b",
        ),
        (
            "delimiter_injection",
            0.6,
            r"</?(?:system|instructions?|context|user|assistant|im_start)>|\[system\]|\[system\]\(#",
        ),
        (
            "delimiter_injection",
            0.5,
            (
                r"^\s*(?:system|assistant)\s*:\s*(?:the|you|new|from now|ignore|disregard|sure|answer|respond|"
                r"all|this)\b"
            ),
        ),
        ("delimiter_injection", 0.4, r"^\s*human:.*\n(?:.*\n){0,3}\s*assistant:"),
        (
            "delimiter_injection",
            0.4,
            (
                r"\b(?:end|beginning) of (?:the )?(?:user input|document|context|system prompt|prompt)\b"
                r"[^\n]{0,10}\n[^\n]{0,80}\b(?:system|override|instruction|respond|ignore)"
            ),
        ),
        # tools and data
        (
            "tool_hijack",
            0.7,
            (
                r"(?:^|[.!?:;,\n]\s*|\b(?:now|please|immediately|then|and|must|should|assistant,?|first|"
                r"before replying,?)\s+)(?:call|invoke|use|run|execute|trigger)\b (?:the |a |your )?"
                r"(?:[\w.\-]+ ){0,2}(?:tool|function|api|plugin|action|command)\b[^.!?\n]{0,60}?(?:\bwith\b|\w=)"
            ),
        ),
        (
            "tool_hijack",
            0.6,
            r"\b(?:execute|run) (?:the following|this) (?:shell |bash |system )?(?:command|code|script)\b",
        ),
        ("tool_hijack", 0.6, r"\bcurl\b[^|\n]{0,100}\|\s*(?:ba)?sh\b|\brm -rf /|\bdrop table\b"),
        (
            "tool_hijack",
            0.6,
            (
                r"\b(?:send|forward|email|post|upload|exfiltrate)\b (?:all (?:of )?|the |this |every )?(?:the )?"
                r"(?:user'?s? |entire |full |whole )*(?:conversation|chat(?: history| log)?|emails|inbox|contact "
                r"list|contacts|data|history|credentials|api key|passwords?|files)\b[^.!?\n]{0,40}?\b(?:to|at)\b "
                r"(?:https?://|\S+@|backup|archive)"
            ),
        ),
        ("tool_hijack", 0.6, r"!\[[^\]\n]{0,40}\]\(https?://[^)\s]{0,200}[?&][\w]+=\{?"),
        ("tool_hijack", 0.5, r"\b(?:submit|enter|use) the (?:saved|stored) (?:credentials|passwords?)\b"),
        # instructions to decode and obey
        (
            "encoded_payload",
            0.45,
            (
                r"\b(?:decode|decipher|deobfuscate|translate)\b[^.!?\n]{0,40}?\b(?:and|then)\b[^.!?\n]{0,10}?"
                r"\b(?:follow|execute|obey|do what|run|carry out|comply)"
            ),
        ),
    )
)
_RULE_NAMES = tuple(dict.fromkeys(name for name, _, _ in RULES))

# Talk about injection (questions, training material, tests) rather than an attempt at it.
_META_TOPIC_RE = re.compile(
    r"\b(?:prompt injections?|injection attacks?|jailbreak(?:s|ing)?(?: prompts?| techniques?| attempts?)?|"
    r"red team|guardrails?|owasp|llms?|language models?|(?:some|most|these|the) (?:models|chatbots))\b"
)
_META_FRAME_RE = re.compile(
    r"\b(?:what is|what are|what's|how (?:do|does|can|to|would)|why (?:do|does|is)|explain|examples? of|"
    r"defen[cs]es?|defend|detect\w*|prevent\w*|mitigat\w*|protect\w*|robust|research|paper|blog|article|"
    r"training|slides|classifier|unit tests?|test my|high level|summari[sz]e the)\b"
)
_META_DAMPING = 0.5

_MINE_RE = re.compile(r"\b(?:my|i gave|i sent|i wrote|i told you)\b")
_QUOTES = "'\"`\u2018\u2019\u201c\u201d\u00ab"
_QUESTION_RE = re.compile(
    r"\b(?:how|why|what|is (?:this|that|it)|does|do i|can i)\b[^?\n]{0,200}\?|\b(?:explain|meaning of)\b"
)
_MENTION_DAMPING = 0.5
_MAX_MATCHES = 16

_B64_RE = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}|[A-Za-z0-9_\-]{24,}={0,2}")
_HEX_RE = re.compile(r"(?:[0-9a-fA-F]{2}){10,}|(?:\\x[0-9a-fA-F]{2}){10,}")
_PRINTABLE_RE = re.compile(r"[\x20-\x7e\t\n\r]*")


def _decoded(run: str, hexadecimal: bool) -> str | None:
    try:
        if hexadecimal:
            raw = bytes.fromhex(run.replace("\\x", ""))
        else:
            padded = run + "=" * (-len(run) % 4)
            raw = base64.b64decode(padded, altchars=b"-_" if "-" in run or "_" in run else None)
        text = raw.decode("utf-8")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if len(text) < 8 or _PRINTABLE_RE.fullmatch(text) is None or " " not in text:
        return None
    return text


def _quoted(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] sits inside a quotation on one line ('...' or "...")."""
    for q in _QUOTES:
        opening = text.rfind(q, max(0, start - 60), start + 1)
        if opening == -1 or "\n" in text[opening:start] or (opening and text[opening - 1].isalnum()):
            continue
        closing = text.find(q, end - 1 if text[end - 1] == q else end, end + 60)
        if closing != -1 and "\n" not in text[end:closing] and not text[closing + 1 : closing + 2].isalnum():
            return True
    return False


def _rule_hits(normalized: str) -> dict[str, tuple[float, str]]:
    """The strongest hit of each rule: name -> (weight, snippet)."""
    hits: dict[str, tuple[float, str]] = {}
    question = _QUESTION_RE.search(normalized) is not None
    for name, weight, pattern in RULES:
        if name in hits and hits[name][0] >= weight:
            continue
        for n, found in enumerate(pattern.finditer(normalized)):
            if n >= _MAX_MATCHES:
                break
            start, end = found.span()
            w = weight
            if name == "ignore_previous_instructions" and _MINE_RE.search(normalized, start, end + 16):
                continue  # "forget the instructions I gave you": users may revise their own orders
            if _quoted(normalized, start, end):
                w *= _MENTION_DAMPING  # quoted: talked about, not said
            if name == "delimiter_injection" and question:
                w *= _MENTION_DAMPING  # "what does <|im_start|> do?"
            if name not in hits or hits[name][0] < w:
                hits[name] = (w, found.group().strip()[:MAX_SNIPPET])
            if w == weight:
                break
    return hits


def _comments(text: str) -> list[str]:
    """The bodies of HTML comments, found with str.find (linear even when a comment is never closed)."""
    bodies: list[str] = []
    start = text.find("<!--")
    while start != -1 and len(bodies) < _MAX_DECODE_RUNS:
        end = text.find("-->", start + 4)
        if end == -1:
            bodies.append(text[start + 4 : start + 4 + 2000])
            break
        bodies.append(text[start + 4 : end])
        start = text.find("<!--", end + 3)
    return bodies


def _combine(hits: dict[str, tuple[float, str]], damping: float) -> float:
    miss = 1.0
    for weight, _ in hits.values():
        miss *= 1.0 - weight * damping
    return round(1.0 - miss, 4)


def screen(text: str) -> Verdict:
    """Score ``text`` for prompt injection or jailbreak (0: none seen, 1: certain) and say why."""
    if not text:
        return Verdict(0.0)
    normalized = normalize(text)
    hits = _rule_hits(normalized)

    hidden: list[tuple[str, str]] = []  # (reason, snippet) of payloads found encoded or in comments
    runs = 0
    for pattern, hexadecimal in ((_B64_RE, False), (_HEX_RE, True)):
        for found in pattern.finditer(text):
            runs += 1
            if runs > _MAX_DECODE_RUNS:
                break
            decoded = _decoded(found.group(), hexadecimal)
            if decoded is not None:
                inner = _rule_hits(normalize(decoded))
                if inner:
                    hidden.append(("encoded_payload", decoded))
                    hits.update({k: v for k, v in inner.items() if k not in hits})
    rot13 = _rule_hits(codecs.encode(normalized, "rot13"))
    rot13 = {k: v for k, v in rot13.items() if k not in hits and k != "encoded_payload"}
    if rot13:
        hidden.append(("encoded_payload", next(iter(rot13.values()))[1]))
        hits.update(rot13)
    for body in _comments(text):
        if _rule_hits(normalize(body)):
            hidden.append(("hidden_comment", body.strip()))
    for reason, snippet in hidden:
        weight = 0.6 if reason == "encoded_payload" else 0.3
        if reason not in hits or hits[reason][0] < weight:
            hits[reason] = (weight, snippet[:MAX_SNIPPET])

    if not hits:
        return Verdict(0.0)
    meta = _META_TOPIC_RE.search(normalized) and _META_FRAME_RE.search(normalized)
    score = _combine(hits, _META_DAMPING if meta else 1.0)
    order = [name for name in (*_RULE_NAMES, "hidden_comment") if name in hits]
    return Verdict(score, tuple(order), tuple(hits[name][1] for name in order))


def labeled_examples() -> list[dict[str, Any]]:
    """The labeled set shipped with Shipyard: ``{"text", "injection", "kind", "split"}`` per example.

    ``kind`` is how the text tries (``direct``, ``indirect_email``, ``obfuscated_base64``, ...) or, for
    ``injection: false``, what kind of hard negative it is (``legit_correction``, ``security_discussion``,
    ``code``, ``translation``, ...).

    ``split``: the rules and weights were set on ``tune`` (190 texts). ``test`` is two batches. The first
    (129 texts, written with ``tune`` before any rule) was scored once when ``tune`` was at 100%:
    precision 0.957, recall 0.957 (3 false positives, 3 misses); those six then shaped a last round of
    fixes (quoted mentions, "the instructions on the box", a spelled-out variant, whitespace). The second
    (42 texts) was written after that and never tuned on: precision 1.0, recall 0.82 (18 of 22). Expect
    fresh text to land nearer the held-out figures than the ones printed for the whole set.
    """
    resource = importlib.resources.files(__package__) / "data" / "injection_eval.jsonl"
    with resource.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]
