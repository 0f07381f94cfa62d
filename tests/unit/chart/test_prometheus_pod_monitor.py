"""`mmop dev --prometheus` scrapes with the chart's own PodMonitor: the copy it carries
(mmop.devcluster.prometheus.runtime_pod_monitor) is what helm renders with the default values."""

from __future__ import annotations

from mmop.devcluster import prometheus


def test_dev_pod_monitor_is_the_charts(helm) -> None:
    rendered = helm.template(values={"serviceMonitor.enabled": "true"}).kind("PodMonitor")
    (monitor,) = rendered
    ours = prometheus.runtime_pod_monitor()
    assert monitor["spec"] == ours["spec"]
    assert monitor["metadata"]["name"] == ours["metadata"]["name"]
    assert monitor["metadata"]["namespace"] == ours["metadata"]["namespace"]
