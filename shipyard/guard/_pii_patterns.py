"""The detectors: regexes plus validators (Luhn, mod-97, the IPv6 grammar, entropy).

The structured entities (email, phone, card, IBAN, SSN, IP) are found by ``structured``, built for
throughput. The digit-led ones (card, SSN, IPv4, phone) come from one pass over ``classes(text)`` (see
``_pii_normalize``), where a digit is ``0`` or ``1`` (zero or not) and a letter ``A`` or ``a``: the
pattern tests a small byte class where the exact one tests Unicode categories, and one alternation
with a group per shape finds all of them at once. Python then checks the values of the few matches
(first digits, Luhn, octets, SSN ranges); when a check rejects a shape, the exact pattern of the real
characters (``_DIGITS``) decides that start, so the result is the same as running the exact patterns
over the whole text (tests/guard/test_pii_fast_paths.py compares the two). IBANs get a second pass led
by the literal "AA" (two upper-case letters); emails are found from each '@', IPv6 addresses from the
':' that can start one.

The other entities (date of birth, address, secret, person) run one regex per rule, most of them only
in a window around a cheap anchor.

Every pattern is linear-time safe: a pattern starts behind a negative lookbehind on its own leading
class, so a long run of digits, dots or letters gives one start position rather than one per
character, and every quantifier is bounded, so each start costs at most a constant. ``bench/pii.py``
checks this with 1 MB adversarial runs.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple


class Finding(NamedTuple):
    """One detected entity; ``start``/``end`` index the original text and ``text`` is that slice.

    A named tuple (immutable, fields by name) rather than a frozen dataclass: dense text has a finding
    every few dozen characters, and a tuple is built in half the time. The detectors build them with
    offsets into the folded text; ``pii.detect`` maps them back when folding moved anything.
    """

    entity: str
    start: int
    end: int
    text: str
    score: float


# --- validators ---------------------------------------------------------------------------------

_LUHN_DOUBLE = str.maketrans("0123456789", "0246813579")  # 2d, minus 9 when that has two digits


def luhn_ok(digits: str) -> bool:
    # digit sums through the bytes' values: one C-level sum per half
    odd = digits[-1::-2].encode()
    even = digits[-2::-2].translate(_LUHN_DOUBLE).encode()
    return (sum(odd) + sum(even) - 48 * len(digits)) % 10 == 0


# IBAN length by country (ISO 13616 registry, the common ones).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24,
    "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21,
    "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LI": 21,
    "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30,
    "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}
_IBAN_NUMBERS = {ord(c): str(10 + i) for i, c in enumerate(string.ascii_uppercase)}  # A=10 ... Z=35


def iban_ok(compact: str) -> bool:
    compact = compact.upper()
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    if not (rearranged.isascii() and rearranged.isalnum()):
        return False
    return int(rearranged.translate(_IBAN_NUMBERS)) % 97 == 1


def shannon(s: str) -> float:
    counts: dict[str, int] = {}
    for c in s:
        counts[c] = counts.get(c, 0) + 1
    n = len(s)
    return -sum(k / n * math.log2(k / n) for k in counts.values())


def _ssn_ok(raw: str) -> bool:
    d = raw.replace("-", "").replace(" ", "")
    return not (d[:3] in ("000", "666") or d[0] == "9" or d[3:5] == "00" or d[5:] == "0000")


_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_H16 = r"[0-9A-Fa-f]{1,4}"
_LS32 = rf"(?:{_H16}:{_H16}|{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET})"
# RFC 4291's textual forms (the grammar of RFC 3986's IPv6address): what ipaddress.IPv6Address accepts,
# at a fraction of its cost.
_IPV6_ADDRESS = re.compile(
    rf"(?:{_H16}:){{6}}{_LS32}"
    rf"|::(?:{_H16}:){{5}}{_LS32}"
    rf"|(?:{_H16})?::(?:{_H16}:){{4}}{_LS32}"
    rf"|(?:(?:{_H16}:)?{_H16})?::(?:{_H16}:){{3}}{_LS32}"
    rf"|(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}{_LS32}"
    rf"|(?:(?:{_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}"
    rf"|(?:(?:{_H16}:){{0,4}}{_H16})?::{_LS32}"
    rf"|(?:(?:{_H16}:){{0,5}}{_H16})?::{_H16}"
    rf"|(?:(?:{_H16}:){{0,6}}{_H16})?::"
)


def ipv6_ok(addr: str) -> bool:
    return _IPV6_ADDRESS.fullmatch(addr) is not None


# --- structured entities: the exact patterns ---------------------------------------------------
#
# Over the folded text, where every decimal digit is ASCII. ``_DIGITS`` is the definition of the
# digit-led entities; the class-string pass below finds the same matches faster and falls back to it.

_DIGITS = re.compile(
    r"\d(?<![\w.,/+(-].)(?:"
    r"(?P<card>(?<=[2-6])\d{3}(?P<s1>[ -]?)\d{4}(?P=s1)\d{4}(?P=s1)\d{1,7}(?!\d|[.,-]\d)"
    r"|(?<=3)[47]\d{2}(?P<s2>[ -]?)\d{6}(?P=s2)\d{5}(?!\d|[.,-]\d)|(?<=[2-6])\d{12,18}(?!\d|[.,-]\d))"
    r"|(?P<ssn>(?<=[0-8])\d{2}-\d{2}-\d{4}(?![\d-]|\.\d))"
    rf"|(?P<ip>\d{{0,2}}(?<!\d{{4}})(?<!0\d)(?<!0\d\d)(?<![3-9]\d\d)(?<!2[6-9]\d)(?<!25[6-9])\.{_OCTET}\.{_OCTET}\.{_OCTET}(?![\w]|\.\d))"
    r"|(?P<phone>\d{2}[-. ]\d{3}[-. ]\d{4}(?![\w]|[.-]\d)"
    r"|(?<=0)0[1-9]\d{0,2}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){2,6}(?![\w]|[.-]\d)"
    r"|(?<=0)[1-9]\d{0,4}(?:[ -]\d{2,6}){1,4}(?![\w]|[.,/:-]\d))"
    r")"
)
# "SSN 123 45 6789", "social security number is 123456789": the number (any digit-led start) qualified
# by the keyword just before it.
_SSN_CONTEXT_BEFORE = re.compile(
    r"(?i:\b(?:ssn|social security(?: number| no\.?| #)?|ss#))[\s:#]{0,3}(?:is\s|was\s)?\Z"
)
_SSN_CONTEXT_REACH = 40  # longest keyword and separators
_PHONE_PLUS = re.compile(
    r"\+(?<![\w+].)[1-9]\d{0,2}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){2,6}(?![\w]|[.-]\d)"
)
_PHONE_PAREN = re.compile(r"\((?<![\w+(-].)\d{3}\) ?\d{3}[-. ]\d{4}(?![\w]|[.-]\d)")
_VERSION_CONTEXT = re.compile(
    r"(?i:(?:\bv|\bversion|\bver\.?|\brelease|\bbuild|\bfirmware|\bpatch|\bsdk|\bupgrade(?:d)? to"
    r"|\bupdate(?:d)? to|\brelease[sd]?|\bsection|\bchapter|\bclause|§|==|>=|<=|~=)\s?:?\s?)$"
)
_VERSION_LAST = frozenset("vVnNrR.eEdDhHkKoOsSeE§=")  # the last characters of its keywords
_IPV4_OCTETS = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")
# An email from its '@': the domain by this pattern, the local part by stripping back from the '@'.
_AT_DOMAIN = re.compile(
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}(?![\w-]|\.[A-Za-z0-9])"
)
_LOCAL_CHARS = string.ascii_letters + string.digits + "._%+-"
# An IPv6 address has two colons at most four hex digits apart near its start, and starts at most four
# hex digits before the first, after no letter, digit, colon or dot: the anchor is that first colon,
# and the group hN says the start is N characters before it.
_V6_ANCHOR = re.compile(
    r":(?=[0-9A-Fa-f]{0,4}:)(?:"
    r"(?<=(?<![\w:.])[0-9A-Fa-f]{4}:)(?P<h4>)|(?<=(?<![\w:.])[0-9A-Fa-f]{3}:)(?P<h3>)"
    r"|(?<=(?<![\w:.])[0-9A-Fa-f]{2}:)(?P<h2>)|(?<=(?<![\w:.])[0-9A-Fa-f]:)(?P<h1>)|(?<![\w:.]:)(?P<h0>))"
)
_IPV6 = re.compile(r"(?<![\w:.])(?=[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:)[0-9A-Fa-f:.]{3,45}(?:%[\w]{1,16})?(?![\w:])")
_HAS_DIGIT = re.compile(r"\d")

# --- structured entities: the class-string passes ----------------------------------------------
#
# Each is its exact pattern with a digit written [01] (1 for a digit other than zero), an upper-case
# letter A, a lower-case one a, and \w as [01Aa_\x80] (0x80: a letter or digit outside ASCII). Value
# conditions that zero-or-not cannot say (a first digit in 2-6, the octet ranges) are left to Python,
# so each shape has its own group.

_DIGIT_LED = re.compile(
    rb"[01](?:(?<![01].)(?P<ssnv>[01]{2} ?[01]{2} ?[01]{4}(?![01]))"
    rb"|(?<![01Aa_\x80.,/+(-].)(?:"
    rb"(?P<card>(?<=1)[01]{3}(?P<s1>[ -]?)[01]{4}(?P=s1)[01]{4}(?P=s1)[01]{1,7}(?![01]|[.,-][01]))"
    rb"|(?P<amex>(?<=1)[01]{3}(?P<s2>[ -]?)[01]{6}(?P=s2)[01]{5}(?![01]|[.,-][01]))"
    rb"|(?P<ssn>[01]{2}-[01]{2}-[01]{4}(?![01-]|\.[01]))"
    rb"|(?P<ip>[01]{0,2}\.[01]{1,3}\.[01]{1,3}\.[01]{1,3}(?![01Aa_\x80]|\.[01]))"
    rb"|(?P<phone>[01]{2}[-. ][01]{3}[-. ][01]{4}(?![01Aa_\x80]|[.-][01]))"
    rb"|(?P<phone00>(?<=0)01[01]{0,2}(?:[ .-]?\([01]{1,4}\))?(?:[ .-]?[01]{1,5}){2,6}(?![01Aa_\x80]|[.-][01]))"
    rb"|(?P<phone0>(?<=0)1[01]{0,4}(?:[ -][01]{2,6}){1,4}(?![01Aa_\x80]|[.,/:-][01]))"
    rb"))"
)
_IBAN_CLASS = re.compile(rb"AA(?<![01Aa]AA)[01]{2}(?: ?[A01]{4}){2,7}(?: ?[A01]{1,3})?(?![01Aa])")

STRUCTURED = frozenset({"email", "phone", "card", "iban", "ssn", "ip"})
_new = tuple.__new__


def structured(text: str, cls: bytes, wanted: frozenset[str]) -> list[Finding]:
    """Candidates of the structured entities in ``wanted``: ``text`` is folded and ``cls`` its
    ``classes``; offsets are into ``text``, and each pass's candidates are in order."""
    out: list[Finding] = []
    if wanted & {"card", "ssn", "ip", "phone"}:
        _digit_led(text, cls, wanted, out)
    if "phone" in wanted:
        if "+" in text:
            _phones(_PHONE_PLUS, text, cls, 0.85, out)
        if "(" in text:
            _phones(_PHONE_PAREN, text, cls, 0.8, out)
    if "iban" in wanted:
        for m in _IBAN_CLASS.finditer(cls):
            s, e = m.span()
            end = _iban_end(text, s, e)
            if end:
                out.append(_new(Finding, ("iban", s, end, text[s:end], 0.99)))
    if "email" in wanted and "@" in text:
        _emails(text, out)
    if "ip" in wanted and ":" in text:
        _ipv6s(text, out)
    return out


def _digit_led(text: str, cls: bytes, wanted: frozenset[str], out: list[Finding]) -> None:
    # Hot path: one iteration per digit-led shape, so it stays lean. A shape whose value check fails
    # falls through to _exact_digits, which decides that start as the exact pattern would.
    want_card, want_ssn, want_ip, want_phone = ("card" in wanted, "ssn" in wanted, "ip" in wanted,
                                                "phone" in wanted)
    append = out.append
    search = _DIGIT_LED.search
    pos = 0
    while (m := search(cls, pos)) is not None:
        kind = m.lastgroup
        s, e = m.span()
        pos = e
        raw = text[s:e]
        if kind == "card":
            if raw[0] in "23456":
                if want_card and luhn_ok(raw.replace(" ", "").replace("-", "")):
                    append(_new(Finding, ("card", s, e, raw, 0.98)))
                continue
        elif kind == "phone00":
            if want_phone and 8 <= e - s - _separators(raw) <= 15:
                append(_new(Finding, ("phone", s, e, raw, 0.8)))
            continue
        elif kind == "ip":
            if _IPV4_OCTETS.fullmatch(raw):
                if want_ip and not _after_version(text, s):
                    append(_new(Finding, ("ip", s, e, raw, 0.9)))
                continue
        elif kind == "ssn":  # ddd-dd-dddd
            if raw[0] != "9":
                if want_ssn and raw[:3] not in ("000", "666") and raw[4:6] != "00" and raw[7:] != "0000":
                    append(_new(Finding, ("ssn", s, e, raw, 0.9)))
                continue
        elif kind == "phone":  # three, three and four digits
            if want_phone:
                append(_new(Finding, ("phone", s, e, raw, 0.6 if raw[0] == "0" and raw[1] != "0" else 0.8)))
            continue
        elif kind == "phone0":
            if want_phone and 10 <= e - s - _separators(raw) <= 11:
                append(_new(Finding, ("phone", s, e, raw, 0.6)))
            continue
        elif kind == "amex":
            if raw[0] == "3" and raw[1] in "47":
                if want_card and luhn_ok(raw.replace(" ", "").replace("-", "")):
                    append(_new(Finding, ("card", s, e, raw, 0.98)))
                continue
        elif (want_ssn and _ssn_ok(raw)  # ssnv; the digit rules still get this start below
              and _SSN_CONTEXT_BEFORE.search(text, max(0, s - _SSN_CONTEXT_REACH), s)):
            append(_new(Finding, ("ssn", s, e, raw, 0.95)))
        pos = _exact_digits(text, s, wanted, out) or s + 1


def _after_version(text: str, s: int) -> bool:
    """"v1.2.3.4", "version 10.0.0.1": a version string, never an address (the eval set labels it so)."""
    # _VERSION_CONTEXT ends with spaces and a colon: the character before them must end a keyword
    last = text[max(0, s - 4):s].rstrip().rstrip(":").rstrip()[-1:]
    return last in _VERSION_LAST and _VERSION_CONTEXT.search(text, max(0, s - 20), s) is not None


def _separators(raw: str) -> int:
    return raw.count(" ") + raw.count("-") + raw.count(".") + raw.count("(") + raw.count(")")


def _exact_digits(text: str, s: int, wanted: frozenset[str], out: list[Finding]) -> int:
    """What ``_DIGITS`` makes of the start ``s``: its end (0 if no match), candidates into ``out``."""
    m = _DIGITS.match(text, s)
    if m is None:
        return 0
    e = m.end()
    raw = m.group()
    if m.group("card") is not None:
        # the backreferences keep one separator kind, so stripping both is enough
        if "card" in wanted and luhn_ok(raw.replace(" ", "").replace("-", "")):
            out.append(_new(Finding, ("card", s, e, raw, 0.98)))
    elif m.group("ssn") is not None:
        if "ssn" in wanted and _ssn_ok(raw):
            out.append(_new(Finding, ("ssn", s, e, raw, 0.9)))
    elif m.group("ip") is not None:
        if "ip" in wanted and not _after_version(text, s):
            out.append(_new(Finding, ("ip", s, e, raw, 0.9)))
    elif "phone" in wanted:
        digits = e - s - _separators(raw)
        national = raw[0] == "0" and raw[1] != "0"
        if (10 <= digits <= 11) if national else (8 <= digits <= 15):
            out.append(_new(Finding, ("phone", s, e, raw, 0.6 if national else 0.8)))
    return e


def _phones(pattern: re.Pattern[str], text: str, cls: bytes, score: float, out: list[Finding]) -> None:
    for m in pattern.finditer(text):
        raw = m.group()
        if 8 <= len(raw) - _separators(raw) - 1 <= 15:  # less the '+', or the '(' counted twice
            out.append(_new(Finding, ("phone", m.start(), m.end(), raw, score)))


def _iban_end(text: str, s: int, e: int) -> int:
    """The end of the IBAN that starts the shape ``text[s:e]`` (its country's length), or 0."""
    raw = text[s:e]
    want = IBAN_LENGTHS.get(raw[:2])
    if want is None:
        return 0
    compact = raw.replace(" ", "")
    if len(compact) == want:  # the usual case: the shape is the IBAN
        return e if iban_ok(compact) else 0
    seen = 0
    at = 0
    for group in raw.split(" "):
        if seen + len(group) >= want:
            end = at + want - seen
            if end < len(raw) and raw[end] != " ":
                return 0  # the length would cut a group in two
            return s + end if iban_ok(raw[:end].replace(" ", "")) else 0
        seen += len(group)
        at += len(group) + 1
    return 0


def _emails(text: str, out: list[Finding]) -> None:
    for m in _AT_DOMAIN.finditer(text):
        at = m.start()
        before = text[max(0, at - 65):at]
        local = len(before) - len(before.rstrip(_LOCAL_CHARS))
        if not 0 < local <= 64:
            continue
        start = at - local
        # it starts at a letter or digit, after no letter or digit (the strip took every ASCII one)
        if text[start].isalnum() and not (start and text[start - 1].isalnum()):
            out.append(_new(Finding, ("email", start, m.end(), text[start:m.end()], 0.99)))


def _ipv6s(text: str, out: list[Finding]) -> None:
    done = 0  # anchors before this lie inside a match already taken
    for a in _V6_ANCHOR.finditer(text):
        colon = a.start()
        if colon < done:
            continue
        start = colon - int(a.lastgroup[1])  # type: ignore[index]
        m = _IPV6.match(text, start)
        if m is None or m.end() <= colon:
            continue
        done = m.end()
        raw = m.group()
        end = m.end()
        while raw.endswith("."):
            raw, end = raw[:-1], end - 1
        addr = raw.split("%", 1)[0]
        if _HAS_DIGIT.search(addr) and ipv6_ok(addr):
            out.append(_new(Finding, ("ip", start, end, raw, 0.9)))


# --- date of birth, in context ------------------------------------------------------------------
_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
    r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_DATE = (
    rf"(?:\d{{1,2}}[/.-]\d{{1,2}}[/.-](?:\d{{4}}|\d{{2}})|\d{{4}}-\d{{2}}-\d{{2}}|"
    rf"\d{{1,2}}(?:st|nd|rd|th)?(?: of)? {_MONTH}\.?,? \d{{4}}|{_MONTH}\.? \d{{1,2}}(?:st|nd|rd|th)?,? \d{{4}})"
)
_DOB = re.compile(
    r"(?i:\b(?:date of birth|birth ?date|birthday|d\.?o\.?b\.?|born(?: on)?|geburtsdatum|"
    r"date de naissance|fecha de nacimiento|n[ée]e? le|geboren am))"
    r"(?:\s{0,3}(?:is|was|:|-|=|of|on)){0,2}\s{0,3}"
    rf"(?P<v>{_DATE})(?!\d)"
)

# --- street address -----------------------------------------------------------------------------
_CAP = r"[A-Z][a-z\u00df-\u00ff][A-Za-z'\u00c0-\u024f-]{0,19}"
_STREET_TYPE = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|"
    r"Parkway|Pkwy|Highway|Hwy|Circle|Cir|Square|Sq|Crescent|Close|Gardens|Grove|Row|Mews|Hill)"
)
_US_STATE_ZIP = r"(?:,? [A-Z]{2},? \d{5}(?:-\d{4})?)"
_UK_POSTCODE = r"(?:,? [A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2})"
_CITY = rf"(?:, {_CAP}(?: {_CAP}){{0,2}})"
_ADDRESS_US_UK = re.compile(
    rf"(?<![\w.,/-])\d{{1,5}}[A-Za-z]?,? (?:{_CAP} ){{1,4}}{_STREET_TYPE}\.?(?: (?:N|S|E|W|NE|NW|SE|SW)\.?)?(?![\w])"
    rf"(?:,? (?:Apt|Apartment|Suite|Ste|Unit|Flat|Fl|#) ?\.? ?#?[A-Za-z0-9-]{{1,6}})?"
    rf"(?:{_CITY}{{1,2}}(?:{_US_STATE_ZIP}|{_UK_POSTCODE})?|{_US_STATE_ZIP}|{_UK_POSTCODE})?"
)
_EU_SUFFIX = r"(?:stra(?:ss|ß)e|str\.|weg|gasse|platz|allee|ring|damm|gracht|straat|laan|plein|kade|vej|gatan|gata|veien)"
_EU_PREFIX = (
    r"(?:rue|avenue|boulevard|bd|place|chemin|all[ée]e|impasse|quai|cours|Rue|Avenue|Boulevard|Place|"
    r"Calle|Avenida|Av\.|Plaza|Paseo|Via|Viale|Piazza|Corso|Rua|Largo|Carrer)"
)
_POST_EU = r"(?:,? (?:[A-Z]{1,2}-)?\d{4,5}(?: [A-Z]{2})? {_CAP}(?: {_CAP})?)".replace("{_CAP}", _CAP)
_ADDRESS_EU_SUFFIX = re.compile(
    rf"(?<![\w-])(?:{_CAP} ){{0,2}}[A-Z][a-z\u00df-\u00ff]{{1,30}}{_EU_SUFFIX}(?![\w]) \d{{1,4}}[a-z]?(?![\w])"
    rf"(?:{_POST_EU})?"
)
_ADDRESS_EU_PREFIX = re.compile(
    rf"(?<![\w,-])(?:\d{{1,4}}(?: ?bis| ?ter)?,? )?{_EU_PREFIX} (?:(?:de la|de l'|de|du|des|del|della|di|da|do|dos|d') ?)?"
    rf"{_CAP}(?: (?:de |del |di )?{_CAP}){{0,3}}(?:,? (?:n[º°.]? ?)?\d{{1,4}}[a-z]?)?(?![\w])(?:{_POST_EU})?"
)


def _address_us_check(m: re.Match[str]) -> tuple[int, int] | None:
    # "Oak Drive." ends a sentence; "Oak Ave." keeps the dot of its abbreviation.
    raw = m.group()
    if raw.endswith(".") and len(raw.rsplit(" ", 1)[-1]) > 4:
        return m.start(), m.end() - 1
    return m.span()


def _address_eu_prefix_check(m: re.Match[str]) -> tuple[int, int] | None:
    # A prefix street ("rue de Rivoli") needs a number, before or after, to count as an address.
    return m.span() if any(c.isdigit() for c in m.group()) else None


# --- secrets ------------------------------------------------------------------------------------
_SECRET_PREFIXED = re.compile(
    r"(?<![\w-])(?:"
    r"sk-(?:proj-|ant-(?:api\d\d-)?|live-|test-)?[A-Za-z0-9_-]{20,200}"
    r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,200}"
    r"|gh[pousr]_[A-Za-z0-9]{30,100}"
    r"|github_pat_[A-Za-z0-9_]{40,120}"
    r"|(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,200}"
    r"|AIza[0-9A-Za-z_-]{35}"
    r"|glpat-[A-Za-z0-9_-]{20,40}"
    r"|hf_[A-Za-z0-9]{30,40}"
    r"|npm_[A-Za-z0-9]{36}"
    r"|SG\.[A-Za-z0-9_-]{16,32}\.[A-Za-z0-9_-]{16,64}"
    r"|eyJ[A-Za-z0-9_-]{8,500}\.eyJ[A-Za-z0-9_-]{8,1000}\.[A-Za-z0-9_-]{8,500}"
    r")(?![\w-])"
)
_SECRET_ASSIGNED = re.compile(
    r"(?i:(?:password|passwd|pwd|passphrase|secret|token|api[_ -]?key|apikey|access[_ -]?key|"
    r"client[_ -]?secret|auth[_ -]?token|private[_ -]?key)(?:[_ -]?(?:id|value))?)"
    r"[\"']?\s{0,3}(?:[:=]|\bis\b)\s{0,3}[\"']?(?P<v>[A-Za-z0-9!#$%&*+./=?@^_~-]{8,200})(?<![.,])"
)
_TOKEN = re.compile(r"(?<![\w+/=-])[A-Za-z0-9_+/=-]{24,200}(?![\w+/=-])")
_HEX_OR_UUID = re.compile(r"[0-9a-fA-F-]+")


def _assigned_check(m: re.Match[str]) -> tuple[int, int] | None:
    v = m.group("v")
    if v.isalpha() and v.islower():
        return None  # a plain word: "the password is changed" is not a secret
    return m.span("v")


def _token_check(m: re.Match[str]) -> tuple[int, int] | None:
    tok = m.group()
    if _HEX_OR_UUID.fullmatch(tok):
        return None  # git hashes, UUIDs, checksums: identifiers, not secrets
    upper = sum(c.isupper() for c in tok)
    lower = sum(c.islower() for c in tok)
    digits = sum(c.isdigit() for c in tok)
    if upper < 2 or lower < 2 or digits < 2:
        return None
    return m.span() if shannon(tok) >= 4.0 else None


# --- person, where a name is introduced ---------------------------------------------------------
_NAME_WORD = r"[A-Z][a-z\u00df-\u00ff'][a-z\u00df-\u00ff'-]{0,20}"
_NAME = rf"(?:{_NAME_WORD}(?: (?:[A-Z]\. )?(?:(?:van|von|de|da|di|del|der|le|la|O') ?)?{_NAME_WORD}){{0,2}})"
_TITLE = r"(?:(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Madam|Herr|Frau|Mme|Mlle|M|Sr|Sra)\.? )"
_PERSON_INTRO = re.compile(
    r"(?:(?i:\bmy name is|\bmy name's|\bname:|\bi am|\bi'm|\bthis is|\bcall me|\bsigned,?|\bje m'appelle|"
    r"\bich hei(?:ss|ß)e|\bme llamo|\bmi chiamo)\s{1,3}"
    r"|(?i:\b(?:dear|hi|hello|hey|greetings|good morning|good afternoon|attn:?|attention:?))\s{1,3}"
    r"|(?i:\b(?:regards|best regards|kind regards|warm regards|best wishes|best|thanks|thank you|cheers|"
    r"sincerely|yours sincerely|yours truly|yours faithfully|respectfully|many thanks|cordially)),?[ \t]{0,3}\n\s{0,3}"
    r"|^--[ \t]?\n?[ \t]{0,3}"
    r"|(?<![\w.])" + _TITLE + r")"
    rf"{_TITLE}?(?P<v>{_NAME})",
    re.MULTILINE,
)
_NOT_NAMES = frozenset(
    ["All", "Everyone", "Team", "There", "Sir", "Madam", "Support", "Customer", "Friends", "Folks", "Guys", "Colleagues", "Everybody", "Here", "Not", "Sure", "Happy", "Glad", "Sorry", "Fine", "Good", "Great", "Okay", "Ok", "The", "This", "That", "It", "Just", "Also", "So", "Very", "Really", "Looking", "Writing", "Calling", "Reaching", "Interested", "Afraid", "Trying", "Going", "Still", "Now", "Back", "Available", "Able", "Unable", "New", "Your", "Our", "My", "Customer", "Admin", "Administrator", "Manager", "Hiring", "Recruiter", "Sales", "Billing", "Hr", "Dear", "Hi", "Hello", "Thanks", "Regards", "Best", "Cheers", "Sincerely", "Please", "Kind", "Warm", "Morning", "Afternoon", "Evening", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "January", "February", "March", "April", "June", "July", "August", "September", "October", "November", "December", "Mom", "Dad", "Doctor", "Team", "Staff", "Everyone", "Americans", "American", "Canadian", "British", "French", "German", "World", "Italian", "Spanish", "Chinese", "Japanese", "Indian", "Mexican", "Here", "Using", "Done", "Ready", "Sending", "Attaching", "In", "On", "At", "From", "With", "For", "To", "Of", "A", "An", "Unfortunately", "Currently", "Working", "Tired", "Confused", "Concerned", "Aware", "Excited", "Pleased"]
)


def _person_check(m: re.Match[str]) -> tuple[int, int] | None:
    words = m.group("v").split(" ")
    # Drop trailing words that are ordinary capitalized words ("Hi John Thanks" keeps "John").
    keep = 0
    for w in words:
        if w.rstrip("'") in _NOT_NAMES:
            break
        keep += 1
    if keep == 0:
        return None
    name = " ".join(words[:keep])
    start = m.start("v")
    return start, start + len(name)



# --- how the other rules are run ----------------------------------------------------------------
#
# Running every regex over the whole text costs one pass each, and most patterns begin with a class
# (a digit, a letter) that occurs everywhere. So these rules run only in a window around a cheap anchor
# found by a literal-led regex (a keyword for the context rules), except the few that cannot.

Check = Callable[[re.Match[str]], tuple[int, int] | None]
Finder = Callable[[str, str | None], Iterator[re.Match[str]]]


def _whole(m: re.Match[str]) -> tuple[int, int]:
    return m.start(), m.end()


def _group(name: str) -> Callable[[re.Match[str]], tuple[int, int] | None]:
    def check(m: re.Match[str]) -> tuple[int, int] | None:
        return m.span(name)
    return check


def _scan(pattern: re.Pattern[str]) -> Finder:
    def find(text: str, lower: str | None) -> Iterator[re.Match[str]]:
        return pattern.finditer(text)
    return find


def _anchored(pattern: re.Pattern[str], anchor: re.Pattern[str], before: int, after: int, *, lower: bool = False) -> Finder:
    """Matches of ``pattern`` that contain a match of ``anchor``, searched only in a window around it.

    ``after`` must be at least the longest match, so that a window sees whole every match starting in
    it: then a start position tried for one anchor never needs trying again for the next one.
    """
    def find(text: str, low: str | None) -> Iterator[re.Match[str]]:
        if lower and low is None:
            yield from pattern.finditer(text)
            return
        src = low if lower and low is not None else text
        tried = 0  # start positions below this were tried already
        n = len(text)
        for a in anchor.finditer(src):
            g = a.start()
            if g < tried:
                continue
            for m in pattern.finditer(text, max(tried, g - before), min(n, g + after)):
                if m.start() > g:
                    break
                if m.end() > g:
                    tried = m.end()
                    yield m
                    break
            else:
                tried = max(tried, g + 1)
                continue
            tried = max(tried, g + 1)
    return find


def _at_anchor(pattern: re.Pattern[str], anchor: re.Pattern[str]) -> Finder:
    """Matches of ``pattern`` that start where ``anchor`` matches: one ``match`` call per anchor."""
    def find(text: str, low: str | None) -> Iterator[re.Match[str]]:
        end = 0
        for a in anchor.finditer(text):
            if a.start() < end:
                continue
            m = pattern.match(text, a.start())
            if m:
                end = m.end()
                yield m
    return find


@dataclass(frozen=True)
class Rule:
    entity: str
    find: Finder
    score: float
    check: Check | None = None  # -> the span to keep, or None


_DOB_ANCHOR = re.compile(r"birth|d\.?o\.?b|born|geburtsdatum|naissance|nacimiento|n[ée]e? le|geboren")
_SECRET_ANCHOR = re.compile(r"pass|pwd|secret|token|api|access|client|auth|private")
_PREFIX_ANCHOR = re.compile(r"sk|rk|pk|gh|github_pat_|A(?:KIA|SIA|GPA|IDA|ROA|Iza)|xox|glpat|hf_|npm_|SG\.|eyJ")
_EU_SUFFIX_ANCHOR = re.compile(
    r"(?:stra(?:ss|ß)e|str\.|weg|gasse|platz|allee|ring|damm|gracht|straat|laan|plein|kade|vej|gatan|gata|veien) \d"
)
_EU_PREFIX_ANCHOR = re.compile(
    r"(?:rue|avenue|boulevard|bd|place|chemin|all[ée]e|impasse|quai|cours|calle|avenida|av\.|plaza|paseo|via|"
    r"viale|piazza|corso|rua|largo|carrer) "
)
_PERSON_ANCHOR = re.compile(
    r"name|i am|i'm|this is|call me|signed|dear|hello|hey|greetings|good|attn|attention|regards|best|thank|"
    r"cheers|sincerely|yours|respectfully|cordially|appelle|hei|llamo|chiamo|madam|herr|frau|mme|mlle|miss|"
    r"prof|sir|\b(?:hi|mr|mrs|ms|mx|dr|sr|sra|m\.)\b|^--",
    re.MULTILINE,
)

RULES: tuple[Rule, ...] = (
    Rule("dob", _anchored(_DOB, _DOB_ANCHOR, 20, 110, lower=True), 0.9, _group("v")),
    Rule("address", _scan(_ADDRESS_US_UK), 0.75, _address_us_check),
    Rule("address", _anchored(_ADDRESS_EU_SUFFIX, _EU_SUFFIX_ANCHOR, 110, 200), 0.7),
    Rule("address", _anchored(_ADDRESS_EU_PREFIX, _EU_PREFIX_ANCHOR, 12, 260, lower=True), 0.7,
         _address_eu_prefix_check),
    Rule("secret", _at_anchor(_SECRET_PREFIXED, _PREFIX_ANCHOR), 0.97),
    Rule("secret", _anchored(_SECRET_ASSIGNED, _SECRET_ANCHOR, 20, 290, lower=True), 0.85, _assigned_check),
    Rule("secret", _scan(_TOKEN), 0.6, _token_check),
    Rule("person", _anchored(_PERSON_INTRO, _PERSON_ANCHOR, 8, 140, lower=True), 0.7, _person_check),
)


def run_rules(text: str, entities: frozenset[str]) -> Iterator[Finding]:
    """Candidates of the entities in ``entities`` that are not structured (``text`` is folded)."""
    lower = text.lower()
    low = lower if len(lower) == len(text) else None  # a few non-ASCII letters change length
    for rule in RULES:
        if rule.entity not in entities:
            continue
        check = rule.check or _whole
        for m in rule.find(text, low):
            span = check(m)
            if span is not None and span[1] > span[0]:
                yield _new(Finding, (rule.entity, span[0], span[1], text[span[0]:span[1]], rule.score))
