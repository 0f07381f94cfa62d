"""Least privilege: the chart's ClusterRole/Role grant exactly tests/data/operator-rbac.yaml -
no wildcards, Secrets get-only - and that file covers every kind the operator's code touches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from mmop.operator import kube, models
from mmop.operator.builders.children import build_children
from mmop.operator.reconcile.children import CHILD_KINDS
from mmop.operator.settings import BuildOptions

ROOT = Path(__file__).resolve().parents[3]

Grant = tuple[str, str, str]  # (apiGroup, resource, verb)


def _grants(rules: list[dict[str, Any]]) -> set[Grant]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def _expected(
    data: list[dict[str, Any]], *, scope: str, namespace_mode: bool, secrets: bool = False
) -> set[Grant]:
    """The grants of ``scope``'s rules: namespaceMode rules only with watchNamespace,
    secretAccess rules only where Secrets are granted (``secrets``)."""
    wanted = {"always"} | ({"namespaceMode"} if namespace_mode else set())
    wanted |= {"secretAccess"} if secrets else set()
    return {
        (rule["apiGroup"], rule["resource"], verb)
        for rule in data
        if rule["scope"] == scope and rule.get("when", "always") in wanted
        for verb in rule["verbs"]
    }


def test_cluster_wide_mode_grants_exactly_the_data_file(helm, rbac_rules) -> None:
    role = helm.template().one("ClusterRole")
    expected = _expected(rbac_rules, scope="cluster", namespace_mode=False) | _expected(
        rbac_rules, scope="namespaced", namespace_mode=False
    )
    assert _grants(role["rules"]) == expected
    # kopf watches nothing but CRDs cluster-wide when it serves the whole cluster.
    assert ("", "namespaces", "list") not in expected
    # no Secrets anywhere unless granted
    assert not {g for g in _grants(role["rules"]) if g[1] == "secrets"}
    assert not helm.template().kind("Role")


def test_secrets_only_in_the_namespaces_granted(helm, rbac_rules) -> None:
    objects = helm.template(values={"rbac.secretNamespaces": "{team-a,team-b}"})
    cluster_role = objects.one("ClusterRole")
    assert not {g for g in _grants(cluster_role["rules"]) if g[1] == "secrets"}
    roles = {r["metadata"]["namespace"]: r for r in objects.kind("Role")}
    assert set(roles) == {"team-a", "team-b"}
    secret_grants = {
        (r["apiGroup"], r["resource"], v)
        for r in rbac_rules
        if r.get("when") == "secretAccess"
        for v in r["verbs"]
    }
    assert secret_grants == {("", "secrets", "get"), ("", "secrets", "create")}
    for namespace, role in roles.items():
        assert _grants(role["rules"]) == secret_grants, namespace
    bindings = {b["metadata"]["namespace"]: b for b in objects.kind("RoleBinding")}
    assert set(bindings) == {"team-a", "team-b"}
    for namespace, binding in bindings.items():
        assert binding["roleRef"]["name"] == roles[namespace]["metadata"]["name"]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "mmop", "namespace": helm.namespace}
        ]


def test_cluster_wide_secrets_only_when_asked(helm, rbac_rules) -> None:
    role = helm.template(values={"rbac.clusterWideSecrets": "true"}).one("ClusterRole")
    assert ("", "secrets", "get") in _grants(role["rules"])
    expected = _expected(rbac_rules, scope="cluster", namespace_mode=False) | _expected(
        rbac_rules, scope="namespaced", namespace_mode=False, secrets=True
    )
    assert _grants(role["rules"]) == expected


def test_namespace_mode_is_a_role_there_plus_cluster_scoped_basics(helm, rbac_rules) -> None:
    objects = helm.template(values={"watchNamespace": "team-a"})
    cluster_role = objects.one("ClusterRole")
    role = objects.one("Role")
    assert role["metadata"]["namespace"] == "team-a"
    assert _grants(cluster_role["rules"]) == _expected(
        rbac_rules, scope="cluster", namespace_mode=True
    )
    assert _grants(role["rules"]) == _expected(
        rbac_rules, scope="namespaced", namespace_mode=True, secrets=True
    )
    binding = objects.one("RoleBinding")
    assert binding["metadata"]["namespace"] == "team-a"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "mmop", "namespace": helm.namespace}
    ]


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"watchNamespace": "team-a"},
        {"rbac.secretNamespaces": "{team-a}"},
        {"rbac.clusterWideSecrets": "true"},
    ],
    ids=["cluster", "namespace", "secret-namespaces", "cluster-wide-secrets"],
)
def test_no_wildcards_no_secret_listing(helm, values: dict[str, str]) -> None:
    objects = helm.template(values=values)
    rules = [r for kind in ("ClusterRole", "Role") for o in objects.kind(kind) for r in o["rules"]]
    assert rules
    for rule in rules:
        assert set(rule) == {"apiGroups", "resources", "verbs"}  # no nonResourceURLs
        for field in ("apiGroups", "resources", "verbs"):
            assert not any("*" in item for item in rule[field]), rule
    grants = _grants(rules)
    assert {verb for group, resource, verb in grants if resource == "secrets"} <= {"get", "create"}
    # Writes are patches: the operator and kopf never PUT, and never delete their own model
    # (update on the finalizers subresource is what blockOwnerDeletion needs, not a write).
    assert not {
        g
        for g in grants
        if g[2] in ("update", "deletecollection", "escalate", "bind")
        and not g[1].endswith("/finalizers")
    }
    assert {g for g in grants if g[2] == "update"} == {
        ("mmop.io", "multimodalmodels/finalizers", "update")
    }
    assert not {g for g in grants if g[1] == "multimodalmodels" and g[2] in ("create", "delete")}


def test_cluster_role_binding(helm) -> None:
    objects = helm.template()
    role = objects.one("ClusterRole")
    binding = objects.one("ClusterRoleBinding")
    # Cluster-scoped names carry the release namespace: one release per namespace may coexist.
    assert role["metadata"]["name"] == f"mmop-{helm.namespace}"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "mmop", "namespace": helm.namespace}
    ]


def test_rbac_create_false_renders_no_rbac(helm) -> None:
    objects = helm.template(values={"rbac.create": "false", "watchNamespace": "team-a"})
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert not objects.kind(kind)


# --- the data file against the code ---------------------------------------------------------


def _granted(data: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    return {
        v for r in data if (r["apiGroup"], r["resource"]) == (group, resource) for v in r["verbs"]
    }


def test_data_file_covers_the_childrens_writes(rbac_rules) -> None:
    """ensure_children lists, creates, patches and deletes every kind in CHILD_KINDS."""
    for kind in CHILD_KINDS:
        assert {"list", "create", "patch", "delete"} <= _granted(
            rbac_rules, kind.group, kind.plural
        ), kind


def test_data_file_covers_block_owner_deletion(rbac_rules) -> None:
    """Admission (OwnerReferencesPermissionEnforcement) checks update on the owner's
    finalizers for every child whose ownerReference sets blockOwnerDeletion."""
    doc = yaml.safe_load((ROOT / "examples" / "clip.yaml").read_text())
    doc["metadata"]["uid"] = "11111111-2222-3333-4444-555555555555"
    clip = models.parse_model(doc)
    owners = {
        (ref["apiVersion"].rpartition("/")[0], ref["kind"])
        for obj in build_children(clip, options=BuildOptions())
        for ref in obj["metadata"].get("ownerReferences", [])
        if ref.get("blockOwnerDeletion")
    }
    assert owners == {(models.GROUP, models.KIND)}
    assert "update" in _granted(rbac_rules, models.GROUP, f"{models.PLURAL}/finalizers")


def test_data_file_covers_the_reconcilers_calls(rbac_rules) -> None:
    assert "get" in _granted(rbac_rules, models.GROUP, models.PLURAL)
    assert "patch" in _granted(rbac_rules, models.GROUP, f"{models.PLURAL}/status")
    assert "list" in _granted(rbac_rules, kube.POD.group, kube.POD.plural)
    assert _granted(rbac_rules, kube.SECRET.group, kube.SECRET.plural) == {"get", "create"}
    assert "create" in _granted(rbac_rules, kube.EVENT.group, kube.EVENT.plural)


def _kopf_handled_resources() -> dict[tuple[str, str], set[str]]:
    """(group, plural) of every resource mmop's kopf handlers serve, with the verbs kopf needs:
    list+watch for each, and patch where kopf keeps state on the object (daemons and change
    handlers write finalizers and annotations). kopf keeps no public registry API, so this
    reads the same registries its own resource observer reads."""
    from mmop.operator import main  # noqa: F401 - registers the handlers

    registry = kopf.get_default_registry()
    needs: dict[tuple[str, str], set[str]] = {}
    for verbs, reg in (
        ({"list", "watch"}, registry._watching),
        ({"list", "watch", "patch"}, registry._spawning),
        ({"list", "watch", "patch"}, registry._changing),
    ):
        for handler in reg.get_all_handlers():
            selector = handler.selector
            assert selector is not None, handler
            # main.py names resources by plural (any_name); a kind name would need resolving.
            plural = selector.plural or selector.any_name
            assert plural and plural.islower(), handler
            key = (selector.group or "", plural)
            needs.setdefault(key, set()).update(verbs)
    return needs


def test_data_file_covers_kopfs_watches(rbac_rules) -> None:
    needs = _kopf_handled_resources()
    assert (models.GROUP, models.PLURAL) in needs
    assert ("apps", "deployments") in needs
    for (group, plural), verbs in needs.items():
        assert verbs <= _granted(rbac_rules, group, plural), (group, plural)
