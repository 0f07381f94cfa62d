"""The HTTP adapter: Kubernetes REST paths and query parameters to :class:`~.operations.Api`
calls, content negotiation (JSON, Table, PartialObjectMetadata; JSON / YAML / protobuf
bodies), watch streams, discovery, OpenAPI, health, and the audit trail of writes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web

from mmop.devcluster.apiserver import (
    discovery,
    errors,
    openapi,
    patching,
    protobuf,
    tables,
    watchstream,
)
from mmop.devcluster.apiserver.audit import AuditLog, ReadLog, ReadRecord
from mmop.devcluster.apiserver.faults import FaultInjector, FaultRule, injected_error
from mmop.devcluster.apiserver.operations import (
    FIELD_VALIDATION,
    Api,
    DeleteOptions,
    Target,
    WriteOptions,
)
from mmop.devcluster.apiserver.selectors import (
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)

JsonDict = dict[str, Any]
logger = logging.getLogger(__name__)
_WRITE_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
# Open without a token, as a real API server serves them to anonymous clients.
_PUBLIC_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
VERSION_INFO = {
    "major": "1",
    "minor": "35",
    "emulationMajor": "1",
    "emulationMinor": "35",
    "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "34",
    "gitVersion": "v1.35.0",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-12-17T00:00:00Z",
    "goVersion": "go1.25.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass(frozen=True)
class WatchSettings:
    bookmark_interval: float = 10.0
    default_timeout: float = 1800.0


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def json_response(
    obj: Any, *, status: int = 200, warnings: list[str] | None = None
) -> web.Response:
    response = web.Response(body=_dumps(obj), status=status, content_type="application/json")
    for warning in warnings or []:
        response.headers.add("Warning", f'299 - "{warning.replace(chr(34), chr(92) + chr(34))}"')
    return response


def _error(exc: errors.StatusError) -> web.Response:
    return json_response(exc.status(), status=exc.code)


def _as(accept: str) -> str | None:
    """The ``as=`` kind the client asks for (Table, PartialObjectMetadata...), if any."""
    for part in accept.split(","):
        params = dict(p.strip().partition("=")[::2] for p in part.split(";")[1:])
        if params.get("as") in ("Table", "PartialObjectMetadata", "PartialObjectMetadataList"):
            return params["as"]
        if part.strip().split(";")[0] in ("application/json", "*/*"):
            return None
    return None


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


class Handler:
    """One aiohttp request handler for every path."""

    def __init__(
        self,
        *,
        api: Api,
        audit: AuditLog,
        watch: WatchSettings,
        address: Callable[[], str],
        token: str | None = None,
    ) -> None:
        self.api = api
        self._token = token.encode() if token is not None else None
        self.audit = audit
        self.reads = ReadLog()
        self.faults = FaultInjector()  # POST /debug/faults: errors, delays, drops for tests
        self.watch_settings = watch
        self.address = address
        self._openapi_cache: dict[tuple[int, str], tuple[JsonDict, str]] = {}
        self.internal_errors: list[str] = []  # 500s: bugs; tests assert there are none

    # --- entry point ------------------------------------------------------------------------
    def _authenticated(self, request: web.Request) -> bool:
        if self._token is None or request.path in _PUBLIC_PATHS:
            return True
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            credentials.strip().encode(), self._token
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not self._authenticated(request):
            return _error(errors.unauthorized())
        try:
            return await self._dispatch(request)
        except errors.StatusError as exc:
            if request.method in _WRITE_VERBS:
                self._record(request, None, code=exc.code, name=None)
            return _error(exc)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:
            logger.exception("devcluster apiserver: %s %s failed", request.method, request.path_qs)
            self.internal_errors.append(f"{request.method} {request.path_qs}: {exc!r}")
            return _error(errors.StatusError(500, f"internal error: {exc!r}"))

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if not parts:
            return json_response(
                {
                    "paths": [
                        "/api",
                        "/api/v1",
                        "/apis",
                        "/healthz",
                        "/livez",
                        "/openapi/v2",
                        "/openapi/v3",
                        "/readyz",
                        "/version",
                    ]
                }
            )
        head = parts[0]
        if head in ("healthz", "readyz", "livez"):
            return web.Response(text="ok", content_type="text/plain")
        if head == "version" and len(parts) == 1:
            return json_response(VERSION_INFO)
        if head == "openapi":
            return self._openapi(request, parts[1:])
        if head == "debug":
            return await self._debug(request, parts[1:])
        if head == "api":
            if len(parts) == 1:
                return self._discovery_root(request, core=True)
            return await self._resource(request, group="", version=parts[1], rest=parts[2:])
        if head == "apis":
            if len(parts) == 1:
                return self._discovery_root(request, core=False)
            if len(parts) == 2:
                doc = discovery.api_group(self.api.registry, parts[1])
                if doc is None:
                    raise errors.path_not_found()
                return json_response(doc)
            return await self._resource(request, group=parts[1], version=parts[2], rest=parts[3:])
        raise errors.path_not_found()

    # --- discovery / openapi / debug --------------------------------------------------------
    def _discovery_root(self, request: web.Request, *, core: bool) -> web.Response:
        if discovery.wants_aggregated(request.headers.get("Accept", "")):
            doc = discovery.aggregated(self.api.registry, core=core)
            response = json_response(doc)
            response.headers["Content-Type"] = discovery.AGGREGATED_V2
            return response
        if core:
            return json_response(discovery.api_versions(self.address()))
        return json_response(discovery.api_group_list(self.api.registry))

    def _openapi(self, request: web.Request, parts: list[str]) -> web.Response:
        accept = request.headers.get("Accept", "*/*")
        if "json" not in accept and "*/*" not in accept:
            raise errors.StatusError(406, "only application/json is served for OpenAPI documents")
        revision = self.api.registry.revision
        if parts == ["v2"]:
            return json_response(
                self._cached(revision, "v2", lambda: openapi.v2_document(self.api.registry))[0]
            )
        if parts == ["v3"]:
            paths = {}
            for group, versions in self.api.registry.groups():
                for version in versions:
                    key = openapi.v3_key(group, version)
                    _, digest = self._cached(revision, key, self._v3_builder(group, version))
                    paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest}"}
            return json_response({"paths": paths})
        if len(parts) >= 3 and parts[0] == "v3":
            rest = parts[1:]
            if rest[0] == "api" and len(rest) == 2:
                group, version = "", rest[1]
            elif rest[0] == "apis" and len(rest) == 3:
                group, version = rest[1], rest[2]
            else:
                raise errors.path_not_found()
            key = openapi.v3_key(group, version)
            doc, _ = self._cached(revision, key, self._v3_builder(group, version))
            if not doc:
                raise errors.path_not_found()
            return json_response(doc)
        raise errors.path_not_found()

    def _v3_builder(self, group: str, version: str) -> Callable[[], JsonDict]:
        return lambda: openapi.v3_document(self.api.registry, group, version) or {}

    def _cached(
        self, revision: int, key: str, build: Callable[[], JsonDict]
    ) -> tuple[JsonDict, str]:
        found = self._openapi_cache.get((revision, key))
        if found is None:
            if len(self._openapi_cache) > 512:
                self._openapi_cache.clear()
            doc = build()
            found = (doc, openapi.document_hash(doc))
            self._openapi_cache[(revision, key)] = found
        return found

    async def _debug(self, request: web.Request, parts: list[str]) -> web.Response:
        if parts == ["audit"]:
            if request.method == "DELETE":
                self.audit.clear()
                return json_response({"lastIndex": self.audit.last_index})
            try:
                since = int(request.query.get("since", "0"))
            except ValueError as exc:
                raise errors.bad_request("since must be an integer") from exc
            records = [r.to_dict() for r in self.audit.records(since=since)]
            return json_response({"lastIndex": self.audit.last_index, "records": records})
        if parts == ["reads"] and request.method == "GET":
            reads = sorted(self.reads.records(), key=lambda r: (r.user_agent, r.resource, r.verb))
            return json_response({"records": [dataclasses.asdict(r) for r in reads]})
        if parts == ["faults"]:
            if request.method == "POST":
                rule = self.faults.add(await self._body(request))
                return json_response(rule.to_dict(), status=201)
            if request.method == "DELETE":
                self.faults.clear()
            return json_response({"rules": self.faults.rules()})
        if parts == ["compact"] and request.method == "POST":
            rv = self.api.store.resource_version
            self.api.store.hub.compact(rv)
            return json_response({"resourceVersion": str(rv)})
        raise errors.path_not_found()

    # --- resources --------------------------------------------------------------------------
    async def _resource(
        self, request: web.Request, *, group: str, version: str, rest: list[str]
    ) -> web.StreamResponse:
        if not rest:
            doc = discovery.resource_list(self.api.registry, group, version)
            if doc is None:
                raise errors.path_not_found()
            return json_response(doc)
        watch_path = rest[0] == "watch"
        if watch_path:
            rest = rest[1:]
        namespace: str | None = None
        if (
            len(rest) >= 3
            and rest[0] == "namespaces"
            and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
        ):
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise errors.path_not_found()
        resolved = self.api.registry.resolve(group, version, rest[0])
        if resolved is None:
            raise errors.path_not_found()
        rtype, info = resolved
        if namespace is not None and not rtype.namespaced:
            raise errors.path_not_found()
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        if subresource is not None and not (
            (subresource == "status" and info.status) or (subresource == "scale" and info.scale)
        ):
            raise errors.path_not_found()
        target = Target(rtype, info, namespace, name, subresource)
        method = request.method
        query = request.query
        is_watch = method == "GET" and (watch_path or _flag(query.get("watch")))
        if method == "GET":
            self.reads.add(
                ReadRecord(
                    verb="watch" if is_watch else ("get" if name is not None else "list"),
                    group=rtype.group,
                    resource=rtype.plural,
                    subresource=subresource,
                    namespaced=namespace is not None,
                    user_agent=request.headers.get("User-Agent", ""),
                )
            )
        injected = await self._inject_fault(request, target, is_watch=is_watch)
        if injected is not None:
            return injected
        if method == "GET":
            if is_watch:
                if name is not None:  # legacy /watch/.../NAME: a watch with a name field selector
                    target = Target(rtype, info, namespace, None, None)
                    return await self._watch(request, target, name_filter=name)
                return await self._watch(request, target)
            if name is None:
                return self._list(request, target)
            obj = self.api.get(target)
            return self._render_one(request, target, obj)
        if method not in _WRITE_VERBS:
            raise errors.method_not_allowed()
        return await self._write(request, target)

    async def _inject_fault(
        self, request: web.Request, target: Target, *, is_watch: bool
    ) -> web.Response | None:
        """Apply the fault rule this request matches (see ``faults``); None: serve it."""
        method = request.method
        if method == "GET":
            verb = "watch" if is_watch else ("get" if target.name is not None else "list")
        elif method == "DELETE" and target.name is None:
            verb = "deletecollection"
        else:
            verb = _WRITE_VERBS.get(method, method.lower())
        resource = target.rtype.plural + (f"/{target.subresource}" if target.subresource else "")
        rule: FaultRule | None = self.faults.take(
            verb=verb, resource=resource, user_agent=request.headers.get("User-Agent", "")
        )
        if rule is None:
            return None
        if rule.delay_seconds:
            await asyncio.sleep(rule.delay_seconds)
        if rule.drop:
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=499)  # never sent: the connection is gone
        if rule.code is None:
            return None
        error = injected_error(rule, verb=verb, resource=resource)
        if method in _WRITE_VERBS:
            self._record(request, target, code=error.code, name=target.name)
        return _error(error)

    def _render_one(self, request: web.Request, target: Target, obj: JsonDict) -> web.Response:
        kind = _as(request.headers.get("Accept", ""))
        if kind == "Table" and target.subresource is None:
            meta = {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
            include = request.query.get("includeObject", "Metadata")
            return json_response(
                tables.table(
                    target.rtype, target.version, [obj], list_meta=meta, include_object=include
                )
            )
        if kind in ("PartialObjectMetadata", "PartialObjectMetadataList"):
            return json_response(
                {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj.get("metadata", {}),
                }
            )
        return json_response(obj)

    def _selectors(self, request: web.Request, name_filter: str | None = None) -> tuple[Any, Any]:
        try:
            labels = parse_label_selector(request.query.get("labelSelector"))
            text = request.query.get("fieldSelector") or ""
            if name_filter is not None:
                text = f"metadata.name={name_filter}" + ("," + text if text else "")
            fields = parse_field_selector(text)
        except SelectorError as exc:
            raise errors.bad_request(str(exc)) from exc
        return labels, fields

    def _list(self, request: web.Request, target: Target) -> web.Response:
        labels, fields = self._selectors(request)
        try:
            limit = int(request.query.get("limit") or 0)
        except ValueError as exc:
            raise errors.bad_request("limit must be an integer") from exc
        listing = self.api.list_objects(
            target,
            labels=labels,
            fields=fields,
            limit=limit,
            continue_token=request.query.get("continue") or None,
        )
        kind = _as(request.headers.get("Accept", ""))
        if kind == "Table":
            include = request.query.get("includeObject", "Metadata")
            return json_response(
                tables.table(
                    target.rtype,
                    target.version,
                    listing["items"],
                    list_meta=listing["metadata"],
                    include_object=include,
                )
            )
        if kind in ("PartialObjectMetadata", "PartialObjectMetadataList"):
            items = [
                {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o.get("metadata", {}),
                }
                for o in listing["items"]
            ]
            return json_response(
                {
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": listing["metadata"],
                    "items": items,
                }
            )
        return json_response(listing)

    # --- writes -----------------------------------------------------------------------------
    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return None
        content_type = request.content_type
        if content_type == protobuf.CONTENT_TYPE:
            try:
                return protobuf.decode(raw)
            except protobuf.ProtobufError as exc:
                raise errors.StatusError(415, str(exc)) from exc
        try:
            return json.loads(raw)
        except ValueError:
            if "yaml" not in content_type:
                raise errors.bad_request("the request body is not valid JSON") from None
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise errors.bad_request(f"the request body is not valid YAML: {exc}") from exc

    def _write_options(self, request: web.Request, body: Any) -> WriteOptions:
        query = request.query
        dry_run = query.getall("dryRun", [])
        if isinstance(body, dict) and body.get("kind") == "DeleteOptions":
            dry_run = [*dry_run, *(body.get("dryRun") or [])]
        if any(d != "All" for d in dry_run):
            raise errors.bad_request(f"unsupported dryRun value(s): {dry_run}; only All")
        validation = query.get("fieldValidation") or "Warn"
        if validation not in FIELD_VALIDATION:
            raise errors.bad_request(
                f"fieldValidation: Unsupported value: {validation!r}: "
                "supported values: Strict, Warn, Ignore"
            )
        manager = query.get("fieldManager")
        if not manager:
            agent = request.headers.get("User-Agent", "")
            manager = agent.split("/", 1)[0][:128] or "unknown"
        return WriteOptions(
            field_manager=manager,
            dry_run=bool(dry_run),
            field_validation=validation,
            force=_flag(query.get("force")),
        )

    async def _write(self, request: web.Request, target: Target) -> web.Response:
        method = request.method
        body = await self._body(request)
        options = self._write_options(request, body)
        name: str | None = target.name
        if method == "POST":
            if target.name is not None:
                raise errors.method_not_allowed()
            outcome = self.api.create(target, body, options)
            name = outcome.obj.get("metadata", {}).get("name")
        elif target.name is None and method != "DELETE":
            raise errors.method_not_allowed()
        elif method == "PUT":
            outcome = self.api.update(target, body, options)
        elif method == "PATCH":
            content_type = request.content_type
            if content_type not in patching.PATCH_TYPES:
                raise errors.unsupported_media_type(content_type)
            if content_type == patching.APPLY and not request.query.get("fieldManager"):
                raise errors.apply_needs_field_manager()
            outcome = self.api.patch(target, body, content_type=content_type, options=options)
        else:
            delete = self._delete_options(request, body)
            if target.name is None:
                labels, fields = self._selectors(request)
                listing = self.api.delete_collection(
                    target, labels=labels, fields=fields, options=delete, write=options
                )
                self._record(request, target, code=200, name=None)
                return json_response(listing)
            outcome = self.api.delete(target, delete, options)
        self._record(request, target, code=outcome.code, name=name)
        if method != "DELETE" and outcome.code < 300:
            self._record_owner_permissions(request, target, outcome.obj)
        return json_response(outcome.obj, status=outcome.code, warnings=outcome.warnings)

    def _record_owner_permissions(
        self, request: web.Request, target: Target, obj: JsonDict
    ) -> None:
        """A real API server with OwnerReferencesPermissionEnforcement (OpenShift) lets a client
        set ``blockOwnerDeletion`` only with ``update`` on the owner's ``finalizers``; it does
        not enforce it here, but records the permission in the read log so that RBAC checks
        see every verb a client needs."""
        for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
            if not isinstance(ref, dict) or ref.get("blockOwnerDeletion") is not True:
                continue
            owner = self.api.registry.by_kind(str(ref.get("apiVersion")), str(ref.get("kind")))
            if owner is None:
                continue
            self.reads.add(
                ReadRecord(
                    verb="update",
                    group=owner[0].group,
                    resource=owner[0].plural,
                    subresource="finalizers",
                    namespaced=owner[0].namespaced and target.namespace is not None,
                    user_agent=request.headers.get("User-Agent", ""),
                )
            )

    def _delete_options(self, request: web.Request, body: Any) -> DeleteOptions:
        options = DeleteOptions.from_body(body)
        query = request.query
        propagation = query.get("propagationPolicy") or options.propagation
        if propagation is None and query.get("orphanDependents") is not None:
            propagation = "Orphan" if _flag(query.get("orphanDependents")) else "Background"
        return DeleteOptions(
            propagation=propagation,
            grace_period_seconds=options.grace_period_seconds,
            precondition_uid=options.precondition_uid,
            precondition_rv=options.precondition_rv,
        )

    def _record(
        self, request: web.Request, target: Target | None, *, code: int, name: str | None
    ) -> None:
        method = request.method
        verb = _WRITE_VERBS.get(method, method.lower())
        content_type = request.headers.get("Content-Type")
        if method == "PATCH" and request.content_type == patching.APPLY:
            verb = "apply"
        if method == "DELETE" and target is not None and target.name is None:
            verb = "deletecollection"
        self.audit.add(
            verb=verb,
            method=method,
            path=request.path,
            group=target.rtype.group if target else "",
            version=target.version.name if target else "",
            resource=target.rtype.plural if target else "",
            kind=target.rtype.kind if target else "",
            subresource=target.subresource if target else None,
            namespace=target.namespace if target else None,
            name=name if target else None,
            user_agent=request.headers.get("User-Agent", ""),
            field_manager=request.query.get("fieldManager"),
            content_type=content_type,
            dry_run="All" in request.query.getall("dryRun", []),
            code=code,
        )

    # --- watch ------------------------------------------------------------------------------
    async def _watch(
        self, request: web.Request, target: Target, *, name_filter: str | None = None
    ) -> web.StreamResponse:
        labels, fields = self._selectors(request, name_filter)
        return await watchstream.serve(
            request,
            api=self.api,
            target=target,
            labels=labels,
            fields=fields,
            settings=self.watch_settings,
            table=_as(request.headers.get("Accept", "")) == "Table",
        )
