"""One watch request served as a stream of JSON lines (``application/json;stream=watch``).

* no ``resourceVersion`` (or ``0``), or ``sendInitialEvents=true``: synthetic ADDED events for
  the current objects first (the latter ends them with a BOOKMARK annotated
  ``k8s.io/initial-events-end``), then changes;
* a ``resourceVersion``: the history after it, then changes; if that history was compacted,
  an ERROR event with a 410 Status (what the real watch cache sends), then the end;
* ``allowWatchBookmarks``: a BOOKMARK at least every ``bookmark_interval``, busy or quiet (a
  watch whose selector filters out every change still learns how far it is), never claiming
  an event still queued for the client;
* ``timeoutSeconds``: the stream ends then (default: the server's setting).
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from mmop.devcluster.apiserver import errors, tables
from mmop.devcluster.apiserver.selectors import FieldSelector, LabelSelector

if TYPE_CHECKING:
    from mmop.devcluster.apiserver.handlers import WatchSettings
    from mmop.devcluster.apiserver.operations import Api, Target

JsonDict = dict[str, Any]
INITIAL_EVENTS_END = "k8s.io/initial-events-end"


def _line(event_type: str, obj: JsonDict) -> bytes:
    return json.dumps({"type": event_type, "object": obj}, separators=(",", ":")).encode() + b"\n"


def _since(request: web.Request) -> int | None:
    rv = request.query.get("resourceVersion")
    if rv in (None, "", "0") or request.query.get("sendInitialEvents") == "true":
        return None
    try:
        return int(str(rv))
    except ValueError as exc:
        raise errors.bad_request(f"invalid resourceVersion: {rv!r}") from exc


async def serve(
    request: web.Request,
    *,
    api: Api,
    target: Target,
    labels: LabelSelector,
    fields: FieldSelector,
    settings: WatchSettings,
    table: bool,
) -> web.StreamResponse:
    rtype = target.rtype
    for label in fields.fields:
        if not rtype.supports_field(label, target.version):
            raise errors.bad_request(f'field label not supported: "{label}"')
    query = request.query
    try:
        timeout = float(query.get("timeoutSeconds") or settings.default_timeout)
    except ValueError as exc:
        raise errors.bad_request("timeoutSeconds must be a number") from exc
    bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
    initial_end = query.get("sendInitialEvents") == "true"
    since = _since(request)
    namespace = target.namespace if rtype.namespaced else None
    store = api.store
    api_version = target.api_version

    def render(event_type: str, obj: JsonDict) -> bytes:
        if table:
            meta = {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
            return _line(
                event_type,
                tables.table(rtype, target.version, [api.view(obj, target)], list_meta=meta),
            )
        return _line(event_type, api.view(obj, target))

    initial: list[JsonDict] = []
    gone: errors.StatusError | None = None
    try:
        if since is None:
            for obj in store.items(rtype.key, namespace):
                meta = obj["metadata"]
                if (labels.empty or labels.matches(meta.get("labels"))) and (
                    fields.empty or fields.matches(obj)
                ):
                    initial.append(obj)
        start = store.resource_version if since is None else since
        subscription = store.hub.subscribe(
            rtype.key, since=start, namespace=namespace, labels=labels, fields=fields
        )
    except errors.StatusError as exc:
        if exc.code != 410:
            raise
        gone, subscription = exc, None

    response = web.StreamResponse(status=200)
    response.content_type = "application/json"
    response.headers["Content-Type"] = "application/json;stream=watch"
    response.enable_chunked_encoding()
    await response.prepare(request)
    if subscription is None:
        assert gone is not None
        await response.write(_line("ERROR", gone.status()))
        await response.write_eof()
        return response

    def bookmark(annotate: bool = False) -> bytes:
        assert subscription is not None
        rv = subscription.delivered_up_to(store.resource_version)
        meta: JsonDict = {"resourceVersion": str(rv)}
        if annotate:
            meta["annotations"] = {INITIAL_EVENTS_END: "true"}
        return _line("BOOKMARK", {"kind": rtype.kind, "apiVersion": api_version, "metadata": meta})

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        if initial:
            await response.write(b"".join(render("ADDED", obj) for obj in initial))
        if initial_end:
            await response.write(bookmark(annotate=True))
        last_bookmark = loop.time()
        while True:
            now = loop.time()
            remaining = deadline - now
            if remaining <= 0:
                break
            wait = remaining
            if bookmarks:
                wait = max(0.0, min(remaining, last_bookmark + settings.bookmark_interval - now))
            batch = await subscription.next_batch(wait)
            if batch:
                if table:
                    chunk = b"".join(render(kind, event.obj) for kind, event in batch)
                else:
                    chunk = b"".join(event.encode(kind, api_version) for kind, event in batch)
                await response.write(chunk)
            elif subscription.closed:
                break
            if bookmarks and loop.time() >= last_bookmark + settings.bookmark_interval:
                await response.write(bookmark())
                last_bookmark = loop.time()
        await response.write_eof()
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        store.hub.unsubscribe(subscription)
    return response
