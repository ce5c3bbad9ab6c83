"""Tests for pystol_sim.selectors: label and field selector grammar, errors and matching."""

from __future__ import annotations

import pytest

from pystol_sim.selectors import (
    DOES_NOT_EXIST,
    EQUALS,
    EVERYTHING,
    EXISTS,
    GREATER_THAN,
    IN,
    LESS_THAN,
    NOT_EQUALS,
    NOT_IN,
    NOTHING,
    FieldRequirement,
    FieldSelector,
    LabelSelector,
    Requirement,
    SelectorError,
    label_selector_from_set,
    label_selector_from_spec,
    parse_field_selector,
    parse_label_selector,
)

WEB = {"app": "web", "tier": "frontend", "env": "prod"}
DB = {"app": "db", "tier": "backend"}
BARE: dict[str, str] = {}

# --------------------------------------------------------------------------- label grammar


@pytest.mark.parametrize(
    ("text", "requirement"),
    [
        ("app=web", Requirement("app", EQUALS, ("web",))),
        ("app==web", Requirement("app", EQUALS, ("web",))),
        ("app!=web", Requirement("app", NOT_EQUALS, ("web",))),
        ("app in (web,db)", Requirement("app", IN, ("db", "web"))),
        ("app notin (web)", Requirement("app", NOT_IN, ("web",))),
        ("app", Requirement("app", EXISTS)),
        ("!app", Requirement("app", DOES_NOT_EXIST)),
        ("replicas>3", Requirement("replicas", GREATER_THAN, ("3",))),
        ("replicas<3", Requirement("replicas", LESS_THAN, ("3",))),
        ("app=", Requirement("app", EQUALS, ("",))),
        ("app in ()", Requirement("app", IN, ("",))),
        ("app in (a,,b)", Requirement("app", IN, ("", "a", "b"))),
        ("example.com/app=web", Requirement("example.com/app", EQUALS, ("web",))),
        ("in=notin", Requirement("in", EQUALS, ("notin",))),
        ("app in (in,notin)", Requirement("app", IN, ("in", "notin"))),
    ],
)
def test_each_operator_parses(text: str, requirement: Requirement) -> None:
    assert parse_label_selector(text).requirements == (requirement,)


@pytest.mark.parametrize(
    ("text", "web", "db", "bare"),
    [
        ("app=web", True, False, False),
        ("app==web", True, False, False),
        ("app!=web", False, True, True),  # a missing label is "not equal"
        ("app in (web,db)", True, True, False),
        ("app notin (web)", False, True, True),  # a missing label is "not in"
        ("env", True, False, False),
        ("!env", False, True, True),
        ("app=web,tier=frontend", True, False, False),
        ("app=web,tier=backend", False, False, False),
        ("app,!env", False, True, False),
        ("app in (web,db),tier notin (backend)", True, False, False),
        ("env=", False, False, False),  # present with an empty value only
        ("env!=", True, True, True),
        ("", True, True, True),
    ],
)
def test_matching(text: str, web: bool, db: bool, bare: bool) -> None:
    selector = parse_label_selector(text)
    assert (selector.matches(WEB), selector.matches(DB), selector.matches(BARE)) == (
        web,
        db,
        bare,
    )


def test_empty_value_matches_empty_label() -> None:
    assert parse_label_selector("flag=").matches({"flag": ""})
    assert parse_label_selector("flag in ()").matches({"flag": ""})
    assert not parse_label_selector("flag=").matches({"flag": "x"})


def test_greater_and_less_than_need_integer_labels() -> None:
    gt, lt = parse_label_selector("gen>3"), parse_label_selector("gen<3")
    assert gt.matches({"gen": "4"}) and not gt.matches({"gen": "3"})
    assert lt.matches({"gen": "-1"}) and not lt.matches({"gen": "3"})
    for labels in ({}, {"gen": "four"}, {"gen": "1_0"}, {"gen": ""}):
        assert not gt.matches(labels)
        assert not lt.matches(labels)


def test_none_labels_mean_no_labels() -> None:
    assert parse_label_selector("!app").matches(None)
    assert not parse_label_selector("app").matches(None)


@pytest.mark.parametrize(
    "text",
    ["  app = web ,tier  in(frontend , x)  ,  ! canary", "app=web,tier in (frontend,x),!canary"],
)
def test_whitespace_is_ignored(text: str) -> None:
    selector = parse_label_selector(text)
    assert str(selector) == "app=web,!canary,tier in (frontend,x)"
    assert selector.matches(WEB)


@pytest.mark.parametrize("text", ["", "   ", "\t\n", None])
def test_empty_selector_matches_everything(text: str | None) -> None:
    selector = parse_label_selector(text)
    assert selector.empty
    assert selector == EVERYTHING
    assert str(selector) == ""
    assert selector.matches(WEB) and selector.matches(BARE)


def test_canonical_string_form() -> None:
    selector = parse_label_selector("tier notin (b,a,b), app==web, !canary, x, n>1, m<2, y!=z")
    # Sorted by key (stably), set values sorted and de-duplicated, == written as =.
    assert str(selector) == "app=web,!canary,m<2,n>1,tier notin (a,b),x,y!=z"
    assert parse_label_selector(str(selector)) == selector
    assert repr(selector) == f"LabelSelector({str(selector)!r})"


# --------------------------------------------------------------------------- label errors


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("app in (web", "missing closing parenthesis for the value list opened at position 7"),
        ("app in web", 'expected "(" after "in" for key "app", found "web" at position 7'),
        ("app in (a b)", 'expected "," or ")" between values, found "b" at position 10'),
        ("app in (a=b)", 'unexpected "=" at position 9 inside a value list'),
        ("app=web,", "trailing comma at position 7"),
        (",app", "empty requirement at position 0"),
        ("a,,b", "empty requirement at position 2"),
        ("app web", 'unexpected "web" at position 4 after key "app"'),
        ("!app=web", 'unexpected "=" at position 4: a "!app" (does not exist) requirement'),
        ("!", 'expected a label key after "!", found the end of the selector'),
        ("=web", 'expected a label key, found "=" at position 0'),
        ("app=(web)", 'expected a value after "=" for key "app", found "(" at position 4'),
        ("app=web)", 'unexpected ")" at position 7; expected "," or the end of the selector'),
        ("n>x", 'the value after ">" for key "n" must be an integer, found "x" at position 2'),
        ("n<", 'the value after "<" for key "n" must be an integer, found the end'),
        ("-app=web", 'invalid key "-app" at position 0: name part must consist of'),
        ("app_=web", 'invalid key "app_" at position 0: name part must consist of'),
        ("Example.com/app=x", 'invalid key "Example.com/app" at position 0: prefix part must be'),
        ("/app=x", "prefix part must be non-empty"),
        ("example.com/=x", "name part must be non-empty"),
        ("a/b/c=x", "at most one '/'"),
        ("a" * 64 + "=x", "name part must be no more than 63 characters"),
        ("app=" + "v" * 64, 'for key "app" at position 4: must be no more than 63 characters'),
        ("app=-web", 'invalid value "-web" for key "app" at position 4: a label value must be'),
        ("app in (ok,bad!)", 'unexpected "!" at position 14 inside a value list'),
        ("app in (ok,bad_)", 'invalid value "bad_" for key "app" at position 11'),
    ],
)
def test_invalid_label_selectors(text: str, reason: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse_label_selector(text)
    error = caught.value
    assert str(error).startswith(f'invalid label selector "{text}": ')
    assert reason in str(error)
    assert error.selector == text
    assert isinstance(error, ValueError)


def test_missing_parenthesis_message_matches_the_documented_form() -> None:
    with pytest.raises(
        SelectorError,
        match=r'^invalid label selector "app in \(web": missing '
        r"closing parenthesis",
    ):
        parse_label_selector("app in (web")


def test_error_position_attribute() -> None:
    with pytest.raises(SelectorError) as caught:
        parse_label_selector("app=ok,tier=-bad")
    assert caught.value.position == 12


def test_prefix_may_be_253_characters_but_not_more() -> None:
    label = ".".join(["a" * 63] * 4)[:253]
    assert parse_label_selector(f"{label}/x=y").requirements[0].key == f"{label}/x"
    with pytest.raises(SelectorError, match="no more than 253"):
        parse_label_selector(f"{label}a/x=y")


# --------------------------------------------------------------------------- structured form


def test_spec_with_labels_and_expressions() -> None:
    selector = label_selector_from_spec(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["frontend", "edge"]},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
                {"key": "team", "operator": "Exists"},
                {"key": "canary", "operator": "DoesNotExist", "values": []},
            ],
        }
    )
    assert str(selector) == "app=web,!canary,env notin (dev),team,tier in (edge,frontend)"
    assert selector.matches({"app": "web", "tier": "edge", "team": "a"})
    assert not selector.matches({"app": "web", "tier": "edge"})
    assert not selector.matches({"app": "web", "tier": "edge", "team": "a", "canary": "1"})
    assert not selector.matches({"app": "web", "tier": "edge", "team": "a", "env": "dev"})


def test_spec_none_matches_nothing_but_empty_matches_everything() -> None:
    nothing = label_selector_from_spec(None)
    assert nothing is NOTHING
    assert nothing.matches_nothing and not nothing.empty
    assert not nothing.matches(BARE) and not nothing.matches(WEB)
    assert str(nothing) == ""
    for spec in ({}, {"matchLabels": {}}, {"matchLabels": None, "matchExpressions": []}):
        everything = label_selector_from_spec(spec)
        assert everything.empty and not everything.matches_nothing
        assert everything.matches(BARE) and everything.matches(WEB)
    assert NOTHING != EVERYTHING


def test_scale_status_selector_string() -> None:
    spec = {"matchLabels": {"app": "web", "pod-template-hash": "5d4f"}}
    assert str(label_selector_from_spec(spec)) == "app=web,pod-template-hash=5d4f"


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (
            {"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]},
            'matchExpressions[0].operator: "Equals" is not a valid label selector operator',
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "in", "values": ["x"]}]},
            '"in" is not a valid label selector operator',
        ),
        ({"matchExpressions": [{"key": "a"}]}, '"None" is not a valid label selector operator'),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
            "matchExpressions[0].values: must be non-empty for operator In",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
            "matchExpressions[0].values: must be empty for operator Exists",
        ),
        ({"matchExpressions": [{"operator": "Exists"}]}, "matchExpressions[0].key is required"),
        ({"matchLabels": {"a": "-x"}}, 'matchLabels: invalid value "-x" for key "a"'),
        ({"matchLabels": {"a b": "x"}}, 'matchLabels: invalid key "a b"'),
        ({"matchLabels": {"a": 1}}, "keys and values must be strings"),
        ({"matchLabels": ["a"]}, "matchLabels must be an object"),
        ({"matchExpressions": {"key": "a"}}, "matchExpressions must be a list"),
        ("app=web", "must be an object"),
    ],
)
def test_invalid_spec(spec: object, reason: str) -> None:
    with pytest.raises(SelectorError) as caught:
        label_selector_from_spec(spec)  # type: ignore[arg-type]
    assert str(caught.value).startswith("invalid label selector ")
    assert reason in str(caught.value)


def test_from_labels_and_from_set() -> None:
    selector = LabelSelector.from_labels({"tier": "frontend", "app": "web"})
    assert str(selector) == "app=web,tier=frontend"
    assert selector == label_selector_from_set({"app": "web", "tier": "frontend"})
    assert selector.matches(WEB) and not selector.matches(DB)
    assert LabelSelector.from_labels({}).empty
    assert LabelSelector.from_labels(None).matches(WEB)


def test_selectors_are_values() -> None:
    a = parse_label_selector("b=2,a=1")
    b = label_selector_from_spec({"matchLabels": {"a": "1", "b": "2"}})
    assert a == b and hash(a) == hash(b)
    assert len(a) == 2 and [r.key for r in a] == ["a", "b"]
    assert parse_label_selector("b=2,a=1") is a  # parsed selectors are cached


def test_requirements_can_build_a_selector() -> None:
    selector = LabelSelector([Requirement("app", IN, ("web", "db", "web"))])
    assert str(selector) == "app in (db,web)"
    with pytest.raises(ValueError, match="needs at least one value"):
        LabelSelector([Requirement("app", IN, ())])
    with pytest.raises(ValueError, match="unknown label selector operator"):
        LabelSelector([Requirement("app", "~", ("x",))])


def test_matching_many_objects_is_fast() -> None:
    import time

    selector = parse_label_selector("app=web,tier in (frontend,edge),!canary,env!=dev")
    pods = [
        {"app": "web" if i % 2 else "db", "tier": "frontend", "env": "prod"} for i in range(100_000)
    ]
    start = time.perf_counter()
    count = sum(1 for labels in pods if selector.matches(labels))
    elapsed = time.perf_counter() - start
    assert count == 50_000
    assert elapsed < 1.0  # ~0.05 s on a laptop; generous for slow CI machines


# --------------------------------------------------------------------------- field selectors


def test_field_operators() -> None:
    selector = parse_field_selector("status.phase=Running,spec.nodeName!=node-1,metadata.name==p")
    assert selector.requirements == (
        FieldRequirement("status.phase", "=", "Running"),
        FieldRequirement("spec.nodeName", "!=", "node-1"),
        FieldRequirement("metadata.name", "=", "p"),
    )
    assert selector.fields == frozenset({"status.phase", "spec.nodeName", "metadata.name"})
    fields = {"status.phase": "Running", "spec.nodeName": "node-2", "metadata.name": "p"}
    assert selector.matches(fields)
    assert not selector.matches({**fields, "spec.nodeName": "node-1"})
    assert not selector.matches({**fields, "status.phase": "Pending"})


def test_missing_field_compares_as_empty_string() -> None:
    unscheduled = parse_field_selector("spec.nodeName=")
    assert unscheduled.matches({"metadata.name": "p"})
    assert unscheduled.matches({"spec.nodeName": ""})
    assert not unscheduled.matches({"spec.nodeName": "n1"})
    scheduled = parse_field_selector("spec.nodeName!=")
    assert not scheduled.matches({})
    assert scheduled.matches({"spec.nodeName": "n1"})
    assert not parse_field_selector("spec.nodeName=n1").matches({})
    assert parse_field_selector("spec.nodeName!=n1").matches(None)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (r"metadata.name=a\,b", "a,b"),
        (r"metadata.name=a\=b", "a=b"),
        (r"metadata.name=a\\b", "a\\b"),
        (r"metadata.name=\\\,\=", "\\,="),
        (r"metadata.name=a\\", "a\\"),
    ],
)
def test_field_value_escapes(text: str, value: str) -> None:
    selector = parse_field_selector(text)
    assert selector.requirements == (FieldRequirement("metadata.name", "=", value),)
    assert selector.matches({"metadata.name": value})
    assert str(selector) == text  # escaping round-trips


def test_escaped_comma_does_not_split_requirements() -> None:
    selector = parse_field_selector(r"a=x\,y\=z,b!=w")
    assert selector.requirements == (
        FieldRequirement("a", "=", "x,y=z"),
        FieldRequirement("b", "!=", "w"),
    )


def test_field_selector_tolerates_empty_terms_and_whitespace() -> None:
    selector = parse_field_selector(" status.phase = Running ,, spec.nodeName!=n1 ,")
    assert [tuple(r) for r in selector] == [
        ("status.phase", "=", "Running"),
        ("spec.nodeName", "!=", "n1"),
    ]
    assert str(selector) == "status.phase=Running,spec.nodeName!=n1"


@pytest.mark.parametrize("text", ["", None, ",", " , "])
def test_empty_field_selector(text: str | None) -> None:
    selector = parse_field_selector(text)
    assert selector.empty and selector.fields == frozenset()
    assert selector.matches({}) and selector.matches({"status.phase": "x"})


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("status.phase", 'cannot understand "status.phase" at position 0: expected field=value'),
        ("a=b,c", 'cannot understand "c" at position 4'),
        ("=Running", 'missing field name before "=" at position 0'),
        ("a=b=c", 'unescaped "=" at position 3 in a value'),
        ("a===b", 'unescaped "=" at position 3 in a value'),
        (r"a=b\x", r'invalid escape sequence "\x" at position 3'),
        ("a=b\\", "the value ends with a lone backslash at position 3"),
        (r"a=b\\\\\x", r'invalid escape sequence "\x"'),
    ],
)
def test_invalid_field_selectors(text: str, reason: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse_field_selector(text)
    assert str(caught.value).startswith(f'invalid field selector "{text}": ')
    assert reason in str(caught.value)


def test_requires_exact_match() -> None:
    selector = parse_field_selector("spec.nodeName=n1,metadata.name!=x")
    assert selector.requires_exact_match("spec.nodeName") == "n1"
    assert selector.requires_exact_match("metadata.name") is None
    assert selector.requires_exact_match("status.phase") is None


def test_field_selectors_are_values() -> None:
    a = parse_field_selector("a=1,b!=2")
    assert a == FieldSelector([FieldRequirement("a", "=", "1"), FieldRequirement("b", "!=", "2")])
    assert hash(a) == hash(parse_field_selector("a==1,b!=2"))
    assert repr(a) == "FieldSelector('a=1,b!=2')"
