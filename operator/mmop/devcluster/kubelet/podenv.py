"""A container's environment as the local kubelet builds it: ``envFrom`` and ``env`` with
``valueFrom`` resolved and ``$(VAR)`` expanded, like a real kubelet, then adapted to running
as a local process: paths under a volume mount point at the pod's local directory for that
volume, ``MMOP_HOST`` is the pod's loopback IP and plain HTTP goes through the local router
(the stand-in for cluster DNS: ``cluster_dns_env``). Pure: Secrets and ConfigMaps come in as
already-fetched data.
"""

from __future__ import annotations

import base64
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from mmop.devcluster.kubelet.quantity import parse_quantity
from mmop.runtime import contract

_ENV_NAME: Final = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_REFERENCE: Final = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")
_SUBSCRIPT: Final = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")
# Direct, never through the router: the node's own names. Other loopback addresses (pod IPs)
# go through it too and are passed straight on (not every client reads CIDRs in NO_PROXY).
NO_PROXY_HOSTS: Final = ("localhost", "127.0.0.1", "::1")

# A pod's env runs here as a process of the dev session's user, not in a container: names that
# make the dynamic loader, Python or a shell load other code, or that pick which programs and
# files the process uses, come from the session only (PATH, PYTHONPATH, HOME: how the runtime
# finds mmop-runtime), never from a pod spec.
_SESSION_ONLY: Final = frozenset(
    {"PATH", "HOME", "BASH_ENV", "ENV", "SHELLOPTS", "GCONV_PATH", "NODE_OPTIONS", "PERL5OPT"}
)
_SESSION_ONLY_PREFIXES: Final = ("LD_", "PYTHON", "DYLD_")
_POD_MAY_SET_PYTHON: Final = frozenset(
    {"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING", "PYTHONHASHSEED"}
)


def pod_may_set(name: str) -> bool:
    """Whether a pod spec may set ``name`` in a local process (see ``_SESSION_ONLY``)."""
    if name in _POD_MAY_SET_PYTHON:
        return True
    return name not in _SESSION_ONLY and not name.startswith(_SESSION_ONLY_PREFIXES)


class EnvError(Exception):
    """The environment cannot be built (the kubelet's CreateContainerConfigError)."""


@dataclass(frozen=True)
class EnvSources:
    """The data ``valueFrom`` and ``envFrom`` read: name -> decoded key/value map, or None."""

    secrets: Mapping[str, Mapping[str, str] | None] = field(default_factory=dict)
    config_maps: Mapping[str, Mapping[str, str] | None] = field(default_factory=dict)


def referenced_objects(container: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """(Secret names, ConfigMap names) a container's env reads; fetch these before building."""
    secrets: set[str] = set()
    config_maps: set[str] = set()
    for source in container.get("envFrom") or []:
        if "secretRef" in source:
            secrets.add(source["secretRef"].get("name", ""))
        if "configMapRef" in source:
            config_maps.add(source["configMapRef"].get("name", ""))
    for var in container.get("env") or []:
        value_from = var.get("valueFrom") or {}
        if "secretKeyRef" in value_from:
            secrets.add(value_from["secretKeyRef"].get("name", ""))
        if "configMapKeyRef" in value_from:
            config_maps.add(value_from["configMapKeyRef"].get("name", ""))
    return secrets, config_maps


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined names are replaced, ``$$`` is a literal ``$``,
    unknown references stay as they are."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _REFERENCE.sub(one, value)


def _field_value(path: str, pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": status.get("podIP"),
        "status.hostIP": status.get("hostIP"),
        "status.podIPs": ",".join(i.get("ip", "") for i in status.get("podIPs") or []),
        "status.hostIPs": ",".join(i.get("ip", "") for i in status.get("hostIPs") or []),
    }
    if path in simple:
        return str(simple[path] or "")
    match = _SUBSCRIPT.match(path)
    if match is not None:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise EnvError(f"unsupported fieldRef fieldPath {path!r}")


def _resource_value(
    ref: Mapping[str, Any], container: Mapping[str, Any], allocatable: Mapping[str, str]
) -> str:
    kind, _, name = str(ref.get("resource", "")).partition(".")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(name)
    if raw is None and kind == "requests":
        raw = (resources.get("limits") or {}).get(name)
    if raw is None:
        raw = allocatable.get(name, "0")
    divisor = parse_quantity(ref.get("divisor") or "1")
    if divisor <= 0:
        raise EnvError(f"invalid divisor in resourceFieldRef {ref!r}")
    return str(math.ceil(parse_quantity(raw) / divisor))


def _key_ref(
    ref: Mapping[str, Any], *, kind: str, data: Mapping[str, Mapping[str, str] | None], ns: str
) -> str | None:
    name = str(ref.get("name", ""))
    key = str(ref.get("key", ""))
    optional = bool(ref.get("optional", False))
    values = data.get(name)
    if values is None:
        if optional:
            return None
        raise EnvError(f'{kind.lower()} "{name}" not found')
    if key not in values:
        if optional:
            return None
        raise EnvError(f"couldn't find key {key} in {kind} {ns}/{name}")
    return values[key]


def kubernetes_env(
    container: Mapping[str, Any],
    *,
    pod: Mapping[str, Any],
    sources: EnvSources,
    allocatable: Mapping[str, str],
) -> dict[str, str]:
    """The container's environment exactly as a real kubelet would set it (no adaptation)."""
    ns = str((pod.get("metadata") or {}).get("namespace") or "default")
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix") or "")
        if "secretRef" in source:
            ref, kind, data = source["secretRef"], "Secret", sources.secrets
        elif "configMapRef" in source:
            ref, kind, data = source["configMapRef"], "ConfigMap", sources.config_maps
        else:
            continue
        values = data.get(str(ref.get("name", "")))
        if values is None:
            if ref.get("optional"):
                continue
            raise EnvError(f'{kind.lower()} "{ref.get("name", "")}" not found')
        for key, item in values.items():
            if _ENV_NAME.match(prefix + key):
                env[prefix + key] = item
    for var in container.get("env") or []:
        name = str(var.get("name", ""))
        value_from = var.get("valueFrom")
        if value_from is None:
            env[name] = expand(str(var.get("value", "")), env)
            continue
        value: str | None
        if "fieldRef" in value_from:
            value = _field_value(str(value_from["fieldRef"].get("fieldPath", "")), pod)
        elif "resourceFieldRef" in value_from:
            value = _resource_value(value_from["resourceFieldRef"], container, allocatable)
        elif "secretKeyRef" in value_from:
            value = _key_ref(value_from["secretKeyRef"], kind="Secret", data=sources.secrets, ns=ns)
        elif "configMapKeyRef" in value_from:
            value = _key_ref(
                value_from["configMapKeyRef"], kind="ConfigMap", data=sources.config_maps, ns=ns
            )
        else:
            raise EnvError(f"env {name}: unsupported valueFrom {sorted(value_from)}")
        if value is not None:
            env[name] = value
    return env


def remap_paths(
    env: Mapping[str, str],
    mounts: Mapping[str, str],
    *,
    exists: Callable[[str], bool] = os.path.exists,
) -> dict[str, str]:
    """Values that are a mount path point at the local directory for that volume; values under
    a mount path point inside it, unless they name a path that exists on this machine (a model
    directory under ``/tmp``, say: a local path is what a dev cluster user means). The longest
    mount path wins."""
    ordered = sorted(mounts.items(), key=lambda item: len(item[0]), reverse=True)
    out = {}
    for name, value in env.items():
        for mount, local in ordered:
            mount = mount.rstrip("/") or "/"
            if value == mount:
                value = local
                break
            if value.startswith(mount + "/"):
                if not exists(value):
                    value = local.rstrip("/") + value[len(mount) :]
                break
        out[name] = value
    return out


def cluster_dns_env(proxy_url: str) -> dict[str, str]:
    """The stand-in for cluster DNS: plain-HTTP requests go through the local router
    (``proxy_url``), which resolves ``SERVICE.NAMESPACE.svc.cluster.local`` to ready pods and
    passes any other host through; loopback names go direct. HTTPS is left alone."""
    no_proxy = ",".join(NO_PROXY_HOSTS)
    return {
        "HTTP_PROXY": proxy_url,
        "http_proxy": proxy_url,
        "NO_PROXY": no_proxy,
        "no_proxy": no_proxy,
    }


def process_env(
    container: Mapping[str, Any],
    *,
    pod: Mapping[str, Any],
    sources: EnvSources,
    mounts: Mapping[str, str],
    pod_ip: str,
    allocatable: Mapping[str, str],
    base: Mapping[str, str] | None = None,
    cluster_proxy: str | None = None,
) -> dict[str, str]:
    """The environment of the local process that runs ``container``.

    ``base`` (the kubelet's own environment, less its ``MMOP_*`` and ``KUBE*`` settings) comes
    first so that PATH, HOME and HF_HUB_OFFLINE reach the runtime; then, with
    ``cluster_proxy`` (the router's URL), ``cluster_dns_env`` (over any proxy of the kubelet's
    own); the container's env wins over both, except for names only the session may set
    (``pod_may_set``): those are an EnvError. ``TMPDIR`` follows a ``/tmp`` mount;
    ``MMOP_HOST`` is the pod IP.
    """
    env = {
        key: value for key, value in (base or {}).items() if not key.startswith(("MMOP_", "KUBE"))
    }
    if cluster_proxy is not None:
        env.update(cluster_dns_env(cluster_proxy))
    raw = kubernetes_env(container, pod=pod, sources=sources, allocatable=allocatable)
    refused = sorted(name for name in raw if not pod_may_set(name))
    if refused:
        raise EnvError(
            f"env {', '.join(refused)[:200]}: set by the local kubelet from the dev session "
            "only (it would run other code as its user)"
        )
    own = remap_paths(raw, mounts)
    env.update(own)
    for upper in ("HTTP_PROXY", "NO_PROXY"):
        # Clients prefer the lowercase name: a container's own setting, in either case, wins.
        lower = upper.lower()
        if lower in own or upper in own:
            env[upper] = env[lower] = own.get(lower, own.get(upper, ""))
    if "/tmp" in mounts:
        env["TMPDIR"] = mounts["/tmp"]
    env[contract.ENV_HOST] = pod_ip
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def decode_secret(data: Mapping[str, str] | None) -> dict[str, str]:
    """A Secret's ``data`` (base64) as text."""
    return {
        key: base64.b64decode(value).decode("utf-8", errors="replace")
        for key, value in (data or {}).items()
    }
