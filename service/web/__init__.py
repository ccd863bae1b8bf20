"""The Starlette edge of the service: routes, thin endpoints, responses, error mapping."""
