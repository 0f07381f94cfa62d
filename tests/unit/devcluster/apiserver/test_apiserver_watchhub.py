"""The watch hub: per-type history, resuming, 410 after compaction, selector transitions."""

from __future__ import annotations

from typing import Any

import pytest

from mmop.devcluster.apiserver import errors
from mmop.devcluster.apiserver.selectors import (
    FieldSelector,
    parse_field_selector,
    parse_label_selector,
)
from mmop.devcluster.apiserver.watch import WatchEvent, WatchHub

PODS = ("", "pods")
CMS = ("", "configmaps")


def obj(name: str, rv: int, ns: str = "a", **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns, "resourceVersion": str(rv), "labels": labels}
    }


def kinds(sub: Any) -> list[tuple[str, str]]:
    return [(kind, event.obj["metadata"]["name"]) for kind, event in sub.pending]


def test_replay_after_a_resource_version_per_type_and_namespace() -> None:
    hub = WatchHub(history_size=10)
    hub.publish(PODS, WatchEvent("ADDED", 1, obj("p1", 1)))
    hub.publish(CMS, WatchEvent("ADDED", 2, obj("c1", 2)))
    hub.publish(PODS, WatchEvent("ADDED", 3, obj("p2", 3, ns="b")))
    hub.publish(PODS, WatchEvent("MODIFIED", 4, obj("p1", 4), old=obj("p1", 1)))
    everything = hub.subscribe(
        PODS, since=0, namespace=None, labels=parse_label_selector(""), fields=FieldSelector()
    )
    assert kinds(everything) == [("ADDED", "p1"), ("ADDED", "p2"), ("MODIFIED", "p1")]
    in_a = hub.subscribe(
        PODS, since=1, namespace="a", labels=parse_label_selector(""), fields=FieldSelector()
    )
    assert kinds(in_a) == [("MODIFIED", "p1")]
    hub.publish(PODS, WatchEvent("DELETED", 5, obj("p1", 5), old=obj("p1", 4)))
    assert kinds(in_a)[-1] == ("DELETED", "p1")
    assert hub.subscriber_count() == 2
    hub.unsubscribe(in_a)
    assert hub.subscriber_count() == 1


def test_gone_when_the_window_moved_on() -> None:
    hub = WatchHub(history_size=2)
    for rv in (1, 2, 3):
        hub.publish(PODS, WatchEvent("ADDED", rv, obj(f"p{rv}", rv)))
    with pytest.raises(errors.StatusError) as caught:
        hub.subscribe(
            PODS, since=0, namespace=None, labels=parse_label_selector(""), fields=FieldSelector()
        )
    assert caught.value.code == 410
    ok = hub.subscribe(
        PODS, since=1, namespace=None, labels=parse_label_selector(""), fields=FieldSelector()
    )
    assert kinds(ok) == [("ADDED", "p2"), ("ADDED", "p3")]
    # the configmaps' window is separate and still complete
    hub.subscribe(
        CMS, since=0, namespace=None, labels=parse_label_selector(""), fields=FieldSelector()
    )


def test_compact_ends_watches_and_gones_older_versions() -> None:
    hub = WatchHub()
    hub.publish(PODS, WatchEvent("ADDED", 1, obj("p1", 1)))
    sub = hub.subscribe(
        PODS, since=1, namespace=None, labels=parse_label_selector(""), fields=FieldSelector()
    )
    hub.compact(5)
    assert sub.closed
    with pytest.raises(errors.StatusError):
        hub.subscribe(
            CMS, since=4, namespace=None, labels=parse_label_selector(""), fields=FieldSelector()
        )
    hub.subscribe(
        CMS, since=5, namespace=None, labels=parse_label_selector(""), fields=FieldSelector()
    )


def test_selector_transitions_become_added_and_deleted() -> None:
    hub = WatchHub()
    sub = hub.subscribe(
        PODS,
        since=None,
        namespace=None,
        labels=parse_label_selector("app=web"),
        fields=parse_field_selector("metadata.namespace=a"),
    )
    hub.publish(PODS, WatchEvent("ADDED", 1, obj("p1", 1, app="db")))
    hub.publish(
        PODS, WatchEvent("MODIFIED", 2, obj("p1", 2, app="web"), old=obj("p1", 1, app="db"))
    )
    hub.publish(
        PODS, WatchEvent("MODIFIED", 3, obj("p1", 3, app="web", x="1"), old=obj("p1", 2, app="web"))
    )
    hub.publish(
        PODS, WatchEvent("MODIFIED", 4, obj("p1", 4, app="db"), old=obj("p1", 3, app="web"))
    )
    assert kinds(sub) == [("ADDED", "p1"), ("MODIFIED", "p1"), ("DELETED", "p1")]


def test_slow_subscriber_is_closed() -> None:
    hub = WatchHub(subscriber_limit=2)
    sub = hub.subscribe(
        PODS, since=None, namespace=None, labels=parse_label_selector(""), fields=FieldSelector()
    )
    for rv in (1, 2, 3):
        hub.publish(PODS, WatchEvent("ADDED", rv, obj(f"p{rv}", rv)))
    assert sub.closed and len(sub.pending) == 2


def test_encoded_lines_are_cached_per_version() -> None:
    event = WatchEvent("ADDED", 1, {"apiVersion": "x/v1", "metadata": {"name": "a"}})
    line = event.encode("ADDED", "x/v1beta1")
    assert line.endswith(b"\n") and b'"apiVersion":"x/v1beta1"' in line
    assert event.encode("ADDED", "x/v1beta1") is line
