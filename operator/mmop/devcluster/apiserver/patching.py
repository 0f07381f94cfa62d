"""PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch.

Server-side apply lives in :mod:`.managedfields`. Errors follow the real server: an
undecodable patch is 400, a patch that does not apply (a failed ``test``, a missing path)
is 422, strategic merge on a custom resource is 415.
"""

from __future__ import annotations

from typing import Any

import jsonpatch
import jsonpointer

from mmop.devcluster.apiserver import errors, fieldtypes, strategic
from mmop.devcluster.apiserver.objects import deep_copy

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"
PATCH_TYPES = (MERGE, JSON_PATCH, STRATEGIC, APPLY)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: ``target`` is consumed (mutated) where it is a dict."""
    if not isinstance(patch, dict):
        return deep_copy(patch)
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = merge_patch(target.get(key), value)
    return target


def json_patch(target: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise errors.bad_request("json patch must be a list of operations")
    try:
        patch = jsonpatch.JsonPatch(ops)
    except (jsonpatch.InvalidJsonPatch, TypeError, KeyError) as exc:
        raise errors.bad_request(f"invalid json patch: {exc}") from exc
    try:
        return patch.apply(target, in_place=True)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise errors.unprocessable(
            f"the server rejected our request due to an error in our request: {exc}"
        ) from exc
    except jsonpatch.InvalidJsonPatch as exc:
        raise errors.bad_request(f"invalid json patch: {exc}") from exc
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError) as exc:
        raise errors.unprocessable(
            f"the server rejected our request due to an error in our request: {exc}"
        ) from exc


def apply_patch(
    target: Any, patch: Any, *, content_type: str, node: fieldtypes.Node, builtin: bool
) -> Any:
    """``target`` (a private copy) patched by a merge, JSON or strategic patch."""
    if content_type == MERGE:
        if not isinstance(patch, dict):
            raise errors.bad_request("merge patch must be a JSON object")
        return merge_patch(target, patch)
    if content_type == JSON_PATCH:
        return json_patch(target, patch)
    if content_type == STRATEGIC:
        if not builtin:
            raise errors.StatusError(
                415,
                "strategic merge patch is not supported for custom resources; "
                "use a JSON merge patch or server-side apply",
            )
        try:
            return strategic.strategic_merge(target, patch, node)
        except strategic.PatchError as exc:
            raise errors.bad_request(str(exc)) from exc
    raise errors.unsupported_media_type(content_type)
