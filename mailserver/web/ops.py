"""The operations listener: `GET /healthz` for load balancers, `GET /metrics` for Prometheus."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from mailserver.service import Runtime

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def ops_app(runtime: Runtime) -> Starlette:
    async def healthz(_request: Request) -> Response:
        checks = await runtime.health()
        healthy = all(checks.values()) and not runtime.stopping
        states = {name: "ok" if ok else "failing" for name, ok in checks.items()}
        if runtime.stopping:
            states["accepting"] = "stopping"
        body = {"status": "ok" if healthy else "unavailable", "checks": states}
        return JSONResponse(body, status_code=200 if healthy else 503)

    async def metrics(_request: Request) -> Response:
        await runtime.refresh_metrics()
        return Response(runtime.metrics.exposition(), media_type=PROMETHEUS_TEXT)

    return Starlette(
        routes=[Route("/healthz", healthz), Route("/metrics", metrics)],
    )
