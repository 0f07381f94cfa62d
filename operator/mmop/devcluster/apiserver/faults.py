"""Fault injection for tests: the next N requests that match a verb, resource and client answer
an error, wait first, or lose their connection without an answer.

Driven over HTTP, like the audit log, so any client of a running server can use it:

    POST   /debug/faults   {"verbs": ["patch"], "resources": ["deployments"],
                            "userAgent": "mmop-operator", "code": 500, "count": 3}
    GET    /debug/faults   the rules with their ``remaining`` and ``hits`` counts
    DELETE /debug/faults   forget every rule

Fields of a rule (all optional): ``verbs`` (RBAC verbs: get, list, watch, create, update,
patch, delete, deletecollection; default any), ``resources`` (RBAC resource names such as
``deployments`` or ``multimodalmodels/status``; default any), ``userAgent`` (a prefix of the
client's User-Agent; default any), ``count`` (how many requests it applies to; default 1),
``code`` (answer this HTTP status with a Kubernetes ``Status`` body instead of serving the
request), ``delaySeconds`` (wait this long first; alone it only slows the request down) and
``drop`` (close the connection without an answer: what a client sees when a load balancer or
a timeout cuts it off). A request matches the oldest rule that has requests left. Injected
answers are not server bugs: they never appear in ``internal_errors``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from mmop.devcluster.apiserver import errors

RBAC_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
MAX_DELAY_SECONDS = 600.0


@dataclass
class FaultRule:
    id: int
    verbs: tuple[str, ...]
    resources: tuple[str, ...]
    user_agent: str
    code: int | None
    delay_seconds: float
    drop: bool
    remaining: int
    hits: int = 0

    def matches(self, *, verb: str, resource: str, user_agent: str) -> bool:
        return (
            self.remaining > 0
            and (not self.verbs or verb in self.verbs)
            and (not self.resources or resource in self.resources)
            and user_agent.startswith(self.user_agent)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "verbs": list(self.verbs),
            "resources": list(self.resources),
            "userAgent": self.user_agent,
            "code": self.code,
            "delaySeconds": self.delay_seconds,
            "drop": self.drop,
            "remaining": self.remaining,
            "hits": self.hits,
        }


def _strings(body: dict[str, Any], key: str) -> tuple[str, ...]:
    value = body.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise errors.bad_request(f"{key} must be a list of strings")
    return tuple(value)


class FaultInjector:
    """The rules; thread-safe, since tests may read them from their own thread."""

    def __init__(self) -> None:
        self._rules: list[FaultRule] = []
        self._next_id = 1
        self._lock = threading.Lock()

    def add(self, body: Any) -> FaultRule:
        """A rule from its JSON form (400 on nonsense)."""
        if not isinstance(body, dict):
            raise errors.bad_request("a fault rule is a JSON object")
        verbs = _strings(body, "verbs")
        unknown = [v for v in verbs if v not in RBAC_VERBS]
        if unknown:
            raise errors.bad_request(f"unknown verbs {unknown}; use {', '.join(RBAC_VERBS)}")
        code, delay, count = body.get("code"), body.get("delaySeconds", 0), body.get("count", 1)
        drop = body.get("drop", False)
        if code is not None and (not isinstance(code, int) or not 400 <= code <= 599):
            raise errors.bad_request("code must be an HTTP error status (400-599)")
        if not isinstance(delay, int | float) or not 0 <= delay <= MAX_DELAY_SECONDS:
            raise errors.bad_request(f"delaySeconds must be between 0 and {MAX_DELAY_SECONDS:g}")
        if not isinstance(count, int) or count < 1:
            raise errors.bad_request("count must be a positive integer")
        if not isinstance(drop, bool):
            raise errors.bad_request("drop must be true or false")
        if code is None and not drop and not delay:
            raise errors.bad_request("a fault needs code, drop or delaySeconds")
        user_agent = body.get("userAgent") or ""
        if not isinstance(user_agent, str):
            raise errors.bad_request("userAgent must be a string")
        with self._lock:
            rule = FaultRule(
                id=self._next_id,
                verbs=verbs,
                resources=_strings(body, "resources"),
                user_agent=user_agent,
                code=code,
                delay_seconds=float(delay),
                drop=drop,
                remaining=count,
            )
            self._next_id += 1
            self._rules.append(rule)
            return rule

    def take(self, *, verb: str, resource: str, user_agent: str) -> FaultRule | None:
        """The rule that applies to this request, counted as used; None for most requests."""
        with self._lock:
            for rule in self._rules:
                if rule.matches(verb=verb, resource=resource, user_agent=user_agent):
                    rule.remaining -= 1
                    rule.hits += 1
                    return rule
        return None

    def rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [rule.to_dict() for rule in self._rules]

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()


def injected_error(rule: FaultRule, *, verb: str, resource: str) -> errors.StatusError:
    assert rule.code is not None
    return errors.StatusError(
        rule.code, f"injected fault {rule.id}: {verb} {resource} answers {rule.code}"
    )
