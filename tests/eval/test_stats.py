import math

import numpy as np
import pytest

from shipyard.eval import stats


def test_wilson_known_values() -> None:
    low, high = stats.wilson(8, 10)
    assert low == pytest.approx(0.4902, abs=5e-4)
    assert high == pytest.approx(0.9433, abs=5e-4)
    low, high = stats.wilson(50, 100)
    assert (low, high) == pytest.approx((0.4038, 0.5962), abs=5e-4)


def test_wilson_edges() -> None:
    assert stats.wilson(0, 0) == (0.0, 1.0)
    low, high = stats.wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=5e-4)
    low, high = stats.wilson(10, 10)
    assert high == 1.0 and low == pytest.approx(0.7225, abs=5e-4)
    # A wider confidence gives a wider interval.
    low99, high99 = stats.wilson(8, 10, confidence=0.99)
    assert low99 < 0.4902 and high99 > 0.9433
    for bad in ((11, 10), (-1, 10), (1, -1)):
        with pytest.raises(ValueError):
            stats.wilson(*bad)
    with pytest.raises(ValueError):
        stats.wilson(1, 2, confidence=1.0)


def test_wilson_matches_scipy() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    for k, n in ((0, 7), (3, 7), (8, 10), (41, 57), (199, 200)):
        expected = scipy_stats.binomtest(k, n).proportion_ci(confidence_level=0.9, method="wilson")
        assert stats.wilson(k, n, confidence=0.9) == pytest.approx((expected.low, expected.high), abs=1e-9)


def test_mcnemar_exact_below_25_changes() -> None:
    assert stats.mcnemar(1, 9) == pytest.approx(0.021484375)  # 2 * (1 + 10) / 1024
    assert stats.mcnemar(9, 1) == stats.mcnemar(1, 9)
    assert stats.mcnemar(0, 5) == pytest.approx(0.0625)
    assert stats.mcnemar(12, 0) == pytest.approx(0.00048828125)
    assert stats.mcnemar(5, 19) == pytest.approx(0.0066107512)  # b + c = 24: still exact
    assert stats.mcnemar(3, 3) == 1.0
    assert stats.mcnemar(0, 0) == 1.0


def test_mcnemar_chi_square_from_25_changes() -> None:
    # (|5 - 20| - 1)^2 / 25 = 7.84 on one degree of freedom
    assert stats.mcnemar(5, 20) == pytest.approx(0.0051102607)
    assert stats.mcnemar(10, 30) == pytest.approx(0.0026631193)
    assert stats.mcnemar(20, 20) == 1.0
    with pytest.raises(ValueError):
        stats.mcnemar(-1, 3)


def test_bootstrap_ci_contains_the_true_mean() -> None:
    data = np.random.default_rng(1).normal(0.7, 0.1, 200)  # a typical sample: see the coverage test below
    low, high = stats.bootstrap_ci(list(data))
    assert low < 0.7 < high
    assert high - low < 0.05  # about 2 * 1.96 * 0.1 / sqrt(200) = 0.028
    assert stats.bootstrap_ci(list(data)) == (low, high)  # seeded: the same every time
    assert stats.bootstrap_ci(list(data), seed=1) != (low, high)


def test_bootstrap_ci_covers_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(123)
    covered = 0
    for _ in range(200):
        sample = rng.binomial(1, 0.6, 80).astype(float)
        low, high = stats.bootstrap_ci(list(sample), n_boot=1000)
        covered += low <= 0.6 <= high
    assert 0.88 <= covered / 200 <= 0.99


def test_bootstrap_ci_weighted_mean() -> None:
    values = [0.0] * 50 + [1.0] * 50
    weights = [1.0] * 50 + [3.0] * 50
    low, high = stats.bootstrap_ci(values, weights)
    assert low < 0.75 < high
    assert low > 0.6  # clearly not the unweighted 0.5
    assert stats.bootstrap_ci([0.4]) == (0.4, 0.4)
    with pytest.raises(ValueError):
        stats.bootstrap_ci([])
    with pytest.raises(ValueError):
        stats.bootstrap_ci([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        stats.bootstrap_ci([1.0, 2.0], [0.0, 0.0])


def test_paired_bootstrap_clear_drop_noise_and_no_change() -> None:
    rng = np.random.default_rng(3)
    drop = list(rng.normal(-0.2, 0.05, 40))
    mean, low, high, p = stats.paired_bootstrap(drop)
    assert mean == pytest.approx(float(np.mean(drop)))
    assert low < mean < high < 0
    assert p < 0.001

    noise = [0.1, -0.1] * 20
    mean, low, high, p = stats.paired_bootstrap(noise)
    assert mean == pytest.approx(0.0)
    assert low < 0 < high
    assert p > 0.5

    assert stats.paired_bootstrap([0.0] * 12) == (0.0, 0.0, 0.0, 1.0)


def test_paired_bootstrap_weights() -> None:
    deltas = [-0.5] * 10 + [0.1] * 10
    assert stats.paired_bootstrap(deltas)[0] == pytest.approx(-0.2)
    mean, *_ = stats.paired_bootstrap(deltas, [1.0] * 10 + [9.0] * 10)
    assert mean == pytest.approx((-0.5 * 10 + 0.1 * 90) / 100)


def test_enough() -> None:
    assert stats.MIN_CASES == 10
    assert not stats.enough(0, 0)
    assert not stats.enough(9, 9)
    assert stats.enough(10, 8)  # half-width 0.227
    assert not stats.enough(10, 5)  # half-width 0.263: ten cases, but a rate near 1/2 is still vague
    assert stats.enough(12, 6)
    assert stats.enough(4, 4, min_cases=3)
    assert not stats.enough(100, 50, max_half_width=0.05)


def test_z_value() -> None:
    assert stats.z_value(0.95) == pytest.approx(1.959964, abs=1e-6)
    assert math.isclose(stats.z_value(0.90), 1.644854, abs_tol=1e-6)
