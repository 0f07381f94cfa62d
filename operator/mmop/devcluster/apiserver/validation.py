"""A custom object against its CRD version's schema, in the real server's order: prune unknown
fields, apply defaults, structural validation and list types, then the CEL rules (only on a
structurally valid object). Used by the server's write path and by tests of our own CRD."""

from __future__ import annotations

import copy
from typing import Any

from mmop.devcluster.apiserver import cel, schema

JsonDict = dict[str, Any]


def check_custom_object(
    obj: JsonDict, version_schema: JsonDict, *, old: Any = cel.NO_OLD
) -> tuple[list[str], list[dict[str, str]]]:
    """(unknown fields pruned from ``obj``, 422 causes). ``obj`` is pruned and defaulted in
    place."""
    unknown = schema.prune(obj, version_schema)
    schema.apply_defaults(obj, version_schema)
    causes = schema.validate(obj, version_schema) + schema.duplicates(obj, version_schema)
    if not causes:
        if old is not cel.NO_OLD and isinstance(old, dict):
            # A real server defaults an object when it reads it from storage, so the ratchet
            # compares like with like: an object stored under an older (or permissive) schema
            # is not "changed" by defaults the current schema adds.
            old = copy.deepcopy(old)
            schema.prune(old, version_schema)
            schema.apply_defaults(old, version_schema)
        causes = cel.causes(obj, version_schema, old=old)
    return unknown, causes
