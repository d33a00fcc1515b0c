"""Unit tests for shipyard.guard.policy: each check, the text evasions it sees through, languages, streams."""

from __future__ import annotations

import threading

import pytest

from shipyard.guard import policy
from shipyard.guard.policy import (
    LANGUAGES,
    OVERLAP,
    Policy,
    Violation,
    build_rule,
    compile_pattern,
)


def one(where: str = "output", **check: object) -> Policy:
    return Policy([build_rule("r", where, **check)])


def hits(p: Policy, text: str, where: str = "output", tools: list[str] | None = None) -> list[str]:
    return [v.rule for v in p.evaluate(text, where, tools)]


def test_the_public_surface():
    assert set(policy.__all__) == {
        "ACTIONS", "CHECKS", "LANGUAGES", "LANGUAGE_SAMPLE", "MIN_ALLOWED_SHARE", "MIN_CONFIDENCE", "MIN_LETTERS", "OUTPUT_ONLY",
        "OVERLAP", "Policy", "PolicyStream", "Rule", "Violation", "build_rule", "compile_pattern", "fold",
    }


# ------------------------------------------------------------------------------------------------ match


def test_match_is_a_regex_with_its_own_case_rules():
    p = one(match="(?i)you should sue")
    assert hits(p, "Honestly, YOU SHOULD SUE them.") == ["r"]
    assert hits(p, "You should not worry.") == []
    assert hits(one(match="ACME-[0-9]{4}"), "ticket acme-1234") == []  # case-sensitive without (?i)


@pytest.mark.parametrize("text", [
    "you should s\u200bue them",          # zero-width space
    "you should su\u200de them",          # zero-width joiner
    "you should \ufeffsue them",          # BOM
    "ｙｏｕ ｓｈｏｕｌｄ ｓｕｅ them",       # fullwidth
    "you\u00a0should sue",                # no-break space -> space (NFKC)
])
def test_match_sees_through_hidden_and_fullwidth_characters(text):
    assert hits(one(match="(?i)you should sue"), text) == ["r"]


def test_a_catastrophic_pattern_runs_in_linear_time():
    # (a+)+$ backtracks exponentially in a backtracking engine; RE2 answers at once. Run in a thread so a
    # regression fails the test instead of hanging the suite.
    p = one(match="(a+)+$")
    result: list[list[str]] = []
    worker = threading.Thread(target=lambda: result.append(hits(p, "a" * 50_000 + "!")), daemon=True)
    worker.start()
    worker.join(30)
    assert result == [[]]
    assert hits(p, "a" * 50_000) == ["r"]


@pytest.mark.parametrize(("pattern", "reason"), [
    ("(?<=a)b", "no lookaround"),
    (r"(a)\1", "no lookaround or backreferences"),
    ("(unclosed", "missing )"),
])
def test_an_invalid_or_unsupported_pattern_is_a_value_error(pattern, reason):
    with pytest.raises(ValueError, match="not a valid RE2 regular expression") as info:
        compile_pattern(pattern)
    assert reason in str(info.value)


# ----------------------------------------------------------------------------------------- deny_topics


@pytest.mark.parametrize("text", [
    "Can I SUE my landlord?",            # case
    "can i s\u200bue my landlord",       # zero-width
    "can i ｓｕｅ my landlord",           # fullwidth
    "can i 5ue my landlord",             # leetspeak
    "can i s-u-e my landlord",           # spelled out
    "filing a Class\n  Action today",   # a phrase across a line break
    "a clàss actión",                    # accents
])
def test_deny_topics_see_through_evasions(text):
    p = one("input", deny_topics=["sue", "class action"])
    assert hits(p, text, "input") == ["r"]


@pytest.mark.parametrize("text", ["I will pursue this", "suede shoes", "issue resolved", "ésue", "sue_x"])
def test_deny_topics_match_whole_words_only(text):
    assert hits(one("input", deny_topics=["sue"]), text, "input") == []


# ---------------------------------------------------------------------- require, max_chars, allowed_tools


def test_require_ignores_case_spacing_and_hidden_characters():
    p = one(require="not financial advice")
    assert hits(p, "Buy low. This is NOT\n financial   advice.") == []
    assert hits(p, "Buy low. This is not fin\u200bancial advice.") == []
    assert hits(p, "Buy low.") == ["r"]


def test_max_chars_counts_the_answer():
    p = one(max_chars=10)
    assert hits(p, "x" * 10) == []
    [v] = p.evaluate("x" * 11, "output")
    assert v.detail == {"chars": 11, "max_chars": 10}


def test_allowed_tools_judges_the_functions_an_answer_calls():
    p = one(allowed_tools=["lookup_order"])
    assert hits(p, "", tools=["lookup_order"]) == []
    [v] = p.evaluate("", "output", ["lookup_order", "refund_everything"])
    assert v.detail == {"tool": "refund_everything"}
    assert hits(p, "no tools known") == []  # tools=None: not judged
    assert hits(one(allowed_tools=[]), "", tools=["anything"]) == ["r"]
    [odd] = one(allowed_tools=[]).evaluate("", "output", ["my card is 4111 1111"])
    assert odd.detail == {}  # a "name" that is not one is not repeated


def test_rules_apply_where_they_say():
    p = Policy([build_rule("in", "input", match="x"), build_rule("out", "output", match="x"),
                build_rule("both", "both", match="x")])
    assert hits(p, "x", "input") == ["in", "both"]
    assert hits(p, "x", "output") == ["out", "both"]
    assert p.applies("input") and p.applies("output")
    assert not Policy([build_rule("o", "output", max_chars=3)]).applies("input")


def test_a_violation_carries_the_rule_never_the_text():
    p = Policy([build_rule("no-legal-advice", "output", match="(?i)you should sue", severity="critical")])
    [v] = p.evaluate("Frankly you should sue them", "output")
    assert v == Violation("no-legal-advice", "match", "critical", "block", "output", {})


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"match": "a", "require": "b"}, "exactly one check"),
    ({}, "exactly one check"),
    ({"require": "x", "where": "input"}, "needs on: output"),
    ({"allowed_tools": ["x"], "where": "both"}, "needs on: output"),
    ({"max_chars": 0}, "at least 1"),
    ({"languages": ["xx"]}, "ISO 639-1"),
    ({"deny_topics": ["\u200b"]}, "at least one"),
    ({"match": "x", "action": "explode"}, "action must be"),
])
def test_rules_that_cannot_work_are_refused(kwargs, message):
    where = kwargs.pop("where", "output")
    with pytest.raises(ValueError, match=message):
        build_rule("r", where, **kwargs)


def test_rule_names_are_unique():
    with pytest.raises(ValueError, match="unique"):
        Policy([build_rule("a", "input", match="x"), build_rule("a", "output", match="y")])


# ------------------------------------------------------------------------------------------- languages

SENTENCES = [
    ("en", "I was charged twice for my subscription this month."),
    ("de", "Können Sie mir helfen, mein Passwort zurückzusetzen?"),
    ("fr", "La livraison est arrivée en retard et le carton était abîmé."),
    ("es", "¿Puede ayudarme a restablecer la contraseña de mi cuenta?"),
    ("it", "La consegna è arrivata in ritardo e la scatola era danneggiata."),
    ("pt", "Vocês podem me ajudar a redefinir a senha da minha conta?"),
    ("nl", "De levering kwam te laat en de doos was beschadigd."),
    ("pl", "Czy możecie mi pomóc zresetować hasło do konta?"),
    ("ru", "Помогите, пожалуйста, сбросить пароль от моей учётной записи."),
    ("tr", "Hesabımın şifresini sıfırlamama yardım edebilir misiniz?"),
    ("ja", "アカウントのパスワードをリセットするのを手伝ってください。"),
    ("zh", "这个月我的订阅被重复扣费了两次，请帮我退还多扣的费用。"),
]


@pytest.mark.parametrize(("lang", "text"), SENTENCES)
def test_languages_tells_the_language(lang, text):
    assert hits(one("both", languages=[lang]), text) == []
    other = "en" if lang != "en" else "de"
    [v] = one("both", languages=[other]).evaluate(text, "output")
    assert v.detail == {"language": lang}


def test_languages_leaves_short_uncertain_and_close_texts_alone():
    english = one("both", languages=["en"])
    assert hits(english, "Danke schön!") == []  # under 20 letters: not judged
    assert hits(english, "SKU-4411-XL, SKU-4412-M, SKU-9981-S, SKU-0001") == []  # no language it is sure of
    shouted = "Honestly, YOU SHOULD SUE THEM AND GET YOUR MONEY BACK."  # capitals are still English
    assert hits(english, shouted) == []
    assert one("both", languages=["de"]).evaluate(shouted, "output")[0].detail == {"language": "en"}
    # Indonesian and Malay are close: the model leans to Malay, but Indonesian keeps its share.
    assert hits(one("both", languages=["id"]), "Saya ditagih dua kali untuk langganan saya bulan ini.") == []
    assert hits(english, "Ich wurde diesen Monat zweimal für mein Abonnement belastet.") == ["r"]


def test_an_allowed_language_admits_its_varieties():
    from shipyard.guard.policy import _VARIETY_OF

    assert set(_VARIETY_OF.values()) <= LANGUAGES


def test_the_language_list_is_the_models():
    from shipyard.guard.policy import _identifier

    assert LANGUAGES == {code for code in _identifier().labels if len(code) == 2}


# ---------------------------------------------------------------------------------------------- streams


def feed_all(p: Policy, pieces: list[str]) -> list[tuple[int, str]]:
    """(index of the piece, rule) for each violation as the pieces arrive, then at the finish (index -1)."""
    scan = p.stream()
    out = [(i, v.rule) for i, piece in enumerate(pieces) for v in scan.feed(piece)]
    return out + [(-1, v.rule) for v in scan.finish()]


def test_a_phrase_split_across_chunks_is_caught_at_the_chunk_that_completes_it():
    p = one(match="(?i)you should sue")
    assert feed_all(p, ["Well, you sh", "ould s", "ue them.", " Bye."]) == [(2, "r")]
    topics = one("output", deny_topics=["class action"])
    assert feed_all(topics, ["join the cla", "ss act", "ion now"]) == [(2, "r")]


def test_a_stream_reports_each_rule_once():
    p = Policy([build_rule("flag", "output", match="x", action="flag")])
    assert feed_all(p, ["x", "x", "x"]) == [(0, "flag")]


def test_a_cut_in_the_middle_of_a_stream_is_no_start_or_word_boundary():
    # The second piece is checked with the last OVERLAP characters before it: here they start with
    # "Sure" (and "sue "), which is neither the start of the answer nor a word.
    first = "x" * 1000 + "Sure" + "y" * (OVERLAP - 3)
    assert feed_all(one(match="^Sure"), [first, "z"]) == []
    assert feed_all(one(match="^Sure"), ["Sure", "ly"]) == [(0, "r")]
    assert feed_all(one("output", deny_topics=["sue"]), ["x" * 1000 + "pursue " + "y" * (OVERLAP - 3), "z"]) == []


def test_stream_checks_that_need_the_whole_answer_run_at_its_end():
    p = Policy([build_rule("disclaimer", "output", require="not financial advice", action="flag"),
                build_rule("english", "output", languages=["en"]),
                build_rule("long", "output", match="begin.{300,}end")])
    assert feed_all(p, ["This is not ", "financial advice, ", "just an opinion about the weather today."]) == []
    text = ["Das ist keine Finanzberatung, ", "sondern nur eine Meinung zum Wetter. ", "begin" + "x" * 400, "end"]
    assert feed_all(p, text) == [(-1, "disclaimer"), (-1, "english"), (-1, "long")]


def test_max_chars_on_a_stream_fires_at_the_chunk_that_crosses_it():
    assert feed_all(one(max_chars=10), ["12345", "67890", "1", "2"]) == [(2, "r")]


def test_tool_calls_on_a_stream():
    scan = one(allowed_tools=["lookup"]).stream()
    assert scan.feed("", ["lookup"]) == []
    [v] = scan.feed("", ["wire_money"])
    assert v.detail == {"tool": "wire_money"}
