"""Where a pod's volumes live on the local disk, and what their mount paths map to.

emptyDir (``/var/cache/mmop``, ``/tmp``, ``/dev/shm``): a directory per pod, removed with the
pod (so a container restart keeps its cache, as on a real node). persistentVolumeClaim: a
directory per claim under the state dir, shared by all pods and kept (a stand-in for a real
volume; put model files there for ``pvc://`` sources). hostPath: the host path itself.
configMap and secret: a directory per pod with one file per key. Anything else: an empty
directory. Pure: nothing here touches the disk.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmop.devcluster.kubelet.podenv import EnvSources


@dataclass(frozen=True)
class VolumeLayout:
    """Local directories to create, files to write, and mount path -> local path."""

    directories: tuple[Path, ...] = ()
    files: Mapping[Path, str] = field(default_factory=dict)
    mounts: Mapping[str, str] = field(default_factory=dict)
    refused: tuple[str, ...] = ()
    """configMap/secret files whose path would leave their volume: never written, and the
    container is not started (a real API server rejects such a pod)."""


def volume_references(pod_spec: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """(Secret names, ConfigMap names) the pod's volumes read."""
    secrets: set[str] = set()
    config_maps: set[str] = set()
    for volume in pod_spec.get("volumes") or []:
        if "secret" in volume:
            secrets.add(str(volume["secret"].get("secretName", "")))
        if "configMap" in volume:
            config_maps.add(str(volume["configMap"].get("name", "")))
    return secrets, config_maps


def _inside(directory: Path, relative: str) -> Path | None:
    """``directory / relative``, or None when ``relative`` is absolute or has a '..' part."""
    if not relative or relative.startswith("/") or ".." in relative.split("/"):
        return None
    return directory / relative


def _key_files(
    spec: Mapping[str, Any], data: Mapping[str, str] | None, directory: Path, refused: list[str]
) -> dict[Path, str]:
    if data is None:
        return {}
    items = spec.get("items")
    wanted = (
        [(str(i.get("path", "")), str(i["key"])) for i in items if i.get("key") in data]
        if items
        else [(key, key) for key in data]
    )
    files: dict[Path, str] = {}
    for relative, key in wanted:
        path = _inside(directory, relative)
        if path is None:
            refused.append(f"volume {directory.name}: path {relative[:100]!r} leaves the volume")
        else:
            files[path] = data[key]
    return files


def layout(
    pod_spec: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    pod_dir: Path,
    claims_dir: Path,
    sources: EnvSources,
) -> VolumeLayout:
    """The local layout of the volumes that ``container`` mounts."""
    directories: list[Path] = []
    files: dict[Path, str] = {}
    refused: list[str] = []
    local: dict[str, Path] = {}
    for volume in pod_spec.get("volumes") or []:
        name = str(volume.get("name", ""))
        if "persistentVolumeClaim" in volume:
            path = claims_dir / str(volume["persistentVolumeClaim"].get("claimName", name))
        elif "hostPath" in volume:
            path = Path(str(volume["hostPath"].get("path", "/")))
        else:
            path = pod_dir / "volumes" / name
            if "configMap" in volume:
                data = sources.config_maps.get(str(volume["configMap"].get("name", "")))
                files.update(_key_files(volume["configMap"], data, path, refused))
            elif "secret" in volume:
                data = sources.secrets.get(str(volume["secret"].get("secretName", "")))
                files.update(_key_files(volume["secret"], data, path, refused))
        local[name] = path
        if "hostPath" not in volume:
            directories.append(path)
    mounts: dict[str, str] = {}
    for mount in container.get("volumeMounts") or []:
        base = local.get(str(mount.get("name", "")))
        if base is None:
            continue
        sub = str(mount.get("subPath") or "")
        mounts[str(mount.get("mountPath", ""))] = str(base / sub if sub else base)
    return VolumeLayout(
        directories=tuple(directories), files=files, mounts=mounts, refused=tuple(refused)
    )
