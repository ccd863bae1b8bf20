"""The route table; nothing else."""

from __future__ import annotations

from starlette.routing import Route

from service.web import days, endpoints, jobs, page, uploads

routes = [
    Route("/v1/zip", endpoints.zip_range, methods=["GET", "HEAD"]),
    Route("/v1/days", days.list_days, methods=["GET"]),
    Route("/v1/archives", endpoints.create_archive, methods=["POST"]),
    Route("/v1/archives/{archive_id}.zip", endpoints.get_archive, methods=["GET", "HEAD"], name="archive"),
    Route("/v1/cache/{archive_id}.zip", endpoints.cached_archive, methods=["GET", "HEAD"], name="cached"),
    Route("/v1/jobs", jobs.create_job, methods=["POST"]),
    Route("/v1/jobs", jobs.list_jobs, methods=["GET"]),
    Route("/v1/jobs/{job_id}", jobs.get_job, methods=["GET"], name="job"),
    Route("/v1/jobs/{job_id}", jobs.cancel_job, methods=["DELETE"]),
    Route("/v1/jobs/{job_id}/events", jobs.job_events, methods=["GET"], name="job_events"),
    Route("/v1/uploads", uploads.create_upload, methods=["POST"]),
    Route("/v1/uploads/{upload_id}", uploads.get_upload, methods=["GET"], name="upload"),
    Route("/v1/uploads/{upload_id}", uploads.delete_upload, methods=["DELETE"]),
    Route("/v1/uploads/{upload_id}/body", uploads.put_body, methods=["PUT"], name="upload_body"),
    Route(
        "/v1/uploads/{upload_id}/complete", uploads.complete_upload, methods=["POST"], name="upload_complete"
    ),
    Route("/metrics", endpoints.metrics, methods=["GET"]),
    Route("/healthz", endpoints.healthz, methods=["GET", "HEAD"]),
    Route("/readyz", endpoints.readyz, methods=["GET", "HEAD"]),
    *page.routes,
]
