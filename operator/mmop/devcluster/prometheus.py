"""A real Prometheus for the dev cluster: its configuration, made from the chart's PodMonitor the
way the Prometheus Operator makes it, and the command that runs the distribution's
``prometheus`` binary.

Debian's ``prometheus`` is built without Kubernetes service discovery, so the pod discovery
that the PodMonitor asks for (``kubernetes_sd_configs``, role ``pod``) is done here instead:
:func:`pod_target_groups` turns the pods into the target groups Prometheus' own pod discovery
makes, with the same ``__meta_kubernetes_pod_*`` labels, and the dev cluster writes them to a
``file_sd`` file whenever its watch of the pods changes. The PodMonitor's relabelling then runs
unchanged in Prometheus.

Pure, except :func:`find_binary` (reads PATH and the environment).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from mmop.runtime import contract

BINARY_ENV: Final = "MMOP_PROMETHEUS"
"""Path of the ``prometheus`` binary; unset: ``prometheus`` on PATH."""
DEFAULT_SCRAPE_INTERVAL: Final = "2s"
INSTALL_HINT: Final = (
    "install Prometheus: `apt-get install prometheus` (Debian/Ubuntu, as root; scripts/setup "
    "does it), or put a prometheus 2.x binary on PATH or in $MMOP_PROMETHEUS"
)
RUNTIME_POD_MONITOR_NAME: Final = "mmop-runtime"
RUNTIME_POD_MONITOR_NAMESPACE: Final = "mmop-system"

# What the Prometheus Operator's PodMonitor translation supports here; anything else is refused
# by name rather than silently ignored.
_SPEC_FIELDS: Final = frozenset(
    {"selector", "namespaceSelector", "podMetricsEndpoints", "podTargetLabels", "jobLabel"}
)
_ENDPOINT_FIELDS: Final = frozenset(
    {
        "port",
        "path",
        "interval",
        "scrapeTimeout",
        "honorLabels",
        "honorTimestamps",
        "scheme",
        "params",
        "filterRunning",
        "relabelings",
        "metricRelabelings",
    }
)
_RELABEL_FIELDS: Final = {
    "sourceLabels": "source_labels",
    "separator": "separator",
    "targetLabel": "target_label",
    "regex": "regex",
    "modulus": "modulus",
    "replacement": "replacement",
    "action": "action",
}
_INVALID_LABEL_CHARS: Final = re.compile(r"[^a-zA-Z0-9_]")
_DURATION: Final = re.compile(r"^((\d+)h)?((\d+)m(?!s))?((\d+)s)?((\d+)ms)?$")


class UnsupportedPodMonitorError(ValueError):
    """A PodMonitor field this translation does not implement (named in the message)."""


def runtime_pod_monitor() -> dict[str, Any]:
    """The chart's PodMonitor for the runtime pods, as ``helm template`` renders it with the
    default values (``serviceMonitor.enabled=true``); a test keeps the two equal.

    ``mmop dev --prometheus`` uses it, so that it needs neither helm nor the chart.
    """
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {
            "name": RUNTIME_POD_MONITOR_NAME,
            "namespace": RUNTIME_POD_MONITOR_NAMESPACE,
        },
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/managed-by": "mmop"}},
            "namespaceSelector": {"any": True},
            "podTargetLabels": ["mmop.io/model", "mmop.io/version"],
            "podMetricsEndpoints": [
                {
                    "port": contract.HTTP_PORT_NAME,
                    "path": contract.METRICS_PATH,
                    "interval": "15s",
                    "scrapeTimeout": "10s",
                    "honorLabels": True,
                }
            ],
        },
    }


def duration_seconds(text: str) -> float:
    """Seconds of a Prometheus duration such as ``15s``, ``1m30s`` or ``500ms``."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    hours, minutes, seconds, millis = (int(match.group(i) or 0) for i in (2, 4, 6, 8))
    return hours * 3600 + minutes * 60 + seconds + millis / 1000


def with_interval(pod_monitor: Mapping[str, Any], interval: str) -> dict[str, Any]:
    """A copy scraping every ``interval``; a scrape timeout longer than that is cut to it
    (Prometheus refuses a timeout above the interval)."""
    limit = duration_seconds(interval)
    monitor = copy.deepcopy(dict(pod_monitor))
    for endpoint in monitor.get("spec", {}).get("podMetricsEndpoints") or []:
        endpoint["interval"] = interval
        timeout = endpoint.get("scrapeTimeout")
        if timeout is not None and duration_seconds(timeout) > limit:
            endpoint["scrapeTimeout"] = interval
    return monitor


def sanitize_label_name(name: str) -> str:
    """``mmop.io/model`` -> ``mmop_io_model``, as Prometheus' discovery names pod labels."""
    return _INVALID_LABEL_CHARS.sub("_", name)


def _relabel(rule: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in rule.items():
        if key not in _RELABEL_FIELDS:
            raise UnsupportedPodMonitorError(f"{where}.{key} is not supported")
        out[_RELABEL_FIELDS[key]] = value.lower() if key == "action" else value
    return out


def _selector_relabelings(selector: Mapping[str, Any]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for key in sorted(selector.get("matchLabels") or {}):
        name = sanitize_label_name(key)
        rules.append(
            {
                "action": "keep",
                "source_labels": [
                    f"__meta_kubernetes_pod_label_{name}",
                    f"__meta_kubernetes_pod_labelpresent_{name}",
                ],
                "regex": f"({selector['matchLabels'][key]});true",
            }
        )
    for expression in selector.get("matchExpressions") or []:
        name = sanitize_label_name(expression["key"])
        values = "|".join(expression.get("values") or [])
        both = [f"__meta_kubernetes_pod_label_{name}", f"__meta_kubernetes_pod_labelpresent_{name}"]
        present = [f"__meta_kubernetes_pod_labelpresent_{name}"]
        operator = expression["operator"]
        if operator == "In":
            rules.append({"action": "keep", "source_labels": both, "regex": f"({values});true"})
        elif operator == "NotIn":
            rules.append({"action": "drop", "source_labels": both, "regex": f"({values});true"})
        elif operator == "Exists":
            rules.append({"action": "keep", "source_labels": present, "regex": "true"})
        elif operator == "DoesNotExist":
            rules.append({"action": "drop", "source_labels": present, "regex": "true"})
        else:
            raise UnsupportedPodMonitorError(f"selector operator {operator!r} is not supported")
    return rules


def _namespaces(spec: Mapping[str, Any], own_namespace: str) -> list[str]:
    selector = spec.get("namespaceSelector") or {}
    if selector.get("any"):
        return []
    return list(selector.get("matchNames") or []) or [own_namespace]


def scrape_configs_from_pod_monitor(
    pod_monitor: Mapping[str, Any], *, kubeconfig: str | Path
) -> list[dict[str, Any]]:
    """Prometheus ``scrape_configs`` for a PodMonitor, one per podMetricsEndpoint, as the
    Prometheus Operator generates them (``generatePodMonitorConfig``): pod discovery, the
    running-pods filter, the selector and port as ``keep`` rules, ``namespace`` / ``container`` /
    ``pod`` labels, podTargetLabels, ``job`` and ``endpoint``, then the endpoint's relabelings.

    The discovery reads the API server from ``kubeconfig`` where an in-cluster Prometheus uses
    its service account; with one shard, the operator's hashmod sharding rules keep every
    target, so they are left out.
    """
    meta = pod_monitor.get("metadata") or {}
    spec = pod_monitor.get("spec") or {}
    name, namespace = meta["name"], meta.get("namespace") or "default"
    for key in spec:
        if key not in _SPEC_FIELDS:
            raise UnsupportedPodMonitorError(f"PodMonitor spec.{key} is not supported")
    discovery: dict[str, Any] = {"role": "pod", "kubeconfig_file": str(kubeconfig)}
    namespaces = _namespaces(spec, namespace)
    if namespaces:
        discovery["namespaces"] = {"names": namespaces}
    configs = []
    for index, endpoint in enumerate(spec.get("podMetricsEndpoints") or []):
        where = f"PodMonitor spec.podMetricsEndpoints[{index}]"
        for key in endpoint:
            if key not in _ENDPOINT_FIELDS:
                raise UnsupportedPodMonitorError(f"{where}.{key} is not supported")
        config: dict[str, Any] = {"job_name": f"podMonitor/{namespace}/{name}/{index}"}
        if "honorLabels" in endpoint:
            config["honor_labels"] = bool(endpoint["honorLabels"])
        if "honorTimestamps" in endpoint:
            config["honor_timestamps"] = bool(endpoint["honorTimestamps"])
        config["kubernetes_sd_configs"] = [dict(discovery)]
        for key, target in (
            ("interval", "scrape_interval"),
            ("scrapeTimeout", "scrape_timeout"),
            ("path", "metrics_path"),
            ("params", "params"),
            ("scheme", "scheme"),
        ):
            if endpoint.get(key):
                config[target] = endpoint[key]
        rules: list[dict[str, Any]] = [
            {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"}
        ]
        if endpoint.get("filterRunning", True):
            rules.append(
                {
                    "action": "drop",
                    "source_labels": ["__meta_kubernetes_pod_phase"],
                    "regex": "(Failed|Succeeded)",
                }
            )
        rules += _selector_relabelings(spec.get("selector") or {})
        if endpoint.get("port"):
            rules.append(
                {
                    "action": "keep",
                    "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                    "regex": endpoint["port"],
                }
            )
        rules += [
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {
                "source_labels": ["__meta_kubernetes_pod_container_name"],
                "target_label": "container",
            },
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        ]
        for label in spec.get("podTargetLabels") or []:
            rules.append(
                {
                    "source_labels": [f"__meta_kubernetes_pod_label_{sanitize_label_name(label)}"],
                    "target_label": sanitize_label_name(label),
                    "regex": "(.+)",
                    "replacement": "${1}",
                }
            )
        rules.append({"target_label": "job", "replacement": f"{namespace}/{name}"})
        if spec.get("jobLabel"):
            rules.append(
                {
                    "source_labels": [
                        f"__meta_kubernetes_pod_label_{sanitize_label_name(spec['jobLabel'])}"
                    ],
                    "target_label": "job",
                    "regex": "(.+)",
                    "replacement": "${1}",
                }
            )
        if endpoint.get("port"):
            rules.append({"target_label": "endpoint", "replacement": endpoint["port"]})
        rules += [
            _relabel(rule, where=f"{where}.relabelings[{i}]")
            for i, rule in enumerate(endpoint.get("relabelings") or [])
        ]
        config["relabel_configs"] = rules
        metric_rules = [
            _relabel(rule, where=f"{where}.metricRelabelings[{i}]")
            for i, rule in enumerate(endpoint.get("metricRelabelings") or [])
        ]
        if metric_rules:
            config["metric_relabel_configs"] = metric_rules
        configs.append(config)
    return configs


@dataclass(frozen=True)
class PodDiscovery:
    """A ``kubernetes_sd_configs`` entry (role pod), served as the file ``file`` instead."""

    job_name: str
    namespaces: tuple[str, ...]
    """Empty: every namespace."""
    file: Path


def use_file_discovery(
    scrape_configs: Sequence[Mapping[str, Any]], *, directory: Path
) -> tuple[list[dict[str, Any]], list[PodDiscovery]]:
    """The scrape configs with each pod discovery replaced by a ``file_sd_configs`` file in
    ``directory``, and what to write into each file. Everything else is kept as it is."""
    configs: list[dict[str, Any]] = []
    discoveries: list[PodDiscovery] = []
    for config in scrape_configs:
        out = dict(config)
        files = []
        for index, sd in enumerate(config.get("kubernetes_sd_configs") or []):
            unknown = set(sd) - {"role", "namespaces", "kubeconfig_file"}
            if sd.get("role") != "pod" or unknown:
                raise UnsupportedPodMonitorError(
                    f"{config['job_name']}: only pod discovery by namespace is supported"
                )
            path = directory / f"{sanitize_label_name(config['job_name'])}-{index}.json"
            names = tuple((sd.get("namespaces") or {}).get("names") or ())
            discoveries.append(PodDiscovery(str(config["job_name"]), names, path))
            files.append(str(path))
        if files:
            del out["kubernetes_sd_configs"]
            out["file_sd_configs"] = [{"files": files}]
        configs.append(out)
    return configs, discoveries


def _meta_labels(prefix: str, meta: Mapping[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for kind, key in (("label", "labels"), ("annotation", "annotations")):
        for name, value in (meta.get(key) or {}).items():
            clean = sanitize_label_name(name)
            labels[f"{prefix}_{kind}_{clean}"] = str(value)
            labels[f"{prefix}_{kind}present_{clean}"] = "true"
    return labels


def _pod_ready(status: Mapping[str, Any]) -> str:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            return str(condition.get("status", "Unknown")).lower()
    return "unknown"


def _pod_key(pod: Mapping[str, Any]) -> tuple[str, str]:
    return (str(pod["metadata"].get("namespace") or ""), str(pod["metadata"]["name"]))


def pod_target_groups(
    pods: Iterable[Mapping[str, Any]], *, namespaces: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """``file_sd`` target groups for ``pods``, as Prometheus' Kubernetes pod discovery makes
    them (``discovery/kubernetes/pod.go``, ``buildPod``): a target per container port (or per
    container without ports), with the pod's ``__meta_kubernetes_pod_*`` labels (name, ip,
    ready, phase, node, host ip, uid, controller, labels and annotations with their
    ``*present`` twins), the namespace and the container's name, id, image, port and init flag.
    A pod without an IP yet has no targets. ``namespaces``: only these (empty: all).
    """
    groups: list[dict[str, Any]] = []
    wanted = set(namespaces)
    for pod in sorted(pods, key=_pod_key):
        meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        namespace = str(meta.get("namespace") or "")
        ip = str(status.get("podIP") or "")
        if (wanted and namespace not in wanted) or not ip:
            continue
        common = {
            "__meta_kubernetes_namespace": namespace,
            "__meta_kubernetes_pod_name": str(meta["name"]),
            "__meta_kubernetes_pod_ip": ip,
            "__meta_kubernetes_pod_ready": _pod_ready(status),
            "__meta_kubernetes_pod_phase": str(status.get("phase") or ""),
            "__meta_kubernetes_pod_node_name": str(spec.get("nodeName") or ""),
            "__meta_kubernetes_pod_host_ip": str(status.get("hostIP") or ""),
            "__meta_kubernetes_pod_uid": str(meta.get("uid") or ""),
            **_meta_labels("__meta_kubernetes_pod", meta),
        }
        owner = next((r for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
        if owner is not None:
            common["__meta_kubernetes_pod_controller_kind"] = str(owner.get("kind") or "")
            common["__meta_kubernetes_pod_controller_name"] = str(owner.get("name") or "")
        containers = [(c, False) for c in spec.get("containers") or []]
        containers += [(c, True) for c in spec.get("initContainers") or []]
        for container, is_init in containers:
            statuses = status.get("initContainerStatuses" if is_init else "containerStatuses")
            container_id = next(
                (
                    str(s.get("containerID") or "")
                    for s in statuses or []
                    if s.get("name") == container.get("name")
                ),
                "",
            )
            labels = {
                **common,
                "__meta_kubernetes_pod_container_name": str(container.get("name") or ""),
                "__meta_kubernetes_pod_container_id": container_id,
                "__meta_kubernetes_pod_container_image": str(container.get("image") or ""),
                "__meta_kubernetes_pod_container_init": "true" if is_init else "false",
            }
            ports = container.get("ports") or []
            if not ports:
                groups.append({"targets": [ip], "labels": labels})
            for port in ports:
                number = str(port["containerPort"])
                groups.append(
                    {
                        "targets": [f"{ip}:{number}"],
                        "labels": {
                            **labels,
                            "__meta_kubernetes_pod_container_port_name": str(
                                port.get("name") or ""
                            ),
                            "__meta_kubernetes_pod_container_port_number": number,
                            "__meta_kubernetes_pod_container_port_protocol": str(
                                port.get("protocol") or "TCP"
                            ),
                        },
                    }
                )
    return groups


def prometheus_config(
    scrape_configs: Sequence[Mapping[str, Any]], *, query_log: str | Path | None = None
) -> dict[str, Any]:
    """The whole ``prometheus.yml``."""
    global_: dict[str, Any] = {
        "scrape_interval": DEFAULT_SCRAPE_INTERVAL,
        "evaluation_interval": DEFAULT_SCRAPE_INTERVAL,
    }
    if query_log is not None:
        global_["query_log_file"] = str(query_log)
    return {"global": global_, "scrape_configs": [dict(c) for c in scrape_configs]}


def command(
    binary: str, *, config_file: str | Path, data_dir: str | Path, listen: str
) -> list[str]:
    """The ``prometheus`` command line: local storage, one listen address, a short retention."""
    return [
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={data_dir}",
        "--storage.tsdb.retention.time=1d",
        f"--web.listen-address={listen}",
        "--web.enable-lifecycle",
    ]


def find_binary(environ: Mapping[str, str] | None = None) -> str | None:
    """``$MMOP_PROMETHEUS`` if set (it must be executable), else ``prometheus`` on PATH."""
    env = os.environ if environ is None else environ
    explicit = env.get(BINARY_ENV)
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("prometheus", path=env.get("PATH"))


def adapter_metrics_query(
    template: str,
    *,
    series: str,
    namespace: str,
    pods: Sequence[str],
    namespace_label: str = "namespace",
    pod_label: str = "pod",
) -> str:
    """A prometheus-adapter rule's ``metricsQuery`` expanded for a Pods metric of ``pods``, as
    the adapter does (``naming.metricsQuery.Build``): ``<<.Series>>`` is the series name,
    ``<<.LabelMatchers>>`` the namespace then the pods (``=`` for one, ``=~`` joined by ``|``
    for several), ``<<.GroupBy>>`` the pod label. The labels are those the rule's
    ``resources.overrides`` map to the namespace and pod resources. The HPA's own metric selector
    is empty here (the operator sets none), so it adds no matchers.
    """
    if not pods:
        raise ValueError("no pods to ask for")
    target = "|".join(pods)
    operator = "=" if len(pods) == 1 else "=~"
    values = {
        "Series": series,
        "LabelMatchers": (
            f"{namespace_label}={_go_quote(namespace)},{pod_label}{operator}{_go_quote(target)}"
        ),
        "GroupBy": pod_label,
    }

    def field(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise ValueError(f"metricsQuery uses <<.{key}>>, which this expansion does not know")
        return values[key]

    return re.sub(r"<<\s*\.(\w+)\s*>>", field, template)


def _go_quote(text: str) -> str:
    """Go's ``%q`` for the plain ASCII names used here."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
