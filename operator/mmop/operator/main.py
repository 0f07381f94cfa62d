"""kopf decorators only; each delegates to a module in ``handlers/``.

Every watch handler is ``async``: kopf runs sync handlers in a thread pool, and the event handlers
set ``asyncio.Event``s, which must happen on the event loop (and cost a thread hop per watch
event otherwise).
"""

from __future__ import annotations

from typing import Any

import kopf

from mmop.operator import models, naming
from mmop.operator.handlers import lifecycle, reconcile, wake

MM = (models.GROUP, models.VERSION, models.PLURAL)
OURS = {naming.LABEL_MANAGED_BY: naming.MANAGER}


@kopf.on.startup(id="mmop_startup")
async def operator_startup(**kwargs: Any) -> None:
    await lifecycle.handle_startup(**kwargs)


@kopf.on.login(id="mmop_login")
def operator_login(**_: Any) -> kopf.ConnectionInfo:
    return lifecycle.handle_login()


@kopf.on.cleanup(id="mmop_cleanup")
async def operator_cleanup(**kwargs: Any) -> None:
    await lifecycle.handle_cleanup(**kwargs)


@kopf.daemon(*MM, id="multimodalmodel_reconcile", cancellation_timeout=2.0)
async def multimodalmodel_reconcile(**kwargs: Any) -> None:
    await reconcile.handle_daemon(**kwargs)


@kopf.on.event(*MM, id="multimodalmodel_event")
async def multimodalmodel_event(**kwargs: Any) -> None:
    wake.handle_model_event(**kwargs)


@kopf.on.event("apps", "v1", "deployments", labels=OURS, id="deployment_event")
async def deployment_event(**kwargs: Any) -> None:
    wake.handle_child_event(**kwargs)


@kopf.on.event("", "v1", "services", labels=OURS, id="service_event")
async def service_event(**kwargs: Any) -> None:
    wake.handle_child_event(**kwargs)
