"""The route table, and what each route needs: its scope and the rate limit it counts
against (`service/web/auth.py`: `guarded`)."""

from __future__ import annotations

from starlette.routing import Route

from service.identity import ADMIN, DOWNLOAD, UPLOAD
from service.web import days, endpoints, jobs, page, uploads
from service.web.auth import guarded

routes = [
    Route(
        "/v1/zip",
        guarded(endpoints.zip_range, scope=DOWNLOAD, action="download"),
        methods=["GET", "HEAD"],
        name="range",
    ),
    Route("/v1/days", guarded(days.list_days, scope=DOWNLOAD), methods=["GET"]),
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
    Route("/v1/uploads", guarded(uploads.create_upload, scope=UPLOAD, action="upload"), methods=["POST"]),
    Route(
        "/v1/uploads/{upload_id}", guarded(uploads.get_upload, scope=UPLOAD), methods=["GET"], name="upload"
    ),
    Route("/v1/uploads/{upload_id}", guarded(uploads.delete_upload, scope=UPLOAD), methods=["DELETE"]),
    # Its signed query is the credential (the embedded default's upload URL): see AuthMiddleware.
    Route("/v1/uploads/{upload_id}/body", uploads.put_body, methods=["PUT"], name="upload_body"),
    Route(
        "/v1/uploads/{upload_id}/complete",
        guarded(uploads.complete_upload, scope=UPLOAD),
        methods=["POST"],
        name="upload_complete",
    ),
    Route("/metrics", guarded(endpoints.metrics, scope=ADMIN), methods=["GET"]),
    Route("/healthz", endpoints.healthz, methods=["GET", "HEAD"]),
    Route("/readyz", endpoints.readyz, methods=["GET", "HEAD"]),
    *page.routes,
]
