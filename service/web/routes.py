"""The route table; nothing else."""

from __future__ import annotations

from starlette.routing import Route

from service.web import endpoints

routes = [
    Route("/v1/zip", endpoints.zip_range, methods=["GET", "HEAD"]),
    Route("/v1/archives", endpoints.create_archive, methods=["POST"]),
    Route("/v1/archives/{archive_id}.zip", endpoints.get_archive, methods=["GET", "HEAD"], name="archive"),
    Route("/v1/cache/{archive_id}.zip", endpoints.cached_archive, methods=["GET", "HEAD"], name="cached"),
    Route("/healthz", endpoints.healthz, methods=["GET", "HEAD"]),
    Route("/readyz", endpoints.readyz, methods=["GET", "HEAD"]),
]
