"""Authentication and RBAC of pystol-sim, driven over HTTPS with the official client and kubectl.

One sim process for the module, started from a scenario with two users (`alice` in `dev`,
`root` in `system:masters`). Each test makes the ServiceAccounts, Roles and bindings it
needs under names of its own, with the admin token from the kubeconfig.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream

from tests.support.kube_helpers import wait_for
from tests.support.sim_process import SimProcess

ALICE_TOKEN = "alice-token-0123456789"
ROOT_TOKEN = "root-token-0123456789"
SCENARIO = f"""
nodes: [{{name: node-a}}]
namespaces: [shop, payments]
timings: {{start_seconds: 0, ready_seconds: 0}}
deployments:
  - {{name: web, namespace: shop, replicas: 1, labels: {{app: web}}}}
  - {{name: api, namespace: payments, replicas: 1, labels: {{app: api}}}}
users:
  - {{name: alice, token: {ALICE_TOKEN}, groups: [dev]}}
  - {{name: root, token: {ROOT_TOKEN}, groups: [system:masters]}}
"""
RBAC_GROUP = "rbac.authorization.k8s.io"


# ------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    with SimProcess.start(tmp_path_factory.mktemp("sim-auth"), scenario_text=SCENARIO) as process:
        yield process


@pytest.fixture(scope="module")
def admin(sim: SimProcess) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(sim.kubeconfig))
    yield api_client
    api_client.close()


def as_token(sim: SimProcess, token: str) -> client.ApiClient:
    """A client of the same cluster that authenticates with `token` instead of the admin's."""
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(sim.kubeconfig),
                            client_configuration=configuration)
    configuration.api_key = {"authorization": f"Bearer {token}"}
    configuration.refresh_api_key_hook = None  # it would put the kubeconfig's token back
    return client.ApiClient(configuration)


def raw(sim: SimProcess, method: str, path: str, token: str, body: Any = None
        ) -> tuple[int, Any]:
    """One HTTPS request with `token` (for the sim's own routes, which no client knows)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(sim.url + path, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10, context=sim.ssl_context) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def body_of(error: ApiException) -> dict[str, Any]:
    return json.loads(error.body)


def refused(call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Call, expect a 403, and return its Status body."""
    with pytest.raises(ApiException) as caught:
        call(*args, **kwargs)
    assert caught.value.status == 403, caught.value.body
    return body_of(caught.value)


def make_service_account(admin: client.ApiClient, namespace: str) -> str:
    name = unique("robot")
    client.CoreV1Api(admin).create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name)))
    return name


def sa_token(admin: client.ApiClient, namespace: str, name: str, seconds: int = 3600) -> str:
    """A TokenRequest through the official client (what a harness would call)."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds))
    answer = client.CoreV1Api(admin).create_namespaced_service_account_token(
        name, namespace, request)
    return str(answer.status.token)


def grant(admin: client.ApiClient, namespace: str, subject: client.RbacV1Subject,
          rules: list[client.V1PolicyRule] | None = None, cluster_role: str | None = None
          ) -> str:
    """A Role with `rules` (or the ClusterRole `cluster_role`) bound in `namespace`."""
    api = client.RbacAuthorizationV1Api(admin)
    name = unique("grant")
    if cluster_role is None:
        api.create_namespaced_role(namespace, client.V1Role(
            metadata=client.V1ObjectMeta(name=name), rules=rules))
    api.create_namespaced_role_binding(namespace, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name=name), subjects=[subject],
        role_ref=client.V1RoleRef(api_group=RBAC_GROUP, kind="ClusterRole" if cluster_role
                                  else "Role", name=cluster_role or name)))
    return name


def sa_subject(namespace: str, name: str) -> client.RbacV1Subject:
    return client.RbacV1Subject(kind="ServiceAccount", name=name, namespace=namespace)


def pod_of(admin: client.ApiClient, namespace: str, app: str) -> str:
    core = client.CoreV1Api(admin)

    def running() -> str | None:
        for pod in core.list_namespaced_pod(namespace, label_selector=f"app={app}").items:
            if pod.status.phase == "Running" and not pod.metadata.deletion_timestamp:
                return str(pod.metadata.name)
        return None

    return str(wait_for(running, timeout=20))


# ------------------------------------------------------------------------------- tests


def test_the_admin_token_is_unchanged(admin: client.ApiClient, sim: SimProcess) -> None:
    core = client.CoreV1Api(admin)
    assert core.list_pod_for_all_namespaces().items
    review = client.AuthenticationV1Api(admin).create_token_review(client.V1TokenReview(
        spec=client.V1TokenReviewSpec(token=sim.token)))
    assert review.status.authenticated
    assert review.status.user.username == "system:admin"
    assert review.status.user.groups == ["system:masters", "system:authenticated"]
    assert sim.request("GET", "/_sim/faults")[0] == 200


def test_a_service_account_token_is_refused_until_rbac_grants_it(
        admin: client.ApiClient, sim: SimProcess) -> None:
    name = unique("robot")
    sim.kubectl("create", "serviceaccount", name, "-n", "shop")
    token = sim.kubectl("create", "token", name, "-n", "shop").stdout.strip()
    user = f"system:serviceaccount:shop:{name}"
    robot = client.CoreV1Api(as_token(sim, token))
    pod = pod_of(admin, "shop", "web")

    status = refused(robot.list_namespaced_pod, "shop")
    assert status == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f'pods is forbidden: User "{user}" cannot list resource "pods" in API '
                   'group "" in the namespace "shop"',
        "reason": "Forbidden", "details": {"kind": "pods"}, "code": 403}
    status = refused(robot.delete_namespaced_pod, pod, "shop")
    assert status["message"] == (f'pods "{pod}" is forbidden: User "{user}" cannot delete '
                                 'resource "pods" in API group "" in the namespace "shop"')
    assert status["details"] == {"name": pod, "kind": "pods"}
    result = sim.kubectl("get", "pods", "-n", "shop", "--token", token, check=False)
    assert result.returncode != 0
    assert (f'Error from server (Forbidden): pods is forbidden: User "{user}" cannot list '
            'resource "pods" in API group "" in the namespace "shop"') in result.stderr

    grant(admin, "shop", sa_subject("shop", name), [client.V1PolicyRule(
        api_groups=[""], resources=["pods"], verbs=["get", "list", "delete"])])
    assert pod in {p.metadata.name for p in robot.list_namespaced_pod("shop").items}
    assert pod in sim.kubectl("get", "pods", "-n", "shop", "--token", token).stdout
    # ... in that namespace only, and not across all namespaces.
    other = pod_of(admin, "payments", "api")
    status = refused(robot.delete_namespaced_pod, other, "payments")
    assert status["message"].endswith('cannot delete resource "pods" in API group "" in the '
                                      'namespace "payments"')
    status = refused(robot.list_pod_for_all_namespaces)
    assert status["message"] == (f'pods is forbidden: User "{user}" cannot list resource '
                                 '"pods" in API group "" at the cluster scope')
    # Nothing else was granted in shop either: deployments, and the pod's subresources.
    status = refused(client.AppsV1Api(as_token(sim, token)).patch_namespaced_deployment_scale,
                     "web", "shop", {"spec": {"replicas": 2}})
    assert status["message"] == (f'deployments.apps "web" is forbidden: User "{user}" cannot '
                                 'patch resource "deployments/scale" in API group "apps" in '
                                 'the namespace "shop"')
    status = refused(robot.create_namespaced_pod_eviction, pod, "shop", client.V1Eviction(
        metadata=client.V1ObjectMeta(name=pod, namespace="shop")))
    assert 'cannot create resource "pods/eviction" in API group "" in the namespace ' \
           '"shop"' in status["message"]
    robot.delete_namespaced_pod(pod, "shop", grace_period_seconds=0)


def test_watch_and_resource_names_are_checked(admin: client.ApiClient, sim: SimProcess
                                              ) -> None:
    core = client.CoreV1Api(admin)
    allowed, other = unique("settings"), unique("other")
    for cm in (allowed, other):
        core.create_namespaced_config_map("shop", client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=cm)))
    name = make_service_account(admin, "shop")
    robot = client.CoreV1Api(as_token(sim, sa_token(admin, "shop", name)))
    grant(admin, "shop", sa_subject("shop", name), [
        client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["list"]),
        client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["get"],
                            resource_names=[allowed])])
    assert robot.list_namespaced_config_map("shop").items
    assert robot.read_namespaced_config_map(allowed, "shop").metadata.name == allowed
    status = refused(robot.read_namespaced_config_map, other, "shop")
    assert status["message"].startswith(f'configmaps "{other}" is forbidden: ')
    # list is granted, watch is not: a watch (`?watch=true`) is its own verb.
    status = refused(lambda: list(watch.Watch().stream(robot.list_namespaced_config_map,
                                                       "shop", timeout_seconds=1)))
    assert status["message"].endswith('cannot watch resource "configmaps" in API group "" in '
                                      'the namespace "shop"')


def test_kubectl_auth_can_i_and_whoami(admin: client.ApiClient, sim: SimProcess) -> None:
    name = unique("robot")
    sim.kubectl("create", "serviceaccount", name, "-n", "shop")
    token = sim.kubectl("create", "token", name, "-n", "shop").stdout.strip()

    def can_i(*args: str) -> str:
        result = sim.kubectl("auth", "can-i", *args, "--token", token, check=False)
        assert result.returncode in (0, 1), result.stderr
        return result.stdout.strip()

    assert can_i("list", "pods", "-n", "shop") == "no"
    sim.kubectl("create", "role", f"{name}-reader", "--verb=get,list,watch", "--resource=pods",
                "-n", "shop")
    sim.kubectl("create", "rolebinding", f"{name}-reader", f"--role={name}-reader",
                f"--serviceaccount=shop:{name}", "-n", "shop")
    assert can_i("list", "pods", "-n", "shop") == "yes"
    assert can_i("list", "pods", "-n", "payments") == "no"
    assert can_i("delete", "pods", "-n", "shop") == "no"
    assert can_i("get", "/version") == "yes"  # system:discovery, for every authenticated user
    listed = sim.kubectl("auth", "can-i", "--list", "-n", "shop", "--token", token).stdout
    assert "pods" in listed and "selfsubjectaccessreviews.authorization.k8s.io" in listed
    whoami = sim.kubectl("auth", "whoami", "--token", token, "-o", "json").stdout
    info = json.loads(whoami)["status"]["userInfo"]
    assert info["username"] == f"system:serviceaccount:shop:{name}"
    assert info["groups"] == ["system:serviceaccounts", "system:serviceaccounts:shop",
                              "system:authenticated"]
    uid = client.CoreV1Api(admin).read_namespaced_service_account(name, "shop").metadata.uid
    assert info["uid"] == uid
    # Discovery works for the account (kubectl needs it before anything else).
    assert "pods" in sim.kubectl("api-resources", "--token", token).stdout


def test_token_review_and_subject_access_reviews(admin: client.ApiClient, sim: SimProcess
                                                 ) -> None:
    name = make_service_account(admin, "shop")
    token = sa_token(admin, "shop", name)
    user = f"system:serviceaccount:shop:{name}"
    grant(admin, "shop", sa_subject("shop", name), cluster_role="view")
    authn = client.AuthenticationV1Api(admin)
    review = authn.create_token_review(client.V1TokenReview(
        spec=client.V1TokenReviewSpec(token=token)))
    assert review.status.authenticated is True
    assert review.status.user.username == user
    assert review.status.user.uid == client.CoreV1Api(admin).read_namespaced_service_account(
        name, "shop").metadata.uid
    assert review.status.user.groups == ["system:serviceaccounts",
                                         "system:serviceaccounts:shop", "system:authenticated"]
    bogus = authn.create_token_review(client.V1TokenReview(
        spec=client.V1TokenReviewSpec(token="not-a-token")))
    assert bogus.status.authenticated is False
    assert bogus.status.error == "invalid bearer token"

    authz = client.AuthorizationV1Api(admin)

    def sar(**attributes: Any) -> client.V1SubjectAccessReviewStatus:
        groups = attributes.pop("groups", ["system:serviceaccounts", "system:authenticated"])
        path = attributes.pop("path", None)
        spec = client.V1SubjectAccessReviewSpec(user=user, groups=groups)
        if path:
            spec.non_resource_attributes = client.V1NonResourceAttributes(path=path, verb="get")
        else:
            spec.resource_attributes = client.V1ResourceAttributes(**attributes)
        return authz.create_subject_access_review(client.V1SubjectAccessReview(spec=spec)).status

    allowed = sar(namespace="shop", verb="list", resource="pods")
    assert allowed.allowed is True
    assert allowed.reason.startswith("RBAC: allowed by RoleBinding")
    assert sar(namespace="payments", verb="list", resource="pods").allowed is False
    assert sar(namespace="shop", verb="get", resource="secrets").allowed is False  # view
    assert sar(namespace="shop", verb="get", resource="deployments", group="apps",
               subresource="scale").allowed is True
    assert sar(path="/version").allowed is True
    assert sar(path="/version", groups=[]).allowed is False  # only via system:authenticated
    local = authz.create_namespaced_local_subject_access_review(
        "shop", client.V1LocalSubjectAccessReview(
            metadata=client.V1ObjectMeta(namespace="shop"),
            spec=client.V1SubjectAccessReviewSpec(
                user=user, resource_attributes=client.V1ResourceAttributes(
                    namespace="shop", verb="watch", resource="pods"))))
    assert local.status.allowed is True

    # Reviews of others are for the privileged: the account itself may not ask them.
    robot = client.AuthenticationV1Api(as_token(sim, token))
    status = refused(robot.create_token_review, client.V1TokenReview(
        spec=client.V1TokenReviewSpec(token=token)))
    assert status["message"] == (
        f'tokenreviews.authentication.k8s.io is forbidden: User "{user}" cannot create '
        'resource "tokenreviews" in API group "authentication.k8s.io" at the cluster scope')
    # ... but asking about itself is always allowed (system:basic-user).
    own = client.AuthorizationV1Api(as_token(sim, token)).create_self_subject_access_review(
        client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(namespace="shop", verb="list",
                                                            resource="pods"))))
    assert own.status.allowed is True


def test_a_deleted_service_accounts_token_stops_working(admin: client.ApiClient,
                                                        sim: SimProcess) -> None:
    core = client.CoreV1Api(admin)
    name = make_service_account(admin, "shop")
    token = sa_token(admin, "shop", name)
    grant(admin, "shop", sa_subject("shop", name), cluster_role="view")
    robot = client.CoreV1Api(as_token(sim, token))
    assert robot.list_namespaced_pod("shop").items is not None
    core.delete_namespaced_service_account(name, "shop")
    with pytest.raises(ApiException) as caught:
        robot.list_namespaced_pod("shop")
    assert caught.value.status == 401
    assert body_of(caught.value)["reason"] == "Unauthorized"
    # A new account of the same name does not revive the old token (tokens bind the uid).
    make_again = client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
    core.create_namespaced_service_account("shop", make_again)
    with pytest.raises(ApiException) as again:
        robot.list_namespaced_pod("shop")
    assert again.value.status == 401
    assert client.CoreV1Api(as_token(sim, sa_token(admin, "shop", name))).list_namespaced_pod(
        "shop").items is not None


def test_token_requests_are_validated(admin: client.ApiClient, sim: SimProcess) -> None:
    name = make_service_account(admin, "shop")
    result = sim.kubectl("create", "token", name, "-n", "shop", "--duration", "1m",
                         check=False)
    assert result.returncode != 0
    assert "may not specify a duration less than 10 minutes" in result.stderr
    result = sim.kubectl("create", "token", "no-such-account", "-n", "shop", check=False)
    assert 'serviceaccounts "no-such-account" not found' in result.stderr
    answer = client.CoreV1Api(admin).create_namespaced_service_account_token(
        name, "shop", client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=7200)))
    assert answer.spec.expiration_seconds == 7200
    assert answer.status.expiration_timestamp is not None
    assert len(answer.status.token) >= 40


def test_scenario_and_runtime_users(admin: client.ApiClient, sim: SimProcess) -> None:
    alice = as_token(sim, ALICE_TOKEN)
    who = client.AuthenticationV1Api(alice).create_self_subject_review(
        client.V1SelfSubjectReview())
    assert who.status.user_info.username == "alice"
    assert who.status.user_info.groups == ["dev", "system:authenticated"]
    refused(client.AppsV1Api(alice).list_namespaced_deployment, "payments")
    # A group binding: the ClusterRole `edit` through a RoleBinding in shop, to group dev.
    grant(admin, "shop", client.RbacV1Subject(kind="Group", name="dev", api_group=RBAC_GROUP),
          cluster_role="edit")
    apps = client.AppsV1Api(alice)
    assert apps.read_namespaced_deployment_scale("web", "shop").spec.replicas >= 1
    refused(apps.list_namespaced_deployment, "payments")
    status = refused(client.CoreV1Api(alice).list_node)
    assert status["message"] == ('nodes is forbidden: User "alice" cannot list resource '
                                 '"nodes" in API group "" at the cluster scope')
    # system:masters may do anything, but /_sim/ stays the admin token's.
    root = client.CoreV1Api(as_token(sim, ROOT_TOKEN))
    assert root.list_node().items
    for token, who in ((ALICE_TOKEN, "alice"), (ROOT_TOKEN, "root")):
        code, status = raw(sim, "GET", "/_sim/faults", token)
        assert (code, status["message"]) == (
            403, f'forbidden: User "{who}" cannot get path "/_sim/faults"')
    # Unknown tokens are 401, as before.
    with pytest.raises(ApiException) as unknown:
        client.CoreV1Api(as_token(sim, "who-knows")).list_namespaced_pod("shop")
    assert unknown.value.status == 401

    # Users added at run time (admin only), and removed again.
    code, body = sim.request("POST", "/_sim/users", {"name": "carol", "token": "carol-token-1",
                                                     "groups": ["ops"]})
    assert code == 201, body
    assert body == {"username": "carol", "groups": ["ops", "system:authenticated"]}
    carol = client.AuthenticationV1Api(as_token(sim, "carol-token-1"))
    assert carol.create_self_subject_review(
        client.V1SelfSubjectReview()).status.user_info.username == "carol"
    code, _ = raw(sim, "POST", "/_sim/users", "carol-token-1",
                  {"name": "eve", "token": "eve-token", "groups": ["system:masters"]})
    assert code == 403
    assert raw(sim, "GET", "/version", "eve-token")[0] == 401
    assert sim.request("POST", "/_sim/users", {"name": "x", "token": ALICE_TOKEN})[0] == 201
    assert sim.request("POST", "/_sim/users", {"name": "x", "token": sim.token})[0] == 400
    assert sim.request("POST", "/_sim/users", {"name": "", "token": "t"})[0] == 400
    assert sim.request("DELETE", "/_sim/users/carol")[0] == 200
    with pytest.raises(ApiException) as gone:
        carol.create_self_subject_review(client.V1SelfSubjectReview())
    assert gone.value.status == 401
    # Restore alice (the token was given to "x" above).
    assert sim.request("POST", "/_sim/users", {"name": "alice", "token": ALICE_TOKEN,
                                               "groups": ["dev"]})[0] == 201


def test_exec_over_websocket_needs_get_and_create(admin: client.ApiClient, sim: SimProcess
                                                  ) -> None:
    name = make_service_account(admin, "shop")
    token = sa_token(admin, "shop", name)
    pod = pod_of(admin, "shop", "web")
    grant(admin, "shop", sa_subject("shop", name), [client.V1PolicyRule(
        api_groups=[""], resources=["pods", "pods/exec"], verbs=["get"])])

    def run() -> str:
        core = client.CoreV1Api(as_token(sim, token))
        return str(stream(core.connect_get_namespaced_pod_exec, pod, "shop",
                          command=["echo", "hi"], stderr=True, stdin=False, stdout=True,
                          tty=False))

    with pytest.raises(ApiException) as caught:
        run()
    assert "403" in str(caught.value)
    grant(admin, "shop", sa_subject("shop", name), [client.V1PolicyRule(
        api_groups=[""], resources=["pods/exec"], verbs=["create"])])
    assert run() == "hi\n"


def test_discovery_lists_the_review_kinds(admin: client.ApiClient, sim: SimProcess) -> None:
    groups = {g.name for g in client.ApisApi(admin).get_api_versions().groups}
    assert {"authentication.k8s.io", "authorization.k8s.io"} <= groups
    out = sim.kubectl("api-resources", "--api-group=authorization.k8s.io", "-o", "name").stdout
    assert set(out.split()) == {
        "localsubjectaccessreviews.authorization.k8s.io",
        "selfsubjectaccessreviews.authorization.k8s.io",
        "selfsubjectrulesreviews.authorization.k8s.io",
        "subjectaccessreviews.authorization.k8s.io"}
    code, body = sim.request("GET", "/api/v1")
    token = next(r for r in body["resources"] if r["name"] == "serviceaccounts/token")
    assert (token["kind"], token["verbs"], token["group"]) == (
        "TokenRequest", ["create"], "authentication.k8s.io")
    # Create-only kinds are answered, never stored: there is nothing to list.
    code, _ = sim.request("GET", "/apis/authorization.k8s.io/v1/subjectaccessreviews")
    assert code == 405
    roles = sim.kubectl("get", "clusterroles", "-o", "name").stdout.split()
    assert {"clusterrole.rbac.authorization.k8s.io/cluster-admin",
            "clusterrole.rbac.authorization.k8s.io/view",
            "clusterrole.rbac.authorization.k8s.io/system:discovery"} <= set(roles)


def test_scenario_user_with_the_admin_token_is_refused(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text("nodes: [{name: n}]\nusers: [{name: x, token: same-token}]\n")
    result = subprocess.run([sys.executable, "-m", "pystol_sim", "--scenario", str(scenario),
                             "--token", "same-token", "--kubeconfig", str(tmp_path / "kc")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "users[0].token: this is the admin token (--token)" in result.stderr
    assert not (tmp_path / "kc").exists()


def test_a_namespaced_role_on_pystol_org_cannot_create_cluster_kinds(
        admin: client.ApiClient, sim: SimProcess, tmp_path: Path) -> None:
    """Node-level and cluster-wide chaos by custom resource is a cluster-scoped kind: a
    team's Role on `pystol.org/*` in its namespace lets it create PystolActions there, and
    the API server itself refuses it a PystolClusterAction; a ClusterRole bound cluster-wide
    is what allows one."""
    from pystol_api.crds import crd_dir

    sim.kubectl("apply", "-f", str(crd_dir()))
    sim.kubectl("wait", "--for", "condition=Established", "--timeout", "30s",
                "crd/pystolactions.pystol.org", "crd/pystolclusteractions.pystol.org",
                "crd/pystolclusterschedules.pystol.org")
    if sim.kubectl("get", "namespace", "team-a", check=False).returncode != 0:
        sim.kubectl("create", "namespace", "team-a")
    name = make_service_account(admin, "team-a")
    token = sa_token(admin, "team-a", name)
    user = f"system:serviceaccount:team-a:{name}"
    grant(admin, "team-a", sa_subject("team-a", name), [client.V1PolicyRule(
        api_groups=["pystol.org"], resources=["*"], verbs=["*"])])
    template = {"action": "node-cordon", "duration": "10s", "target": {"names": ["node-a"]}}
    manifests = {
        "own.yaml": {"kind": "PystolAction", "metadata": {"name": "own", "namespace": "team-a"},
                     "spec": {"action": "pod-kill", "dryRun": True}},
        "pca.yaml": {"kind": "PystolClusterAction", "metadata": {"name": unique("cordon")},
                     "spec": template},
        "pcs.yaml": {"kind": "PystolClusterSchedule", "metadata": {"name": unique("nightly")},
                     "spec": {"interval": "1h", "template": template}},
    }
    for file, manifest in manifests.items():
        (tmp_path / file).write_text(json.dumps({"apiVersion": "pystol.org/v1alpha1",
                                                 **manifest}))

    def create(file: str) -> subprocess.CompletedProcess[str]:
        return sim.kubectl("create", "-f", str(tmp_path / file), "--token", token, check=False)

    assert create("own.yaml").returncode == 0  # the Role holds in its namespace
    for file, plural in (("pca.yaml", "pystolclusteractions"),
                         ("pcs.yaml", "pystolclusterschedules")):
        result = create(file)
        assert result.returncode != 0
        assert (f'Error from server (Forbidden): error when creating "{tmp_path / file}": '
                f'{plural}.pystol.org is forbidden: User "{user}" cannot create resource '
                f'"{plural}" in API group "pystol.org" at the cluster scope') \
            in result.stderr, result.stderr
    assert manifests["pca.yaml"]["metadata"]["name"] not in sim.kubectl(
        "get", "pystolclusteractions", "-o", "name").stdout
    # A cluster kind does not exist under a namespace: no way round the cluster scope.
    code, _ = raw(sim, "POST", "/apis/pystol.org/v1alpha1/namespaces/team-a/"
                  "pystolclusteractions", token, {"apiVersion": "pystol.org/v1alpha1",
                                                  **manifests["pca.yaml"]})
    assert code == 404

    # What a cluster admin grants: a ClusterRole, bound cluster-wide.
    rbac = client.RbacAuthorizationV1Api(admin)
    role = unique("pystol-cluster-chaos")
    rbac.create_cluster_role(client.V1ClusterRole(
        metadata=client.V1ObjectMeta(name=role), rules=[client.V1PolicyRule(
            api_groups=["pystol.org"], resources=["pystolclusteractions"],
            verbs=["create", "get"])]))
    rbac.create_cluster_role_binding(client.V1ClusterRoleBinding(
        metadata=client.V1ObjectMeta(name=role), subjects=[sa_subject("team-a", name)],
        role_ref=client.V1RoleRef(api_group=RBAC_GROUP, kind="ClusterRole", name=role)))
    assert create("pca.yaml").returncode == 0
    assert sim.kubectl("get", "pystolclusteraction", manifests["pca.yaml"]["metadata"]["name"],
                       "--token", token, "-o", "name").stdout.strip()
    # ... and only the kind it names.
    assert "cannot create resource \"pystolclusterschedules\"" in create("pcs.yaml").stderr
