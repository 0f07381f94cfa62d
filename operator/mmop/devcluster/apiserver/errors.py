"""API errors as Kubernetes ``Status`` objects: one exception type, raised anywhere,
rendered once.
"""

from __future__ import annotations

from typing import Any

from mmop.devcluster.apiserver import resources

_REASONS = {
    400: "BadRequest",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    500: "InternalError",
}


class StatusError(Exception):
    """A failed request: HTTP code, Kubernetes reason, message and optional details."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(rtype: resources.ResourceType, name: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "kind": rtype.plural}
    if rtype.group:
        details["group"] = rtype.group
    return details


def not_found(rtype: resources.ResourceType, name: str) -> StatusError:
    return StatusError(
        404, f'{rtype.group_resource} "{name}" not found', details=_details(rtype, name)
    )


def namespace_not_found(name: str) -> StatusError:
    return StatusError(
        404, f'namespaces "{name}" not found', details={"name": name, "kind": "namespaces"}
    )


def path_not_found() -> StatusError:
    return StatusError(404, "the server could not find the requested resource")


def already_exists(rtype: resources.ResourceType, name: str) -> StatusError:
    return StatusError(
        409,
        f'{rtype.group_resource} "{name}" already exists',
        reason="AlreadyExists",
        details=_details(rtype, name),
    )


def conflict(rtype: resources.ResourceType, name: str, why: str | None = None) -> StatusError:
    why = why or (
        "the object has been modified; "
        "please apply your changes to the latest version and try again"
    )
    return StatusError(
        409,
        f'Operation cannot be fulfilled on {rtype.group_resource} "{name}": {why}',
        reason="Conflict",
        details=_details(rtype, name),
    )


def invalid(
    rtype: resources.ResourceType,
    name: str,
    causes: list[dict[str, str]],
    *,
    kind: str | None = None,
) -> StatusError:
    """422 Invalid, with ``causes`` like ``{"reason", "message", "field"}`` (real server shape)."""
    kind = kind or rtype.kind
    texts = [f"{c['field']}: {c['message']}" if c.get("field") else c["message"] for c in causes]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    group_kind = f"{kind}.{rtype.group}" if rtype.group else kind
    details = {"name": name, "kind": kind, "causes": causes}
    if rtype.group:
        details["group"] = rtype.group
    return StatusError(422, f'{group_kind} "{name}" is invalid: {joined}', details=details)


def bad_request(message: str) -> StatusError:
    return StatusError(400, message)


def unprocessable(message: str) -> StatusError:
    return StatusError(422, message)


def gone(message: str = "too old resource version") -> StatusError:
    return StatusError(410, message, reason="Expired")


def unauthorized() -> StatusError:
    return StatusError(401, "Unauthorized", reason="Unauthorized")


def forbidden(message: str) -> StatusError:
    return StatusError(403, message)


def method_not_allowed(
    message: str = "the server does not allow this method on the requested resource",
) -> StatusError:
    return StatusError(405, message)


def unsupported_media_type(content_type: str) -> StatusError:
    return StatusError(
        415,
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json, application/yaml, application/vnd.kubernetes.protobuf "
        f"(got {content_type})",
    )


def namespace_mismatch() -> StatusError:
    return bad_request(
        "the namespace of the provided object does not match the namespace sent on the request"
    )


def name_mismatch(body_name: str, url_name: str | None) -> StatusError:
    return bad_request(
        f"the name of the object ({body_name}) does not match the name on the URL ({url_name})"
    )


def namespace_terminating(namespace: str) -> StatusError:
    return forbidden(
        f"unable to create new content in namespace {namespace} because it is being terminated"
    )


def apply_needs_field_manager() -> StatusError:
    return unprocessable(
        "PatchOptions.meta.k8s.io is invalid: fieldManager: Required value: "
        "is required for apply patch"
    )
