"""devcluster/kubelet/probes.py: probe specs with shortened periods and the kubelet's counting
rule."""

from __future__ import annotations

from mmop.devcluster.kubelet import probes

CONTAINER = {"ports": [{"name": "http", "containerPort": 8080}]}


def test_http_probe_resolves_named_port_and_keeps_the_time_to_fail() -> None:
    spec = probes.parse_probe(
        {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 3,
            "timeoutSeconds": 5,
        },
        container=CONTAINER,
        period_cap=1.0,
    )
    assert spec is not None
    assert (spec.kind, spec.port, spec.path) == ("http", 8080, "/v2/health/live")
    assert spec.period == 1.0
    assert spec.failure_threshold == 30  # 10 s x 3 = 30 s, as on a real node
    assert spec.timeout == 5


def test_defaults_of_a_bare_probe() -> None:
    spec = probes.parse_probe({"tcpSocket": {"port": 9000}}, container=CONTAINER, period_cap=0)
    assert spec is not None
    assert (spec.kind, spec.port, spec.period, spec.failure_threshold) == ("tcp", 9000, 10.0, 3)


def test_unknown_port_name_is_unresolved() -> None:
    spec = probes.parse_probe({"httpGet": {"port": "metrics"}}, container=CONTAINER, period_cap=1.0)
    assert spec is not None
    assert spec.port is None


def test_exec_probe_and_no_probe() -> None:
    spec = probes.parse_probe({"exec": {"command": ["true"]}}, container=CONTAINER, period_cap=1.0)
    assert spec is not None
    assert spec.kind == "exec"
    assert probes.parse_probe(None, container=CONTAINER, period_cap=1.0) is None


def test_counter_needs_consecutive_results() -> None:
    spec = probes.ProbeSpec(kind="http", failure_threshold=2, success_threshold=2)
    counter = probes.ProbeCounter(spec, passing=False)
    assert counter.record(True) is False
    assert counter.record(True) is True
    assert counter.record(False) is True
    assert counter.record(True) is True
    assert counter.record(False) is True
    assert counter.record(False) is False
