"""Latency percentiles: numpy's linear interpolation, checked against cases worked by hand."""

import pytest

from loadtest.stats import latency_stats, percentiles

ONE_TO_TEN = [float(x) for x in range(1, 11)]


def test_p90_of_one_to_ten_interpolates_between_nine_and_ten():
    # rank 0.9 * (10 - 1) = 8.1 -> 9 + 0.1 * (10 - 9)
    assert percentiles(ONE_TO_TEN, [90]) == pytest.approx([9.1])


def test_median_of_an_even_count_is_the_mean_of_the_middle_two():
    assert percentiles(ONE_TO_TEN, [50]) == pytest.approx([5.5])


def test_p95_and_p99_of_one_to_ten():
    # ranks 8.55 and 8.91 between the 9th and 10th values
    assert percentiles(ONE_TO_TEN, [95, 99]) == pytest.approx([9.55, 9.91])


def test_percentiles_do_not_depend_on_the_order_of_the_latencies():
    assert percentiles(list(reversed(ONE_TO_TEN))) == percentiles(ONE_TO_TEN)


def test_every_statistic_of_a_single_latency_is_that_latency():
    stats = latency_stats([0.042])
    assert stats.count == 1
    assert (stats.mean, stats.p50, stats.p90, stats.p95, stats.p99, stats.max) == pytest.approx((0.042,) * 6)


def test_latency_stats_of_one_to_ten():
    stats = latency_stats(ONE_TO_TEN)
    assert stats.count == 10
    assert (stats.mean, stats.p50, stats.p90, stats.max) == pytest.approx((5.5, 5.5, 9.1, 10.0))


def test_no_latencies_is_an_error_that_says_nothing_was_answered():
    with pytest.raises(ValueError, match="no values: nothing was answered"):
        latency_stats([])
