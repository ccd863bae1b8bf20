"""The operators' kit in deploy/: Prometheus rules and scrape config, the Grafana dashboard.

Always (no tools needed): the files parse; every metric any rule, annotation, dashboard
target or docs/operations.md names is one the service really exposes (read from
`service.metrics.REGISTRY`), or one announced below; every recorded series used is
defined and every recording rule used; alerts carry `for`, a severity, a summary and a
runbook link that lands on a heading of docs/operations.md; panel ids are unique and every
panel queries something.

With promtool (Debian's `prometheus` package, see scripts/system-deps): `check rules`,
`check config`, the unit tests in alerts_test.yml, and every dashboard query parsed by
Prometheus' own parser.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.metrics import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERTS_TEST = PROMETHEUS / "alerts_test.yml"
CONFIG = PROMETHEUS / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "zipedge.json"
OPERATIONS = ROOT / "docs" / "operations.md"

#: Metrics the kit already uses that the service does not expose yet; the team adds them
#: under exactly these names. Delete an entry when its metric lands in service/metrics.py
#: (test_announced_metrics_are_not_exposed_yet fails until you do).
ANNOUNCED: set[str] = set()

#: The sample names prometheus_client exposes for a family of each type (the family name
#: plus these suffixes). A counter is never queried by its family name: `zipedge_requests`
#: is not a series, `zipedge_requests_total` is.
_SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}

#: PromQL string literals ("...", '...', `...`): label values, not metric names.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
#: PromQL identifiers: metric names, recorded names (with colons), labels, functions.
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
#: A mention of a metric in prose or templates (annotations, panel descriptions, docs).
_MENTION = re.compile(r"\bzipedge_[a-z0-9_]*[a-z0-9]")
#: Grafana's own variables, as Prometheus would see them after Grafana substituted them.
_GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "6h"}


def exposed_metrics() -> set[str]:
    """Every sample name the service's registry exposes, including families that have no
    samples yet (a labelled metric shows none until its first label set is used)."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        derived = {family.name + suffix for suffix in _SAMPLE_SUFFIXES[family.type]}
        actual = {sample.name for sample in family.samples}
        assert actual <= derived, f"{family.name} ({family.type}) exposes {actual - derived}"
        names |= derived | actual
    return names


def referenced(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, recorded names) an expression reads: `zipedge_…` and `zipedge:…`."""
    identifiers = _IDENTIFIER.findall(_STRING.sub('""', expr))
    metrics = {name for name in identifiers if name.startswith("zipedge_")}
    recorded = {name for name in identifiers if name.startswith("zipedge:")}
    stray = {name for name in identifiers if "zipedge" in name} - metrics - recorded - {"zipedge"}
    assert not stray, f"names that are neither a zipedge metric nor a zipedge: recording: {stray}"
    return metrics, recorded


def unknown(names: set[str], exposed: set[str]) -> set[str]:
    return names - exposed - ANNOUNCED


def anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


@pytest.fixture(scope="module")
def exposed() -> set[str]:
    return exposed_metrics()


@pytest.fixture(scope="module")
def groups() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text())
    assert isinstance(data, dict) and set(data) == {"groups"}
    result: list[dict[str, Any]] = data["groups"]
    return result


@pytest.fixture(scope="module")
def rules(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for group in groups for rule in group["rules"]]


@pytest.fixture(scope="module")
def alerts(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for rule in rules if "alert" in rule]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return list(walk_panels(dashboard["panels"]))


@pytest.fixture(scope="module")
def dashboard_exprs(dashboard: dict[str, Any], panels: list[dict[str, Any]]) -> list[str]:
    exprs = [target["expr"] for panel in panels for target in panel.get("targets", [])]
    exprs += [var["query"] for var in dashboard["templating"]["list"] if var.get("type") == "query"]
    return exprs


# --- the check itself ---------------------------------------------------------------


def test_exposed_metrics_are_sample_names(exposed: set[str]) -> None:
    """Counters and histograms are compared by the series Prometheus stores, so a suffix
    that does not belong to the type (or a bare family name) is caught."""
    assert {"zipedge_requests_total", "zipedge_job_duration_seconds_bucket", "zipedge_jobs_queued"} <= exposed
    assert unknown({"zipedge_job_duration_seconds_count", "zipedge_stream_bytes_total"}, exposed) == set()
    wrong = {
        "zipedge_requests",  # a counter's family name is not a series
        "zipedge_job_duration_seconds",  # nor is a histogram's
        "zipedge_jobs_queued_total",  # a gauge has no _total
        "zipedge_stream_bytes_sum",  # a counter has no _sum
        "zipedge_requests_total_bucket",
    }
    assert unknown(wrong, exposed) == wrong


def test_reference_extraction() -> None:
    metrics, recorded = referenced(
        'sum(rate(zipedge_requests_total{job="zipedge", route!~"zipedge_x"}[5m]))'
        " / zipedge:requests_5xx:ratio_rate5m"
    )
    assert metrics == {"zipedge_requests_total"}
    assert recorded == {"zipedge:requests_5xx:ratio_rate5m"}
    with pytest.raises(AssertionError, match="neither"):
        referenced("job:zipedge_requests:rate5m")


# --- Prometheus rules ---------------------------------------------------------------


def test_rules_name_only_exposed_metrics(rules: list[dict[str, Any]], exposed: set[str]) -> None:
    for rule in rules:
        name = rule.get("alert") or rule["record"]
        metrics, recorded = referenced(rule["expr"])
        scrape_health = rule["expr"].startswith(("up{", "absent(up{"))
        assert metrics or recorded or scrape_health, f"{name} reads no zipedge metric"
        assert not unknown(metrics, exposed), f"{name}: not exposed: {unknown(metrics, exposed)}"
        for key, text in rule.get("annotations", {}).items():
            mentioned = set(_MENTION.findall(text))
            assert not unknown(mentioned, exposed), f"{name} {key}: {unknown(mentioned, exposed)}"


def test_recorded_series_are_defined_and_used(
    rules: list[dict[str, Any]], alerts: list[dict[str, Any]], dashboard_exprs: list[str]
) -> None:
    records = [rule["record"] for rule in rules if "record" in rule]
    assert len(records) == len(set(records))
    assert all(name.startswith("zipedge:") and name.count(":") == 2 for name in records), records
    used: set[str] = set()
    for expr in [rule["expr"] for rule in alerts] + dashboard_exprs:
        used |= referenced(expr)[1]
    assert used <= set(records), f"recorded series nobody records: {used - set(records)}"
    assert set(records) <= used, f"recording rules nothing reads: {set(records) - used}"


def test_alerts_are_complete(alerts: list[dict[str, Any]]) -> None:
    names = [alert["alert"] for alert in alerts]
    assert len(names) == len(set(names))
    for alert in alerts:
        name = alert["alert"]
        assert re.fullmatch(r"\d+[smh]", str(alert.get("for", ""))), f"{name}: no `for`"
        assert alert.get("labels", {}).get("severity") in {"critical", "warning", "info"}, name
        annotations = alert.get("annotations", {})
        assert annotations.get("summary"), f"{name}: no summary"
        assert annotations.get("description"), f"{name}: no description"
        assert "$value" in annotations["summary"] + annotations["description"], f"{name}: no {{{{ $value }}}}"
        assert annotations.get("runbook") == f"docs/operations.md#{name.lower()}", name


def test_alerts_cover_what_operators_watch(alerts: list[dict[str, Any]]) -> None:
    exprs = " ".join(alert["expr"] for alert in alerts)
    for needle in (
        'up{job="zipedge"} == 0',
        "zipedge_ready",
        "zipedge_jobs_queued",
        "histogram_quantile(0.95",
        "zipedge_job_duration_seconds_bucket",
        "zipedge:job_failures:",
        "zipedge:stream_aborts:",
        "zipedge:cache_write_failures:",
        "zipedge:requests_5xx:",
        "zipedge_cache_misconfigured_total",
    ):
        assert needle in exprs, needle


def test_runbook_links_land_on_headings(alerts: list[dict[str, Any]]) -> None:
    text = OPERATIONS.read_text()
    anchors = {anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}
    for alert in alerts:
        link = alert["annotations"]["runbook"]
        assert link.split("#", 1)[1] in anchors, f"{alert['alert']}: {link} has no heading"


def test_prometheus_config_scrapes_service_and_workers() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"zipedge", "zipedge-worker"}
    for job in jobs.values():
        assert job.get("metrics_path", "/metrics") == "/metrics"
        assert job["static_configs"][0]["targets"]


def test_alert_unit_tests_cover_the_required_alerts(exposed: set[str]) -> None:
    suite = yaml.safe_load(ALERTS_TEST.read_text())
    assert suite["rule_files"] == ["alerts.yml"]
    checks = [check for test in suite["tests"] for check in test.get("alert_rule_test", [])]
    for name in ("ZipedgeHigh5xxRatio", "ZipedgeJobQueueHigh"):
        assert any(c["alertname"] == name and c["exp_alerts"] for c in checks), f"{name} never fires"
        about = [[c for c in t.get("alert_rule_test", []) if c["alertname"] == name] for t in suite["tests"]]
        assert any(cs and not any(c["exp_alerts"] for c in cs) for cs in about), (
            f"{name} never shown silent on a healthy series"
        )
    for test in suite["tests"]:
        for series in test["input_series"]:
            metrics, _ = referenced(series["series"])
            assert not unknown(metrics, exposed), series["series"]


# --- Grafana dashboard --------------------------------------------------------------


def test_dashboard_shape(dashboard: dict[str, Any], panels: list[dict[str, Any]]) -> None:
    assert dashboard["title"] == "zipedge"
    assert dashboard["uid"] == "zipedge"
    assert dashboard["schemaVersion"] >= 39
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        if panel["type"] == "row":  # a container: its panels carry the queries
            continue
        targets = panel.get("targets", [])
        assert targets and all(t.get("expr", "").strip() for t in targets), f"{panel['title']}: no query"
        assert len({t["refId"] for t in targets}) == len(targets), panel["title"]
        for owner in [panel, *targets]:
            assert owner["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


def test_dashboard_names_only_exposed_metrics(
    panels: list[dict[str, Any]], dashboard_exprs: list[str], exposed: set[str]
) -> None:
    for expr in dashboard_exprs:
        metrics, _ = referenced(expr)
        assert not unknown(metrics, exposed), f"{expr}: not exposed: {unknown(metrics, exposed)}"
    for panel in panels:
        mentioned = set(_MENTION.findall(panel.get("description", "")))
        assert not unknown(mentioned, exposed), f"{panel['title']}: {unknown(mentioned, exposed)}"


def test_dashboard_shows_what_operators_ask(dashboard_exprs: list[str]) -> None:
    used: set[str] = set()
    for expr in dashboard_exprs:
        metrics, recorded = referenced(expr)
        used |= metrics | recorded
    assert {
        "zipedge_requests_total",
        "zipedge_request_duration_seconds_bucket",
        "zipedge_streams_active",
        "zipedge_stream_bytes_total",
        "zipedge_stream_outcomes_total",
        "zipedge:cache_hits:ratio_rate5m",
        "zipedge_cache_writes_total",
        "zipedge_source_errors_total",
        "zipedge_source_retries_total",
        "zipedge_jobs_queued",
        "zipedge_job_duration_seconds_bucket",
        "zipedge_dependency_up",
    } <= used


# --- docs and the announced metrics ---------------------------------------------------


def test_operations_doc_names_only_exposed_metrics(exposed: set[str]) -> None:
    mentioned = set(_MENTION.findall(OPERATIONS.read_text()))
    assert not unknown(mentioned, exposed), unknown(mentioned, exposed)


def test_announced_metrics_are_used(
    rules: list[dict[str, Any]], dashboard_exprs: list[str], exposed: set[str]
) -> None:
    used: set[str] = set()
    for expr in [rule["expr"] for rule in rules] + dashboard_exprs:
        used |= referenced(expr)[0]
    assert used & ANNOUNCED == ANNOUNCED, f"announced but unused: {ANNOUNCED - used}"


def test_announced_metrics_are_not_exposed_yet(exposed: set[str]) -> None:
    landed = ANNOUNCED & exposed
    assert not landed, f"now exposed by the service: delete {landed} from ANNOUNCED"


# --- promtool -----------------------------------------------------------------------

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)"
)


def promtool(*args: str, cwd: Path = PROMETHEUS) -> None:
    promtool_path = shutil.which("promtool")
    assert promtool_path is not None
    done = subprocess.run(
        [promtool_path, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


@needs_promtool
def test_promtool_check_rules() -> None:
    promtool("check", "rules", str(ALERTS))


@needs_promtool
def test_promtool_check_config() -> None:
    promtool("check", "config", str(CONFIG))


@needs_promtool
def test_promtool_test_rules() -> None:
    promtool("test", "rules", str(ALERTS_TEST))


@needs_promtool
def test_promtool_parses_dashboard_queries(dashboard_exprs: list[str], tmp_path: Path) -> None:
    """Each dashboard query, with Grafana's variables substituted, as a recording rule."""
    rules = []
    for index, expr in enumerate(dashboard_exprs):
        for variable, value in _GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
        rules.append({"record": f"dashboard:query_{index}:check", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool("check", "rules", str(path), cwd=tmp_path)
