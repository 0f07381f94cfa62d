"""CustomResourceDefinitions: checking them, turning them into served resource types, and the
status a real API server reports once their names are accepted."""

from __future__ import annotations

import re
from typing import Any

from mmop.devcluster.apiserver.objects import now
from mmop.devcluster.apiserver.resources import (
    PrinterColumn,
    ResourceType,
    ScaleSpec,
    VersionInfo,
    version_priority,
)

JsonDict = dict[str, Any]
CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
_AGE = PrinterColumn(
    name="Age",
    type="date",
    json_path=".metadata.creationTimestamp",
    description=(
        "CreationTimestamp is a timestamp representing the server time "
        "when this object was created."
    ),
)
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def problems(crd: JsonDict) -> list[dict[str, str]]:
    """Causes (422) that make ``crd`` unacceptable."""
    causes: list[dict[str, str]] = []

    def bad(field: str, message: str, reason: str = "FieldValueInvalid") -> None:
        causes.append({"reason": reason, "message": message, "field": field})

    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = str(spec.get("group") or "")
    plural = str(names.get("plural") or "")
    name = str((crd.get("metadata") or {}).get("name") or "")
    if not group:
        bad("spec.group", "Required value", "FieldValueRequired")
    elif "." not in group:
        bad("spec.group", f'Invalid value: "{group}": should be a domain with at least one dot')
    if not plural:
        bad("spec.names.plural", "Required value", "FieldValueRequired")
    elif not _DNS_LABEL.match(plural):
        bad("spec.names.plural", f'Invalid value: "{plural}": a lowercase RFC 1123 label')
    if not names.get("kind"):
        bad("spec.names.kind", "Required value", "FieldValueRequired")
    if plural and group and name != f"{plural}.{group}":
        bad("metadata.name", f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group')
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        bad(
            "spec.scope",
            f'Unsupported value: "{spec.get("scope")}": supported values: "Cluster", "Namespaced"',
            "FieldValueNotSupported",
        )
    versions = spec.get("versions") or []
    if not versions:
        bad("spec.versions", "Required value", "FieldValueRequired")
    storage = [v for v in versions if isinstance(v, dict) and v.get("storage")]
    if versions and len(storage) != 1:
        bad(
            "spec.versions",
            "Invalid value: must have exactly one version marked as storage version",
        )
    for i, version in enumerate(versions):
        if not isinstance(version, dict) or not version.get("name"):
            bad(f"spec.versions[{i}].name", "Required value", "FieldValueRequired")
    return causes


def _columns(version: JsonDict) -> tuple[PrinterColumn, ...]:
    raw = version.get("additionalPrinterColumns")
    if not raw:
        return (_AGE,)
    return tuple(
        PrinterColumn(
            name=str(c.get("name", "")),
            type=str(c.get("type", "string")),
            json_path=str(c.get("jsonPath", "")),
            description=str(c.get("description", "")),
            priority=int(c.get("priority", 0)),
            format=str(c.get("format", "")),
        )
        for c in raw
        if isinstance(c, dict)
    )


def _version(version: JsonDict) -> VersionInfo:
    subresources = version.get("subresources") or {}
    scale = subresources.get("scale")
    return VersionInfo(
        name=str(version["name"]),
        schema=(version.get("schema") or {}).get("openAPIV3Schema"),
        columns=_columns(version),
        status="status" in subresources,
        scale=ScaleSpec(
            spec_replicas_path=str(scale.get("specReplicasPath", ".spec.replicas")),
            status_replicas_path=str(scale.get("statusReplicasPath", ".status.replicas")),
            label_selector_path=scale.get("labelSelectorPath"),
        )
        if isinstance(scale, dict)
        else None,
        selectable_fields=tuple(
            str(f.get("jsonPath", "")).lstrip(".")
            for f in version.get("selectableFields") or []
            if isinstance(f, dict)
        ),
    )


def resource_type(crd: JsonDict) -> ResourceType:
    spec = crd["spec"]
    names = spec["names"]
    served = [v for v in spec.get("versions") or [] if v.get("served", True)]
    served.sort(key=lambda v: version_priority(str(v["name"])))
    kind = str(names["kind"])
    return ResourceType(
        group=str(spec["group"]),
        plural=str(names["plural"]),
        singular=str(names.get("singular") or kind.lower()),
        kind=kind,
        namespaced=spec.get("scope") == "Namespaced",
        versions=tuple(_version(v) for v in served),
        short_names=tuple(names.get("shortNames") or ()),
        categories=tuple(names.get("categories") or ()),
        builtin=False,
        crd_uid=str(crd.get("metadata", {}).get("uid", "")),
    )


def storage_version(crd: JsonDict) -> str:
    for version in crd.get("spec", {}).get("versions") or []:
        if version.get("storage"):
            return str(version["name"])
    return ""


def accepted_status(crd: JsonDict, old_status: JsonDict | None) -> JsonDict:
    """Names accepted and Established, as the CRD controllers of a real server report."""
    spec = crd["spec"]
    names = dict(spec["names"])
    old_conditions = {c.get("type"): c for c in (old_status or {}).get("conditions") or []}

    def condition(kind: str, reason: str, message: str) -> JsonDict:
        previous = old_conditions.get(kind)
        since = (
            previous["lastTransitionTime"]
            if previous and previous.get("status") == "True"
            else now()
        )
        return {
            "type": kind,
            "status": "True",
            "reason": reason,
            "message": message,
            "lastTransitionTime": since,
        }

    stored = list((old_status or {}).get("storedVersions") or [])
    current = storage_version(crd)
    if current and current not in stored:
        stored.append(current)
    return {
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition(
                "Established", "InitialNamesAccepted", "the initial names have been accepted"
            ),
        ],
        "acceptedNames": names,
        "storedVersions": stored,
    }


def terminating_status(status: JsonDict | None) -> JsonDict:
    status = dict(status or {})
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != "Terminating"]
    conditions.append(
        {
            "type": "Terminating",
            "status": "True",
            "reason": "InstanceDeletionInProgress",
            "message": "CustomResource deletion is in progress",
            "lastTransitionTime": now(),
        }
    )
    status["conditions"] = conditions
    return status
