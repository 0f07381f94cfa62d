"""The protobuf wire decoder for the core kinds kubectl and helm send as protobuf."""

from __future__ import annotations

import pytest

from mmop.devcluster.apiserver import protobuf


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def ld(number: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return varint(number << 3 | 2) + varint(len(data)) + data


def vi(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def entry(number: int, key: str, value: bytes | str) -> bytes:
    return ld(number, ld(1, key) + ld(2, value))


def unknown(api_version: str, kind: str, raw: bytes) -> bytes:
    return (
        protobuf.MAGIC
        + ld(1, ld(1, api_version) + ld(2, kind))
        + ld(2, raw)
        + ld(4, protobuf.CONTENT_TYPE)
    )


def object_meta(**extra: bytes) -> bytes:
    # Go always emits the non-pointer fields, empty or not: they must not show up in JSON
    meta = ld(1, "s1") + ld(2, "") + ld(3, "ns") + ld(5, "") + vi(7, 0) + ld(8, b"")
    meta += entry(11, "app", "web") + entry(12, "note", "x")
    meta += ld(13, ld(1, "Deployment") + ld(3, "web") + ld(4, "u-1") + ld(5, "apps/v1") + vi(6, 1))
    meta += ld(14, "f1") + ld(14, "f2")
    return meta + b"".join(extra.values())


def test_secret() -> None:
    raw = ld(1, object_meta()) + entry(2, "password", b"\x00secret") + ld(3, "Opaque")
    raw += entry(4, "plain", "text")
    obj = protobuf.decode(unknown("v1", "Secret", raw))
    assert obj == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "s1",
            "namespace": "ns",
            "labels": {"app": "web"},
            "annotations": {"note": "x"},
            "ownerReferences": [
                {
                    "kind": "Deployment",
                    "name": "web",
                    "uid": "u-1",
                    "apiVersion": "apps/v1",
                    "controller": True,
                }
            ],
            "finalizers": ["f1", "f2"],
        },
        "data": {"password": "AHNlY3JldA=="},
        "type": "Opaque",
        "stringData": {"plain": "text"},
    }


def test_configmap_and_times() -> None:
    created = ld(8, vi(1, 1_700_000_000))
    raw = ld(1, ld(1, "cm") + created) + entry(2, "k", "v") + entry(3, "bin", b"\x01") + vi(4, 1)
    obj = protobuf.decode(unknown("v1", "ConfigMap", raw))
    assert obj["metadata"] == {"name": "cm", "creationTimestamp": "2023-11-14T22:13:20Z"}
    assert obj["data"] == {"k": "v"}
    assert obj["binaryData"] == {"bin": "AQ=="}
    assert obj["immutable"] is True


def test_namespace() -> None:
    raw = ld(1, ld(1, "team")) + ld(2, ld(1, "kubernetes")) + ld(3, ld(1, "Active"))
    obj = protobuf.decode(unknown("v1", "Namespace", raw))
    assert obj == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "team"},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def test_delete_options_with_negative_and_zero_ints() -> None:
    raw = vi(1, 0) + ld(2, ld(1, "uid-1") + ld(2, "42")) + ld(4, "Foreground") + ld(5, "All")
    obj = protobuf.decode(unknown("meta.k8s.io/v1", "DeleteOptions", raw))
    assert obj["gracePeriodSeconds"] == 0
    assert obj["preconditions"] == {"uid": "uid-1", "resourceVersion": "42"}
    assert obj["propagationPolicy"] == "Foreground"
    assert obj["dryRun"] == ["All"]
    negative = protobuf.decode(unknown("v1", "DeleteOptions", vi(1, -1)))
    assert negative["gracePeriodSeconds"] == -1


def test_unknown_fields_are_skipped_and_errors_reported() -> None:
    raw = ld(1, ld(1, "sa")) + ld(99, "future") + vi(98, 5) + vi(4, 0)
    obj = protobuf.decode(unknown("v1", "ServiceAccount", raw))
    assert obj["metadata"] == {"name": "sa"} and obj["automountServiceAccountToken"] is False
    with pytest.raises(protobuf.ProtobufError, match="Pod"):
        protobuf.decode(unknown("v1", "Pod", b""))
    with pytest.raises(protobuf.ProtobufError):
        protobuf.decode(b"{}")
    with pytest.raises(protobuf.ProtobufError):
        protobuf.decode(protobuf.MAGIC + b"\x0a\x05ab")  # truncated
