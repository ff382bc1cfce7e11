"""``/healthz`` and ``/metrics`` (no credentials: for load balancers and Prometheus).

``/healthz`` answers 200 while the node serves requests (``ok`` or ``degraded``) and 503 when
it is ``down`` (its database cannot be read); the body says why either way.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import StatusDep
from api.metrics import AppMetrics
from api.schemas import HealthOut
from node.services.status import HealthStatus

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz",
    response_model=HealthOut,
    summary="Node health",
    description=(
        "`ok`; `degraded` (chain unreachable, chain lost this node's checkpoints, anchoring "
        "lagging, a transaction stuck, or the chain watcher stalled); `down` (database "
        "unreachable, answered with 503)."
    ),
    responses={503: {"model": HealthOut, "description": "The node is down."}},
)
def healthz(status: StatusDep) -> Response:
    health = HealthOut.of(status.health())
    code = 503 if health.status is HealthStatus.DOWN else 200
    return JSONResponse(health.model_dump(mode="json"), status_code=code)


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    responses={
        200: {
            "description": "Prometheus text exposition format.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
def metrics(request: Request) -> Response:
    app_metrics: AppMetrics = request.app.state.metrics
    return Response(generate_latest(app_metrics.registry), media_type=CONTENT_TYPE_LATEST)
