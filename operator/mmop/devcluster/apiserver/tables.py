"""Server-side printing (``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``): what
``kubectl get`` shows. CRDs use their ``additionalPrinterColumns``; built-ins get the columns
kubectl users know (pods: Ready, Status, Restarts, Age; deployments: Ready, Up-to-date,
Available, Age; ...), other kinds Name and Age.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Iterable
from typing import Any

from mmop.devcluster.apiserver import jsonpath
from mmop.devcluster.apiserver.objects import get_path, parse_time
from mmop.devcluster.apiserver.resources import ResourceType, VersionInfo
from mmop.devcluster.apiserver.selectors import selector_to_string

JsonDict = dict[str, Any]
Column = tuple[str, str, int]  # name, type, priority
Cells = Callable[[JsonDict], list[Any]]
_NAME_DESCRIPTION = "Name must be unique within a namespace."
_AGE_DESCRIPTION = (
    "CreationTimestamp is a timestamp representing the server time when this object was created."
)


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def age(timestamp: Any) -> str:
    when = parse_time(timestamp) if isinstance(timestamp, str) else None
    if when is None:
        return "<unknown>"
    return human_duration((datetime.datetime.now(datetime.UTC) - when).total_seconds())


def _age(obj: JsonDict) -> str:
    return age(get_path(obj, ("metadata", "creationTimestamp")))


# --- built-in printers ------------------------------------------------------------------------


def _pod(obj: JsonDict) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for c in statuses if c.get("ready"))
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for c in statuses:
        state = c.get("state") or {}
        waiting, terminated = state.get("waiting") or {}, state.get("terminated") or {}
        if waiting.get("reason"):
            reason = waiting["reason"]
        elif terminated.get("reason"):
            reason = terminated["reason"]
    if get_path(obj, ("metadata", "deletionTimestamp")):
        reason = "Terminating"
    restarts = sum(int(c.get("restartCount") or 0) for c in statuses)
    return [
        f"{ready}/{len(spec.get('containers') or [])}",
        reason,
        restarts,
        _age(obj),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
    ]


def _deployment(obj: JsonDict) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    containers = get_path(spec, ("template", "spec", "containers")) or []
    return [
        f"{status.get('readyReplicas') or 0}/{spec.get('replicas', 1)}",
        int(status.get("updatedReplicas") or 0),
        int(status.get("availableReplicas") or 0),
        _age(obj),
        ",".join(str(c.get("name")) for c in containers),
        ",".join(str(c.get("image")) for c in containers),
        selector_to_string(spec.get("selector")) or "<none>",
    ]


def _replicaset(obj: JsonDict) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return [
        int(spec.get("replicas", 1)),
        int(status.get("replicas") or 0),
        int(status.get("readyReplicas") or 0),
        _age(obj),
    ]


def _statefulset(obj: JsonDict) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return [f"{status.get('readyReplicas') or 0}/{spec.get('replicas', 1)}", _age(obj)]


def _service(obj: JsonDict) -> list[Any]:
    spec = obj.get("spec") or {}
    ingress = get_path(obj, ("status", "loadBalancer", "ingress")) or []
    external = [i.get("ip") or i.get("hostname") for i in ingress] + list(
        spec.get("externalIPs") or []
    )
    if spec.get("type") == "ExternalName":
        external = [spec.get("externalName")]
    ports = []
    for p in spec.get("ports") or []:
        node_port = f":{p['nodePort']}" if p.get("nodePort") else ""
        ports.append(f"{p.get('port')}{node_port}/{p.get('protocol', 'TCP')}")
    selector = spec.get("selector") or {}
    return [
        spec.get("type", "ClusterIP"),
        spec.get("clusterIP") or "<none>",
        ",".join(str(e) for e in external if e) or "<none>",
        ",".join(ports) or "<none>",
        _age(obj),
        ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>",
    ]


def _job(obj: JsonDict) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    state = (
        "Complete"
        if conditions.get("Complete") == "True"
        else ("Failed" if conditions.get("Failed") == "True" else "Running")
    )
    return [state, f"{status.get('succeeded') or 0}/{spec.get('completions', 1)}", _age(obj)]


def _hpa(obj: JsonDict) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    ref = spec.get("scaleTargetRef") or {}
    return [
        f"{ref.get('kind')}/{ref.get('name')}",
        int(spec.get("minReplicas") or 1),
        int(spec.get("maxReplicas") or 0),
        int(status.get("currentReplicas") or 0),
        _age(obj),
    ]


def _pdb(obj: JsonDict) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return [
        str(spec["minAvailable"]) if "minAvailable" in spec else "N/A",
        str(spec["maxUnavailable"]) if "maxUnavailable" in spec else "N/A",
        int(status.get("disruptionsAllowed") or 0),
        _age(obj),
    ]


def _event(obj: JsonDict) -> list[Any]:
    involved = obj.get("involvedObject") or obj.get("regarding") or {}
    last = (
        obj.get("lastTimestamp")
        or obj.get("eventTime")
        or get_path(obj, ("metadata", "creationTimestamp"))
    )
    return [
        age(last),
        obj.get("type", ""),
        obj.get("reason", ""),
        f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
        obj.get("message") or obj.get("note") or "",
    ]


def _namespace(obj: JsonDict) -> list[Any]:
    return [get_path(obj, ("status", "phase")) or "Active", _age(obj)]


def _configmap(obj: JsonDict) -> list[Any]:
    return [len(obj.get("data") or {}) + len(obj.get("binaryData") or {}), _age(obj)]


def _secret(obj: JsonDict) -> list[Any]:
    return [obj.get("type", "Opaque"), len(obj.get("data") or {}), _age(obj)]


def _lease(obj: JsonDict) -> list[Any]:
    return [get_path(obj, ("spec", "holderIdentity")) or "", _age(obj)]


def _crd(obj: JsonDict) -> list[Any]:
    return [get_path(obj, ("metadata", "creationTimestamp"))]


def _endpoints(obj: JsonDict) -> list[Any]:
    addresses = []
    for subset in obj.get("subsets") or []:
        for address in subset.get("addresses") or []:
            for port in subset.get("ports") or [{}]:
                addresses.append(
                    f"{address.get('ip')}:{port.get('port')}" if port else str(address.get("ip"))
                )
    return [",".join(addresses) or "<none>", _age(obj)]


def _default(obj: JsonDict) -> list[Any]:
    return [_age(obj)]


_AGE: Column = ("Age", "string", 0)
_PRINTERS: dict[tuple[str, str], tuple[list[Column], Cells]] = {
    ("", "pods"): (
        [
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            _AGE,
            ("IP", "string", 1),
            ("Node", "string", 1),
        ],
        _pod,
    ),
    ("apps", "deployments"): (
        [
            ("Ready", "string", 0),
            ("Up-to-date", "string", 0),
            ("Available", "string", 0),
            _AGE,
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        _deployment,
    ),
    ("apps", "replicasets"): (
        [("Desired", "integer", 0), ("Current", "integer", 0), ("Ready", "integer", 0), _AGE],
        _replicaset,
    ),
    ("apps", "statefulsets"): ([("Ready", "string", 0), _AGE], _statefulset),
    ("", "services"): (
        [
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            _AGE,
            ("Selector", "string", 1),
        ],
        _service,
    ),
    ("batch", "jobs"): ([("Status", "string", 0), ("Completions", "string", 0), _AGE], _job),
    ("autoscaling", "horizontalpodautoscalers"): (
        [
            ("Reference", "string", 0),
            ("MinPods", "integer", 0),
            ("MaxPods", "integer", 0),
            ("Replicas", "integer", 0),
            _AGE,
        ],
        _hpa,
    ),
    ("policy", "poddisruptionbudgets"): (
        [
            ("Min Available", "string", 0),
            ("Max Unavailable", "string", 0),
            ("Allowed Disruptions", "integer", 0),
            _AGE,
        ],
        _pdb,
    ),
    ("", "events"): (
        [
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Message", "string", 0),
        ],
        _event,
    ),
    ("events.k8s.io", "events"): (
        [
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Message", "string", 0),
        ],
        _event,
    ),
    ("", "namespaces"): ([("Status", "string", 0), _AGE], _namespace),
    ("", "configmaps"): ([("Data", "integer", 0), _AGE], _configmap),
    ("", "secrets"): ([("Type", "string", 0), ("Data", "integer", 0), _AGE], _secret),
    ("", "endpoints"): ([("Endpoints", "string", 0), _AGE], _endpoints),
    ("coordination.k8s.io", "leases"): ([("Holder", "string", 0), _AGE], _lease),
    ("apiextensions.k8s.io", "customresourcedefinitions"): ([("Created At", "date", 0)], _crd),
}


# --- custom resources -------------------------------------------------------------------------


def _cell(column_type: str, value: Any) -> Any:
    if value is None:
        return None
    if column_type == "date":
        return age(value) if isinstance(value, str) else None
    if column_type == "integer":
        return (
            int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        )
    if column_type == "number":
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if column_type == "boolean":
        return value if isinstance(value, bool) else None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _custom_cells(info: VersionInfo) -> Cells:
    def cells(obj: JsonDict) -> list[Any]:
        out = []
        for column in info.columns:
            try:
                value = jsonpath.first(column.json_path, obj)
            except jsonpath.JsonPathError:
                value = None
            out.append(_cell(column.type, value))
        return out

    return cells


def printer(rtype: ResourceType, info: VersionInfo) -> tuple[list[JsonDict], Cells]:
    """Column definitions (Name first) and the function computing the other cells of a row."""
    name = {
        "name": "Name",
        "type": "string",
        "format": "name",
        "description": _NAME_DESCRIPTION,
        "priority": 0,
    }
    if not rtype.builtin:
        columns = [
            {
                "name": c.name,
                "type": c.type,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            }
            for c in info.columns
        ]
        return [name, *columns], _custom_cells(info)
    spec, cells = _PRINTERS.get(rtype.key, ([_AGE], _default))
    columns = [
        {
            "name": n,
            "type": t,
            "format": "",
            "description": _AGE_DESCRIPTION if n == "Age" else n,
            "priority": p,
        }
        for n, t, p in spec
    ]
    return [name, *columns], cells


def _row_object(obj: JsonDict, include: str) -> JsonDict | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }


def table(
    rtype: ResourceType,
    info: VersionInfo,
    objects: Iterable[JsonDict],
    *,
    list_meta: JsonDict,
    include_object: str = "Metadata",
) -> JsonDict:
    columns, cells = printer(rtype, info)
    rows = []
    for obj in objects:
        row: JsonDict = {"cells": [get_path(obj, ("metadata", "name")), *cells(obj)]}
        partial = _row_object(obj, include_object)
        if partial is not None:
            row["object"] = partial
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns,
        "rows": rows,
    }
