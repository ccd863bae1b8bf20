# The zipedge image: `zipedge serve` by default; docker-compose.yml also runs `zipedge
# worker` and `zipedge demo` from it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
# /demo is owned by the user so a named volume mounted there starts out writable by
# `zipedge demo` (docker-compose.yml's demo job).
RUN pip install '.[demo]' \
    && useradd --system --uid 10001 --home-dir /var/lib/zipedge --create-home zipedge \
    && install -d -o zipedge /demo

# Embedded-mode state (posted manifests without Redis) somewhere the user may write.
ENV ZIPEDGE_DATA_DIR=/var/lib/zipedge
USER zipedge
EXPOSE 8000
CMD ["zipedge", "serve", "--host", "0.0.0.0", "--port", "8000"]
