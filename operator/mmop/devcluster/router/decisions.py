"""The router's decisions, as pure functions over a view of the cluster: which model a request
is for (Host header or OIP path), which routes apply (Istio VirtualService + DestinationRule,
Gateway API HTTPRoute, or the plain Service), which version a weighted pick lands on, and
which ready pod of it serves.

Precedence, like a mesh that has all three: a VirtualService for the host, else an HTTPRoute
attached to the Service (GAMMA) or naming the host, else the Service's own selector.
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from mmop.runtime import contract

CLUSTER_DOMAIN: Final = "cluster.local"
NAMESPACE_HEADER: Final = "X-Mmop-Namespace"
VERSION_LABEL: Final = "mmop.io/version"
_MODEL_PATH: Final = re.compile(r"^/v2/models/([^/]+)(?:/|$)")

Obj = dict[str, Any]


class Objects(Protocol):
    """Read access to the cached objects of one kind (an ``Informer`` is one)."""

    def get(self, namespace: str, name: str) -> Obj | None: ...

    def in_namespace(self, namespace: str) -> list[Obj]: ...

    def __iter__(self) -> Any: ...


class StaticObjects:
    """Objects held in a list (tests, snapshots)."""

    def __init__(self, items: Sequence[Obj] = ()) -> None:
        self._items = list(items)

    def get(self, namespace: str, name: str) -> Obj | None:
        return next((o for o in self.in_namespace(namespace) if _name(o) == name), None)

    def in_namespace(self, namespace: str) -> list[Obj]:
        return [o for o in self._items if _ns(o) == namespace]

    def __iter__(self) -> Any:
        return iter(self._items)


@dataclass(frozen=True)
class ClusterView:
    """What routing reads."""

    services: Objects = field(default_factory=StaticObjects)
    pods: Objects = field(default_factory=StaticObjects)
    virtual_services: Objects = field(default_factory=StaticObjects)
    destination_rules: Objects = field(default_factory=StaticObjects)
    http_routes: Objects = field(default_factory=StaticObjects)


@dataclass(frozen=True)
class ServiceRef:
    namespace: str
    name: str

    def fqdn(self, domain: str = CLUSTER_DOMAIN) -> str:
        return f"{self.name}.{self.namespace}.svc.{domain}"


@dataclass(frozen=True)
class Backend:
    """One weighted destination: the pods of ``service`` that also carry ``labels``."""

    version: str
    weight: int
    namespace: str
    service: str | None
    labels: Mapping[str, str] = field(default_factory=dict)
    port: int | None = None
    problem: str | None = None


@dataclass(frozen=True)
class Route:
    """Where requests for one model go."""

    model: ServiceRef
    via: str  # "VirtualService NAME", "HTTPRoute NAME" or "Service NAME"
    backends: tuple[Backend, ...]


@dataclass(frozen=True)
class Request:
    """The parts of a request that routing looks at."""

    host: str
    path: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    port: int = 80  # the Service port addressed: the local router carries HTTP (port 80) only

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _ns(obj: Mapping[str, Any]) -> str:
    return str(_meta(obj).get("namespace") or "")


def _name(obj: Mapping[str, Any]) -> str:
    return str(_meta(obj).get("name") or "")


# --- which model -------------------------------------------------------------------------------
def strip_port(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def parse_host(
    host: str, *, default_namespace: str, domain: str = CLUSTER_DOMAIN
) -> ServiceRef | None:
    """The Service a Host header names: ``NAME``, ``NAME.NS``, ``NAME.NS.svc`` or
    ``NAME.NS.svc.DOMAIN`` (any port); None for IPs, ``localhost`` and other names."""
    bare = strip_port(host)
    if not bare or bare == "localhost":
        return None
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        pass
    else:
        return None
    parts = bare.split(".")
    if len(parts) == 1:
        return ServiceRef(default_namespace, parts[0])
    if len(parts) == 2:
        return ServiceRef(parts[1], parts[0])
    if len(parts) == 3 and parts[2] == "svc":
        return ServiceRef(parts[1], parts[0])
    if len(parts) > 3 and parts[2] == "svc" and ".".join(parts[3:]) == domain:
        return ServiceRef(parts[1], parts[0])
    return None


def is_cluster_host(host: str, *, domain: str = CLUSTER_DOMAIN) -> bool:
    """Whether ``host`` is a cluster DNS name, ``NAME.NS.svc`` or ``NAME.NS.svc.DOMAIN``."""
    parts = strip_port(host).split(".")
    return len(parts) >= 3 and parts[2] == "svc" and ".".join(parts[3:]) in ("", domain)


def model_from_path(path: str) -> str | None:
    """``NAME`` of an OIP path ``/v2/models/NAME/...``."""
    match = _MODEL_PATH.match(path)
    return match.group(1) if match else None


def _normalise_host(host: str, namespace: str, domain: str) -> str:
    """A route's host as a comparable name (short names are relative to ``namespace``)."""
    ref = parse_host(host, default_namespace=namespace, domain=domain)
    return ref.fqdn(domain) if ref is not None else strip_port(host)


def _host_matches(pattern: str, hostname: str) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return hostname.endswith(pattern[1:])
    return pattern == hostname


# --- string and request matching (VirtualService and HTTPRoute) ---------------------------------
def _string_match(spec: Mapping[str, Any], value: str | None) -> bool:
    if value is None:
        return False
    if "exact" in spec:
        return value == str(spec["exact"])
    if "prefix" in spec:
        return value.startswith(str(spec["prefix"]))
    if "regex" in spec:
        return re.fullmatch(str(spec["regex"]), value) is not None
    return True


def _istio_match(match: Mapping[str, Any], request: Request) -> bool:
    if "port" in match and str(match["port"]) != str(request.port):
        return False  # a route for another Service port (the gRPC one)
    if "uri" in match and not _string_match(match["uri"], request.path):
        return False
    if "method" in match and not _string_match(match["method"], request.method):
        return False
    for name, spec in (match.get("headers") or {}).items():
        if not _string_match(spec, request.header(name)):
            return False
    return True


def _gateway_match(match: Mapping[str, Any], request: Request) -> bool:
    path = match.get("path")
    if path:
        value = str(path.get("value", "/"))
        kind = path.get("type", "PathPrefix")
        if kind == "Exact" and request.path != value:
            return False
        if kind == "RegularExpression" and re.fullmatch(value, request.path) is None:
            return False
        if kind == "PathPrefix":
            prefix = value.rstrip("/")
            if prefix and request.path != prefix and not request.path.startswith(prefix + "/"):
                return False
    if match.get("method") and match["method"] != request.method:
        return False
    for header in match.get("headers") or []:
        actual = request.header(str(header.get("name", "")))
        if header.get("type") == "RegularExpression":
            if actual is None or re.fullmatch(str(header.get("value", "")), actual) is None:
                return False
        elif actual != header.get("value"):
            return False
    return True


# --- routes ------------------------------------------------------------------------------------
def _subset_labels(
    view: ClusterView, *, host: str, subset: str, domain: str
) -> Mapping[str, str] | None:
    for rule in view.destination_rules:
        spec = rule.get("spec") or {}
        if _normalise_host(str(spec.get("host", "")), _ns(rule), domain) != host:
            continue
        for item in spec.get("subsets") or []:
            if item.get("name") == subset:
                return dict(item.get("labels") or {})
    return None


def _virtual_service_route(
    view: ClusterView, vs: Obj, *, model: ServiceRef, request: Request, domain: str
) -> Route:
    spec = vs.get("spec") or {}
    chosen: Sequence[Obj] = ()
    for http in spec.get("http") or []:
        matches = http.get("match") or []
        if not matches or any(_istio_match(m, request) for m in matches):
            chosen = http.get("route") or []
            break
    backends = []
    for dest in chosen:
        destination = dest.get("destination") or {}
        host = _normalise_host(str(destination.get("host", "")), _ns(vs), domain)
        target = parse_host(host, default_namespace=_ns(vs), domain=domain)
        weight = int(dest.get("weight", 100 if len(chosen) == 1 else 0))
        subset = destination.get("subset")
        port = (destination.get("port") or {}).get("number")
        labels: Mapping[str, str] | None = {}
        problem = None
        if target is None:
            problem = f"destination host {host} is not a Service of this cluster"
        elif subset:
            labels = _subset_labels(view, host=host, subset=str(subset), domain=domain)
            if labels is None:
                problem = f"no DestinationRule subset {subset} for host {host}"
        backends.append(
            Backend(
                version=str(subset or (target.name if target else host)),
                weight=weight,
                namespace=target.namespace if target else _ns(vs),
                service=target.name if target else None,
                labels=labels or {},
                port=int(port) if port else None,
                problem=problem,
            )
        )
    return Route(model=model, via=f"VirtualService {_name(vs)}", backends=tuple(backends))


def _http_route_route(route: Obj, *, model: ServiceRef, request: Request) -> Route:
    spec = route.get("spec") or {}
    chosen: Sequence[Obj] = ()
    for rule in spec.get("rules") or []:
        matches = rule.get("matches") or []
        if not matches or any(_gateway_match(m, request) for m in matches):
            chosen = rule.get("backendRefs") or []
            break
    backends = []
    for ref in chosen:
        is_service = ref.get("kind", "Service") == "Service" and ref.get("group", "") in (
            "",
            "core",
        )
        backends.append(
            Backend(
                version=str(ref.get("name", "")),
                weight=int(ref.get("weight", 1)),
                namespace=str(ref.get("namespace") or _ns(route)),
                service=str(ref.get("name")) if is_service else None,
                port=int(ref["port"]) if ref.get("port") else None,
                problem=None if is_service else f"backend kind {ref.get('kind')} is not supported",
            )
        )
    return Route(model=model, via=f"HTTPRoute {_name(route)}", backends=tuple(backends))


def _attached(route: Obj, model: ServiceRef, *, hostname: str, fqdn: str) -> bool:
    spec = route.get("spec") or {}
    for parent in spec.get("parentRefs") or []:
        if (
            parent.get("kind") == "Service"
            and parent.get("group", "") in ("", "core")
            and parent.get("name") == model.name
            and (parent.get("namespace") or _ns(route)) == model.namespace
        ):
            return True
    return any(
        _host_matches(str(h).lower(), hostname) or _host_matches(str(h).lower(), fqdn)
        for h in spec.get("hostnames") or []
    )


def _by_age(objects: Objects) -> list[Obj]:
    return sorted(objects, key=lambda o: (str(_meta(o).get("creationTimestamp")), _name(o)))


def route_for(
    view: ClusterView,
    model: ServiceRef,
    *,
    request: Request,
    hostname: str | None = None,
    domain: str = CLUSTER_DOMAIN,
) -> Route | None:
    """The route for requests to ``model`` (``hostname``: the request's own host name, for
    routes that name external hosts), or None when nothing is known by that name."""
    fqdn = model.fqdn(domain)
    names = {fqdn} | ({hostname} if hostname else set())
    for vs in _by_age(view.virtual_services):
        hosts = {
            _normalise_host(str(h), _ns(vs), domain)
            for h in (vs.get("spec") or {}).get("hosts") or []
        }
        if any(_host_matches(h, n) for h in hosts for n in names):
            return _virtual_service_route(view, vs, model=model, request=request, domain=domain)
    for route in _by_age(view.http_routes):
        if _attached(route, model, hostname=hostname or fqdn, fqdn=fqdn):
            return _http_route_route(route, model=model, request=request)
    if view.services.get(model.namespace, model.name) is not None:
        return Route(
            model=model,
            via=f"Service {model.name}",
            backends=(
                Backend(version="", weight=1, namespace=model.namespace, service=model.name),
            ),
        )
    return None


def find_route(
    view: ClusterView,
    request: Request,
    *,
    default_namespace: str = "default",
    domain: str = CLUSTER_DOMAIN,
    by_path: bool = True,
) -> Route | None:
    """The route for a request: by its Host header, else (``by_path``) by the model name in its
    OIP path (namespace from ``X-Mmop-Namespace``, else ``default_namespace``)."""
    namespace = request.header(NAMESPACE_HEADER) or default_namespace
    hostname = strip_port(request.host)
    ref = parse_host(request.host, default_namespace=namespace, domain=domain)
    if ref is not None or hostname:
        candidate = ref or ServiceRef(namespace, hostname)
        route = route_for(view, candidate, request=request, hostname=hostname, domain=domain)
        if route is not None:
            return route
    name = model_from_path(request.path) if by_path else None
    if name is None:
        return None
    return route_for(view, ServiceRef(namespace, name), request=request, domain=domain)


# --- picking -----------------------------------------------------------------------------------
def choose_backend(backends: Sequence[Backend], rng: random.Random) -> Backend | None:
    """A backend drawn with probability proportional to its weight (None if all weigh 0)."""
    weighted = [b for b in backends if b.weight > 0]
    total = sum(b.weight for b in weighted)
    if total <= 0:
        return None
    point = rng.randrange(total)
    for backend in weighted:
        point -= backend.weight
        if point < 0:
            return backend
    return weighted[-1]


def _selected(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    if _meta(pod).get("deletionTimestamp") or not status.get("podIP"):
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def ready_pods(view: ClusterView, backend: Backend) -> list[Obj]:
    """The ready pods behind a backend (by name), as the endpoints of its Service."""
    if backend.service is None or backend.problem:
        return []
    service = view.services.get(backend.namespace, backend.service)
    if service is None:
        return []
    selector = (service.get("spec") or {}).get("selector") or {}
    if not selector:
        return []
    wanted = {**selector, **backend.labels}
    pods = [
        p
        for p in view.pods.in_namespace(backend.namespace)
        if _selected(_meta(p).get("labels") or {}, wanted) and _ready(p)
    ]
    return sorted(pods, key=_name)


def target_port(view: ClusterView, backend: Backend, pod: Mapping[str, Any]) -> int:
    """The pod port a request to the backend's Service port lands on."""
    service = view.services.get(backend.namespace, backend.service or "") or {}
    ports = (service.get("spec") or {}).get("ports") or []
    chosen = next((p for p in ports if backend.port and p.get("port") == backend.port), None)
    chosen = chosen or (ports[0] if ports else None)
    if chosen is None:
        return contract.HTTP_PORT
    target = chosen.get("targetPort", chosen.get("port"))
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target:
                return int(port["containerPort"])
    return contract.HTTP_PORT


def pod_version(pod: Mapping[str, Any], backend: Backend) -> str:
    """The version to report for a pod: its ``mmop.io/version`` label, else the backend's."""
    return str((_meta(pod).get("labels") or {}).get(VERSION_LABEL) or backend.version)


class RoundRobin:
    """Turns through a list per key (one key per model version)."""

    def __init__(self) -> None:
        self._next: dict[tuple[str, ...], int] = {}

    def pick(self, key: tuple[str, ...], items: Sequence[Obj]) -> Obj:
        index = self._next.get(key, 0)
        self._next[key] = index + 1
        return items[index % len(items)]
