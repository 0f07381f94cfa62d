"""The metadata of every child object: name, namespace, labels, ownerReference and the version
record annotations. The vocabulary (label keys, selectors, names) is :mod:`mmop.operator.naming`;
it is re-exported here for the builders and the reconciler that still spell it ``meta.X``."""

from __future__ import annotations

import json
from typing import Any

from mmop.operator import models
from mmop.operator.naming import (
    ANNOTATION_HUB_COMMIT,
    ANNOTATION_MIRROR,
    ANNOTATION_REVISION,
    ANNOTATION_ROLE,
    ANNOTATION_SERVING_SPEC,
    LABEL_MANAGED_BY,
    LABEL_MODEL,
    LABEL_NAME,
    LABEL_VERSION,
    MANAGER,
    ROLE_RETIRING,
    model_labels,
    model_url,
    pod_selector,
    selector_string,
    service_host,
    version_labels,
    versioned_name,
)

__all__ = [
    "ANNOTATION_HUB_COMMIT",
    "ANNOTATION_MIRROR",
    "ANNOTATION_REVISION",
    "ANNOTATION_ROLE",
    "ANNOTATION_SERVING_SPEC",
    "LABEL_MANAGED_BY",
    "LABEL_MODEL",
    "LABEL_NAME",
    "LABEL_VERSION",
    "MANAGER",
    "ROLE_RETIRING",
    "model_labels",
    "model_url",
    "object_meta",
    "owner_reference",
    "pod_selector",
    "selector_string",
    "service_host",
    "version_labels",
    "version_record",
    "versioned_name",
]


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
