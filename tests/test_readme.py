"""The README's first sections work as written: every shell example above
"Configuration" runs with bash against a fresh `make run` (the Makefile's own recipe: demo
photos, then the service, in an empty folder, on a free port), exits 0, and leaves what
it promises: ZIPs that every reader accepts with exactly the expected members, JSON
without an error. The examples run twice: the second time the archives are cached, so a
repeated download comes from the cache (on the embedded default a `200` at the same URL,
never a redirect) and must still save the same archive under the same name.

The Configuration section's examples run too: serving an S3 bucket, as written against
SeaweedFS, and allowing URL entries from one host, in the same shape against an origin on
loopback (the README's needs the internet).

Commands named in prose (`zipedge stack`, `docker compose up`) are tested where they live
(tests/deploy/); the first block (`make run`, `make test`) is what this test stands for.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from service.stack.ports import free_port
from service.stack.seaweedfs import SeaweedFS
from tests.zipcheck import check_archive

pytestmark = pytest.mark.tools

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
README_URL = "http://127.0.0.1:8000"
#: Hang guards for what must happen, never timing assertions.
START_DEADLINE_S = 120.0
COMMAND_DEADLINE_S = 120.0
CACHE_DEADLINE_S = 60.0


@dataclass
class Example:
    command: str
    #: a "# → ..." line after the command: what it answers
    answer: str = ""


@dataclass
class Service:
    url: str
    folder: Path  #: where `make run` ran: ./var/demo, ./var/cache

    @property
    def photos(self) -> Path:
        return self.folder / "var" / "demo"


@dataclass
class Run:
    """What one pass over the examples saw."""

    saved: list[Path] = field(default_factory=list)
    last_json: dict[str, Any] = field(default_factory=dict)
    posted: dict[str, Any] = field(default_factory=dict)


def first_sections() -> str:
    text = README.read_text()
    head, found, _ = text.partition("\n## Configuration\n")
    assert found, "README.md has no Configuration section"
    return head


def shell_blocks(text: str) -> list[str]:
    """```sh blocks: one command after another, each on its own."""
    return re.findall(r"^```sh\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def scripts(text: str) -> list[str]:
    """```bash blocks: scripts, run whole (their lines share variables)."""
    return re.findall(r"^```bash\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def examples(block: str) -> list[Example]:
    """Commands in order; a command spans lines until its quotes close and no line ends
    in a backslash. Comment lines between commands are prose, except "# → ...", which
    says what the command before it answers."""
    found: list[Example] = []
    pending = ""
    for line in block.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            if line.lstrip().startswith("# →") and found:
                found[-1].answer = line.split("→", 1)[1].strip()
            continue
        pending = f"{pending}\n{line}" if pending else line
        if pending.endswith("\\"):
            continue
        try:
            shlex.split(pending, comments=True)
        except ValueError:  # an open quote: the command goes on
            continue
        found.append(Example(pending))
        pending = ""
    assert not pending, f"unterminated command: {pending!r}"
    return found


def readme_examples() -> list[Example]:
    blocks = shell_blocks(first_sections())
    assert len(blocks) >= 2, "expected the make block and the examples"
    return [example for block in blocks[1:] for example in examples(block)]


def make_run_recipe(port: int) -> list[str]:
    """The commands of the Makefile's `run` target, as make would run them here."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^run:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe, "the Makefile has no run target"
    lines = [line.strip() for line in recipe.group(1).splitlines()]
    values = {"BIN": str(BIN), "HOST": "127.0.0.1", "PORT": str(port)}
    return [re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], line) for line in lines]


@contextlib.contextmanager
def ready(args: list[str], *, cwd: Path, env: dict[str, str], url: str) -> Iterator[None]:
    """`args` running in `cwd` (output in serve.log) until the block ends, once `url`'s
    /readyz answers 200; SIGTERM at the end."""
    log_path = cwd / "serve.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def tool_env(**extra: str) -> dict[str, str]:
    """The shell's environment with the venv first on PATH, plus `extra`."""
    return {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}", **extra}


@contextlib.contextmanager
def make_run(folder: Path, **extra: str) -> Iterator[Service]:
    """`make run` in `folder` (with `extra` in its environment, as `VAR=value make run`):
    every recipe line but the last runs to its end, the last (the service) runs until the
    block ends."""
    port = free_port()
    *setup, serve = make_run_recipe(port)
    assert serve.startswith(f"{BIN}/zipedge serve"), serve
    env = tool_env(**extra)
    for line in setup:
        done = subprocess.run(
            line, shell=True, cwd=folder, env=env, capture_output=True, text=True, timeout=START_DEADLINE_S
        )
        assert done.returncode == 0, f"{line}: {done.stdout}{done.stderr}"
        assert "curl -LOJ" in done.stdout  # the hint follows redirects too
    url = f"http://127.0.0.1:{port}"
    with ready(shlex.split(serve), cwd=folder, env=env, url=url):
        yield Service(url, folder)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`make run` in an empty folder."""
    with make_run(tmp_path_factory.mktemp("make-run")) as running:
        yield running


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def days_between(start: str, end: str) -> list[date]:
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def photos_of(service: Service, start: str, end: str) -> list[str]:
    """The keys the folder source serves for these days (hidden files never count)."""
    root = service.photos
    return sorted(
        path.relative_to(root).as_posix()
        for day in days_between(start, end)
        for path in (root / f"{day:%Y/%m/%d}").rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )


def the_url(command: str) -> str:
    [url] = [word for word in shlex.split(command) if word.startswith("http")]
    return url


def posted_body(command: str) -> dict[str, Any]:
    words = shlex.split(command)
    body: dict[str, Any] = json.loads(words[words.index("-d") + 1])
    return body


def expected_members(service: Service, url: str, run: Run) -> tuple[str, dict[str, str]]:
    """(download name, member → SHA-256 in archive order) of the archive at `url`."""
    parts = urlsplit(url)
    if parts.path == "/v1/zip":
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        start, end = query["from"], query["to"]
        name = f"photos-{start}.zip" if start == end else f"photos-{start}_{end}.zip"
        return name, {key: sha256_file(service.photos / key) for key in photos_of(service, start, end)}
    assert parts.path.startswith("/v1/archives/"), url
    body = run.posted
    return f"{body['name']}.zip", {
        entry.get("name", entry["key"]): sha256_file(service.photos / entry["key"])
        for entry in body["entries"]
    }


def check_json(service: Service, example: Example, answer: dict[str, Any]) -> None:
    assert "error" not in answer, answer
    for key in re.findall(r'"(\w+)":', example.answer):  # what the README says it answers
        assert key in answer, (key, answer)
    url = urlsplit(the_url(example.command))
    if url.path == "/v1/days":
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        keys = photos_of(service, query["from"], query["to"])
        assert answer["objects"] == len(keys) > 0
        assert sum(d["objects"] for d in answer["days"]) == len(keys)
        assert answer["archive"]["entries"] == len(keys)


def run_examples(service: Service, workdir: Path) -> Run:
    workdir.mkdir()
    run = Run()
    port = urlsplit(service.url).port
    for example in readme_examples():
        command = example.command.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        if "<id>" in command:
            command = command.replace("<id>", run.last_json["id"])
        before = set(workdir.iterdir())
        done = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", command],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=COMMAND_DEADLINE_S,
        )
        assert done.returncode == 0, f"{command}\nexit {done.returncode}: {done.stderr}"
        new = sorted(set(workdir.iterdir()) - before)
        words = shlex.split(command)
        if any(w.startswith("-") and not w.startswith("--") and "O" in w for w in words):
            name, members = expected_members(service, the_url(command), run)
            assert [p.name for p in new] == [name], f"{command} saved {new}"
            check_archive(new[0], members)
            run.saved.append(new[0])
        else:
            assert new == [], f"{command} left {new}"
            run.last_json = json.loads(done.stdout)
            check_json(service, example, run.last_json)
            if "-d" in words:
                run.posted = posted_body(command)
    return run


def cached_files(service: Service) -> list[Path]:
    cache = service.folder / "var" / "cache"
    return [p for p in cache.rglob("*.zip") if not p.name.startswith(".")] if cache.is_dir() else []


def test_the_first_block_is_make_run_and_make_test() -> None:
    [first, *_] = shell_blocks(first_sections())
    commands = [line.split("#", 1)[0].strip() for line in first.splitlines() if line.strip()]
    assert commands == ["make run", "make test"]


def test_examples_are_found() -> None:
    commands = [example.command for example in readme_examples()]
    assert len(commands) >= 4
    assert sum("-d '{" in command for command in commands) == 1  # the multi-line POST is one
    assert any("<id>" in command for command in commands)


def test_every_download_follows_redirects() -> None:
    """With an S3 cache a cached archive is a redirect: a `curl -O` without `-L` would
    save the redirect's empty body (named after the URL) and exit 0."""
    for path in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for flags in re.findall(r"curl((?: -[A-Za-z]+)+)", path.read_text()):
            letters = "".join(flag.lstrip("-") for flag in flags.split())
            if "O" in letters:
                assert "L" in letters, f"{path.name}: curl{flags} does not follow redirects"


def test_the_examples_work_as_written_on_the_demo_data(service: Service, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.fail("curl is missing (run scripts/system-deps)")
    first = run_examples(service, tmp_path / "first")
    assert len(first.saved) >= 2

    # Once the archives are cached, the same commands must give the same files.
    deadline = time.monotonic() + CACHE_DEADLINE_S
    while len(cached_files(service)) < len(first.saved):
        assert time.monotonic() < deadline, f"the archives were never cached: {cached_files(service)}"
        time.sleep(0.1)
    examples = readme_examples()
    range_url = next(the_url(e.command) for e in examples if "/v1/zip?" in e.command)
    # From the cache, at the same URL: the embedded default serves its folder itself.
    local_url = range_url.replace("127.0.0.1:8000", urlsplit(service.url).netloc)
    for method in ("HEAD", "GET"):
        cached = httpx.request(method, local_url, follow_redirects=False, timeout=COMMAND_DEADLINE_S)
        assert cached.status_code == 200, (method, cached.status_code, cached.headers)
        assert cached.headers["x-archive-cache"] == "hit" and "location" not in cached.headers
        assert cached.headers["accept-ranges"] == "bytes"
    part = httpx.get(local_url, headers={"Range": "bytes=0-99"}, follow_redirects=False)
    assert part.status_code == 206 and part.content == cached.content[:100]

    again = run_examples(service, tmp_path / "again")
    assert [p.name for p in again.saved] == [p.name for p in first.saved]
    assert [p.read_bytes() for p in again.saved] == [p.read_bytes() for p in first.saved]


def test_the_upload_script_files_a_photo_in_its_day(service: Service) -> None:
    """Run where `make run` runs (it names ./var/demo): ask, PUT, complete, download."""
    [script] = scripts(first_sections())
    port = urlsplit(service.url).port
    before = set(service.folder.glob("*.zip"))
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script.replace("127.0.0.1:8000", f"127.0.0.1:{port}")],
        cwd=service.folder,
        capture_output=True,
        text=True,
        timeout=COMMAND_DEADLINE_S,
    )
    assert done.returncode == 0, f"exit {done.returncode}: {done.stdout}{done.stderr}"
    completed = json.loads(done.stdout.strip().splitlines()[-1])
    assert completed["status"] == "completed" and completed["key"] == "2025/01/05/MH12AB1234.jpg"
    [saved] = sorted(set(service.folder.glob("*.zip")) - before)
    assert saved.name == "photos-2025-01-05.zip"
    keys = photos_of(service, "2025-01-05", "2025-01-05")
    assert completed["key"] in keys  # filed under its day, in the folder the archive reads
    check_archive(saved, {key: sha256_file(service.photos / key) for key in keys})


# --- the Configuration section's examples ------------------------------------------------


def configuration_block(lead: str) -> str:
    """The ```sh block that follows the Configuration section's prose line starting `lead`."""
    text = README.read_text()
    _, found, section = text.partition("\n## Configuration\n")
    assert found, "README.md has no Configuration section"
    section = section.split("\n## ", 1)[0]
    match = re.search(rf"^{re.escape(lead)}.*?\n```sh\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    assert match, f"no sh block after {lead!r} in the Configuration section"
    return match.group(1)


def assignments_and_command(command: str) -> tuple[dict[str, str], list[str]]:
    """`VAR=value ... cmd args` split as a shell does: the environment, then the argv."""
    words = shlex.split(command.replace("\\\n", ""))  # a line continuation, as sh removes it
    env: dict[str, str] = {}
    while words and re.match(r"^[A-Za-z_]\w*=", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    return env, words


def test_serving_an_s3_bucket_as_written(seaweedfs: SeaweedFS, tmp_path: Path) -> None:
    """The README's `zipedge serve` on S3, run as written against SeaweedFS: its endpoint
    and keys stand for the README's, the free port for 8000; the bucket and prefix are the
    README's own."""
    from service.settings import Location

    [example] = examples(configuration_block("Serving an S3 bucket"))
    env, argv = assignments_and_command(example.command)
    assert argv == [".venv/bin/zipedge", "serve"], argv
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:8333" and env["AWS_REGION"] == seaweedfs.region
    assert env["AWS_ACCESS_KEY_ID"] == env["AWS_SECRET_ACCESS_KEY"] == "…"  # the reader's own
    env |= {
        "AWS_ENDPOINT_URL": seaweedfs.endpoint_url,
        "AWS_ACCESS_KEY_ID": seaweedfs.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key,
    }
    source = Location.parse("ZIPEDGE_SOURCE", env["ZIPEDGE_SOURCE"])
    seaweedfs.create_bucket(source.bucket)
    photos = {f"2025/01/05/GATE7-{i:02d}.jpg": os.urandom(20_000 + i) for i in range(5)}
    for key, data in photos.items():
        status, body = seaweedfs.request("PUT", f"/{source.bucket}/{source.prefix}{key}", data)
        assert status == 200, body
    (tmp_path / ".venv").symlink_to(BIN.parent)  # `.venv/bin/zipedge`, where it is run
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with ready([*argv, "--port", str(port)], cwd=tmp_path, env=tool_env(**env), url=url):
        day = {"from": "2025-01-05", "to": "2025-01-05"}
        days = httpx.get(f"{url}/v1/days", params=day, timeout=COMMAND_DEADLINE_S)
        response = httpx.get(f"{url}/v1/zip", params=day, timeout=COMMAND_DEADLINE_S)
    assert days.status_code == 200 and days.json()["objects"] == len(photos), days.text
    assert response.status_code == 200, response.text
    saved = tmp_path / "gate7.zip"
    saved.write_bytes(response.content)
    check_archive(saved, {key: hashlib.sha256(data).hexdigest() for key, data in sorted(photos.items())})


def test_url_entries_from_an_allowed_host_in_the_same_shape(tmp_path: Path) -> None:
    """The README's example needs the internet; the same two commands run here against an
    origin on loopback: `ZIPEDGE_HTTP_ALLOW=<host:port> make run` (plus
    `ZIPEDGE_HTTP_ALLOW_PRIVATE`, which loopback needs) and the very `curl` with the
    origin's URL for the photo's. The posted archive then holds the origin's bytes."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, Response
    from starlette.routing import Route

    from tests.servers import serve

    allow, post = examples(configuration_block("Allowing URL entries"))
    env, argv = assignments_and_command(allow.command)
    assert argv == ["make", "run"] and set(env) == {"ZIPEDGE_HTTP_ALLOW"}, allow.command
    [entry] = posted_body(post.command)["entries"]
    readme_photo = urlsplit(entry["url"])
    assert readme_photo.hostname == env["ZIPEDGE_HTTP_ALLOW"]  # the example allows its own host

    served = tmp_path / "origin"
    photo = served / readme_photo.path.lstrip("/")
    photo.parent.mkdir(parents=True)
    photo.write_bytes(os.urandom(30_000))

    async def files(request: Request) -> Response:
        path = served / request.path_params["path"]
        return FileResponse(path) if path.is_file() else Response(status_code=404)

    origin = Starlette(routes=[Route("/{path:path}", files, methods=["GET", "HEAD"])])
    folder = tmp_path / "make-run"
    folder.mkdir()
    with serve(origin) as origin_url:
        netloc = urlsplit(origin_url).netloc
        allowed = {"ZIPEDGE_HTTP_ALLOW": netloc, "ZIPEDGE_HTTP_ALLOW_PRIVATE": "true"}
        with make_run(folder, **allowed) as running:
            command = post.command.replace("127.0.0.1:8000", urlsplit(running.url).netloc)
            command = command.replace(entry["url"], f"{origin_url}{readme_photo.path}")
            assert origin_url in command
            done = subprocess.run(
                ["bash", "-e", "-o", "pipefail", "-c", command],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=COMMAND_DEADLINE_S,
            )
            assert done.returncode == 0, done.stderr
            answer = json.loads(done.stdout)
            assert "error" not in answer and answer["entries"] == 1, answer
            archive = httpx.get(answer["url"], timeout=COMMAND_DEADLINE_S, follow_redirects=True)
    assert archive.status_code == 200, archive.text
    saved = tmp_path / "posted.zip"
    saved.write_bytes(archive.content)
    check_archive(saved, {photo.name: sha256_file(photo)})
