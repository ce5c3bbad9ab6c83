"""Tests for pystol_sim.patching: RFC 7386, RFC 6902 and Kubernetes strategic merge patch."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pystol_sim.patching import PatchError, json_merge_patch, json_patch, strategic_merge_patch

# --------------------------------------------------------------------------- RFC 7386


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [
        # RFC 7386 Appendix A (the cases whose patch is an object)
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
        # RFC 7386 section 3 example
        (
            {
                "title": "Goodbye!",
                "author": {"givenName": "John", "familyName": "Doe"},
                "tags": ["example", "sample"],
                "content": "This will be unchanged",
            },
            {
                "title": "Hello!",
                "phoneNumber": "+01-123-456-7890",
                "author": {"familyName": None},
                "tags": ["example"],
            },
            {
                "title": "Hello!",
                "author": {"givenName": "John"},
                "tags": ["example"],
                "content": "This will be unchanged",
                "phoneNumber": "+01-123-456-7890",
            },
        ),
    ],
)
def test_merge_patch_rfc7386_examples(target: Any, patch: dict[str, Any], result: Any) -> None:
    assert json_merge_patch(target, patch) == result


@pytest.mark.parametrize("patch", [["c", "d"], ["c"], None, "bar", 1])
def test_merge_patch_must_be_an_object(patch: Any) -> None:
    with pytest.raises(PatchError, match="a merge patch must be a JSON object"):
        json_merge_patch({"a": "foo"}, patch)


def test_merge_patch_nulls_inside_lists_are_kept() -> None:
    assert json_merge_patch({}, {"a": [None, {"b": None}]}) == {"a": [None, {"b": None}]}


def test_merge_patch_does_not_mutate_or_alias_inputs() -> None:
    target = {"metadata": {"labels": {"a": "1"}}, "spec": {"list": [1, 2]}}
    patch = {"metadata": {"labels": {"b": "2"}}, "spec": {"new": {"x": [1]}}}
    saved = copy.deepcopy((target, patch))
    result = json_merge_patch(target, patch)
    assert (target, patch) == saved
    result["spec"]["list"].append(3)
    result["spec"]["new"]["x"].append(2)
    assert (target, patch) == saved


# --------------------------------------------------------------------------- RFC 6902

RFC6902_DOC = {"foo": "bar"}


@pytest.mark.parametrize(
    ("target", "operations", "result"),
    [
        # RFC 6902 Appendix A.1 - A.16 (the successful ones)
        (
            {"foo": "bar"},
            [{"op": "add", "path": "/baz", "value": "qux"}],
            {"baz": "qux", "foo": "bar"},
        ),
        (
            {"foo": ["bar", "baz"]},
            [{"op": "add", "path": "/foo/1", "value": "qux"}],
            {"foo": ["bar", "qux", "baz"]},
        ),
        ({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"}),
        (
            {"foo": ["bar", "qux", "baz"]},
            [{"op": "remove", "path": "/foo/1"}],
            {"foo": ["bar", "baz"]},
        ),
        (
            {"baz": "qux", "foo": "bar"},
            [{"op": "replace", "path": "/baz", "value": "boo"}],
            {"baz": "boo", "foo": "bar"},
        ),
        (
            {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
            [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
            {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}},
        ),
        (
            {"foo": ["all", "grass", "cows", "eat"]},
            [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
            {"foo": ["all", "cows", "eat", "grass"]},
        ),
        (
            {"baz": "qux", "foo": ["a", 2, "c"]},
            [
                {"op": "test", "path": "/baz", "value": "qux"},
                {"op": "test", "path": "/foo/1", "value": 2},
            ],
            {"baz": "qux", "foo": ["a", 2, "c"]},
        ),
        (
            {"foo": "bar"},
            [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
            {"foo": "bar", "child": {"grandchild": {}}},
        ),
        (
            {"foo": "bar"},
            [{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}],
            {"foo": "bar", "baz": "qux"},
        ),
        ({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": 10}], {"/": 9, "~1": 10}),
        (
            {"foo": ["bar"]},
            [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
            {"foo": ["bar", ["abc", "def"]]},
        ),
        # more pointer escaping and whole-document operations
        (
            {"a/b": 1, "m~n": 2},
            [{"op": "replace", "path": "/a~1b", "value": 3}, {"op": "remove", "path": "/m~0n"}],
            {"a/b": 3},
        ),
        ({"a": 1}, [{"op": "replace", "path": "", "value": {"b": 2}}], {"b": 2}),
        ({"a": 1}, [{"op": "test", "path": "", "value": {"a": 1}}], {"a": 1}),
        (
            {"a": {"b": [1]}},
            [{"op": "copy", "from": "/a", "path": "/c"}],
            {"a": {"b": [1]}, "c": {"b": [1]}},
        ),
        ({"a": 1}, [{"op": "move", "from": "/a", "path": "/a"}], {"a": 1}),
        ({"a": [1]}, [{"op": "add", "path": "/a/1", "value": 2}], {"a": [1, 2]}),
        ({"a": 1}, [{"op": "test", "path": "/a", "value": 1.0}], {"a": 1}),
        (
            {"a": {"x": 1, "y": [1, {"z": None}]}},
            [{"op": "test", "path": "/a", "value": {"y": [1, {"z": None}], "x": 1}}],
            {"a": {"x": 1, "y": [1, {"z": None}]}},
        ),
        ({"": 1}, [{"op": "test", "path": "/", "value": 1}], {"": 1}),
    ],
)
def test_json_patch_rfc6902_examples(
    target: dict[str, Any], operations: list[Any], result: dict[str, Any]
) -> None:
    assert json_patch(target, operations) == result


@pytest.mark.parametrize(
    ("target", "operations", "message"),
    [
        # A.9: a failing test
        (
            {"baz": "qux"},
            [{"op": "test", "path": "/baz", "value": "bar"}],
            'operation 0 (test) at path "/baz": test failed',
        ),
        # A.12: adding to a nonexistent target
        (
            {"foo": "bar"},
            [{"op": "add", "path": "/baz/bat", "value": "qux"}],
            'operation 0 (add) at path "/baz/bat": "/baz" does not exist',
        ),
        # A.15: comparing strings and numbers
        (
            {"/": 9, "~1": 10},
            [{"op": "test", "path": "/~01", "value": "10"}],
            'operation 0 (test) at path "/~01": test failed',
        ),
        ({"a": True}, [{"op": "test", "path": "/a", "value": 1}], "test failed"),
        (
            {"a": 1},
            [{"op": "add", "path": "/b", "value": 2}, {"op": "remove", "path": "/missing"}],
            'operation 1 (remove) at path "/missing": the path does not exist',
        ),
        (
            {"a": 1},
            [{"op": "replace", "path": "/b", "value": 2}],
            'operation 0 (replace) at path "/b": the path does not exist',
        ),
        (
            {"a": [1]},
            [{"op": "add", "path": "/a/2", "value": 2}],
            'operation 0 (add) at path "/a/2": array index 2 is out of bounds',
        ),
        ({"a": [1]}, [{"op": "remove", "path": "/a/-"}], '"-" (past the end of the array)'),
        (
            {"a": [1]},
            [{"op": "replace", "path": "/a/01", "value": 2}],
            '"01" is not a valid array index',
        ),
        ({"a": [1]}, [{"op": "remove", "path": "/a/x"}], '"x" is not a valid array index'),
        (
            {"a": 1},
            [{"op": "add", "path": "/a/b", "value": 2}],
            'operation 0 (add) at path "/a/b": the parent is a number',
        ),
        ({"a": 1}, [{"op": "remove", "path": "a"}], 'must be empty or start with "/"'),
        ({"a": 1}, [{"op": "remove", "path": "/~2"}], '"~" must be followed by 0 or 1'),
        (
            {"a": {"b": 1}},
            [{"op": "move", "from": "/a", "path": "/a/b/c"}],
            'cannot move "/a" into one of its own children',
        ),
        (
            {"a": 1},
            [{"op": "copy", "from": "/x", "path": "/b"}],
            'operation 0 (copy) at path "/b": "/x" does not exist',
        ),
        (
            {"a": 1},
            [{"op": "add", "path": "/b"}],
            'operation 0 (add) at path "/b": the operation has no "value" member',
        ),
        ({"a": 1}, [{"op": "move", "path": "/b"}], 'no "from" member'),
        ({"a": 1}, [{"op": "frobnicate", "path": "/a"}], 'unknown operation "frobnicate"'),
        ({"a": 1}, [{"path": "/a"}], 'operation 0: missing or invalid "op" member'),
        ({"a": 1}, [{"op": "remove"}], 'operation 0 (remove): missing "path" member'),
        ({"a": 1}, ["remove"], "operation 0: must be an object"),
        ({"a": 1}, [{"op": "remove", "path": ""}], "cannot remove the whole document"),
        (
            {"a": 1},
            [{"op": "replace", "path": "", "value": [1]}],
            "the patched document is an array, not an object",
        ),
    ],
)
def test_json_patch_errors(target: dict[str, Any], operations: list[Any], message: str) -> None:
    with pytest.raises(PatchError) as caught:
        json_patch(target, operations)
    assert message in str(caught.value)


def test_json_patch_must_be_a_list() -> None:
    with pytest.raises(PatchError, match="must be an array of operations"):
        json_patch({}, {"op": "add"})  # type: ignore[arg-type]


def test_json_patch_is_atomic_and_does_not_alias() -> None:
    target = {"a": {"list": [1]}}
    value = {"x": [1]}
    with pytest.raises(PatchError):
        json_patch(
            target,
            [{"op": "add", "path": "/b", "value": 1}, {"op": "test", "path": "/a", "value": 0}],
        )
    assert target == {"a": {"list": [1]}}
    result = json_patch(
        target,
        [{"op": "add", "path": "/v", "value": value}, {"op": "copy", "from": "/a", "path": "/c"}],
    )
    result["v"]["x"].append(2)
    result["c"]["list"].append(2)
    assert value == {"x": [1]}
    assert target == {"a": {"list": [1]}}
    assert result["a"] == {"list": [1]}


def test_json_patch_kubectl_style_label_and_scale() -> None:
    deployment = {"metadata": {"name": "web", "labels": {"app": "web"}}, "spec": {"replicas": 1}}
    result = json_patch(
        deployment,
        [
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "add", "path": "/metadata/labels/example.com~1team", "value": "a"},
            {"op": "remove", "path": "/metadata/labels/app"},
        ],
    )
    assert result == {
        "metadata": {"name": "web", "labels": {"example.com/team": "a"}},
        "spec": {"replicas": 3},
    }


# --------------------------------------------------------------------------- strategic merge


def two_container_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-0",
            "labels": {"app": "web"},
            "finalizers": ["example.com/a", "example.com/b"],
            "ownerReferences": [{"uid": "u1", "kind": "ReplicaSet", "name": "web"}],
        },
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "app:1",
                    "env": [{"name": "MODE", "value": "prod"}],
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    "args": ["--a", "--b"],
                },
                {"name": "sidecar", "image": "proxy:1"},
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "tolerations": [{"key": "a", "operator": "Exists"}],
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "Starting"},
                {"type": "PodScheduled", "status": "True"},
            ],
        },
    }


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return obj["spec"]["containers"]


def test_change_one_container_image_keeps_the_other() -> None:
    pod = two_container_pod()
    result = strategic_merge_patch(
        pod, {"spec": {"containers": [{"name": "app", "image": "app:2"}]}}
    )
    assert [(c["name"], c["image"]) for c in containers(result)] == [
        ("app", "app:2"),
        ("sidecar", "proxy:1"),
    ]
    # everything else about the container is kept
    assert containers(result)[0]["env"] == [{"name": "MODE", "value": "prod"}]
    assert pod == two_container_pod()


def test_kubectl_set_image_patch_with_set_element_order() -> None:
    patch = {
        "spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
            "containers": [{"image": "proxy:2", "name": "sidecar"}],
        }
    }
    result = strategic_merge_patch(two_container_pod(), patch)
    assert [(c["name"], c["image"]) for c in containers(result)] == [
        ("app", "app:1"),
        ("sidecar", "proxy:2"),
    ]
    assert "$setElementOrder/containers" not in result["spec"]


def test_add_env_var() -> None:
    # What `kubectl set env pod/web-0 -c app DEBUG=1` sends.
    patch = {
        "spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
            "containers": [
                {
                    "$setElementOrder/env": [{"name": "MODE"}, {"name": "DEBUG"}],
                    "env": [{"name": "DEBUG", "value": "1"}],
                    "name": "app",
                }
            ],
        }
    }
    result = strategic_merge_patch(two_container_pod(), patch)
    assert containers(result)[0]["env"] == [
        {"name": "MODE", "value": "prod"},
        {"name": "DEBUG", "value": "1"},
    ]
    assert containers(result)[1] == {"name": "sidecar", "image": "proxy:1"}


def test_add_env_var_without_order_directive_goes_first_like_apimachinery() -> None:
    patch = {"spec": {"containers": [{"name": "app", "env": [{"name": "DEBUG", "value": "1"}]}]}}
    env = containers(strategic_merge_patch(two_container_pod(), patch))[0]["env"]
    assert env == [{"name": "DEBUG", "value": "1"}, {"name": "MODE", "value": "prod"}]


def test_change_env_var_value_merges_by_name() -> None:
    patch = {"spec": {"containers": [{"name": "app", "env": [{"name": "MODE", "value": "dev"}]}]}}
    env = containers(strategic_merge_patch(two_container_pod(), patch))[0]["env"]
    assert env == [{"name": "MODE", "value": "dev"}]


def test_add_container() -> None:
    patch = {"spec": {"containers": [{"name": "debug", "image": "busybox"}]}}
    result = strategic_merge_patch(two_container_pod(), patch)
    # apimachinery puts patch items that the server did not have in front.
    assert [c["name"] for c in containers(result)] == ["debug", "app", "sidecar"]


def test_delete_container_with_patch_delete() -> None:
    patch = {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}
    result = strategic_merge_patch(two_container_pod(), patch)
    assert [c["name"] for c in containers(result)] == ["app"]
    missing = {"spec": {"containers": [{"name": "nope", "$patch": "delete"}]}}
    assert strategic_merge_patch(two_container_pod(), missing) == two_container_pod()


def test_delete_and_modify_in_one_patch() -> None:
    patch = {
        "spec": {
            "containers": [
                {"name": "app", "image": "app:3"},
                {"name": "sidecar", "$patch": "delete"},
            ]
        }
    }
    result = strategic_merge_patch(two_container_pod(), patch)
    assert containers(result) == [
        {**two_container_pod()["spec"]["containers"][0], "image": "app:3"}
    ]


def test_cordon() -> None:
    node = {
        "kind": "Node",
        "metadata": {"name": "n1"},
        "spec": {"podCIDR": "10.0.0.0/24", "taints": [{"key": "k", "effect": "NoSchedule"}]},
    }
    result = strategic_merge_patch(node, {"spec": {"unschedulable": True}})
    assert result["spec"] == {
        "podCIDR": "10.0.0.0/24",
        "taints": [{"key": "k", "effect": "NoSchedule"}],
        "unschedulable": True,
    }
    uncordoned = strategic_merge_patch(result, {"spec": {"unschedulable": None}})
    assert "unschedulable" not in uncordoned["spec"]


def test_taints_are_replaced_like_kubectl_taint_expects() -> None:
    # Node.spec.taints has no patch strategy in k8s.io/api, so `kubectl taint ... key-`
    # sends the remaining list and the removed taint must disappear.
    node = {
        "kind": "Node",
        "metadata": {"name": "n1"},
        "spec": {
            "taints": [{"key": "a", "effect": "NoSchedule"}, {"key": "b", "effect": "NoExecute"}]
        },
    }
    result = strategic_merge_patch(
        node, {"spec": {"taints": [{"key": "b", "effect": "NoExecute"}]}}
    )
    assert result["spec"]["taints"] == [{"key": "b", "effect": "NoExecute"}]
    assert "taints" not in strategic_merge_patch(node, {"spec": {"taints": None}})["spec"]


def test_remove_finalizer_with_delete_from_primitive_list() -> None:
    patch = {
        "metadata": {
            "$setElementOrder/finalizers": ["example.com/a"],
            "$deleteFromPrimitiveList/finalizers": ["example.com/b"],
        }
    }
    result = strategic_merge_patch(two_container_pod(), patch)
    assert result["metadata"]["finalizers"] == ["example.com/a"]
    assert not any(k.startswith("$") for k in result["metadata"])


def test_removing_the_last_finalizer_drops_the_field() -> None:
    patch = {
        "metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/a", "example.com/b"]}
    }
    assert "finalizers" not in strategic_merge_patch(two_container_pod(), patch)["metadata"]


def test_delete_from_primitive_list_on_missing_list_adds_nothing() -> None:
    obj = {"metadata": {"name": "x"}}
    patch = {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}
    assert strategic_merge_patch(obj, patch) == {"metadata": {"name": "x"}}


def test_add_finalizer_merges_as_a_set() -> None:
    result = strategic_merge_patch(
        two_container_pod(), {"metadata": {"finalizers": ["example.com/b", "example.com/c"]}}
    )
    assert sorted(result["metadata"]["finalizers"]) == [
        "example.com/a",
        "example.com/b",
        "example.com/c",
    ]
    ordered = strategic_merge_patch(
        two_container_pod(),
        {
            "metadata": {
                "$setElementOrder/finalizers": ["example.com/a", "example.com/b", "c"],
                "finalizers": ["c"],
            }
        },
    )
    assert ordered["metadata"]["finalizers"] == ["example.com/a", "example.com/b", "c"]


def test_namespace_spec_finalizers_are_replaced() -> None:
    ns = {"kind": "Namespace", "spec": {"finalizers": ["kubernetes"]}}
    assert strategic_merge_patch(ns, {"spec": {"finalizers": []}})["spec"] == {"finalizers": []}


def test_condition_replacement_by_type() -> None:
    patch = {
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": None,
                    "lastTransitionTime": "2024-01-01T00:00:00Z",
                }
            ]
        }
    }
    result = strategic_merge_patch(two_container_pod(), patch)
    assert result["status"]["conditions"] == [
        {"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"},
        {"type": "PodScheduled", "status": "True"},
    ]
    assert result["status"]["phase"] == "Running"


def test_volume_mounts_merge_by_mount_path() -> None:
    patch = {
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "volumeMounts": [
                        {"mountPath": "/data", "readOnly": True},
                        {"name": "cache", "mountPath": "/cache"},
                    ],
                }
            ]
        }
    }
    mounts = containers(strategic_merge_patch(two_container_pod(), patch))[0]["volumeMounts"]
    assert mounts == [
        {"name": "data", "mountPath": "/data", "readOnly": True},
        {"name": "cache", "mountPath": "/cache"},
    ]


def test_container_ports_merge_by_container_port() -> None:
    patch = {
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "ports": [
                        {"containerPort": 80, "name": "http"},
                        {"containerPort": 9090, "name": "metrics"},
                    ],
                }
            ]
        }
    }
    ports = containers(strategic_merge_patch(two_container_pod(), patch))[0]["ports"]
    assert ports == [
        {"containerPort": 80, "protocol": "TCP", "name": "http"},
        {"containerPort": 9090, "name": "metrics"},
    ]


def test_service_ports_merge_by_port() -> None:
    svc = {
        "kind": "Service",
        "spec": {
            "ports": [
                {"port": 80, "targetPort": 8080, "name": "http"},
                {"port": 443, "name": "https"},
            ]
        },
    }
    result = strategic_merge_patch(svc, {"spec": {"ports": [{"port": 80, "targetPort": 9090}]}})
    assert result["spec"]["ports"] == [
        {"port": 80, "targetPort": 9090, "name": "http"},
        {"port": 443, "name": "https"},
    ]


def test_other_ports_lists_are_replaced() -> None:
    policy = {
        "kind": "NetworkPolicy",
        "spec": {"ingress": [{"ports": [{"port": 80}, {"port": 443}]}]},
    }
    result = strategic_merge_patch(policy, {"spec": {"ingress": [{"ports": [{"port": 8080}]}]}})
    assert result["spec"]["ingress"] == [{"ports": [{"port": 8080}]}]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tolerations", [{"key": "b", "operator": "Exists"}]),
        ("args", ["--c"]),
    ],
)
def test_lists_without_strategy_are_replaced(field: str, value: list[Any]) -> None:
    pod = two_container_pod()
    if field == "tolerations":
        result = strategic_merge_patch(pod, {"spec": {"tolerations": value}})
        assert result["spec"]["tolerations"] == value
    else:
        patch = {"spec": {"containers": [{"name": "app", "args": value}]}}
        assert containers(strategic_merge_patch(pod, patch))[0]["args"] == value


def test_env_from_is_replaced() -> None:
    pod = two_container_pod()
    pod["spec"]["containers"][0]["envFrom"] = [{"configMapRef": {"name": "a"}}]
    patch = {"spec": {"containers": [{"name": "app", "envFrom": [{"secretRef": {"name": "s"}}]}]}}
    assert containers(strategic_merge_patch(pod, patch))[0]["envFrom"] == [
        {"secretRef": {"name": "s"}}
    ]


def test_owner_references_merge_by_uid() -> None:
    patch = {
        "metadata": {
            "ownerReferences": [
                {"uid": "u1", "controller": True},
                {"uid": "u2", "kind": "Job", "name": "j"},
            ]
        }
    }
    refs = strategic_merge_patch(two_container_pod(), patch)["metadata"]["ownerReferences"]
    assert refs == [
        {"uid": "u1", "kind": "ReplicaSet", "name": "web", "controller": True},
        {"uid": "u2", "kind": "Job", "name": "j"},
    ]


def test_more_merge_keys() -> None:
    spec = {
        "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["a"]}],
        "topologySpreadConstraints": [{"topologyKey": "zone", "maxSkew": 1}],
        "imagePullSecrets": [{"name": "reg"}],
        "initContainers": [
            {
                "name": "init",
                "image": "i:1",
                "volumeDevices": [{"name": "blk", "devicePath": "/dev/x"}],
            }
        ],
    }
    patch = {
        "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["b"]}],
        "topologySpreadConstraints": [{"topologyKey": "zone", "maxSkew": 2}],
        "imagePullSecrets": [{"name": "other"}],
        "initContainers": [
            {"name": "init", "volumeDevices": [{"name": "blk2", "devicePath": "/dev/x"}]}
        ],
    }
    result = strategic_merge_patch({"kind": "Pod", "spec": spec}, {"spec": patch})["spec"]
    assert result["hostAliases"] == [{"ip": "10.0.0.1", "hostnames": ["b"]}]
    assert result["topologySpreadConstraints"] == [{"topologyKey": "zone", "maxSkew": 2}]
    assert result["imagePullSecrets"] == [{"name": "other"}, {"name": "reg"}]
    assert result["initContainers"] == [
        {
            "name": "init",
            "image": "i:1",
            "volumeDevices": [{"name": "blk2", "devicePath": "/dev/x"}],
        }
    ]


def test_labels_merge_and_null_deletes() -> None:
    # What `kubectl label pod web-0 tier=fe app-` sends.
    patch = {"metadata": {"labels": {"app": None, "tier": "fe"}}}
    result = strategic_merge_patch(two_container_pod(), patch)
    assert result["metadata"]["labels"] == {"tier": "fe"}


def test_patch_replace_directive_on_a_map() -> None:
    patch = {"metadata": {"labels": {"$patch": "replace", "only": "this"}}}
    result = strategic_merge_patch(two_container_pod(), patch)
    assert result["metadata"]["labels"] == {"only": "this"}


def test_patch_delete_directive_on_a_map() -> None:
    patch = {"metadata": {"labels": {"$patch": "delete"}}}
    result = strategic_merge_patch(two_container_pod(), patch)
    assert "labels" not in result["metadata"]
    assert strategic_merge_patch({"a": 1}, {"$patch": "delete"}) == {}


def test_patch_replace_directive_as_list_element() -> None:
    patch = {"spec": {"containers": [{"$patch": "replace"}, {"name": "solo", "image": "s:1"}]}}
    result = strategic_merge_patch(two_container_pod(), patch)
    assert containers(result) == [{"name": "solo", "image": "s:1"}]


def test_retain_keys_switches_a_union() -> None:
    # What `kubectl apply` sends when a Deployment's strategy goes RollingUpdate -> Recreate.
    deployment = {
        "kind": "Deployment",
        "spec": {
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            }
        },
    }
    patch = {
        "spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": None}}
    }
    result = strategic_merge_patch(deployment, patch)
    assert result["spec"]["strategy"] == {"type": "Recreate"}
    with pytest.raises(PatchError, match='field "type" is set by the patch but missing'):
        strategic_merge_patch(
            deployment, {"spec": {"strategy": {"$retainKeys": [], "type": "Recreate"}}}
        )


def test_pdb_selector_is_replaced_not_merged() -> None:
    pdb = {
        "kind": "PodDisruptionBudget",
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "minAvailable": 1},
    }
    result = strategic_merge_patch(
        pdb, {"spec": {"selector": {"matchLabels": {"app": "db"}, "matchExpressions": []}}}
    )
    assert result["spec"]["selector"] == {"matchLabels": {"app": "db"}, "matchExpressions": []}
    deployment = {"kind": "Deployment", "spec": {"selector": {"matchLabels": {"app": "web"}}}}
    merged = strategic_merge_patch(
        deployment, {"spec": {"selector": {"matchLabels": {"tier": "x"}}}}
    )
    assert merged["spec"]["selector"] == {"matchLabels": {"app": "web", "tier": "x"}}


def test_no_directive_survives_in_new_content() -> None:
    patch = {
        "spec": {
            "newList": [{"$patch": "replace"}, {"a": 1, "b": None}],
            "newMap": {
                "$setElementOrder/x": [1],
                "$retainKeys": ["x"],
                "x": [1],
                "nested": {"$patch": "delete"},
                "kept": {"$patch": "replace", "k": 1},
            },
            "containers": [
                {
                    "name": "new",
                    "env": [{"name": "A", "$patch": "delete"}],
                    "$setElementOrder/env": [],
                }
            ],
        }
    }
    result = strategic_merge_patch(two_container_pod(), patch)

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                assert not key.startswith("$"), key
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(result)
    assert result["spec"]["newList"] == [{"a": 1}]
    assert result["spec"]["newMap"] == {"x": [1], "kept": {"k": 1}}
    assert containers(result)[0] == {"name": "new", "env": []}


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (
            {"spec": {"containers": [{"image": "x"}]}},
            'spec.containers: an item has no merge key "name"',
        ),
        (
            {"spec": {"containers": [{"$patch": "delete"}]}},
            'spec.containers: a "$patch: delete" item must carry the merge key "name"',
        ),
        (
            {"spec": {"containers": [{"name": "app", "$patch": "explode"}]}},
            'unknown $patch directive "explode"',
        ),
        (
            {"metadata": {"labels": {"$patch": "merge"}}},
            'metadata.labels: unknown $patch directive "merge" in a map',
        ),
        (
            {"metadata": {"$frobnicate": 1}},
            'metadata: unknown strategic merge patch directive "$frobnicate"',
        ),
        ({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}, "must be a list"),
        ({"metadata": {"$setElementOrder/finalizers": "a"}}, "must be a list"),
        ({"spec": {"$retainKeys": "tolerations"}}, "$retainKeys must be a list"),
        ({"spec": {"containers": ["app"]}}, "expected objects with a 'name' key"),
        ({"metadata": {"finalizers": [{"a": 1}]}}, "expected a list of scalar values"),
    ],
)
def test_strategic_merge_errors(patch: dict[str, Any], message: str) -> None:
    with pytest.raises(PatchError) as caught:
        strategic_merge_patch(two_container_pod(), patch)
    assert message in str(caught.value)


def test_strategic_merge_patch_must_be_an_object() -> None:
    with pytest.raises(PatchError, match="must be a JSON object"):
        strategic_merge_patch(two_container_pod(), [1])  # type: ignore[arg-type]


def test_strategic_merge_does_not_mutate_or_alias_inputs() -> None:
    pod = two_container_pod()
    patch = {
        "metadata": {"labels": {"new": "1"}, "$deleteFromPrimitiveList/finalizers": ["x"]},
        "spec": {
            "containers": [
                {"name": "app", "image": "app:2", "$setElementOrder/env": [{"name": "MODE"}]},
                {"name": "new", "args": ["a"]},
            ],
            "newMap": {"l": [1]},
        },
    }
    saved = copy.deepcopy((pod, patch))
    result = strategic_merge_patch(pod, patch)
    assert (pod, patch) == saved
    result["spec"]["newMap"]["l"].append(2)
    result["spec"]["containers"][0]["args"].append("x")
    result["metadata"]["labels"]["app"] = "changed"
    assert (pod, patch) == saved


def test_kubectl_apply_style_three_way_patch() -> None:
    # Shape of a patch `kubectl apply` computes when a container is removed from the
    # manifest, an annotation is updated, and a port is added.
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "web", "annotations": {"a": "1"}},
        "spec": {
            "replicas": 2,
            "template": {
                "spec": {
                    "containers": [
                        {"name": "app", "image": "app:1", "ports": [{"containerPort": 80}]},
                        {"name": "old", "image": "old:1"},
                    ]
                }
            },
        },
    }
    patch = {
        "metadata": {"annotations": {"a": "2"}},
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "app"}],
                    "containers": [
                        {
                            "$setElementOrder/ports": [
                                {"containerPort": 80},
                                {"containerPort": 443},
                            ],
                            "name": "app",
                            "ports": [{"containerPort": 443}],
                        },
                        {"$patch": "delete", "name": "old"},
                    ],
                }
            }
        },
    }
    result = strategic_merge_patch(deployment, patch)
    assert result["metadata"]["annotations"] == {"a": "2"}
    assert result["spec"]["template"]["spec"]["containers"] == [
        {"name": "app", "image": "app:1", "ports": [{"containerPort": 80}, {"containerPort": 443}]}
    ]
    assert result["spec"]["replicas"] == 2
