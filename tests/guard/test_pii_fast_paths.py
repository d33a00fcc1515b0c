"""The fast paths of the structured detectors against their plain definitions.

``structured`` searches a class string (digits as 0/1, letters as A/a) and anchors ('@', ':', "AA"),
then checks values in Python. Here the same text goes through the exact patterns run the plain way
(``finditer`` over the folded text; an email from each '@'), and both must give the same candidates; likewise the IPv6 grammar
against ``ipaddress``, and Luhn and mod-97 against their textbook forms.
"""

from __future__ import annotations

import ipaddress
import random
import re

import pytest

from shipyard.guard import _pii_patterns as P
from shipyard.guard._pii_normalize import classes, normalize, prepare

STRUCTURED = P.STRUCTURED

# The definitions, as plain patterns over the folded text (the SSN context reads its keyword first).
EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}(?![\w-]|\.[A-Za-z0-9])"
)
LOCAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
IBAN = re.compile(r"[A-Z](?<![A-Za-z0-9].)[A-Z]\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])")
SSN_CONTEXT = re.compile(
    r"(?i:\b(?:ssn|social security(?: number| no\.?| #)?|ss#))[\s:#]{0,3}(?:is\s|was\s)?"
    r"(?P<v>(?!000|666|9\d\d)\d{3} ?(?!00)\d{2} ?(?!0000)\d{4})(?!\d)"
)


def reference(text: str, wanted: frozenset[str] = STRUCTURED) -> list[tuple[str, int, int, float]]:
    folded, _ = normalize(text)
    out: list[P.Finding] = []
    if wanted & {"card", "ssn", "ip", "phone"}:
        pos = 0
        while (m := P._DIGITS.search(folded, pos)) is not None:
            pos = P._exact_digits(folded, m.start(), wanted, out)
    if "ssn" in wanted:
        out += [P.Finding("ssn", *m.span("v"), m.group("v"), 0.95) for m in SSN_CONTEXT.finditer(folded)]
    if "phone" in wanted:
        for pattern, score in ((P._PHONE_PLUS, 0.85), (P._PHONE_PAREN, 0.8)):
            out += [P.Finding("phone", *m.span(), m.group(), score) for m in pattern.finditer(folded)
                    if 8 <= sum(c.isdigit() for c in m.group()) <= 15]
    if "iban" in wanted:
        for m in IBAN.finditer(folded):
            end = P._iban_end(folded, m.start(), m.end())
            if end:
                out.append(P.Finding("iban", m.start(), end, folded[m.start():end], 0.99))
    if "email" in wanted:  # each '@' once, from the start of the run of local-part characters before it
        for at in (m.start() for m in re.finditer("@", folded)):
            start = at
            while start > 0 and folded[start - 1] in LOCAL_CHARS:
                start -= 1
            m = EMAIL.match(folded, start) if 0 < at - start <= 64 else None
            if m:
                out.append(P.Finding("email", *m.span(), m.group(), 0.99))
    if "ip" in wanted:
        for m in P._IPV6.finditer(folded):
            raw, end = m.group(), m.end()
            while raw.endswith("."):
                raw, end = raw[:-1], end - 1
            addr = raw.split("%", 1)[0]
            try:
                ipaddress.IPv6Address(addr)
            except ValueError:
                continue
            if any(c.isdigit() for c in addr):
                out.append(P.Finding("ip", m.start(), end, raw, 0.9))
    return sorted((f.entity, f.start, f.end, f.score) for f in out)


def fast(text: str, wanted: frozenset[str] = STRUCTURED) -> list[tuple[str, int, int, float]]:
    folded, _, cls = prepare(text)
    return sorted((f.entity, f.start, f.end, f.score) for f in P.structured(folded, cls, wanted))


FRAGMENTS = [
    "4111", "1111", "0044", "020", "7946", "0958", "123", "45", "6789", "000", "666", "9", "0", "00", "1",
    "25", "255", "256", "192.168.", "10.", ".0", ".1", "DE89", "3704", "GB82", "WEST", "FR14", "DE", "ZZ12",
    "A", "Ab", "ssn", "SSN", "social security number", "ss#", "is ", "was ", "v", "version ", "==", "a@b.co",
    "@", "john.doe", "example.com", ".", "..", "_", "%", "+", "+1", "+44", "(", ")", "(212)", "::", ":",
    "fe80", "::1", "2001:db8", "ffff", "%eth0", "1.2.3.4", "-", "--", " ", "  ", "\n", ",", "/", "#",
    "é", "ü", "€", "\u200b", "\u0430", "１", "＠", "—", "١", "ﬁ", "x", "Z", "3782", "822463", "10005", "34",
]


@pytest.mark.parametrize("seed", range(4))
def test_structured_equals_the_plain_patterns(seed):
    rng = random.Random(seed)
    for _ in range(1500):
        text = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 25)))
        assert fast(text) == reference(text), text
        wanted = frozenset(rng.sample(sorted(STRUCTURED), 2))
        assert fast(text, wanted) == reference(text, wanted), (text, wanted)


def _luhn_valid(prefix: str, length: int) -> str:
    body = prefix + "1" * (length - len(prefix) - 1)
    return next(body + d for d in "0123456789" if P.luhn_ok(body + d))


@pytest.mark.parametrize("first", "0123456789")
@pytest.mark.parametrize("shape", ["{} {} {} {}", "{}-{}-{}-{}", "{}{}{}{}"])
def test_value_checks_at_every_first_digit(first, shape):
    # the class string sees only zero or not: the first digits are checked in Python, and a shape whose
    # check fails must still be decided as the exact pattern decides it
    card = _luhn_valid(first, 16)
    texts = [
        "pay " + shape.format(card[:4], card[4:8], card[8:12], card[12:]) + " now",
        *(f"amex {a[:4]} {a[4:10]} {a[10:]} and {a[:4]}-{a[4:10]}-{a[10:]}"
          for a in (_luhn_valid(first + second, 15) for second in "4567")),
        f"ssn {first}12-34-5678, {first}00-12-3456 and SSN {first}12 34 5678",
        f"ip {first}0.1.2.3 {first}55.1.2.3 {first}56.1.2.3 {first}.{first}{first}.0.1",
        f"call {first}20 7946 0958, {first}0{first}4 20 7946 0958 or {first}12-555-0132",
    ]
    for text in texts:
        assert fast(text) == reference(text), text


def test_structured_equals_the_plain_patterns_on_the_shipped_set():
    from shipyard.guard._pii_eval import load_eval_set

    text = "\n".join(r["text"] for r in load_eval_set())
    assert fast(text) == reference(text)
    assert len(fast(text)) > 300


def test_classes_has_one_byte_per_character():
    text = "Az09_ é€\u200b\ud800\x00-+(.:\U0001d7d9ſ"
    folded, _ = normalize(text)
    cls = classes(folded)
    assert len(cls) == len(folded)
    assert cls.startswith(b"Aa01_ \x80\x81")
    assert prepare(text)[2] == cls


def test_ipv6_grammar_agrees_with_ipaddress():
    rng = random.Random(6)
    parts = ["", "0", "1", "ff", "FFFF", "12345", "db8", "::", ":", ".", "1.2.3.4", "255.255.255.255", "256.1.1.1",
             "01.2.3.4", "g", "fe80", "0000"]
    for _ in range(20_000):
        addr = "".join(rng.choice(parts) for _ in range(rng.randint(1, 12)))
        try:
            ipaddress.IPv6Address(addr)
            expected = "%" not in addr
        except ValueError:
            expected = False
        assert P.ipv6_ok(addr) == expected, addr


def test_luhn_and_mod97_agree_with_their_textbook_forms():
    def luhn(digits: str) -> bool:
        total = 0
        for i, c in enumerate(reversed(digits)):
            d = int(c) * (2 if i % 2 else 1)
            total += d - 9 if d > 9 else d
        return total % 10 == 0

    rng = random.Random(7)
    for _ in range(5_000):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 19)))
        assert P.luhn_ok(digits) == luhn(digits), digits
    for _ in range(2_000):
        country = rng.choice(["DE", "GB", "FR", "XX"])
        body = "".join(rng.choice("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(18))
        compact = f"{country}{rng.randint(0, 99):02d}{body}"
        rearranged = compact[4:] + compact[:4]
        textbook = (P.IBAN_LENGTHS.get(compact[:2]) == len(compact)
                    and int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1)
        assert P.iban_ok(compact) == textbook, compact
