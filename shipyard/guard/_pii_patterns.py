"""The detectors: one compiled regex per rule plus a validator (Luhn, mod-97, ipaddress, entropy).

Every pattern is linear-time safe: a pattern starts behind a negative lookbehind on its own leading
class, so a long run of digits, dots or letters gives one start position rather than one per
character, and every quantifier is bounded, so each start costs at most a constant. ``bench/pii.py``
checks this with 1 MB adversarial runs.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

Candidate = tuple[str, int, int, float]  # entity, start, end, score (offsets in the normalized text)


_DOUBLED = {str(d): (2 * d - 9 if d > 4 else 2 * d) for d in range(10)}


def luhn_ok(digits: str) -> bool:
    total = sum(map(int, digits[-1::-2])) + sum(_DOUBLED[c] for c in digits[-2::-2])
    return total % 10 == 0


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


def iban_ok(compact: str) -> bool:
    compact = compact.upper()
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def shannon(s: str) -> float:
    counts: dict[str, int] = {}
    for c in s:
        counts[c] = counts.get(c, 0) + 1
    n = len(s)
    return -sum(k / n * math.log2(k / n) for k in counts.values())


def _whole(m: re.Match[str]) -> tuple[int, int]:
    return m.start(), m.end()


def _group(name: str) -> Callable[[re.Match[str]], tuple[int, int] | None]:
    def check(m: re.Match[str]) -> tuple[int, int] | None:
        return m.span(name)
    return check


# --- email -------------------------------------------------------------------------------------
_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}(?![\w-]|\.[A-Za-z0-9])"
)

# --- card: 13-19 digits in groups separated by single spaces or dashes, Luhn-valid ---------------
_CARD = re.compile(r"(?<![\d.,/-])[2-6]\d{2,5}(?:[ -]?\d{2,6}){1,5}(?![\d]|[.,]\d|-\d)")


def _card_check(m: re.Match[str]) -> tuple[int, int] | None:
    raw = m.group()
    seps = {c for c in raw if not c.isdigit()}
    if len(seps) > 1:
        return None
    digits = raw.replace(" ", "").replace("-", "")
    if not 13 <= len(digits) <= 19 or not luhn_ok(digits):
        return None
    return m.span()


# --- IBAN: country, check digits, BBAN in groups of four (or compact), mod-97 -------------------
_IBAN = re.compile(r"[A-Z](?<![A-Za-z0-9].)[A-Z]\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])")


def _iban_check(m: re.Match[str]) -> tuple[int, int] | None:
    raw = m.group()
    want = IBAN_LENGTHS.get(raw[:2])
    if want is None:
        return None
    count = 0
    for i, c in enumerate(raw):
        if c != " ":
            count += 1
            if count == want:
                end = i + 1
                if end < len(raw) and raw[end] != " ":
                    return None  # the length would cut a group in two
                return (m.start(), m.start() + end) if iban_ok(raw[:end].replace(" ", "")) else None
    return None


# --- SSN ----------------------------------------------------------------------------------------
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-]|\.\d)")
_SSN_CONTEXT = re.compile(
    r"(?i:\b(?:ssn|social security(?: number| no\.?| #)?|ss#))[\s:#]{0,3}(?:is\s|was\s)?"
    r"(?P<v>(?!000|666|9\d\d)\d{3} ?(?!00)\d{2} ?(?!0000)\d{4})(?!\d)"
)

# --- phone --------------------------------------------------------------------------------------
_PHONE_INTL = re.compile(
    r"(?<![\w+])(?:\+|00)[1-9]\d{0,2}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){2,6}(?![\w]|[.-]\d)"
)
_PHONE_US = re.compile(r"(?<![\w+(-])(?:\(\d{3}\) ?|\d{3}[-. ])\d{3}[-. ]\d{4}(?![\w]|[.-]\d)")
_PHONE_NATIONAL = re.compile(r"(?<![\w+.,/-])0[1-9]\d{1,4}(?:[ -]\d{2,4}){1,4}(?![\w]|[.,/:-]\d)")


def _phone_check(m: re.Match[str]) -> tuple[int, int] | None:
    n = sum(c.isdigit() for c in m.group())
    return m.span() if 8 <= n <= 15 else None


def _phone_national_check(m: re.Match[str]) -> tuple[int, int] | None:
    n = sum(c.isdigit() for c in m.group())
    return m.span() if 10 <= n <= 11 else None


# --- IP -----------------------------------------------------------------------------------------
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.])(?<!\.)(?:{_OCTET}\.){{3}}{_OCTET}(?![\w]|\.\d)")
_VERSION_CONTEXT = re.compile(
    r"(?i:(?:\bv|\bversion|\bver\.?|\brelease|\bbuild|\bfirmware|\bpatch|\bsdk|\bupgrade(?:d)? to"
    r"|\bupdate(?:d)? to|\brelease[sd]?|\bsection|\bchapter|\bclause|§|==|>=|<=|~=)\s?:?\s?)$"
)


def _ipv4_check(m: re.Match[str]) -> tuple[int, int] | None:
    # "v1.2.3.4", "version 10.0.0.1": a version string, never an address (the eval set labels it so).
    before = m.string[max(0, m.start() - 20):m.start()]
    return None if _VERSION_CONTEXT.search(before) else m.span()


_IPV6 = re.compile(r"(?<![\w:.])(?=[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:)[0-9A-Fa-f:.]{3,45}(?:%[\w]{1,16})?(?![\w:])")


def _ipv6_check(m: re.Match[str]) -> tuple[int, int] | None:
    raw = m.group()
    end = m.end()
    while raw.endswith("."):
        raw, end = raw[:-1], end - 1
    addr = raw.split("%", 1)[0]
    if not any(c.isdigit() for c in addr):
        return None
    try:
        ipaddress.IPv6Address(addr)
    except ValueError:
        return None
    return m.start(), end


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


# --- how the rules are run ----------------------------------------------------------------------
#
# Running every regex over the whole text costs one pass each, and most patterns begin with a class
# (a digit, a letter) that occurs everywhere. So the digit-led structured patterns share one pass (one
# alternation behind one lookbehind), and the rest run only in a window around a cheap anchor found by a
# literal-led regex ('@' for an email, ':' for IPv6, a keyword for the context rules).

Check = Callable[[re.Match[str]], tuple[int, int] | None]
Finder = Callable[[str, str | None], Iterator[re.Match[str]]]


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


_EMAIL_LOCAL_REVERSED = re.compile(r"[A-Za-z0-9._%+-]{1,65}")


def _email_finder(text: str, low: str | None) -> Iterator[re.Match[str]]:
    """Each '@' once: the local part is found by one match on the reversed text, then one forward match."""
    rev: str | None = None
    n = len(text)
    end = 0
    for a in _AT.finditer(text):
        g = a.start()
        if g < end or g == 0:
            continue
        if rev is None:
            rev = text[::-1]
        local = _EMAIL_LOCAL_REVERSED.match(rev, n - g)
        if local is None or local.end() - local.start() > 64:
            continue
        start = g - (local.end() - local.start())
        while start < g and not text[start].isalnum():
            start += 1
        m = _EMAIL.match(text, start, min(n, g + 600))
        if m:
            end = m.end()
            yield m


@dataclass(frozen=True)
class Rule:
    entity: str
    find: Finder
    score: float
    check: Check | None = None  # -> the span to keep, or None


_O = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# One pass for the digit-led patterns; each group names its entity and the branch order breaks ties.
_DIGITS = re.compile(
    r"\d(?<![\w.,/+(-].)(?:"
    r"(?P<card>(?<=[2-6])\d{3}(?P<s1>[ -]?)\d{4}(?P=s1)\d{4}(?P=s1)\d{1,7}(?!\d|[.,-]\d)"
    r"|(?<=3)[47]\d{2}(?P<s2>[ -]?)\d{6}(?P=s2)\d{5}(?!\d|[.,-]\d)|(?<=[2-6])\d{12,18}(?!\d|[.,-]\d))"
    r"|(?P<ssn>(?<=[0-8])\d{2}-\d{2}-\d{4}(?![\d-]|\.\d))"
    rf"|(?P<ip>\d{{0,2}}(?<!\d{{4}})(?<!0\d)(?<!0\d\d)(?<![3-9]\d\d)(?<!2[6-9]\d)(?<!25[6-9])\.{_O}\.{_O}\.{_O}(?![\w]|\.\d))"
    r"|(?P<phone>\d{2}[-. ]\d{3}[-. ]\d{4}(?![\w]|[.-]\d)"
    r"|(?<=0)0[1-9]\d{0,2}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){2,6}(?![\w]|[.-]\d)"
    r"|(?<=0)[1-9]\d{0,4}(?:[ -]\d{2,6}){1,4}(?![\w]|[.,/:-]\d))"
    r")"
)
_PHONE_PLUS = re.compile(
    r"\+(?<![\w+].)[1-9]\d{0,2}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){2,6}(?![\w]|[.-]\d)"
)
_PHONE_PAREN = re.compile(r"\((?<![\w+(-].)\d{3}\) ?\d{3}[-. ]\d{4}(?![\w]|[.-]\d)")


def _digits_finder(text: str, lower: str | None) -> Iterator[re.Match[str]]:
    return _DIGITS.finditer(text)


def _ssn_ok(raw: str) -> bool:
    d = raw.replace("-", "").replace(" ", "")
    return not (d[:3] in ("000", "666") or d[0] == "9" or d[3:5] == "00" or d[5:] == "0000")


def _digits_candidates(text: str, wanted: frozenset[str]) -> Iterator[Candidate]:
    # Hot path: one call per digit-led match of the whole text, so it stays lean.
    want_card, want_ssn, want_ip, want_phone = ("card" in wanted, "ssn" in wanted, "ip" in wanted,
                                                "phone" in wanted)
    for m in _DIGITS.finditer(text):
        raw = m.group()
        if m.group("card") is not None:
            # the backreferences keep one separator kind, so stripping both is enough
            if want_card and luhn_ok(raw.replace(" ", "").replace("-", "")):
                yield "card", m.start(), m.end(), 0.98
        elif m.group("ssn") is not None:
            if want_ssn and _ssn_ok(raw):
                yield "ssn", m.start(), m.end(), 0.9
        elif m.group("ip") is not None:
            if want_ip and _ipv4_check(m):
                yield "ip", m.start(), m.end(), 0.9
        elif want_phone:
            n = sum(map(str.isdigit, raw))
            national = raw[0] == "0" and raw[1] != "0"
            if (10 <= n <= 11) if national else (8 <= n <= 15):
                yield "phone", m.start(), m.end(), 0.6 if national else 0.8


def _ssn_context_check(m: re.Match[str]) -> tuple[int, int] | None:
    return m.span("v") if _ssn_ok(m.group("v")) else None


_AT = re.compile("@")
_COLON = re.compile(r":[0-9A-Fa-f:]")
_SSN_ANCHOR = re.compile(r"[Ss](?:[Ss][Nn#]|ocial|OCIAL)")
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
    Rule("email", _email_finder, 0.99),
    Rule("iban", _scan(_IBAN), 0.99, _iban_check),
    Rule("ssn", _at_anchor(_SSN_CONTEXT, _SSN_ANCHOR), 0.95, _ssn_context_check),
    Rule("phone", _scan(_PHONE_PLUS), 0.85, _phone_check),
    Rule("phone", _scan(_PHONE_PAREN), 0.8, _phone_check),
    Rule("ip", _anchored(_IPV6, _COLON, 45, 65), 0.9, _ipv6_check),
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

STRUCTURED = frozenset({"email", "phone", "card", "iban", "ssn", "ip"})
_DIGIT_ENTITIES = frozenset({"card", "ssn", "ip", "phone"})


def run_rules(text: str, entities: frozenset[str]) -> Iterator[Candidate]:
    lower = None
    if entities - STRUCTURED:
        low = text.lower()
        lower = low if len(low) == len(text) else None  # a few non-ASCII letters change length
    if entities & _DIGIT_ENTITIES:
        yield from _digits_candidates(text, entities)
    for rule in RULES:
        if rule.entity not in entities:
            continue
        check = rule.check or _whole
        for m in rule.find(text, lower):
            span = check(m)
            if span is not None and span[1] > span[0]:
                yield rule.entity, span[0], span[1], rule.score
