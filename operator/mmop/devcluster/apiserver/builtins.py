"""The built-in resource types (core, apps, batch, ...) and the defaults a real server fills in.

Defaults are the subset that clients read back (``kubectl rollout status`` needs
``spec.replicas``; helm's readiness checks need a Service's ``clusterIP``; diffs look like a
real cluster's). A defaulter mutates a private copy in place; ``old`` is None on create.
"""

from __future__ import annotations

import base64
from typing import Any

from mmop.devcluster.apiserver import fieldtypes
from mmop.devcluster.apiserver.resources import ResourceType, ScaleSpec, VersionInfo

JsonDict = dict[str, Any]


def _setdefault(obj: JsonDict, key: str, value: Any) -> Any:
    if obj.get(key) is None:
        obj[key] = value
    return obj[key]


def _dict(obj: JsonDict, key: str) -> JsonDict:
    value = obj.get(key)
    if not isinstance(value, dict):
        value = {}
        obj[key] = value
    return value


def _container_defaults(container: JsonDict) -> None:
    _setdefault(container, "terminationMessagePath", "/dev/termination-log")
    _setdefault(container, "terminationMessagePolicy", "File")
    image = str(container.get("image", ""))
    tagless = ":" not in image.rsplit("/", 1)[-1] and "@" not in image
    policy = "Always" if tagless or image.endswith(":latest") else "IfNotPresent"
    _setdefault(container, "imagePullPolicy", policy)
    for port in container.get("ports") or []:
        if isinstance(port, dict):
            _setdefault(port, "protocol", "TCP")


def pod_spec_defaults(spec: JsonDict) -> None:
    _setdefault(spec, "restartPolicy", "Always")
    _setdefault(spec, "terminationGracePeriodSeconds", 30)
    _setdefault(spec, "dnsPolicy", "ClusterFirst")
    _setdefault(spec, "schedulerName", "default-scheduler")
    _setdefault(spec, "securityContext", {})
    for key in ("containers", "initContainers"):
        for container in spec.get(key) or []:
            if isinstance(container, dict):
                _container_defaults(container)


def _template_defaults(spec: JsonDict) -> None:
    template = spec.get("template")
    if isinstance(template, dict):
        pod_spec_defaults(_dict(template, "spec"))


def _pod(obj: JsonDict, old: JsonDict | None) -> None:
    pod_spec_defaults(_dict(obj, "spec"))
    status = _dict(obj, "status")
    _setdefault(status, "phase", "Pending")


def _deployment(obj: JsonDict, old: JsonDict | None) -> None:
    spec = _dict(obj, "spec")
    _setdefault(spec, "replicas", 1)
    _setdefault(
        spec,
        "strategy",
        {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
    )
    _setdefault(spec, "revisionHistoryLimit", 10)
    _setdefault(spec, "progressDeadlineSeconds", 600)
    _template_defaults(spec)


def _replicaset(obj: JsonDict, old: JsonDict | None) -> None:
    spec = _dict(obj, "spec")
    _setdefault(spec, "replicas", 1)
    _template_defaults(spec)


def _statefulset(obj: JsonDict, old: JsonDict | None) -> None:
    spec = _dict(obj, "spec")
    _setdefault(spec, "replicas", 1)
    _setdefault(spec, "podManagementPolicy", "OrderedReady")
    _setdefault(
        spec, "updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    )
    _setdefault(spec, "revisionHistoryLimit", 10)
    _template_defaults(spec)


def _daemonset(obj: JsonDict, old: JsonDict | None) -> None:
    spec = _dict(obj, "spec")
    _setdefault(
        spec,
        "updateStrategy",
        {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
    )
    _setdefault(spec, "revisionHistoryLimit", 10)
    _template_defaults(spec)


def _job(obj: JsonDict, old: JsonDict | None) -> None:
    spec = _dict(obj, "spec")
    _setdefault(spec, "parallelism", 1)
    _setdefault(spec, "completions", 1)
    _setdefault(spec, "backoffLimit", 6)
    _setdefault(spec, "completionMode", "NonIndexed")
    _setdefault(spec, "suspend", False)
    _template_defaults(spec)


def _service(obj: JsonDict, old: JsonDict | None) -> None:
    spec = _dict(obj, "spec")
    _setdefault(spec, "type", "ClusterIP")
    _setdefault(spec, "sessionAffinity", "None")
    if spec["type"] != "ExternalName":
        _setdefault(spec, "ipFamilies", ["IPv4"])
        _setdefault(spec, "ipFamilyPolicy", "SingleStack")
        _setdefault(spec, "internalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            _setdefault(port, "protocol", "TCP")
            if "port" in port:
                _setdefault(port, "targetPort", port["port"])
    if old is not None:  # allocated values survive updates that leave them out (real behaviour)
        old_spec = old.get("spec") or {}
        for key in ("clusterIP", "clusterIPs"):
            if not spec.get(key) and old_spec.get(key):
                spec[key] = old_spec[key]
    _dict(obj, "status").setdefault("loadBalancer", {})


def _secret(obj: JsonDict, old: JsonDict | None) -> None:
    _setdefault(obj, "type", "Opaque")
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        data = _dict(obj, "data")
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def _namespace(obj: JsonDict, old: JsonDict | None) -> None:
    meta = _dict(obj, "metadata")
    labels = _dict(meta, "labels")
    labels["kubernetes.io/metadata.name"] = meta.get("name", "")
    spec = _dict(obj, "spec")
    _setdefault(spec, "finalizers", ["kubernetes"])
    status = _dict(obj, "status")
    _setdefault(status, "phase", "Active")


def _crd(obj: JsonDict, old: JsonDict | None) -> None:
    spec = _dict(obj, "spec")
    names = _dict(spec, "names")
    kind = str(names.get("kind", ""))
    _setdefault(names, "singular", kind.lower())
    _setdefault(names, "listKind", kind + "List")
    _setdefault(spec, "conversion", {"strategy": "None"})


def _v(
    name: str = "v1", *, status: bool = False, scale: ScaleSpec | None = None
) -> tuple[VersionInfo, ...]:
    return (VersionInfo(name=name, status=status, scale=scale),)


_WORKLOAD_SCALE = ScaleSpec(label_selector_path=".status.selector")
_POD_FIELDS = frozenset(
    {
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    }
)
_EVENT_FIELDS = frozenset(
    {
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    }
)
_NEW_EVENT_FIELDS = frozenset(
    {
        "regarding.kind",
        "regarding.namespace",
        "regarding.name",
        "regarding.uid",
        "regarding.apiVersion",
        "reason",
        "reportingController",
        "type",
    }
)


def _rt(
    group: str,
    plural: str,
    kind: str,
    *,
    version: str = "v1",
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
    status: bool = False,
    scale: ScaleSpec | None = None,
    fields: frozenset[str] = frozenset(),
    root: fieldtypes.Node = fieldtypes.PLAIN,
    defaulter: Any = None,
) -> ResourceType:
    generation = group in _GENERATION_GROUPS or (group, plural) in _GENERATION_TYPES
    return ResourceType(
        group=group,
        plural=plural,
        singular=kind.lower(),
        kind=kind,
        namespaced=namespaced,
        versions=_v(version, status=status, scale=scale),
        short_names=short,
        categories=categories,
        field_labels=fields,
        type_root=root,
        defaulter=defaulter,
        generation=generation,
    )


ALL = ("all",)
# Kinds whose registry strategy sets metadata.generation (the rest have none, as for real).
_GENERATION_GROUPS = {"apps", "batch", "apiextensions.k8s.io", "networking.k8s.io", "policy"}
_GENERATION_TYPES = {("", "pods"), ("autoscaling", "horizontalpodautoscalers")}

BUILTIN_TYPES: tuple[ResourceType, ...] = (
    # core/v1
    _rt(
        "",
        "namespaces",
        "Namespace",
        namespaced=False,
        short=("ns",),
        status=True,
        fields=frozenset({"status.phase"}),
        defaulter=_namespace,
    ),
    _rt(
        "",
        "pods",
        "Pod",
        short=("po",),
        categories=ALL,
        status=True,
        fields=_POD_FIELDS,
        root=fieldtypes.POD,
        defaulter=_pod,
    ),
    _rt(
        "",
        "services",
        "Service",
        short=("svc",),
        categories=ALL,
        status=True,
        root=fieldtypes.SERVICE,
        defaulter=_service,
    ),
    _rt("", "endpoints", "Endpoints", short=("ep",)),
    _rt("", "configmaps", "ConfigMap", short=("cm",)),
    _rt("", "secrets", "Secret", fields=frozenset({"type"}), defaulter=_secret),
    _rt("", "serviceaccounts", "ServiceAccount", short=("sa",)),
    _rt("", "events", "Event", short=("ev",), fields=_EVENT_FIELDS),
    _rt(
        "",
        "nodes",
        "Node",
        namespaced=False,
        short=("no",),
        status=True,
        fields=frozenset({"spec.unschedulable"}),
        root=fieldtypes.NODE,
    ),
    _rt("", "persistentvolumeclaims", "PersistentVolumeClaim", short=("pvc",), status=True),
    _rt("", "persistentvolumes", "PersistentVolume", namespaced=False, short=("pv",), status=True),
    _rt("", "resourcequotas", "ResourceQuota", short=("quota",), status=True),
    _rt("", "limitranges", "LimitRange", short=("limits",)),
    _rt("", "podtemplates", "PodTemplate", root=fieldtypes.POD_TEMPLATE_KIND),
    # apps/v1
    _rt(
        "apps",
        "deployments",
        "Deployment",
        short=("deploy",),
        categories=ALL,
        status=True,
        scale=_WORKLOAD_SCALE,
        root=fieldtypes.WORKLOAD,
        defaulter=_deployment,
    ),
    _rt(
        "apps",
        "replicasets",
        "ReplicaSet",
        short=("rs",),
        categories=ALL,
        status=True,
        scale=_WORKLOAD_SCALE,
        fields=frozenset({"status.replicas"}),
        root=fieldtypes.WORKLOAD,
        defaulter=_replicaset,
    ),
    _rt(
        "apps",
        "statefulsets",
        "StatefulSet",
        short=("sts",),
        categories=ALL,
        status=True,
        scale=_WORKLOAD_SCALE,
        root=fieldtypes.WORKLOAD,
        defaulter=_statefulset,
    ),
    _rt(
        "apps",
        "daemonsets",
        "DaemonSet",
        short=("ds",),
        categories=ALL,
        status=True,
        root=fieldtypes.WORKLOAD,
        defaulter=_daemonset,
    ),
    _rt("apps", "controllerrevisions", "ControllerRevision"),
    # batch/v1
    _rt(
        "batch",
        "jobs",
        "Job",
        categories=ALL,
        status=True,
        fields=frozenset({"status.successful"}),
        root=fieldtypes.WORKLOAD,
        defaulter=_job,
    ),
    _rt(
        "batch",
        "cronjobs",
        "CronJob",
        short=("cj",),
        categories=ALL,
        status=True,
        root=fieldtypes.CRONJOB,
    ),
    # autoscaling/v2, policy/v1
    _rt(
        "autoscaling",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        version="v2",
        short=("hpa",),
        categories=ALL,
        status=True,
    ),
    _rt("policy", "poddisruptionbudgets", "PodDisruptionBudget", short=("pdb",), status=True),
    # rbac
    _rt("rbac.authorization.k8s.io", "roles", "Role"),
    _rt("rbac.authorization.k8s.io", "rolebindings", "RoleBinding"),
    _rt("rbac.authorization.k8s.io", "clusterroles", "ClusterRole", namespaced=False),
    _rt("rbac.authorization.k8s.io", "clusterrolebindings", "ClusterRoleBinding", namespaced=False),
    # coordination, apiextensions, events, networking, discovery, scheduling, node, storage
    _rt("coordination.k8s.io", "leases", "Lease"),
    _rt(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        short=("crd", "crds"),
        categories=("api-extensions",),
        status=True,
        defaulter=_crd,
    ),
    _rt("events.k8s.io", "events", "Event", fields=_NEW_EVENT_FIELDS),
    _rt("networking.k8s.io", "ingresses", "Ingress", short=("ing",), status=True),
    _rt("networking.k8s.io", "networkpolicies", "NetworkPolicy", short=("netpol",)),
    _rt("networking.k8s.io", "ingressclasses", "IngressClass", namespaced=False),
    _rt("discovery.k8s.io", "endpointslices", "EndpointSlice"),
    _rt("scheduling.k8s.io", "priorityclasses", "PriorityClass", namespaced=False, short=("pc",)),
    _rt("node.k8s.io", "runtimeclasses", "RuntimeClass", namespaced=False),
    _rt("storage.k8s.io", "storageclasses", "StorageClass", namespaced=False, short=("sc",)),
    _rt("apiregistration.k8s.io", "apiservices", "APIService", namespaced=False, status=True),
)

CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
NAMESPACE_KEY = ("", "namespaces")
SERVICE_KEY = ("", "services")
PROTECTED_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
