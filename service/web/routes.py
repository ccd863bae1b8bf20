"""The route table, and what each route needs: its scope and the rate limit it counts
against (`service/web/auth.py`: `guarded`)."""

from __future__ import annotations

from starlette.routing import Route

from service.identity import ADMIN, DOWNLOAD
from service.web import endpoints, jobs, page
from service.web.auth import guarded

routes = [
    Route(
        "/v1/zip",
        guarded(endpoints.zip_range, scope=DOWNLOAD, action="download"),
        methods=["GET", "HEAD"],
        name="range",
    ),
    Route(
        "/v1/archives", guarded(endpoints.create_archive, scope=DOWNLOAD, action="archive"), methods=["POST"]
    ),
    Route(
        "/v1/archives/{archive_id}.zip",
        guarded(endpoints.get_archive, scope=DOWNLOAD, action="download"),
        methods=["GET", "HEAD"],
        name="archive",
    ),
    Route(
        "/v1/cache/{archive_id}.zip",
        guarded(endpoints.cached_archive, scope=DOWNLOAD),
        methods=["GET", "HEAD"],
        name="cached",
    ),
    Route("/v1/links", guarded(endpoints.create_link, scope=DOWNLOAD, action="link"), methods=["POST"]),
    Route("/v1/jobs", guarded(jobs.create_job, scope=DOWNLOAD, action="job"), methods=["POST"]),
    Route("/v1/jobs", guarded(jobs.list_jobs, scope=DOWNLOAD), methods=["GET"]),
    Route("/v1/jobs/{job_id}", guarded(jobs.get_job, scope=DOWNLOAD), methods=["GET"], name="job"),
    Route("/v1/jobs/{job_id}", guarded(jobs.cancel_job, scope=DOWNLOAD), methods=["DELETE"]),
    Route(
        "/v1/jobs/{job_id}/events",
        guarded(jobs.job_events, scope=DOWNLOAD),
        methods=["GET"],
        name="job_events",
    ),
    Route("/metrics", guarded(endpoints.metrics, scope=ADMIN), methods=["GET"]),
    Route("/healthz", endpoints.healthz, methods=["GET", "HEAD"]),
    Route("/readyz", endpoints.readyz, methods=["GET", "HEAD"]),
    *page.routes,
]
