"""mmop.devcluster.apiserver: an in-memory Kubernetes API server that real kopf, kubectl and helm
accept, for ``mmop dev`` and the tests.

Public API (everything else is internal):

* ``ApiServer(host="127.0.0.1", port=0, *, watch_history=10_000, bookmark_interval=10.0,
  watch_timeout=1800.0, token=None, require_token=True)``: ``async with ApiServer() as server:
  server.url`` (``https://HOST:PORT``; or ``await server.start()`` ... ``await server.stop()``);
  ``server.token``, ``server.ca_pem`` (the per-server CA that signed its certificate),
  ``server.client_ssl_context()`` (trusts that CA only);
  ``server.audit`` (the write audit trail), ``server.compact()`` (forget the watch history
  and end open watches: watches from older resourceVersions get 410 Gone),
  ``server.internal_errors`` (requests answered with 500: bugs).
* ``ApiServer.start_in_thread(**same) -> ServerHandle``: ``handle.url``, ``handle.audit``,
  ``handle.server``, ``handle.call(fn, *args)`` (run on the server's loop), ``handle.stop()``;
  ``handle.headers`` and ``handle.ssl_context`` for HTTP clients
  (``httpx.Client(verify=handle.ssl_context, headers=handle.headers)``); a context manager.
* ``write_kubeconfig(path, url, namespace="default", *, token, ca_pem) -> Path``: every request
  needs ``Authorization: Bearer server.token`` (``handle.headers``), except the health paths;
  the kubeconfig carries the token and the CA (``certificate-authority-data``).
* ``AuditLog`` / ``AuditRecord``: ``audit.records(since=index)``, ``audit.last_index``,
  ``audit.clear()``; over HTTP ``GET /debug/audit?since=N`` and ``DELETE /debug/audit``.
  ``POST /debug/compact`` compacts the watch history from another process.
* CLI: ``python -m mmop.devcluster.apiserver --port N --kubeconfig PATH``.

What it implements and simplifies: docs/devcluster-apiserver.md.
"""

from mmop.devcluster.apiserver.audit import AuditLog, AuditRecord
from mmop.devcluster.apiserver.server import ApiServer, ServerHandle, write_kubeconfig

__all__ = ["ApiServer", "AuditLog", "AuditRecord", "ServerHandle", "write_kubeconfig"]
