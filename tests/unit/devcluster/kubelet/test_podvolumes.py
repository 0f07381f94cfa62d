"""devcluster/kubelet/podvolumes.py: where volumes live locally and what mount paths map to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mmop.devcluster.kubelet import podvolumes
from mmop.devcluster.kubelet.podenv import EnvSources

SPEC = {
    "volumes": [
        {"name": "model-cache", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "model-store", "persistentVolumeClaim": {"claimName": "models"}},
        {
            "name": "settings",
            "configMap": {"name": "cfg", "items": [{"key": "a", "path": "a.txt"}]},
        },
        {"name": "host", "hostPath": {"path": "/srv/data"}},
    ]
}
CONTAINER = {
    "volumeMounts": [
        {"name": "model-cache", "mountPath": "/var/cache/mmop"},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "model-store", "mountPath": "/mnt/models/models", "readOnly": True},
        {"name": "settings", "mountPath": "/etc/settings"},
        {"name": "host", "mountPath": "/data", "subPath": "x"},
    ]
}


def test_layout() -> None:
    layout = podvolumes.layout(
        SPEC,
        CONTAINER,
        pod_dir=Path("/s/pods/ns/p"),
        claims_dir=Path("/s/pvcs"),
        sources=EnvSources(config_maps={"cfg": {"a": "1", "b": "2"}}),
    )
    assert layout.mounts == {
        "/var/cache/mmop": "/s/pods/ns/p/volumes/model-cache",
        "/tmp": "/s/pods/ns/p/volumes/tmp",
        "/mnt/models/models": "/s/pvcs/models",
        "/etc/settings": "/s/pods/ns/p/volumes/settings",
        "/data": "/srv/data/x",
    }
    assert Path("/srv/data") not in layout.directories
    assert Path("/s/pvcs/models") in layout.directories
    assert layout.files == {Path("/s/pods/ns/p/volumes/settings/a.txt"): "1"}


def test_volume_references() -> None:
    spec = {
        "volumes": [
            {"name": "a", "secret": {"secretName": "s"}},
            {"name": "b", "configMap": {"name": "c"}},
        ]
    }
    assert podvolumes.volume_references(spec) == ({"s"}, {"c"})


@pytest.mark.parametrize(
    ("volume", "data"),
    [
        ({"configMap": {"name": "cfg", "items": [{"key": "a", "path": "/etc/passwd"}]}}, None),
        ({"configMap": {"name": "cfg", "items": [{"key": "a", "path": "../../../x"}]}}, None),
        ({"secret": {"secretName": "s", "items": [{"key": "a", "path": "sub/../../x"}]}}, None),
        ({"secret": {"secretName": "s"}}, {"../../.bashrc": "evil"}),
    ],
    ids=["absolute", "dotdot", "nested-dotdot", "key-dotdot"],
)
def test_item_paths_that_leave_the_volume_are_refused(
    volume: dict[str, Any], data: dict[str, str] | None
) -> None:
    spec = {"volumes": [{"name": "v", **volume}]}
    values = data or {"a": "evil"}
    layout = podvolumes.layout(
        spec,
        {"volumeMounts": [{"name": "v", "mountPath": "/etc/v"}]},
        pod_dir=Path("/s/pods/ns/p"),
        claims_dir=Path("/s/pvcs"),
        sources=EnvSources(config_maps={"cfg": values}, secrets={"s": values}),
    )
    assert layout.files == {}
    assert len(layout.refused) == 1 and "leaves the volume" in layout.refused[0]
