"""pystol_worker.actions.pod_kill.kill_offsets: when each pod of a pod-kill job is deleted."""

from __future__ import annotations

import itertools
import random
import statistics

import pytest

from pystol_worker.actions.pod_kill import kill_offsets


@pytest.mark.parametrize(
    ("count", "duration", "expected"),
    [
        (1, 60.0, [0.0]),
        (2, 60.0, [0.0, 30.0]),
        (4, 60.0, [0.0, 15.0, 30.0, 45.0]),
        (3, 90.0, [0.0, 30.0, 60.0]),
        (5, 1.0, [0.0, 0.2, 0.4, 0.6, 0.8]),
    ],
)
def test_uniform_offsets_are_evenly_spaced(count: int, duration: float,
                                           expected: list[float]) -> None:
    offsets = kill_offsets(count, duration, "uniform", random.Random(1))
    assert offsets == pytest.approx(expected)


def test_uniform_offsets_do_not_use_the_random_generator() -> None:
    rng = random.Random(5)
    state = rng.getstate()
    kill_offsets(10, 60.0, "uniform", rng)
    assert rng.getstate() == state


@pytest.mark.parametrize("count", [1, 2, 7, 100])
def test_uniform_offsets_span_the_duration_without_reaching_its_end(count: int) -> None:
    offsets = kill_offsets(count, 60.0, "uniform", random.Random(1))
    assert len(offsets) == count
    assert offsets[0] == 0.0
    assert offsets[-1] == pytest.approx(60.0 * (count - 1) / count)
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    assert all(gap == pytest.approx(60.0 / count) for gap in gaps)


@pytest.mark.parametrize("count", [1, 2, 10, 500])
def test_poisson_offsets_are_sorted_and_within_the_duration(count: int) -> None:
    for seed in range(20):
        offsets = kill_offsets(count, 30.0, "poisson", random.Random(seed))
        assert len(offsets) == count
        assert offsets == sorted(offsets)
        assert all(0.0 <= offset < 30.0 for offset in offsets)


def test_poisson_offsets_are_reproducible_with_a_seed() -> None:
    first = kill_offsets(10, 60.0, "poisson", random.Random(1234))
    assert kill_offsets(10, 60.0, "poisson", random.Random(1234)) == first
    assert kill_offsets(10, 60.0, "poisson", random.Random(1235)) != first


def test_poisson_offsets_are_not_evenly_spaced() -> None:
    offsets = kill_offsets(10, 60.0, "poisson", random.Random(99))
    assert offsets != pytest.approx(kill_offsets(10, 60.0, "uniform", random.Random(99)))


def test_poisson_offsets_behave_like_a_poisson_process() -> None:
    """Over many runs: the mean gap between kills is about duration/count, gaps vary like
    exponential ones (standard deviation close to the mean), and kills are spread evenly
    over the window (mean offset about duration/2)."""
    rng = random.Random(20240601)
    count, duration = 50, 100.0
    gaps: list[float] = []
    offsets_all: list[float] = []
    for _ in range(400):
        offsets = kill_offsets(count, duration, "poisson", rng)
        offsets_all += offsets
        gaps += [b - a for a, b in itertools.pairwise(offsets)]
    mean_gap = statistics.fmean(gaps)
    assert mean_gap == pytest.approx(duration / count, rel=0.05)
    assert statistics.pstdev(gaps) == pytest.approx(mean_gap, rel=0.1)
    assert statistics.fmean(offsets_all) == pytest.approx(duration / 2, rel=0.02)
    first_half = sum(1 for offset in offsets_all if offset < duration / 2) / len(offsets_all)
    assert first_half == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("distribution", ["uniform", "poisson"])
@pytest.mark.parametrize("duration", [None, 0, 0.0])
def test_without_a_duration_every_kill_is_at_once(distribution: str,
                                                  duration: float | None) -> None:
    assert kill_offsets(4, duration, distribution, random.Random(1)) == [0.0] * 4


@pytest.mark.parametrize("distribution", [None, ""])
def test_without_a_distribution_every_kill_is_at_once(distribution: str | None) -> None:
    assert kill_offsets(3, 60.0, distribution, random.Random(1)) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("distribution", [None, "uniform", "poisson"])
@pytest.mark.parametrize("count", [0, -1])
def test_no_kills_no_offsets(distribution: str | None, count: int) -> None:
    assert kill_offsets(count, 60.0, distribution, random.Random(1)) == []


def test_unknown_distribution_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown distribution 'gaussian'"):
        kill_offsets(3, 60.0, "gaussian", random.Random(1))
