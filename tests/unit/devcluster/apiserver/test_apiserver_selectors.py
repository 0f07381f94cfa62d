"""Label and field selectors: the query-string syntax and matching."""

from __future__ import annotations

import pytest

from mmop.devcluster.apiserver import selectors

LABELS = {"app": "web", "tier": "front", "version": "3"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app=db", False),
        ("app!=db", True),
        ("app!=web", False),
        ("missing!=x", True),
        ("app in (web,db)", True),
        ("app in (db, cache)", False),
        ("app notin (db,cache)", True),
        ("app notin (web)", False),
        ("missing notin (x)", True),
        ("tier", True),
        ("missing", False),
        ("!missing", True),
        ("!tier", False),
        ("version>2", True),
        ("version<3", False),
        ("app=web,tier=front", True),
        ("app=web,tier=back", False),
        ("app in (web,db),!missing,tier", True),
    ],
)
def test_label_selector_matches(text: str, expected: bool) -> None:
    assert selectors.parse_label_selector(text).matches(LABELS) is expected


def test_label_selector_on_unlabelled_object() -> None:
    assert selectors.parse_label_selector("!app").matches(None)
    assert not selectors.parse_label_selector("app").matches(None)


@pytest.mark.parametrize("text", ["app=(", "a b c", "=x", "app in (a", "app=web,,tier", "v>x"])
def test_label_selector_rejects_garbage(text: str) -> None:
    with pytest.raises(selectors.SelectorError):
        selectors.parse_label_selector(text)


def test_selector_objects_round_trip() -> None:
    obj = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["front", "edge"]},
            {"key": "legacy", "operator": "DoesNotExist"},
        ],
    }
    text = selectors.selector_to_string(obj)
    assert text == "app=web,tier in (edge,front),!legacy"
    assert selectors.parse_label_selector(text).matches(LABELS)
    assert selectors.selector_from_object(obj).matches(LABELS)
    assert not selectors.selector_from_object(obj).matches({**LABELS, "legacy": "1"})


POD = {
    "metadata": {"name": "p1", "namespace": "ns1"},
    "spec": {"nodeName": "node-a", "hostNetwork": False},
    "status": {"phase": "Running"},
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("metadata.name=p1", True),
        ("metadata.name==p1", True),
        ("metadata.name!=p1", False),
        ("metadata.namespace=ns1,status.phase=Running", True),
        ("status.phase=Pending", False),
        ("spec.nodeName=node-a", True),
        ("spec.nodeName=", False),
        ("spec.schedulerName=", True),
        ("spec.hostNetwork=false", True),
    ],
)
def test_field_selector_matches(text: str, expected: bool) -> None:
    assert selectors.parse_field_selector(text).matches(POD) is expected


def test_field_selector_escapes_and_exact_name() -> None:
    parsed = selectors.parse_field_selector(r"metadata.name=a\,b,status.phase!=x")
    assert parsed.fields == ("metadata.name", "status.phase")
    assert parsed.exact_name() == "a,b"
    with pytest.raises(selectors.SelectorError):
        selectors.parse_field_selector("metadata.name")
