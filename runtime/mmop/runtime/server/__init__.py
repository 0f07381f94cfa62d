"""HTTP adapters of the runtime: routes, error mapping, middleware and the server process."""

from mmop.runtime.server.process import serve

__all__ = ["serve"]
