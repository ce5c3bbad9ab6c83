"""Tests for pystol_worker.faults.pod_selection: Chaos Mesh's mode/value counting and choosing."""

from __future__ import annotations

import random

import pytest

from pystol_worker.core.model import TargetMode
from pystol_worker.faults.pod_selection import choose, choose_count

SIZES = [0, 1, 3, 10, 1000]
ALL_MODES = [
    (TargetMode.ONE, None),
    (TargetMode.ALL, None),
    (TargetMode.FIXED, 1),
    (TargetMode.FIXED, 2),
    (TargetMode.FIXED, 5000),
    (TargetMode.FIXED_PERCENT, 0.1),
    (TargetMode.FIXED_PERCENT, 50),
    (TargetMode.FIXED_PERCENT, 100),
    (TargetMode.RANDOM_MAX_PERCENT, 1),
    (TargetMode.RANDOM_MAX_PERCENT, 50),
    (TargetMode.RANDOM_MAX_PERCENT, 100),
]


@pytest.mark.parametrize(("mode", "value"), ALL_MODES)
def test_nothing_is_chosen_from_nothing(mode: TargetMode, value: float | None) -> None:
    assert choose_count(0, mode, value, random.Random(1)) == 0
    assert choose([], mode, value, random.Random(1)) == []


@pytest.mark.parametrize("n", SIZES)
def test_one_chooses_one(n: int) -> None:
    assert choose_count(n, TargetMode.ONE, None, random.Random(1)) == min(1, n)


@pytest.mark.parametrize("n", SIZES)
def test_all_chooses_all(n: int) -> None:
    assert choose_count(n, TargetMode.ALL, None, random.Random(1)) == n


@pytest.mark.parametrize(
    ("n", "value", "expected"),
    [(1, 1, 1), (1, 3, 1), (3, 2, 2), (3, 3, 3), (3, 4, 3), (10, 7, 7), (1000, 1, 1),
     (1000, 999, 999), (1000, 1000, 1000), (1000, 5000, 1000), (10, 2.0, 2)],
)
def test_fixed_chooses_value_but_never_more_than_there_are(n: int, value: float,
                                                           expected: int) -> None:
    assert choose_count(n, TargetMode.FIXED, value, random.Random(1)) == expected


@pytest.mark.parametrize(
    ("n", "value", "expected"),
    [
        (1, 50, 1),        # floor(0.5) = 0, but at least one
        (1, 100, 1),
        (3, 10, 1),        # floor(0.3) -> at least one
        (3, 33, 1),        # floor(0.99)
        (3, 34, 1),        # floor(1.02)
        (3, 66, 1),        # floor(1.98): floor, not round
        (3, 67, 2),
        (3, 100, 3),
        (10, 0.5, 1),
        (10, 10, 1),
        (10, 25, 2),       # floor(2.5)
        (10, 99, 9),       # floor(9.9)
        (10, 100, 10),
        (1000, 0.1, 1),
        (1000, 0.05, 1),
        (1000, 12.5, 125),
        (1000, 33.3, 333),
        (1000, 50, 500),
        (1000, 99.95, 999),
        (1000, 100, 1000),
    ],
)
def test_fixed_percent_floors_but_chooses_at_least_one(n: int, value: float,
                                                       expected: int) -> None:
    assert choose_count(n, TargetMode.FIXED_PERCENT, value, random.Random(1)) == expected


@pytest.mark.parametrize("n", [1, 3, 10, 1000])
@pytest.mark.parametrize("percent", range(1, 101))
def test_fixed_percent_with_whole_percents(n: int, percent: int) -> None:
    expected = max(1, n * percent // 100)
    assert choose_count(n, TargetMode.FIXED_PERCENT, percent, random.Random(1)) == expected


@pytest.mark.parametrize(("n", "value", "expected"),
                         [(375, 18.4, 69), (375, 32.8, 123), (1000, 64.1, 641)])
def test_fixed_percent_with_fractional_percents_is_exact(n: int, value: float,
                                                         expected: int) -> None:
    assert choose_count(n, TargetMode.FIXED_PERCENT, value, random.Random(1)) == expected


def test_random_max_percent_ceiling_with_a_fractional_percent_is_exact() -> None:
    rng = random.Random(1)
    counts = {choose_count(375, TargetMode.RANDOM_MAX_PERCENT, 18.4, rng) for _ in range(20000)}
    assert max(counts) == 69


@pytest.mark.parametrize(
    ("n", "value", "ceiling"),
    [(1, 100, 1), (1, 10, 1), (3, 50, 1), (3, 100, 3), (10, 30, 3), (10, 100, 10),
     (1000, 1, 10), (1000, 25, 250), (1000, 100, 1000)],
)
def test_random_max_percent_stays_within_one_and_the_ceiling(n: int, value: float,
                                                             ceiling: int) -> None:
    rng = random.Random(7)
    counts = {choose_count(n, TargetMode.RANDOM_MAX_PERCENT, value, rng) for _ in range(2000)}
    assert min(counts) >= 1
    assert max(counts) <= ceiling
    if ceiling > 1:
        # it is random: the whole range is reachable, both ends included
        assert 1 in counts and ceiling in counts
        assert len(counts) > 1
    else:
        assert counts == {1}


def test_random_max_percent_is_reproducible_with_a_seed() -> None:
    def draws(seed: int) -> list[int]:
        rng = random.Random(seed)
        return [choose_count(1000, TargetMode.RANDOM_MAX_PERCENT, 50, rng) for _ in range(50)]

    assert draws(42) == draws(42)
    assert draws(42) != draws(43)


@pytest.mark.parametrize(("mode", "value"), ALL_MODES)
@pytest.mark.parametrize("n", SIZES)
def test_choose_returns_distinct_candidates(mode: TargetMode, value: float | None,
                                            n: int) -> None:
    candidates = [f"pod-{index}" for index in range(n)]
    chosen = choose(candidates, mode, value, random.Random(3))
    assert len(chosen) == len(set(chosen))
    assert set(chosen) <= set(candidates)
    assert len(chosen) == choose_count(n, mode, value, random.Random(3))


def test_choose_with_dict_candidates_returns_the_same_objects() -> None:
    pods = [{"metadata": {"name": f"web-{index}"}} for index in range(10)]
    chosen = choose(pods, TargetMode.FIXED, 4, random.Random(5))
    assert len(chosen) == 4
    assert all(any(pod is candidate for candidate in pods) for pod in chosen)
    assert len({id(pod) for pod in chosen}) == 4


def test_choose_is_reproducible_with_a_seed_and_varies_without() -> None:
    candidates = list(range(100))
    first = choose(candidates, TargetMode.FIXED, 10, random.Random(11))
    assert choose(candidates, TargetMode.FIXED, 10, random.Random(11)) == first
    others = {tuple(choose(candidates, TargetMode.FIXED, 10, random.Random(seed)))
              for seed in range(20)}
    assert len(others) > 1


def test_one_picks_each_candidate_over_many_seeds() -> None:
    candidates = ["a", "b", "c"]
    picked = {choose(candidates, TargetMode.ONE, None, random.Random(seed))[0]
              for seed in range(200)}
    assert picked == set(candidates)


def test_choose_does_not_reorder_or_change_the_candidates() -> None:
    candidates = [f"pod-{index}" for index in range(10)]
    before = list(candidates)
    choose(candidates, TargetMode.FIXED_PERCENT, 50, random.Random(1))
    assert candidates == before
