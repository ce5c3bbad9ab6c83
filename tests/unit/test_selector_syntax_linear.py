"""The selector check is linear: no input up to the length limit holds a thread.

The attack (issue 13): `"a in (" + ",        " * 8 + "!"`, 79 characters, took seconds in
the backtracking regular expression, and each extra group multiplied it by about 8. The
old expressions stay here as the oracle: on inputs short enough for them to finish, the
linear check must give the same verdict.
"""

from __future__ import annotations

import re
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from pystol_worker.core.selector_syntax import field_selector_problem, label_selector_problem

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/"
_KEY = f"({_PREFIX})?{_NAME}"
_VALUE = f"({_NAME})?"
OLD = [re.compile(rf"^!?\s*{_KEY}$"), re.compile(rf"^{_KEY}\s*(==|=|!=)\s*{_VALUE}$"),
       re.compile(rf"^{_KEY}\s+(in|notin)\s+\(\s*{_VALUE}(\s*,\s*{_VALUE})*\s*\)$")]
LIMIT = 1024  # target.label_selector's max_length
SELECTOR_CHARS = "ab0-_./=!(), \tinotx"
# Generous: the check takes microseconds; the backtracking one took seconds. A loaded CI
# machine can stall any call for tens of milliseconds, and hypothesis fails a test whose
# example passes when re-run ("flaky"), so the budget sits well above that and well below
# the attack.
BUDGET_SECONDS = 0.5


def judged_quickly(text: str) -> str | None:
    start = time.perf_counter()
    verdict = label_selector_problem(text)
    field_selector_problem(text)
    elapsed = time.perf_counter() - start
    assert elapsed < BUDGET_SECONDS, f"{len(text)} characters took {elapsed:.3f}s: {text!r}"
    return verdict


def test_the_reported_attack_and_its_longer_forms_are_judged_at_once() -> None:
    for groups in (8, 20, 113):  # 79 characters, 187, and 1,024: the limit
        attack = "a in (" + ",        " * groups + "!"
        assert len(attack) <= LIMIT
        assert judged_quickly(attack) is not None


def test_other_backtracking_shapes_are_judged_at_once() -> None:
    for text in ("a" * LIMIT, "a-" * (LIMIT // 2), ("a." * 500) + "/", "a in (" + "a," * 500,
                 "x=" + "a" * 1000 + "!", "!" + " " * 1000 + "a",
                 "a in (" + ", " * 500 + ")", ("a-b." * 250) + "/x=y"):
        judged_quickly(text[:LIMIT])


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=SELECTOR_CHARS, max_size=LIMIT))
def test_any_selector_up_to_the_limit_is_judged_quickly(text: str) -> None:
    judged_quickly(text)


@settings(max_examples=600, deadline=None)
@given(st.text(alphabet=SELECTOR_CHARS, max_size=24))
def test_the_verdict_is_the_old_expressions_verdict_on_short_inputs(text: str) -> None:
    from pystol_worker.core.selector_syntax import split_requirements

    if not text.strip():
        assert label_selector_problem(text) is None
        return
    old_valid = all(part and any(expression.match(part) for expression in OLD)
                    for part in split_requirements(text))
    assert (label_selector_problem(text) is None) == old_valid, text
