"""The price table (built-in list prices, dated names, config overrides), costs in nano-USD, and the
config check that a budgeted feature can price every route."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from shipyard.cli import app
from shipyard.economics.pricing import DEFAULT_PRICES, NANO, Price, PriceTable, usd
from tests.conftest import OWNERS

TABLE = PriceTable()


def test_cost_is_tokens_times_usd_per_million_in_nano_usd():
    price = Price(0.15, 0.60)
    assert price.cost_nano(5, 3) == 2550  # 5 * 0.15 / 1e6 + 3 * 0.60 / 1e6 USD = 2.55e-6 USD
    assert price.cost_nano(1_000_000, 0) == 150_000_000  # a million input tokens: 0.15 USD
    assert price.cost_nano(0, 1_000_000) == 600_000_000
    assert price.cost_nano(0, 0) == 0
    assert usd(price.cost_nano(1200, 345)) == pytest.approx(0.000387, rel=1e-12)
    assert usd(None) is None and NANO == 10**9
    # integer nano-USD: a thousand small calls add up to exactly a thousand times one
    assert sum(price.cost_nano(7, 11) for _ in range(1000)) == 1000 * price.cost_nano(7, 11)


@pytest.mark.parametrize(
    ("model", "base"),
    [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),  # the longest base, not gpt-4o
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
        ("gpt-4-turbo-preview", "gpt-4-turbo"),
        ("o1-mini-2024-09-12", "o1-mini"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),  # Vertex AI's spelling
        ("mistral-small-latest", "mistral-small-latest"),
    ],
)
def test_a_dated_or_tagged_model_takes_its_base_price(model, base):
    assert TABLE.lookup("openai", model) == DEFAULT_PRICES[base]


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o-audio-preview",  # a different model (audio tokens), not gpt-4o with a tag
        "gpt-4o-mini-audio-preview",
        "gpt-4o-realtime-preview-2024-12-17",
        "gpt-4o-mini-tts",
        "gpt-3.5-turbo-16k",
        "gpt-4-32k",
        "gpt-4o2024-08-06",
        "small-model",
        "",
    ],
)
def test_a_different_model_with_a_known_prefix_is_not_priced(model):
    assert TABLE.lookup("openai", model) is None


def test_overrides_win_provider_model_first_then_model():
    table = PriceTable({
        "azure/gpt-4o": Price(1.0, 2.0),
        "gpt-4o": Price(3.0, 4.0),
        "small-model": Price(0.5, 0.5),
    })
    assert table.lookup("azure", "gpt-4o") == Price(1.0, 2.0)
    assert table.lookup("openai", "gpt-4o") == Price(3.0, 4.0)  # over the built-in 2.50 / 10
    assert table.lookup("local", "small-model") == Price(0.5, 0.5)
    assert table.lookup("openai", "gpt-4o-mini") == DEFAULT_PRICES["gpt-4o-mini"]  # untouched
    assert PriceTable({"openai/free": Price(0, 0)}).lookup("other", "free") is None  # another provider's


def test_an_override_of_a_base_prices_its_dated_names_too():
    table = PriceTable({"gpt-4o": Price(1.0, 1.0), "openai/custom-model": Price(2.0, 2.0)})
    assert table.lookup("openai", "gpt-4o-2024-08-06") == Price(1.0, 1.0)
    assert table.lookup("openai", "custom-model-2025-01-01") == Price(2.0, 2.0)


# -- a budget needs prices ----------------------------------------------------------------------------


def budget_config(primary, backup, pricing: str = "", python_route: bool = False) -> str:
    third = "\n          - {provider: local, model: echo}" if python_route else ""
    return f"""
    pricing: {{{pricing}}}
    providers:
      primary: {{kind: openai, base_url: "{primary.url}", api_key: none}}
      backup: {{kind: openai, base_url: "{backup.url}", api_key: none}}
      local: {{kind: python, target: "tests.runtime.inprocess_models:echo"}}
    features:
      triage:
        owners: {OWNERS}
        budget: {{usd_per_day: 5}}
        route:
          - {{provider: primary, model: gpt-4o-mini-2024-07-18}}
          - {{provider: backup, model: small-model}}{third}
    """


def check(path):
    return CliRunner().invoke(app, ["check", "--config", str(path)])


def test_a_budget_over_an_unpriced_route_is_a_config_error_at_its_line(primary, backup, write_config):
    path = write_config(budget_config(primary, backup))
    result = check(path)
    assert result.exit_code == 1, result.output
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "budget:" in text)
    assert (f"{path}:{line}: features.triage.budget: route backup/small-model has no price, so its calls cannot "
            "be counted against the budget") in result.stderr
    assert 'add it under pricing: ("backup/small-model": {input: USD_PER_M, output: USD_PER_M})' in result.stderr
    assert "primary" not in result.stderr  # the dated gpt-4o-mini is priced by the built-in table


def test_a_budget_is_fine_once_every_route_is_priced(primary, backup, write_config):
    result = check(write_config(budget_config(primary, backup, pricing="backup/small-model: {input: 1, output: 2}")))
    assert result.exit_code == 0, result.stderr
    assert "1 feature(s), 2 route(s)" in result.stdout


def test_an_in_process_model_costs_nothing_unless_priced(primary, backup, write_config):
    result = check(write_config(budget_config(primary, backup, pricing="small-model: {input: 1, output: 2}",
                                              python_route=True)))
    assert result.exit_code == 0, result.stderr
    assert "1 feature(s), 3 route(s)" in result.stdout
