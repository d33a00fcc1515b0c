"""Unit tests for shipyard.config: YAML with lines, ${ENV} interpolation, the typed model and its errors.

No network, no sleeping: everything is parsed from strings (or tmp files for ``load_config``).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shipyard
from shipyard.config import Config, ConfigError, default_config_path, load_config, parse_config
from shipyard.config._yaml import YamlProblem, interpolate, line_for, load_yaml

FILE = "conf/shipyard.yaml"

EXAMPLE = r"""storage: sqlite:///shipyard.db
providers:
  primary:
    kind: openai
    base_url: ${PRIMARY_BASE_URL:-http://127.0.0.1:9101/v1}
    api_key: ${PRIMARY_API_KEY:-none}
  backup:
    kind: openai
    base_url: ${BACKUP_BASE_URL:-http://127.0.0.1:9102/v1}
    api_key: none
features:
  support-triage:
    owners: {incidents: oncall-support, changes: ml-team, evaluation: ml-team, risk: ana}
    deadline_s: 8
    route:
      - {provider: primary, model: gpt-4o-mini, timeout_s: 2, retries: 2}
      - {provider: backup, model: small-model, timeout_s: 4, retries: 1}
    circuit_breaker: {failure_ratio: 0.5, min_calls: 10, window_s: 30, cooldown_s: 15}
    fallback_response: {content: "We could not process this automatically; a person will follow up."}
  extract-intent:
    owners: {incidents: oncall-support, changes: ml-team, evaluation: ml-team, risk: ana}
    input_schema:
      type: object
      required: [text]
      properties: {text: {type: string, minLength: 1, maxLength: 4000}}
    output_schema:
      type: object
      required: [category]
      properties: {category: {enum: [billing, technical, account, other]}}
    prompt:
      - {role: system, content: "Classify the customer message. Answer only JSON: {\"category\": \"...\"}"}
      - {role: user, content: "{{ text }}"}
    route:
      - {provider: primary, model: gpt-4o-mini, timeout_s: 2, retries: 1}
    fallback_response: {category: other}
"""

# A small valid config to mutate in error tests. Line numbers are found with line_of(), not hard-coded.
MINIMAL = """\
providers:
  p:
    kind: openai
    base_url: http://127.0.0.1:9/v1
features:
  f:
    owners: {incidents: a, changes: b, evaluation: c, risk: d}
    route:
      - {provider: p, model: m}
"""


# ---------------------------------------------------------------------------------------------- helpers


def line_of(text: str, needle: str, nth: int = 0) -> int:
    """The 1-based line of the nth line containing ``needle``."""
    hits = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) > nth, f"{needle!r} not found in the test config"
    return hits[nth]


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} must occur exactly once in the test config"
    return text.replace(old, new)


def problems(text: str, env: dict[str, str] | None = None, file: str = FILE) -> list[tuple[Any, ...]]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, file=file, env={} if env is None else env)
    err = info.value
    assert err.problems, "a ConfigError must list at least one problem"
    # The message is the formatted problems, so the CLI shows file:line: field: message.
    assert str(err) == "\n".join(ConfigError.format_problem(*p) for p in err.problems)
    return err.problems


def one_problem(text: str, env: dict[str, str] | None = None, file: str = FILE) -> tuple[str, int | None, str, str]:
    found = problems(text, env, file)
    assert len(found) == 1, found
    return found[0]


# ---------------------------------------------------------------------------------------------- the example


def test_issue_example_parses_with_env_defaults() -> None:
    config = parse_config(EXAMPLE, file=FILE, env={})
    assert isinstance(config, Config)
    assert config.file == FILE
    assert config.model.storage == "sqlite:///shipyard.db"
    assert set(config.providers) == {"primary", "backup"}
    primary, backup = config.providers["primary"], config.providers["backup"]
    assert primary.kind == backup.kind == "openai"
    assert primary.settings == {"base_url": "http://127.0.0.1:9101/v1", "api_key": "none"}
    assert backup.settings == {"base_url": "http://127.0.0.1:9102/v1", "api_key": "none"}

    assert list(config.features) == ["support-triage", "extract-intent"]
    triage = config.features["support-triage"]
    assert triage.owners.incidents == "oncall-support"
    assert triage.owners.risk == "ana"
    assert triage.deadline_s == 8
    assert [(r.provider, r.model, r.timeout_s, r.retries) for r in triage.route] == [
        ("primary", "gpt-4o-mini", 2, 2),
        ("backup", "small-model", 4, 1),
    ]
    assert triage.route[0].label == "primary/gpt-4o-mini"
    cb = triage.circuit_breaker
    assert (cb.failure_ratio, cb.min_calls, cb.window_s, cb.cooldown_s) == (0.5, 10, 30, 15)
    assert cb.half_open_probes == 1 and cb.enabled
    assert triage.fallback_response == {
        "content": "We could not process this automatically; a person will follow up."
    }
    assert triage.input_schema is None and triage.output_schema is None and triage.prompt is None

    intent = config.features["extract-intent"]
    assert intent.input_schema == {
        "type": "object",
        "required": ["text"],
        "properties": {"text": {"type": "string", "minLength": 1, "maxLength": 4000}},
    }
    assert intent.output_schema["properties"]["category"]["enum"] == ["billing", "technical", "account", "other"]
    assert [(m.role, m.content) for m in intent.prompt or []] == [
        ("system", 'Classify the customer message. Answer only JSON: {"category": "..."}'),
        ("user", "{{ text }}"),
    ]
    assert intent.fallback_response == {"category": "other"}
    # defaults filled in
    assert intent.deadline_s == 30.0
    assert intent.backoff.base_s == 0.1 and intent.repair is True
    assert config.model.server.port == 8787


def test_issue_example_uses_env_values_when_set() -> None:
    env = {
        "PRIMARY_BASE_URL": "https://api.example.com/v1",
        "PRIMARY_API_KEY": "sk-test-123",
        "BACKUP_BASE_URL": "http://10.0.0.2:8000/v1",
    }
    config = parse_config(EXAMPLE, file=FILE, env=env)
    assert config.providers["primary"].settings == {"base_url": "https://api.example.com/v1", "api_key": "sk-test-123"}
    assert config.providers["backup"].settings["base_url"] == "http://10.0.0.2:8000/v1"


def test_empty_env_value_uses_the_colon_dash_default() -> None:
    config = parse_config(EXAMPLE, file=FILE, env={"PRIMARY_API_KEY": ""})
    assert config.providers["primary"].settings["api_key"] == "none"


def test_example_line_map_points_at_the_right_lines() -> None:
    config = parse_config(EXAMPLE, file=FILE, env={})
    lines = config.lines
    assert lines[("storage",)] == 1
    assert lines[("providers", "primary", "base_url")] == line_of(EXAMPLE, "${PRIMARY_BASE_URL")
    assert lines[("features", "support-triage", "route", 1)] == line_of(EXAMPLE, "provider: backup")
    assert lines[("features", "support-triage", "route", 1, "model")] == line_of(EXAMPLE, "provider: backup")
    assert lines[("features", "extract-intent", "prompt", 1, "content")] == line_of(EXAMPLE, "{{ text }}")
    # Config.problem points at a path; deeper paths fall back to the nearest known ancestor.
    err = config.problem(("features", "extract-intent", "route", 0, "nope", 3), "boom")
    assert err.problems == [
        (FILE, line_of(EXAMPLE, "provider: primary, model: gpt-4o-mini, timeout_s: 2, retries: 1"),
         "features.extract-intent.route.0.nope.3", "boom")
    ]


def test_base_dir_is_the_config_files_folder(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "shipyard.yaml"
    path.parent.mkdir()
    path.write_text(MINIMAL)
    assert load_config(path, env={}).base_dir == path.parent.resolve()


# ---------------------------------------------------------------------------------------------- ${ENV}


def test_missing_env_var_without_default_names_file_line_field_and_variable() -> None:
    text = edit(EXAMPLE, "${PRIMARY_API_KEY:-none}", "${PRIMARY_API_KEY}")
    file, line, field, message = one_problem(text, env={"UNRELATED": "x"})
    assert file == FILE
    assert line == line_of(text, "${PRIMARY_API_KEY}")
    assert field == "providers.primary.api_key"
    assert "PRIMARY_API_KEY" in message and "not set" in message
    assert "${PRIMARY_API_KEY:-default}" in message  # tells how to give a default


def test_missing_env_var_in_a_list_item_names_the_index() -> None:
    # (inside a flow mapping an unquoted ${...} is a YAML syntax error, so block style here)
    text = edit(MINIMAL, "      - {provider: p, model: m}\n", "      - provider: p\n        model: ${MODEL}\n")
    file, line, field, message = one_problem(text)
    assert (file, line, field) == (FILE, line_of(text, "${MODEL}"), "features.f.route.0.model")
    assert "MODEL" in message


def test_env_value_is_used_when_set_even_if_a_default_exists() -> None:
    value, _ = load_yaml("a: ${X:-d}\nb: ${X-d}\n", {"X": "set"})
    assert value == {"a": "set", "b": "set"}


def test_colon_dash_vs_dash_defaults() -> None:
    text = "a: ${U:-d1}\nb: ${U-d2}\nc: ${E:-d3}\nd: ${E-d4}\n"
    value, _ = load_yaml(text, {"E": ""})
    # unset: both forms use the default; empty: only ":-" does (as in the shell)
    assert value == {"a": "d1", "b": "d2", "c": "d3", "d": ""}


def test_empty_default() -> None:
    value, _ = load_yaml("a: ${U:-}\nb: '${U:-}'\n", {})
    assert value == {"a": "", "b": ""}


def test_double_dollar_is_a_literal_dollar() -> None:
    value, _ = load_yaml("a: price $$5\nb: '$${NOT_A_VAR}'\nc: $$$$\nd: $$${X}\n", {"X": "x"})
    assert value == {"a": "price $5", "b": "${NOT_A_VAR}", "c": "$$", "d": "$x"}


def test_lone_dollar_signs_are_left_alone() -> None:
    value, _ = load_yaml("a: costs $5\nb: '$ {X}'\nc: ${unterminated\n", {})
    assert value == {"a": "costs $5", "b": "$ {X}", "c": "${unterminated"}


def test_interpolation_in_the_middle_of_a_string() -> None:
    value, _ = load_yaml("url: http://${HOST}:${PORT:-80}/v1\n", {"HOST": "h"})
    assert value == {"url": "http://h:80/v1"}


def test_substituted_values_are_not_interpolated_again() -> None:
    value, _ = load_yaml("a: ${X}\n", {"X": "${Y}$$", "Y": "no"})
    assert value == {"a": "${Y}$$"}


def test_unquoted_env_number_becomes_an_int_quoted_stays_a_string() -> None:
    text = "a: ${PORT}\nb: '${PORT}'\nc: \"${PORT}\"\nd: ${F}\ne: ${B}\nf: '${B}'\n"
    value, _ = load_yaml(text, {"PORT": "9000", "F": "1.5", "B": "true"})
    assert value == {"a": 9000, "b": "9000", "c": "9000", "d": 1.5, "e": True, "f": "true"}
    assert type(value["a"]) is int and type(value["b"]) is str and type(value["e"]) is bool


def test_unquoted_env_port_in_a_config_is_an_int() -> None:
    text = "server:\n  port: ${PORT}\n" + MINIMAL
    assert parse_config(text, file=FILE, env={"PORT": "9999"}).model.server.port == 9999


def test_quoted_env_number_stays_a_string_in_a_config() -> None:
    text = edit(MINIMAL, "      - {provider: p, model: m}\n", '      - provider: p\n        model: "${MODEL}"\n')
    config = parse_config(text, file=FILE, env={"MODEL": "4"})
    assert config.features["f"].route[0].model == "4"


def test_unquoted_env_number_in_a_string_field_is_a_type_error() -> None:
    # as if the number had been typed in its place: `model: 4` is not a string either
    text = edit(MINIMAL, "      - {provider: p, model: m}\n", "      - provider: p\n        model: ${MODEL}\n")
    file, line, field, message = one_problem(text, env={"MODEL": "4"})
    assert (line, field) == (line_of(text, "${MODEL}"), "features.f.route.0.model")
    assert "string" in message


@pytest.mark.parametrize("raw", ["a: b", "{a: 1}", "[1, 2]", "- x", "null", "~", "", "key: value\nother: 2", "&a x"])
def test_env_values_never_become_structures_or_null(raw: str) -> None:
    value, _ = load_yaml("v: ${V}\nq: '${V}'\n", {"V": raw})
    assert value == {"v": raw, "q": raw}


def test_env_value_that_looks_like_yaml_cannot_inject_keys() -> None:
    text = edit(MINIMAL, "    base_url: http://127.0.0.1:9/v1\n", "    base_url: ${URL}\n")
    config = parse_config(text, file=FILE, env={"URL": "http://x\n    api_key: injected"})
    assert config.providers["p"].settings == {"base_url": "http://x\n    api_key: injected"}


def test_interpolation_applies_to_the_example_in_block_sequences() -> None:
    value, _ = load_yaml("l:\n  - ${A}\n  - ${B:-2}\n", {"A": "1"})
    assert value == {"l": [1, 2]}


def test_load_yaml_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPYARD_TEST_VAR_X", "from-os")
    assert load_yaml("a: ${SHIPYARD_TEST_VAR_X}\n")[0] == {"a": "from-os"}
    monkeypatch.delenv("SHIPYARD_TEST_VAR_X")
    with pytest.raises(YamlProblem):
        load_yaml("a: ${SHIPYARD_TEST_VAR_X}\n")


def test_interpolate_reports_line_and_field() -> None:
    with pytest.raises(YamlProblem) as info:
        interpolate("x ${NOPE} y", {}, line=7, field="a.b")
    assert (info.value.line, info.value.field) == (7, "a.b")
    assert "NOPE" in info.value.message


# ---------------------------------------------------------------------------------------------- model errors


def test_unknown_top_level_key() -> None:
    text = MINIMAL + "extra: 1\n"
    assert one_problem(text) == (FILE, line_of(text, "extra:"), "extra", "unknown key (check its spelling and indentation)")


def test_unknown_key_in_a_feature() -> None:
    text = edit(MINIMAL, "    route:\n", "    dedline_s: 3\n    route:\n")
    file, line, field, message = one_problem(text)
    assert (file, line, field) == (FILE, line_of(text, "dedline_s"), "features.f.dedline_s")
    assert "unknown key" in message


def test_unknown_key_in_a_route() -> None:
    text = edit(MINIMAL, "model: m}", "model: m, timout_s: 3}")
    file, line, field, message = one_problem(text)
    assert (file, line, field) == (FILE, line_of(text, "timout_s"), "features.f.route.0.timout_s")
    assert "unknown key" in message


def test_unknown_key_deep_in_the_example() -> None:
    text = edit(EXAMPLE, "cooldown_s: 15}", "cooldown_s: 15, half_open: 2}")
    file, line, field, message = one_problem(text)
    assert (line, field) == (line_of(text, "half_open: 2"), "features.support-triage.circuit_breaker.half_open")
    assert "unknown key" in message


def test_unknown_key_in_server() -> None:
    text = "server:\n  host: 0.0.0.0\n  prot: 80\n" + MINIMAL
    assert one_problem(text)[1:3] == (3, "server.prot")


def test_wrong_type() -> None:
    text = edit(MINIMAL, "model: m}", "model: m, timeout_s: soon}")
    file, line, field, message = one_problem(text)
    assert (file, line, field) == (FILE, line_of(text, "soon"), "features.f.route.0.timeout_s")
    assert "number" in message and "'soon'" in message


def test_wrong_type_a_mapping_where_a_list_belongs() -> None:
    text = edit(MINIMAL, "      - {provider: p, model: m}\n", "      provider: p\n      model: m\n")
    file, line, field, message = one_problem(text)
    assert (line, field) == (line_of(text, "route:"), "features.f.route")
    assert "list" in message


def test_wrong_type_a_string_where_a_mapping_belongs() -> None:
    text = edit(MINIMAL, "{incidents: a, changes: b, evaluation: c, risk: d}", "ana")
    file, line, field, message = one_problem(text)
    assert (line, field) == (line_of(text, "owners: ana"), "features.f.owners")


def test_out_of_range_value() -> None:
    text = edit(MINIMAL, "model: m}", "model: m, retries: 11}")
    file, line, field, message = one_problem(text)
    assert (line, field) == (line_of(text, "retries: 11"), "features.f.route.0.retries")
    assert "10" in message


def test_bad_prompt_role() -> None:
    text = MINIMAL + "    prompt:\n      - {role: robot, content: hi}\n"
    file, line, field, message = one_problem(text)
    assert (line, field) == (line_of(text, "robot"), "features.f.prompt.0.role")


def test_missing_owners() -> None:
    text = edit(MINIMAL, "    owners: {incidents: a, changes: b, evaluation: c, risk: d}\n", "")
    assert one_problem(text) == (FILE, line_of(text, "  f:"), "features.f.owners", "no owners: every feature names an owner for each of its four duties, e.g. owners: {incidents: oncall, changes: ml-team, evaluation: ml-team, risk: ana}")


def test_missing_one_owner() -> None:
    text = edit(MINIMAL, ", risk: d}", "}")
    assert one_problem(text) == (FILE, line_of(text, "owners:"), "features.f.owners.risk", "the risk duty (guard and policy alerts) has no owner: name one, or a contact {name: ..., webhook: https://...} that gets its alerts")


def test_an_empty_owner_owns_nothing() -> None:
    text = edit(MINIMAL, "risk: d}", "risk: ' '}")
    assert one_problem(text)[2:] == ("features.f.owners.risk", "an empty name owns nothing: name the person or team "
                                     "that owns this duty (got ' ')")


def test_missing_route() -> None:
    text = edit(MINIMAL, "    route:\n      - {provider: p, model: m}\n", "")
    assert one_problem(text) == (FILE, line_of(text, "  f:"), "features.f.route", "required key is missing")


def test_missing_model_in_a_route() -> None:
    text = edit(MINIMAL, "{provider: p, model: m}", "{provider: p}")
    assert one_problem(text) == (FILE, line_of(text, "{provider: p}"), "features.f.route.0.model", "required key is missing")


def test_empty_route_list() -> None:
    text = edit(MINIMAL, "    route:\n      - {provider: p, model: m}\n", "    route: []\n")
    file, line, field, message = one_problem(text)
    assert (file, line, field) == (FILE, line_of(text, "route: []"), "features.f.route")
    assert "at least 1" in message


def test_missing_providers_and_features_are_both_reported() -> None:
    found = problems("storage: sqlite:///x.db\n")
    assert {(p[2], p[3]) for p in found} == {
        ("providers", "required key is missing"),
        ("features", "required key is missing"),
    }
    assert all(p[0] == FILE and p[1] == 1 for p in found)


def test_empty_providers_mapping() -> None:
    text = edit(MINIMAL, "providers:\n  p:\n    kind: openai\n    base_url: http://127.0.0.1:9/v1\n", "providers: {}\n")
    found = problems(text)
    assert any(p[2] == "providers" and p[1] == 1 for p in found), found


def test_route_naming_no_provider_lists_known_providers() -> None:
    text = edit(EXAMPLE, "{provider: backup, model: small-model", "{provider: backpu, model: small-model")
    file, line, field, message = one_problem(text)
    assert (file, line, field) == (FILE, line_of(text, "backpu"), "features.support-triage.route.1.provider")
    assert "'backpu'" in message
    assert "known: backup, primary" in message


def test_several_problems_are_reported_together() -> None:
    text = edit(MINIMAL, "model: m}", "model: m, timeout_s: -1, colour: red}") + "bogus: 1\n"
    fields = {p[2] for p in problems(text)}
    assert fields == {"features.f.route.0.timeout_s", "features.f.route.0.colour", "bogus"}


# ---------------------------------------------------------------------------------------------- names, storage


@pytest.mark.parametrize("bad", ["'bad name'", "-f", "'.f'", "f/x", "'é'", "a" * 129])
def test_invalid_feature_names(bad: str) -> None:
    text = edit(MINIMAL, "  f:\n", f"  {bad}:\n")
    file, line, field, message = one_problem(text)
    assert file == FILE
    assert field.startswith("features")
    assert line in (line_of(text, "features:"), line_of(text, f"  {bad}:"))
    assert "must be 1-128 characters" in message


@pytest.mark.parametrize("good", ["f", "F1", "a.b_c-d", "9lives", "a" * 128])
def test_valid_feature_names(good: str) -> None:
    text = edit(MINIMAL, "  f:\n", f"  {good}:\n")
    assert good in parse_config(text, file=FILE, env={}).features


def test_invalid_provider_name() -> None:
    text = MINIMAL.replace("  p:\n", "  'p q':\n").replace("provider: p,", "provider: 'p q',")
    found = problems(text)
    assert any(p[2].startswith("providers") and "'p q'" in p[3] for p in found), found


def test_invalid_name_points_at_the_name_itself() -> None:
    text = edit(MINIMAL, "  f:\n", "  'bad name':\n")
    file, line, field, message = one_problem(text)
    assert line == line_of(text, "bad name")
    assert field == "features.bad name"


def test_invalid_provider_name_error_does_not_leak_the_api_key() -> None:
    text = edit(MINIMAL, "    kind: openai\n", "    kind: openai\n    api_key: ${KEY}\n")
    text = text.replace("  p:\n", "  'p q':\n").replace("provider: p,", "provider: 'p q',")
    found = problems(text, env={"KEY": "sk-live-SECRET"})
    assert not any("sk-live-SECRET" in p[3] for p in found), found


@pytest.mark.parametrize(
    "url",
    ["sqlite:///shipyard.db", "sqlite:////abs/path.db", "sqlite+pysqlite:///x.db", "postgresql://u@h/db",
     "postgresql+psycopg://u:p@h:5432/db"],
)
def test_good_storage_urls(url: str) -> None:
    assert parse_config(f"storage: {url}\n" + MINIMAL, file=FILE, env={}).model.storage == url


@pytest.mark.parametrize("url", ["mysql://u@h/db", "shipyard.db", "sqlite:/x.db", "", "http://x"])
def test_bad_storage_url(url: str) -> None:
    text = f"storage: '{url}'\n" + MINIMAL
    file, line, field, message = one_problem(text)
    assert (file, line, field) == (FILE, 1, "storage")
    assert "sqlite:///" in message and "postgresql://" in message


def test_bad_storage_url_from_env_points_at_the_storage_line() -> None:
    text = MINIMAL + "storage: ${DB}\n"
    assert one_problem(text, env={"DB": "redis://x"})[1:3] == (line_of(text, "storage:"), "storage")


def test_bad_storage_url_error_does_not_leak_the_password() -> None:
    text = "storage: ${DB}\n" + MINIMAL
    file, line, field, message = one_problem(text, env={"DB": "mysql://app:hunter2@db/shipyard"})
    assert "hunter2" not in message


# ---------------------------------------------------------------------------------------------- schemas, prompts, fallbacks


def test_invalid_input_schema() -> None:
    text = edit(EXAMPLE, "properties: {text: {type: string,", "properties: {text: {type: strng,")
    file, line, field, message = one_problem(text)
    assert file == FILE
    assert field == "features.extract-intent.input_schema.properties.text.type"
    assert line == line_of(text, "type: strng")
    assert message.startswith("not a valid JSON Schema:")


def test_invalid_output_schema_top_level() -> None:
    # the example's extract-intent has prompt + fallback_response, like most typed features will
    text = edit(EXAMPLE, "      required: [category]\n", "      required: category\n")
    file, line, field, message = one_problem(text)
    assert field == "features.extract-intent.output_schema.required"
    assert line == line_of(text, "required: category")
    assert "not a valid JSON Schema" in message


def test_invalid_output_schema_without_fallback() -> None:
    text = edit(EXAMPLE, "      required: [category]\n", "      required: category\n")
    text = edit(text, "    fallback_response: {category: other}\n", "")
    file, line, field, message = one_problem(text)
    assert (line, field) == (line_of(text, "required: category"), "features.extract-intent.output_schema.required")
    assert "not a valid JSON Schema" in message


def test_invalid_schema_in_a_feature_without_prompt() -> None:
    text = MINIMAL + "    input_schema: {type: 12}\n"
    file, line, field, message = one_problem(text)
    assert (line, field) == (line_of(text, "input_schema"), "features.f.input_schema.type")


def test_schema_of_wrong_type() -> None:
    text = MINIMAL + "    input_schema: [1]\n"
    assert one_problem(text)[1:3] == (line_of(text, "input_schema"), "features.f.input_schema")


def test_jinja_syntax_error_in_a_prompt() -> None:
    text = edit(EXAMPLE, 'content: "{{ text }}"', 'content: "{{ text "')
    file, line, field, message = one_problem(text)
    assert (file, line, field) == (FILE, line_of(text, '"{{ text "'), "features.extract-intent.prompt.1.content")
    assert message.startswith("template error:")


def test_jinja_block_error_in_a_block_prompt() -> None:
    text = MINIMAL + "    prompt:\n      - role: user\n        content: |\n          {% if x %}\n          open\n"
    file, line, field, message = one_problem(text)
    assert (line, field) == (line_of(text, "content: |"), "features.f.prompt.0.content")
    assert "template error" in message


def test_undefined_names_are_not_a_load_error() -> None:
    # names are checked per request (StrictUndefined at render), not at load
    text = MINIMAL + "    prompt:\n      - {role: user, content: '{{ whatever }}'}\n"
    assert parse_config(text, file=FILE, env={}).features["f"].prompt


def test_fallback_response_must_match_output_schema() -> None:
    text = edit(EXAMPLE, "fallback_response: {category: other}", "fallback_response: {category: misc}")
    file, line, field, message = one_problem(text)
    assert (file, line, field) == (FILE, line_of(text, "category: misc"), "features.extract-intent.fallback_response")
    assert message.startswith("does not match output_schema:")
    assert "misc" in message


def test_fallback_response_missing_a_required_property() -> None:
    text = edit(EXAMPLE, "fallback_response: {category: other}", "fallback_response: {content: sorry}")
    assert "'category' is a required property" in one_problem(text)[3]


def test_fallback_response_must_match_output_schema_without_prompt() -> None:
    # invoke/chat on a feature with output_schema but no prompt still enforce the schema, and hand out
    # fallback_response when no route meets it: a fallback that breaks the schema must fail at load.
    text = MINIMAL + "    output_schema: {type: object, required: [category]}\n    fallback_response: {x: 1}\n"
    file, line, field, message = one_problem(text)
    assert field == "features.f.fallback_response"


def test_all_semantic_problems_are_reported_together() -> None:
    text = edit(EXAMPLE, "fallback_response: {category: other}", "fallback_response: {category: misc}")
    text = edit(text, 'content: "{{ text }}"', 'content: "{{ text "')
    text = edit(text, "maxLength: 4000", "maxLength: -1")
    fields = [p[2] for p in problems(text)]
    assert sorted(fields) == sorted([
        "features.extract-intent.input_schema.properties.text.maxLength",
        "features.extract-intent.prompt.1.content",
        "features.extract-intent.fallback_response",
    ])


# ---------------------------------------------------------------------------------------------- YAML-level errors


def test_duplicate_key_at_top_level() -> None:
    text = MINIMAL + "features: {}\n"
    assert one_problem(text) == (FILE, line_of(text, "features: {}"), "features", "duplicate key")


def test_duplicate_key_nested() -> None:
    text = edit(MINIMAL, "    kind: openai\n", "    kind: openai\n    kind: python\n")
    assert one_problem(text) == (FILE, line_of(text, "kind: python"), "providers.p.kind", "duplicate key")


def test_duplicate_key_in_a_flow_mapping() -> None:
    text = edit(MINIMAL, "model: m}", "model: m, model: n}")
    assert one_problem(text) == (FILE, line_of(text, "model: n"), "features.f.route.0.model", "duplicate key")


def test_duplicate_key_int_and_string_spelling() -> None:
    # keys are compared as strings: 1 and '1' are the same key
    with pytest.raises(YamlProblem, match="duplicate key"):
        load_yaml("a:\n  1: x\n  '1': y\n", {})


def test_merge_keys_are_refused() -> None:
    text = "base: &b {kind: openai}\nproviders:\n  p:\n    <<: *b\n"
    file, line, field, message = one_problem(text)
    assert (line, field) == (4, "providers.p")
    assert "merge" in message


def test_non_string_keys_are_refused() -> None:
    with pytest.raises(YamlProblem, match="keys must be strings") as info:
        load_yaml("a: 1\n[x]: 2\n", {})
    assert info.value.line == 2


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("providers:\n  p: {kind: openai\nfeatures: {}\n", 3),
        ("a: 1\nb: c: d\n", 2),
        ("a: 1\nb:\n  - x\n  y: 2\n", 4),
        ("a: 1\n\tb: 2\n", 2),
        ("a: 'unterminated\n", 2),
        ("a: *nope\n", 1),
    ],
)
def test_invalid_yaml_names_the_line(text: str, line: int) -> None:
    file, got_line, field, message = one_problem(text)
    assert (file, got_line, field) == (FILE, line, "")
    assert message.startswith("not valid YAML:")


def test_more_than_one_document_is_invalid() -> None:
    file, line, field, message = one_problem(MINIMAL + "---\nx: 1\n")
    assert "not valid YAML" in message and line == line_of(MINIMAL + "---\nx: 1\n", "---")


@pytest.mark.parametrize("text", ["- providers\n- features\n", "just a string\n", "42\n", "[]\n"])
def test_a_document_that_is_not_a_mapping(text: str) -> None:
    assert one_problem(text) == (FILE, 1, "", "the config must be a mapping with providers: and features:")


def test_empty_document_is_missing_everything() -> None:
    found = problems("# nothing here\n")
    assert {p[2] for p in found} == {"providers", "features"}


# ---------------------------------------------------------------------------------------------- files and paths


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "shipyard.yaml"
    path.write_text(EXAMPLE, encoding="utf-8")
    config = load_config(path, env={"PRIMARY_API_KEY": "k"})
    assert config.file == str(path)
    assert config.providers["primary"].settings["api_key"] == "k"


def test_load_config_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(MINIMAL + "oops: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.problems == [(str(path), 10, "oops", "unknown key (check its spelling and indentation)")]
    assert str(info.value).startswith(f"{path}:10: oops: ")


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    [(file, line, field, message)] = info.value.problems
    assert (file, line, field) == (str(path), None, "")
    assert "not found" in message and "SHIPYARD_CONFIG" in message
    assert str(info.value).startswith(str(path))


def test_load_config_on_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path, env={})


def test_load_config_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"a: \xe9\xff\n")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(path, env={})


def test_default_config_path_explicit_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPYARD_CONFIG", "/from/env.yaml")
    assert default_config_path("given.yaml") == Path("given.yaml")
    assert default_config_path(Path("/abs/given.yaml")) == Path("/abs/given.yaml")


def test_default_config_path_env_next(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPYARD_CONFIG", "/from/env.yaml")
    assert default_config_path() == Path("/from/env.yaml")
    assert default_config_path(None) == Path("/from/env.yaml")


def test_default_config_path_falls_back_to_cwd_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SHIPYARD_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    path = default_config_path()
    assert path == Path("shipyard.yaml")
    assert path.resolve() == tmp_path.resolve() / "shipyard.yaml"
    monkeypatch.setenv("SHIPYARD_CONFIG", "")  # empty counts as unset
    assert default_config_path() == Path("shipyard.yaml")


# ---------------------------------------------------------------------------------------------- Gateway-level provider checks


def _with_storage(text: str, tmp_path: Path) -> str:
    return edit(text, "storage: sqlite:///shipyard.db", f"storage: sqlite:///{tmp_path}/traces.db")


def test_gateway_builds_from_the_example_without_io(tmp_path: Path) -> None:
    gateway = shipyard.Gateway(parse_config(_with_storage(EXAMPLE, tmp_path), file=FILE, env={}))
    try:
        assert set(gateway.providers) == {"primary", "backup"}
        assert set(gateway.features) == {"support-triage", "extract-intent"}
        assert not (tmp_path / "traces.db").exists()  # storage opens on start, not in __init__
    finally:
        gateway.store.engine.dispose()


def _gateway_problem(text: str, tmp_path: Path) -> tuple[str, int | None, str, str]:
    config = parse_config(_with_storage(text, tmp_path), file=FILE, env={})  # loads fine...
    with pytest.raises(ConfigError) as info:  # ...but the provider adapter refuses it
        shipyard.Gateway(config)
    assert len(info.value.problems) == 1, info.value.problems
    return info.value.problems[0]


def test_gateway_unknown_provider_kind(tmp_path: Path) -> None:
    text = edit(EXAMPLE, "kind: openai\n    base_url: ${BACKUP", "kind: openia\n    base_url: ${BACKUP")
    file, line, field, message = _gateway_problem(text, tmp_path)
    assert (file, line, field) == (FILE, line_of(text, "kind: openia"), "providers.backup.kind")
    assert "'openia'" in message and "openai" in message and "python" in message


def test_gateway_openai_without_base_url(tmp_path: Path) -> None:
    text = edit(EXAMPLE, "    base_url: ${BACKUP_BASE_URL:-http://127.0.0.1:9102/v1}\n", "")
    file, line, field, message = _gateway_problem(text, tmp_path)
    assert (file, line, field) == (FILE, line_of(text, "  backup:"), "providers.backup.base_url")
    assert message == "required key is missing"


@pytest.mark.parametrize("url", ["ftp://x/v1", "127.0.0.1:9102/v1", "localhost"])
def test_gateway_openai_base_url_not_http(tmp_path: Path, url: str) -> None:
    text = edit(EXAMPLE, "${BACKUP_BASE_URL:-http://127.0.0.1:9102/v1}", f"'{url}'")
    file, line, field, message = _gateway_problem(text, tmp_path)
    assert (file, line, field) == (FILE, line_of(text, f"'{url}'"), "providers.backup.base_url")
    assert "https?://" in message


def test_gateway_openai_base_url_from_env_not_http(tmp_path: Path) -> None:
    config = parse_config(_with_storage(EXAMPLE, tmp_path), file=FILE, env={"PRIMARY_BASE_URL": "api.example.com"})
    with pytest.raises(ConfigError) as info:
        shipyard.Gateway(config)
    [(file, line, field, _)] = info.value.problems
    assert (line, field) == (line_of(EXAMPLE, "${PRIMARY_BASE_URL"), "providers.primary.base_url")


def test_gateway_unknown_provider_setting(tmp_path: Path) -> None:
    text = edit(EXAMPLE, "    api_key: none\n", "    api_key: none\n    api_kye: x\n")
    file, line, field, message = _gateway_problem(text, tmp_path)
    assert (line, field) == (line_of(text, "api_kye"), "providers.backup.api_kye")
    assert "unknown key" in message


def test_gateway_provider_setting_of_wrong_type(tmp_path: Path) -> None:
    text = edit(EXAMPLE, "    api_key: none\n", "    api_key: none\n    max_connections: lots\n")
    file, line, field, message = _gateway_problem(text, tmp_path)
    assert (line, field) == (line_of(text, "max_connections"), "providers.backup.max_connections")


# ---------------------------------------------------------------------------------------------- properties

FAST = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

no_dollar_text = st.text(st.characters(blacklist_characters="$", blacklist_categories=("Cs",)), max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False)
    | no_dollar_text
)
keys = no_dollar_text.filter(lambda k: k != "<key>")
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)


def same(a: Any, b: Any) -> bool:
    """Equal, with types: True is not 1, 1.0 is not 1."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


def resolve(value: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        if isinstance(value, dict):
            assert isinstance(part, str) and part in value, (path, part)
        else:
            assert isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value), (path, part)
        value = value[part]
    return value


def all_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += all_paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += all_paths(v, path + (i,))
    return out


@FAST
@given(doc=documents, flow=st.sampled_from([None, True, False]), width=st.sampled_from([80, 20]))
def test_yaml_round_trip_and_line_map(doc: Any, flow: bool | None, width: int) -> None:
    text = yaml.safe_dump(doc, default_flow_style=flow, sort_keys=False, width=width)
    value, lines = load_yaml(text, {})
    assert same(value, doc), (text, value)
    n_lines = len(text.splitlines())
    for path, line in lines.items():
        resolve(value, path)  # every recorded path exists in the value...
        assert 1 <= line <= n_lines, (path, line, text)  # ...and sits on a line of the document
    # and every value has a line (so any error can be located)
    for path in all_paths(value):
        assert path in lines, (path, text)
        assert line_for(lines, path) == lines[path]


plain_keys = st.text("abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=6)


@FAST
@given(doc=st.dictionaries(plain_keys, st.dictionaries(plain_keys, scalars, max_size=4), min_size=1, max_size=4))
def test_block_style_lines_point_at_the_key(doc: dict[str, Any]) -> None:
    text = yaml.safe_dump(doc, default_flow_style=False, sort_keys=False, width=10_000)
    _, lines = load_yaml(text, {})
    source = text.splitlines()
    for path, line in lines.items():
        if path:
            key = str(path[-1])
            # safe_dump quotes keys YAML would read as something else ('on', '12')
            assert source[line - 1].lstrip().startswith((f"{key}:", f"'{key}':")), (path, line, text)


@FAST
@given(text=st.text(st.characters(blacklist_characters="$", blacklist_categories=("Cs",))),
       env=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3))
def test_interpolate_without_dollar_is_identity(text: str, env: dict[str, str]) -> None:
    assert interpolate(text, env, line=1, field="x") == text


env_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
literals = st.text(st.characters(blacklist_characters="$", blacklist_categories=("Cs",)), max_size=6)
defaults = st.text(st.characters(blacklist_characters="$}", blacklist_categories=("Cs",)), max_size=6)
env_values = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)  # may hold $, ${, }


@st.composite
def templates(draw: st.DrawFn) -> tuple[str, dict[str, str], str]:
    """(template, env, expected): segments of literals, ${N}, ${N:-d}, ${N-d} and $$."""
    env = draw(st.dictionaries(env_names, env_values, max_size=4))
    known = sorted(env)
    parts, expected = [], []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["lit", "var", "colon_default", "dash_default", "dollar"]))
        if kind == "lit":
            s = draw(literals)
            parts.append(s)
            expected.append(s)
        elif kind == "dollar":
            parts.append("$$")
            expected.append("$")
        elif kind == "var":
            if not known:
                continue
            name = draw(st.sampled_from(known))
            parts.append(f"${{{name}}}")
            expected.append(env[name])
        else:
            name = draw(st.sampled_from(known) | env_names if known else env_names)
            default = draw(defaults)
            value = env.get(name)
            if kind == "colon_default":
                parts.append(f"${{{name}:-{default}}}")
                expected.append(default if not value else value)
            else:
                parts.append(f"${{{name}-{default}}}")
                expected.append(default if value is None else value)
    return "".join(parts), env, "".join(expected)


@FAST
@given(case=templates())
def test_interpolate_substitutes_exactly(case: tuple[str, dict[str, str], str]) -> None:
    template, env, expected = case
    assert interpolate(template, env, line=3, field="f") == expected


@FAST
@given(name=env_names, before=literals, after=literals, env=st.dictionaries(env_names, env_values, max_size=3))
def test_interpolate_missing_variable_raises_naming_it(name: str, before: str, after: str, env: dict[str, str]) -> None:
    env.pop(name, None)
    with pytest.raises(YamlProblem) as info:
        interpolate(f"{before}${{{name}}}{after}", env, line=5, field="a.b")
    assert info.value.line == 5 and info.value.field == "a.b"
    assert re.search(rf"\b{re.escape(name)}\b", info.value.message)


@FAST
@given(value=st.text(st.characters(blacklist_categories=("Cs",)), max_size=20))
def test_quoted_env_values_come_back_verbatim(value: str) -> None:
    loaded, _ = load_yaml("a: '${V}'\nb: \"x${V}\"\n", {"V": value})
    assert loaded == {"a": value, "b": "x" + value}


@FAST
@given(value=st.text(st.characters(blacklist_categories=("Cs",)), max_size=20))
def test_unquoted_env_values_are_str_int_float_or_bool(value: str) -> None:
    loaded, _ = load_yaml("a: ${V}\n", {"V": value})
    got = loaded["a"]
    assert type(got) in (str, int, float, bool)
    if type(got) is str:
        assert got == value


def test_plain_yes_no_on_off_keys_are_names_not_booleans() -> None:
    # YAML 1.1 reads a plain on: as True; as a key it is a name (a policy rule's `on: output`).
    value, _ = load_yaml("a: {on: output, off: 1, yes: 2, no: 3}\nb:\n  on: x\n  c: on\n", {})
    assert value == {"a": {"on": "output", "off": 1, "yes": 2, "no": 3}, "b": {"on": "x", "c": True}}
