"""devcluster/kubelet/podstatus.py: pod and container status as a real kubelet reports them."""

from __future__ import annotations

from mmop.devcluster.kubelet import podstatus
from mmop.devcluster.kubelet.podstatus import ContainerView

NOW = "2026-01-01T00:00:10Z"
EARLIER = "2026-01-01T00:00:00Z"


def _status(view: ContainerView, previous: dict | None = None) -> dict:
    return podstatus.pod_status(
        containers=[view],
        pod_ip="127.0.0.2",
        start_time=EARLIER,
        now=NOW,
        previous=previous or {},
        qos_class="Burstable",
    )


def _conditions(status: dict) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}


def test_creating_container_is_pending_and_not_ready() -> None:
    status = _status(ContainerView(name="runtime"))
    assert status["phase"] == "Pending"
    assert _conditions(status) == {
        "Initialized": "True",
        "Ready": "False",
        "ContainersReady": "False",
        "PodScheduled": "True",
    }
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ContainersNotReady"
    assert ready["message"] == "containers with unready status: [runtime]"
    assert status["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert status["podIP"] == "127.0.0.2"
    assert status["hostIP"] == "127.0.0.1"


def test_running_ready_container() -> None:
    view = ContainerView(
        name="runtime",
        state="running",
        reason="",
        started_at=EARLIER,
        pid=42,
        ready=True,
        started=True,
    )
    status = _status(view)
    assert status["phase"] == "Running"
    assert set(_conditions(status).values()) == {"True"}
    container = status["containerStatuses"][0]
    assert container["state"] == {"running": {"startedAt": EARLIER}}
    assert container["containerID"] == "mmop://42"
    assert container["ready"] is True


def test_crash_loop_keeps_the_last_termination() -> None:
    last = podstatus.terminated_state(
        exit_code=1, message="boom", started_at=EARLIER, finished_at=NOW, pid=41
    )
    view = ContainerView(
        name="runtime",
        state="waiting",
        reason="CrashLoopBackOff",
        message="back-off 2s",
        restart_count=1,
        last_terminated=last,
        started_at=EARLIER,
    )
    container = _status(view)["containerStatuses"][0]
    assert container["state"] == {
        "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 2s"}
    }
    assert container["lastState"]["terminated"]["exitCode"] == 1
    assert container["lastState"]["terminated"]["reason"] == "Error"
    assert container["lastState"]["terminated"]["message"] == "boom"
    assert container["restartCount"] == 1
    assert _status(view)["phase"] == "Running"


def test_transition_time_moves_only_with_the_status() -> None:
    first = _status(ContainerView(name="runtime"))
    again = podstatus.pod_status(
        containers=[ContainerView(name="runtime")],
        pod_ip="127.0.0.2",
        start_time=EARLIER,
        now="2026-01-01T00:01:00Z",
        previous=first,
        qos_class="Burstable",
    )
    assert again["conditions"] == first["conditions"]


def test_unschedulable() -> None:
    status = podstatus.unschedulable_status(
        message="0/1 nodes are available: x.", now=NOW, previous={}, qos_class="BestEffort"
    )
    assert status["phase"] == "Pending"
    assert status["conditions"][0]["type"] == "PodScheduled"
    assert status["conditions"][0]["status"] == "False"
    assert status["conditions"][0]["reason"] == "Unschedulable"


def test_terminated_state_reasons() -> None:
    ok = podstatus.terminated_state(
        exit_code=0, message="", started_at=None, finished_at=NOW, pid=None
    )
    assert ok["reason"] == "Completed"
    assert "message" not in ok
    assert "containerID" not in ok


def test_is_ready() -> None:
    assert podstatus.is_ready({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    assert not podstatus.is_ready({"status": {}})
