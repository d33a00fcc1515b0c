"""The lexical guard's vocabulary: plain English and common support, product and coding words.

Each entry is there because a question reads differently without it, not to fit one test pair. Tables
derived from these (canonical forms, stems) are built in :mod:`shipyard.economics.semantic`.
"""

from __future__ import annotations

import re

_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"'})

# Contractions, possessives and multi-word expressions, folded on the lowercased text before tokenizing.
_FOLDS = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"\bcan ?not\b|\bcan't\b", "can not"),
        (r"\bwon't\b", "will not"),
        (r"\bshan't\b", "shall not"),
        (r"(\w)n't\b", r"\1 not"),
        (r"'(re|ve|ll|d|m)\b", ""),
        (r"\b(what|that|it|there|here|who|where|how|when|he|she)'s\b", r"\1 is"),
        (r"\b(what|where|how|who|when)s\b", r"\1 is"),
        (r"\blet's\b", "let us"),
        (r"(\w)'s\b", r"\1 's"),
        (r"(\w)s'(?=\s|$)", r"\1s 's"),
        (r"\b(log|sign) ?(in|on)(to)?\b", " login "),
        (r"\b(log|sign) ?(out|off)\b", " logout "),
        (r"\bsign ?up\b", " signup "),
        (r"\b(turn|switch)(ed|ing|s|es)? on\b", " enable "),
        (r"\b(turn|switch)(ed|ing|s|es)? off\b", " disable "),
        (
            r"\b(2fa|two[- ]factor( authentication)?|2[- ]factor|mfa|multi[- ]factor( authentication)?)\b",
            " twofactor ",
        ),
        (r"\be-?mails?\b", " email "),
        (r"\bcarry[- ]on( bags?| luggage)?\b|\bhand luggage\b|\bcabin bags?\b", " carryon "),
        (r"\bcheck[- ]in\b", " checkin "),
        (r"\bcheck[- ]out\b", " checkout "),
        (r"\bmoney back\b", " refund "),
        (r"\bmost recent\b", " latest "),
        (r"\b(paid )?time off\b|\bpto\b", " vacation "),
        (r"\bprofile (picture|photo|pic)\b", " avatar "),
        (r"\bweb ?site\b", " site "),
        (r"\bwi-?fi\b", " wifi "),
        (r"\bper cent\b", " percent "),
        (r"\bwhat(?: is| was| could be| might be| would be)? the reason\b", " why "),
        (r"\b(other|another|foreign) countr(y|ies)\b", " abroad "),
    )
)

_SPELLINGS = {
    # abbreviations and units
    "js": "javascript", "ts": "typescript", "postgres": "postgresql", "py": "python", "dict": "dictionary",
    "dicts": "dictionary", "repo": "repository", "db": "database", "int": "integer", "str": "string",
    "info": "information", "pic": "picture", "pics": "picture", "mins": "minute", "hrs": "hour",
    "oz": "ounce", "lb": "pound", "lbs": "pound", "kg": "kilogram", "kgs": "kilogram", "ml": "milliliter",
    "km": "kilometer", "cm": "centimeter", "mm": "millimeter", "mph": "miles per hour", "kb": "kilobyte",
    "mb": "megabyte", "gb": "gigabyte", "tb": "terabyte", "ghz": "gigahertz",
    "usd": "dollar", "bucks": "dollar", "eur": "euro", "gbp": "pound", "$": "dollar", "€": "euro",
    "£": "pound", "%": "percent", "daily": "day", "weekly": "week", "monthly": "month", "yearly": "year",
    "annually": "year", "annual": "year",
    # irregular verbs
    "wrote": "write", "written": "write", "came": "come", "got": "get", "gotten": "get", "went": "go",
    "gone": "go", "paid": "pay", "sent": "send", "made": "make", "gave": "give", "given": "give",
    "took": "take", "taken": "take", "found": "find", "lost": "lose", "kept": "keep", "brought": "bring",
    "held": "hold", "told": "tell", "sold": "sell", "thought": "think", "spent": "spend", "ran": "run",
    "began": "begin", "begun": "begin", "chose": "choose", "chosen": "choose", "forgot": "forget",
    "forgotten": "forget", "knew": "know", "known": "know", "saw": "see", "seen": "see", "broke": "break",
    "froze": "freeze", "frozen": "freeze", "stole": "steal", "stolen": "steal", "bought": "buy",
    "built": "build", "caught": "catch", "drove": "drive", "driven": "drive", "flew": "fly", "flown": "fly",
    "hid": "hide", "hidden": "hide", "understood": "understand", "withdrew": "withdraw",
    "withdrawn": "withdraw", "woke": "wake", "wore": "wear", "worn": "wear",
    # comparatives and superlatives of the adjectives that have an opposite
    "higher": "high", "highest": "high", "lower": "low", "lowest": "low", "bigger": "big", "biggest": "big",
    "smaller": "small", "smallest": "small", "larger": "large", "largest": "large", "faster": "fast",
    "fastest": "fast", "slower": "slow", "slowest": "slow", "cheaper": "cheap", "cheapest": "cheap",
    "longer": "long", "longest": "long", "shorter": "short", "shortest": "short", "earlier": "early",
    "earliest": "early", "older": "old", "oldest": "old", "newer": "new", "newest": "new",
    "stronger": "strong", "strongest": "strong", "weaker": "weak", "weakest": "weak",
}  # fmt: skip


def _split(text: str) -> list[str]:
    return text.split()


_STOPWORDS = frozenset(
    _split(
        """
    a an the i me my mine myself we us our ours you your yours he him his she her hers it its they them
    their theirs this that these those there here someone somebody something anyone anybody anything
    everyone everything is am are was were be been being do does did doing done have has having had can
    could will would shall should may might must of in on at by for with about as into onto from to than
    then so if or and but because while also just very really too again still yet already ever even only
    quite please thanks thank hi hello hey ok okay etc via whether what which who whom whose why how when
    where any some all each every such same other another else own more most much many up out now right
    currently get got getting go going one ones between among per
    """
    )
)

# Words that frame a question without changing what it asks.
_FRAMING = frozenset(
    _split(
        """
    way ways possible possibly process step steps best easiest easy simple simplest exactly actually
    usually normally generally basically need needs needed want wanted wish like would know tell explain
    show find see make let able allow allowed permitted option options reason reasons help thing things
    stuff question anyway certain sure kind sort type use using used require required requirement
    necessary correct proper properly offer offered recommend suggest command syntax account
    summarize summary describe formula different new existing exist
    """
    )
)

_NEGATIONS = frozenset(_split("not no never none nothing nobody nowhere neither nor without unable"))

# Words of (near) identical meaning in support questions; each line folds to its first word.
_SYNONYMS = tuple(
    tuple(line.split())
    for line in """
    change update modify edit alter adjust switch
    delete remove erase
    buy purchase purchased
    refund reimburse reimbursement
    ship shipping shipment deliver delivery
    package parcel
    folder directory
    booking reservation reserve book
    colleague coworker teammate
    doctor physician
    signup register registration enroll enrollment
    mobile cell cellphone
    password passcode passphrase
    site website
    fix resolve solve repair
    merge combine
    contact reach
    enable activate
    disable deactivate
    cost price fee charge
    money fund funds cash
    damaged broken
    problem issue
    plan tier
    mode theme
    luggage baggage bag
    paycheck salary wage payroll
    bill invoice
    latest last recent
    kill terminate
    abroad overseas internationally international
    transfer wire send
    pay payment
    open start
    convert turn transform cast
    lock freeze
    close shut
    cancel cancellation
    meeting conference
    quick fast
    error exception
    verification confirmation verify confirm
    """.strip().splitlines()
)

_OPPOSITES = tuple(
    tuple(pair.split("/"))
    for pair in _split(
        """
    enable/disable increase/decrease increase/reduce raise/lower add/remove add/delete add/subtract
    upgrade/downgrade open/close open/closed lock/unlock freeze/unfreeze buy/sell import/export
    upload/download start/stop start/end begin/end before/after minimum/maximum min/max first/latest
    early/late early/latest high/low more/less more/fewer big/small large/small cheap/expensive
    deposit/withdraw debit/credit include/exclude allow/block allow/deny accept/decline accept/reject
    approve/reject approve/deny encrypt/decrypt join/leave push/pull send/receive incoming/outgoing
    inbound/outbound arrive/depart arrival/departure hire/fire hire/terminate public/private true/false
    positive/negative above/below up/down over/under pass/fail success/failure succeed/fail win/lose
    fast/slow long/short old/new local/remote input/output show/hide pause/resume domestic/abroad
    inside/outside internal/external light/dark plus/minus multiply/divide profit/loss income/expense
    buyer/seller employer/employee landlord/tenant sender/recipient ascending/descending forward/backward
    left/right top/bottom horizontal/vertical uppercase/lowercase increment/decrement create/delete
    create/destroy hot/cold full/empty heavy/light online/offline permanently/temporarily
    permanent/temporary mute/unmute today/tomorrow today/yesterday tomorrow/yesterday login/logout
    strong/weak good/bad better/worse best/worst
    """
    )
)
_NEGATING_PREFIXES = ("un", "dis", "non", "in", "im", "il", "ir", "de")

_ROLE_MARKERS = {
    "from": "from", "to": "to", "into": "to", "onto": "to", "toward": "to", "towards": "to", "than": "than",
    "instead": "instead", "before": "before", "after": "after", "over": "over", "vs": "vs", "versus": "vs",
    "but": "but", "whereas": "but", "for": "for", "on": "on", "with": "with", "of": "of", "about": "about",
    "at": "at", "in": "in", "by": "by", "under": "under",
}  # fmt: skip
_DEICTIC = {"this": "#this", "that": "#this", "another": "#other", "other": "#other"}
_PARTICLES = frozenset(_split("in out up down on off"))
_OPPOSITE_PARTICLES = frozenset(frozenset(pair) for pair in (("in", "out"), ("up", "down"), ("on", "off")))
_QUESTION_OPENERS = frozenset(
    _split("can could will would should shall may might must is are was were am do does did have has had")
)
_REQUEST_VERBS = frozenset(
    _split(
        """
    write give suggest recommend explain translate summarize tell show list help find make create generate
    describe compare book cancel send please draft convert calculate check
    """
    )
)
_REQUEST_RE = re.compile(r"\b(i|we) (need|want|would like|wish|have) to\b|\bi'd like to\b|\bplease\b")
_SELF = "#self"
_FIRST_PERSON = frozenset(_split("i me my mine myself we us our ours ourselves"))
_SELF_PRONOUNS = _FIRST_PERSON - {"my", "our"}

_CARDINALS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40,
    "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "once": 1, "twice": 2, "thrice": 3,
    "dozen": 12,
}  # fmt: skip
# A spelled-out ordinal is not a count: "a third checked bag" is not "3 checked bags". ("first" is a word:
# "the first hour" is not "1 hour".)
_ORDINALS = {
    "second": "2nd", "third": "3rd", "fourth": "4th", "fifth": "5th", "sixth": "6th", "seventh": "7th",
    "eighth": "8th", "ninth": "9th", "tenth": "10th",
}  # fmt: skip
_CURRENCIES = frozenset({"dollar", "euro", "pound", "yen", "cent"})
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000, "billion": 1_000_000_000}

_WORD_RE = re.compile(r"[^\W_]+|[$€£%+\-*/=<>]")
_TOKEN_RE = re.compile(r"'s|[a-z]+(?:\+\+|#)?|\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|[$€£%]")
_ENTITY_RE = re.compile(r"[A-Za-z0-9]+(?:[-+#][A-Za-z0-9+#]*)*")
_ACRONYM_RE = re.compile(r"\b[A-Z0-9]*[A-Z][A-Z0-9]*[A-Z][A-Z0-9]*\b")
_SENTENCE_END_RE = re.compile(r"[.?!:;\"(\[]\s*$")
_QUOTED_RE = re.compile(r'"([^"]+)"|`([^`]+)`|(?<![\w\'])\'([^\']+)\'(?![\w\'])')
_CODE_RE = re.compile(r"`|[=<>*/\\|&^~{}\[\]]|\w\(|\(\)|\+|^-$")
_NUMERIC_CHUNK_RE = re.compile(r"^(?=.*\d)[\d.,/:$\u20ac\u00a3%+-]+$")  # 24/7, 8:30, $5,000: numbers
