"""docker-compose.yml, checked statically (no Docker daemon needed): the services and
their wiring, healthchecks, networks, published ports, and that every setting it passes
is a real one and every template placeholder gets a value."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from service.settings import Location, Settings
from service.stack.nginx import BUILTIN_PLACEHOLDERS, render, required

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"

LONG_RUNNING = {"minio", "redis", "service", "worker", "nginx", "edge"}
ONE_SHOT = {"demo", "minio-init"}
_DEFAULT = re.compile(r"\$\{(\w+):-([^}]*)\}")


def interpolate(value: str) -> str:
    """`${VAR:-default}` as compose resolves it with VAR unset; `$$` is a literal `$`."""
    return _DEFAULT.sub(lambda m: m.group(2), value).replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def env(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    assert isinstance(environment, dict), "environment as a mapping, so names can be checked"
    return {name: interpolate(str(value)) for name, value in environment.items()}


def setting_names() -> set[str]:
    return set(re.findall(r"ZIPEDGE_[A-Z0-9_]+", (ROOT / "service" / "settings.py").read_text()))


def test_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == LONG_RUNNING | ONE_SHOT
    assert services["minio"]["image"].startswith("minio/minio:")
    assert services["redis"]["image"].startswith("redis:")
    for name in ("nginx", "edge"):
        assert services[name]["image"].startswith("nginx:")
    for name in ("service", "worker", "demo"):
        assert services[name]["build"] == "." and services[name]["image"] == "zipedge:local"
    assert services["service"]["command"][:2] == ["zipedge", "serve"]
    assert services["worker"]["command"] == ["zipedge", "worker"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    assert re.search(r"^RUN pip install '\.\[demo\]'", dockerfile, re.M)  # zipedge demo needs Pillow


def test_healthchecks_and_start_order(services: dict[str, dict[str, Any]]) -> None:
    for name in LONG_RUNNING:
        check = services[name].get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
        assert services[name].get("restart") == "unless-stopped"
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            expected = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            assert condition["condition"] == expected, f"{name} → {dependency}"
    assert set(services["edge"]["depends_on"]) >= {"nginx", "minio"}
    assert set(services["nginx"]["depends_on"]) == {"service"}
    assert set(services["service"]["depends_on"]) == {"redis", "minio-init"}
    assert set(services["minio-init"]["depends_on"]) == {"minio", "demo"}


def test_networks(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    assert set(compose["networks"]) == {"public", "internal", "origin"}
    assert compose["networks"]["origin"].get("internal") is True
    expected = {
        "edge": {"public", "origin"},  # never on `internal`: no way around nginx to the service
        "nginx": {"public", "internal"},
        "service": {"internal"},
        "worker": {"internal"},
        "redis": {"internal"},
        "minio": {"internal", "origin"},
        "minio-init": {"internal"},
    }
    for name, networks in expected.items():
        assert set(services[name]["networks"]) == networks, name
    assert services["demo"]["network_mode"] == "none"


def test_only_the_edge_is_published_where_the_service_redirects(services: dict[str, dict[str, Any]]) -> None:
    published = {name: s["ports"] for name, s in services.items() if "ports" in s}
    assert set(published) == {"edge", "minio"}
    # MinIO's S3 port, on loopback, only where browsers PUT presigned uploads.
    [upload] = published["minio"]
    upload_endpoint = urlsplit(env(services["service"])["ZIPEDGE_UPLOAD_ENDPOINT"])
    assert upload == f"127.0.0.1:{upload_endpoint.port}:9000" and upload_endpoint.hostname == "localhost"
    [mapping] = published["edge"]
    host_ip, host_port, container_port = mapping.split(":")
    assert host_ip == "127.0.0.1"
    assert container_port == env(services["edge"])["LISTEN"]
    public = urlsplit(env(services["service"])["ZIPEDGE_PUBLIC_URL"])
    assert public.port == int(host_port) and public.hostname == "localhost"


def test_every_setting_is_real(services: dict[str, dict[str, Any]]) -> None:
    known = setting_names()
    used = set(re.findall(r"ZIPEDGE_[A-Z0-9_]+", COMPOSE.read_text()))
    assert used and used <= known, f"not settings: {used - known}"
    service_env = env(services["service"])
    assert {k: v for k, v in env(services["worker"]).items()} == {
        k: v for k, v in service_env.items() if k != "FORWARDED_ALLOW_IPS"
    }
    assert {
        "ZIPEDGE_SOURCE",
        "ZIPEDGE_CACHE",
        "ZIPEDGE_REDIS_URL",
        "ZIPEDGE_PUBLIC_URL",
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
    } <= set(service_env)
    # the service's S3 credentials are MinIO's (example) root credentials
    minio = env(services["minio"])
    assert service_env["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert service_env["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]
    assert urlsplit(service_env["ZIPEDGE_REDIS_URL"]).hostname == "redis"


def test_wiring_matches_between_service_nginx_edge_and_minio(services: dict[str, dict[str, Any]]) -> None:
    service_env = env(services["service"])
    nginx_env = env(services["nginx"])
    edge_env = env(services["edge"])
    command = services["service"]["command"]
    service_port = command[command.index("--port") + 1]
    assert nginx_env["UPSTREAM"] == f"service:{service_port}"
    assert edge_env["API_UPSTREAM"] == f"nginx:{nginx_env['LISTEN']}"
    # the edge forwards archive requests with exactly the Host the service signs for
    assert edge_env["ORIGIN"] == urlsplit(service_env["AWS_ENDPOINT_URL"]).netloc
    cache = Location.parse("ZIPEDGE_CACHE", service_env["ZIPEDGE_CACHE"])
    source = Location.parse("ZIPEDGE_SOURCE", service_env["ZIPEDGE_SOURCE"])
    assert edge_env["CACHE_BUCKET"] == cache.bucket
    init = "\n".join(services["minio-init"]["command"])
    assert f"store/{source.bucket} store/{cache.bucket}" in init  # both buckets created
    assert f"store/{source.bucket}/{source.prefix.rstrip('/')}" in init  # demo photos uploaded
    assert f'"Prefix":"{cache.prefix}"' in init  # lifecycle on the cache prefix


def ilm_rules(init: str) -> dict[str, list[dict[str, Any]]]:
    """bucket → the lifecycle rules minio-init imports into it (`echo '<json>' | mc ilm import`)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for body, bucket in re.findall(r"echo '(\{.*?\})' \\\n\s*\| mc ilm import store/(\S+)", init):
        found.setdefault(bucket, []).extend(json.loads(body)["Rules"])
    return found


def test_staging_lifecycle_is_where_the_service_stages(services: dict[str, dict[str, Any]]) -> None:
    """The backstop rule must cover the very prefix uploads wait under, and expire after
    the grace the janitor uses (whole days, rounded up), or it removes nothing or too much."""
    settings = Settings.from_env(env(services["service"]))
    staging = settings.staging
    assert staging.scheme == "s3"
    rules = ilm_rules(services["minio-init"]["command"][0])
    assert staging.bucket in rules, rules
    [rule] = [r for r in rules[staging.bucket] if r["ID"] == "zipedge-staging"]
    assert rule["Filter"] == {"Prefix": staging.prefix}
    assert rule["Expiration"] == {"Days": max(1, math.ceil(settings.upload_grace_s / 86400))}


@pytest.mark.parametrize(("name", "template"), [("nginx", "nginx"), ("edge", "edge")])
def test_templates_get_every_value(services: dict[str, dict[str, Any]], name: str, template: str) -> None:
    service = services[name]
    entrypoint = service["entrypoint"]
    assert entrypoint[:2] == ["/bin/sh", "/zipedge/nginx/render-template.sh"]
    assert entrypoint[2] == f"/zipedge/{template}/nginx.conf.template"
    assert entrypoint[3] == "/etc/nginx/nginx.conf"
    if name == "edge":
        # stale unix sockets of a killed edge are removed from RUNTIME_DIR first
        runtime_dir = env(service)["RUNTIME_DIR"]
        assert service["command"] == [
            "/bin/sh",
            "-c",
            f"rm -f {runtime_dir}/*.sock && exec nginx -g 'daemon off;'",
        ]
    else:
        assert service["command"] == ["nginx", "-g", "daemon off;"]
    # every mounted host path exists in the repo
    mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"] if v.startswith("./")}
    for host in mounts.values():
        assert (ROOT / host).exists(), host
    text = (ROOT / template / "nginx.conf.template").read_text()
    values = env(service)
    # placeholders with a default (@@NAME:-value@@) may be left out
    assert required(text) <= set(values)
    assert BUILTIN_PLACEHOLDERS <= set(values)
    rendered = render(text, values)
    assert "@@" not in "".join(line for line in rendered.splitlines() if not line.lstrip().startswith("#"))
