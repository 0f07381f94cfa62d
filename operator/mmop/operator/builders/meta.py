"""Names, labels and ownerReferences shared by every child object."""

from __future__ import annotations

import json
from typing import Any

from mmop.operator import models

LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_MODEL = "mmop.io/model"
LABEL_VERSION = "mmop.io/version"
ANNOTATION_REVISION = "mmop.io/revision"
# On Deployment metadata only (never the pod template: changing it would restart pods): what
# the operator needs to rebuild its record of a version when the model's status is lost.
ANNOTATION_ROLE = "mmop.io/role"
ANNOTATION_SERVING_SPEC = "mmop.io/serving-spec"
# What else shapes the pod template and lives only in status: the hub commit the revision was
# pinned to (status.hubCommits) and the mirror target (status.stableMirror). Recovery reads
# them back, so a lost status never changes (restarts) a running version's pods.
ANNOTATION_HUB_COMMIT = "mmop.io/hub-commit"
ANNOTATION_MIRROR = "mmop.io/mirror"
ROLE_RETIRING = "retiring"
MANAGER = "mmop"


def model_labels(name: str) -> dict[str, str]:
    """Labels on every child of model ``name`` (also the selector of all its pods)."""
    return {LABEL_NAME: name, LABEL_MANAGED_BY: MANAGER, LABEL_MODEL: name}


def version_labels(name: str, version: str) -> dict[str, str]:
    return {**model_labels(name), LABEL_VERSION: version}


def pod_selector(name: str, version: str | None = None) -> dict[str, str]:
    """The labels that pick the pods of a model (and of one version of it)."""
    selector = {LABEL_MODEL: name}
    if version is not None:
        selector[LABEL_VERSION] = version
    return selector


def selector_string(selector: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def versioned_name(name: str, version: str) -> str:
    """Deployment, Service, HPA and PDB of one version: NAME-VERSION."""
    return f"{name}-{version}"


def service_host(name: str, namespace: str, cluster_domain: str) -> str:
    return f"{name}.{namespace}.svc.{cluster_domain}"


def model_url(mm: models.MultimodalModel, cluster_domain: str) -> str:
    return f"http://{service_host(mm.metadata.name, mm.metadata.namespace, cluster_domain)}"


def owner_reference(mm: models.MultimodalModel) -> dict[str, Any]:
    return {
        "apiVersion": models.API_VERSION,
        "kind": models.KIND,
        "name": mm.metadata.name,
        "uid": mm.metadata.uid or "00000000-0000-0000-0000-000000000000",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def version_record(
    role: str,
    serving: models.ServingSpec,
    *,
    commit: str | None = None,
    mirror: models.Mirror | None = None,
) -> dict[str, str]:
    """The role (stable, canary, retiring), serving spec, pinned hub commit and mirror target
    of a version, as annotations."""
    record = {
        ANNOTATION_ROLE: role,
        ANNOTATION_SERVING_SPEC: json.dumps(
            serving.canonical(), sort_keys=True, separators=(",", ":")
        ),
    }
    if commit:
        record[ANNOTATION_HUB_COMMIT] = commit
    if mirror is not None:
        record[ANNOTATION_MIRROR] = json.dumps(
            mirror.model_dump(mode="json"), sort_keys=True, separators=(",", ":")
        )
    return record


def object_meta(
    mm: models.MultimodalModel,
    *,
    name: str,
    version: str | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """metadata of a child: name, namespace, the standard labels, the ownerReference."""
    labels = (
        version_labels(mm.metadata.name, version) if version else model_labels(mm.metadata.name)
    )
    meta: dict[str, Any] = {
        "name": name,
        "namespace": mm.metadata.namespace,
        "labels": labels,
        "ownerReferences": [owner_reference(mm)],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta
