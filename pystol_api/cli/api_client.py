"""The HTTP client of the Pystol API, as the `pystol` command line uses it.

The CLI is just another API client: it never talks to Redis or the cluster, so what
it can do over HTTP anyone can do with curl. This module turns the API's answers
into dicts and its failures into two exceptions the CLI knows how to print:

- `ApiError`: the API answered with an error (RFC 9457 problem+json, or whatever a
  proxy in between sent). 4xx is the caller's fault (exit 2), 5xx the server's (exit 3).
- `ApiUnreachable`: no answer at all (refused, DNS, TLS, timeout): exit 3.

`requests` is imported when a client is built, not when this module is imported, so
`pystol --help` and the commands that run processes do not pay for it. It also reads
the small client configuration file (`cli.env`), because that file only exists to
tell this client where the API is and which token to send.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    import requests

API_PREFIX = "/api/v1"
SOURCE_HEADER = "X-Pystol-Source"
USER_AGENT = "pystol-cli/0.1"
EVENT_STREAM = "text/event-stream"


class EventStreamUnavailable(Exception):
    """The API does not stream events now (it answered 406, or 503/429: no stream free), or
    is older than the stream."""


@dataclass
class ServerSentEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None


def parse_event_stream(chunks: Iterator[bytes]) -> Iterator[ServerSentEvent]:
    """Server-sent events from the chunks of a `text/event-stream` body (comments skipped)."""
    buffer = ""
    current = ServerSentEvent()
    data: list[str] = []
    for chunk in chunks:
        buffer += chunk.decode("utf-8", "replace") if isinstance(chunk, bytes) else chunk
        *lines, buffer = re.split(r"\r\n|\r|\n", buffer)
        for line in lines:
            if not line:
                if data or current.id is not None or current.event != "message":
                    current.data = "\n".join(data)
                    yield current
                current, data = ServerSentEvent(), []
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            elif name == "event":
                current.event = value
            elif name == "id":
                current.id = value
CONFIG_KEYS = ("PYSTOL_API_URL", "PYSTOL_TOKEN")
DEFAULT_CONFIG_PATH = Path("~/.config/pystol/cli.env")
ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


@dataclass(eq=False)
class ApiError(Exception):
    """The API (or something in front of it) answered with an error."""

    status: int
    title: str
    detail: str = ""
    errors: list[tuple[str, str]] = field(default_factory=list)
    url: str = ""

    def __str__(self) -> str:
        return f"{self.title}: {self.detail}" if self.detail else self.title

    @property
    def exit_code(self) -> int:
        return 2 if 400 <= self.status < 500 else 3


@dataclass(eq=False)
class ApiUnreachable(Exception):
    """No HTTP answer came back from the API."""

    url: str
    reason: str

    def __str__(self) -> str:
        return f"cannot reach the Pystol API at {self.url}: {self.reason}"

    exit_code = 3


class ConfigFileError(Exception):
    """The client configuration file cannot be used; the message names file and line."""


#: The API a client talks to when nothing says otherwise; the same default as the
#: server settings' `api_url` (a unit test keeps the two equal).
DEFAULT_API_URL = "http://127.0.0.1:8080"
USERINFO = re.compile(r"//[^/@]*@")


@dataclass(frozen=True)
class ClientEnvironment:
    """What a client command takes from the environment: PYSTOL_API_URL and PYSTOL_TOKEN.

    Read here, not through the server `Settings`: building those imports pydantic and
    pydantic-settings (about 0.3 s, a third of a `pystol run`'s start) and validates every
    server variable, none of which a client uses. The two variables are read the way
    `Settings` reads them (names in any case, the URL must be http(s) and loses a trailing
    slash, with the same error text), so the CLI behaves as it did."""

    api_url: str | None  # None: PYSTOL_API_URL is not set
    token: str

    @classmethod
    def read(cls, environ: Mapping[str, str]) -> ClientEnvironment:
        values: dict[str, str] = {}
        for key, value in environ.items():
            upper = key.upper()
            if upper in CONFIG_KEYS and (upper not in values or key == upper):
                values[upper] = value
        url = values.get("PYSTOL_API_URL")
        if url is not None:
            if not url.startswith(("http://", "https://")):
                shown = USERINFO.sub("//***@", url) if "://" in url else url
                raise ConfigFileError("invalid configuration:\n  PYSTOL_API_URL: Value error, "
                                      "expected an http:// or https:// URL "
                                      f"(got {shown!r})")
            url = url.rstrip("/")
        return cls(api_url=url, token=values.get("PYSTOL_TOKEN", ""))


def read_cli_env(path: Path) -> dict[str, str]:
    """`KEY=VALUE` lines for PYSTOL_API_URL and PYSTOL_TOKEN.

    Blank lines and `#` comments are skipped, `export ` in front of a key and quotes
    around a value are allowed (so the file can also be `source`d by a shell). Any
    other key is refused rather than ignored: a typo must not silently drop a token.
    """
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ConfigFileError(f"{path}:{number}: expected KEY=VALUE, got {raw.strip()!r}")
        if key not in CONFIG_KEYS:
            raise ConfigFileError(f"{path}:{number}: unknown key {key!r}; "
                                  f"expected one of {', '.join(CONFIG_KEYS)}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def problem_from_answer(status: int, content_type: str, body: bytes, reason: str,
                        url: str) -> ApiError:
    """An ApiError from an error answer: problem+json when it is one, else the body's start."""
    data: object = None
    if "json" in content_type:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
    if isinstance(data, dict):
        title = str(data.get("title") or reason or f"HTTP {status}")
        detail = data.get("detail")
        return ApiError(status, title, "" if detail is None else str(detail),
                        _field_errors(data.get("errors")), url)
    text = body.decode("utf-8", "replace").strip()
    text = re.sub(r"<[^>]+>", " ", text) if "html" in content_type else text
    text = " ".join(text.split())[:300]
    return ApiError(status, reason or f"HTTP {status}", text, [], url)


def _field_errors(items: object) -> list[tuple[str, str]]:
    """(field path, message) pairs from `errors[]`, whichever common spelling is used."""
    if not isinstance(items, list):
        return []
    found = []
    for item in items:
        if not isinstance(item, dict):
            found.append(("", str(item)))
            continue
        loc = next((item[key] for key in ("loc", "field", "path", "pointer") if key in item), "")
        if isinstance(loc, list | tuple):
            loc = ".".join(str(part) for part in loc)
        message = next((item[key] for key in ("msg", "message", "detail") if key in item), "")
        found.append((str(loc), str(message)))
    return found


def unreachable_reason(error: BaseException) -> str:
    """`connection refused`, `timed out` … from a requests exception's long chain."""
    import requests

    if isinstance(error, requests.Timeout):
        return "no answer in time (timed out)"
    if isinstance(error, requests.exceptions.SSLError):
        return "TLS failed (" + " ".join(str(error).split())[:200] + ")"
    match = ERRNO_TEXT.search(str(error))
    if match:
        return match[1].strip().lower()
    if "Name or service not known" in str(error) or "nodename nor servname" in str(error):
        return "unknown host name"
    return " ".join(str(error).split())[:200] or type(error).__name__


class ApiClient:
    """One API endpoint and token; every method returns the decoded JSON answer."""

    def __init__(self, base_url: str, token: str, timeout: float = 15.0,
                 source: str = "cli") -> None:
        import requests

        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session: requests.Session = requests.Session()
        self.session.headers.update({
            "Authorization": f"Bearer {token}",
            "Accept": "application/json, application/problem+json",
            "User-Agent": USER_AGENT,
            SOURCE_HEADER: source,
        })

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                json_body: object = None) -> Any:
        import requests

        url = self.base_url + path
        try:
            answer = self.session.request(method, url, params=params, json=json_body,
                                          timeout=self.timeout)
        except requests.RequestException as error:
            raise ApiUnreachable(self.base_url, unreachable_reason(error)) from None
        content_type = answer.headers.get("Content-Type", "")
        if answer.status_code >= 400:
            raise problem_from_answer(answer.status_code, content_type, answer.content,
                                      answer.reason or "", url)
        if not answer.content:
            return None
        try:
            return answer.json()
        except ValueError:
            raise ApiError(502, "unexpected answer from the API",
                           f"{method} {path} answered {answer.status_code} with "
                           f"{content_type or 'no content type'}, not JSON", [], url) from None

    # -- jobs -----------------------------------------------------------------------------

    def submit_job(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("POST", f"{API_PREFIX}/jobs", json_body=dict(spec))

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self.request("GET", f"{API_PREFIX}/jobs/{quote(job_id, safe='')}")

    def job_events_stream(self, job_id: str, last_event_id: int | None = None,
                          read_timeout: float = 60.0) -> Iterator[ServerSentEvent]:
        """The job's timeline as server-sent events, until the API closes the stream.
        EventStreamUnavailable when the API does not serve one (406, an older API)."""
        import requests

        url = f"{self.base_url}{API_PREFIX}/jobs/{quote(job_id, safe='')}/events"
        headers = {"Accept": EVENT_STREAM}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        try:
            answer = self.session.get(url, headers=headers, stream=True,
                                      timeout=(self.timeout, read_timeout))
        except requests.RequestException as error:
            raise ApiUnreachable(self.base_url, unreachable_reason(error)) from None
        with answer:
            content_type = answer.headers.get("Content-Type", "")
            if answer.status_code in (404, 405, 406, 429, 503) or (
                    answer.status_code < 400 and not content_type.startswith(EVENT_STREAM)):
                # 404 too: an API without the route; a job that does not exist is reported
                # by the poll that follows. 429/503: the API serves as many streams as it
                # may (PYSTOL_STREAM_MAX_CLIENTS) or this caller is over its rate; polling
                # still works.
                raise EventStreamUnavailable(f"{url} answered {answer.status_code} "
                                             f"{content_type}")
            if answer.status_code >= 400:
                raise problem_from_answer(answer.status_code, content_type, answer.content,
                                          answer.reason or "", url)
            try:
                yield from parse_event_stream(answer.iter_content(chunk_size=None))
            except requests.RequestException as error:
                raise ApiUnreachable(self.base_url, unreachable_reason(error)) from None

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self.request("POST", f"{API_PREFIX}/jobs/{quote(job_id, safe='')}/cancel")

    def list_jobs(self, *, status: str | None = None, action: str | None = None,
                  namespace: str | None = None, limit: int | None = None,
                  cursor: str | None = None) -> dict[str, Any]:
        params = {key: value for key, value in (
            ("status", status), ("action", action), ("namespace", namespace),
            ("limit", limit), ("cursor", cursor)) if value is not None}
        page = self.request("GET", f"{API_PREFIX}/jobs", params=params)
        if isinstance(page, list):  # tolerate a bare list: one page, nothing after it
            return {"items": page, "next_cursor": None}
        return page

    def iter_job_pages(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every page, following `next_cursor` until there is none (or it repeats)."""
        seen: set[str] = set()
        cursor = None
        while True:
            page = self.list_jobs(cursor=cursor, **filters)
            yield page
            cursor = page.get("next_cursor")
            if not cursor or cursor in seen:
                return
            seen.add(cursor)

    # -- schedules ---------------------------------------------------------------------------

    def list_schedules(self) -> list[dict[str, Any]]:
        answer = self.request("GET", f"{API_PREFIX}/schedules")
        return answer.get("items", []) if isinstance(answer, dict) else list(answer or [])

    def create_schedule(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("POST", f"{API_PREFIX}/schedules", json_body=dict(body))

    def get_schedule(self, schedule_id: str) -> dict[str, Any]:
        return self.request("GET", f"{API_PREFIX}/schedules/{quote(schedule_id, safe='')}")

    def patch_schedule(self, schedule_id: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", f"{API_PREFIX}/schedules/{quote(schedule_id, safe='')}",
                            json_body=dict(patch))

    def delete_schedule(self, schedule_id: str) -> None:
        self.request("DELETE", f"{API_PREFIX}/schedules/{quote(schedule_id, safe='')}")

    # -- experiments -------------------------------------------------------------------------

    def list_experiments(self, *, namespace: str | None = None, tag: str | None = None
                         ) -> list[dict[str, Any]]:
        """Every page of the experiments the caller may read."""
        items: list[dict[str, Any]] = []
        seen: set[str] = set()
        cursor: str | None = None
        while True:
            params = {key: value for key, value in (("namespace", namespace), ("tag", tag),
                                                    ("cursor", cursor)) if value is not None}
            page = self.request("GET", f"{API_PREFIX}/experiments", params=params) or {}
            items += page.get("items") or []
            cursor = page.get("next_cursor")
            if not cursor or cursor in seen:
                return items
            seen.add(cursor)

    def get_experiment(self, name: str) -> dict[str, Any]:
        return self.request("GET", f"{API_PREFIX}/experiments/{quote(name, safe='')}")

    def put_experiment(self, name: str, document: Mapping[str, Any]) -> dict[str, Any]:
        """Create or replace (no If-Match: the file given is what the caller wants)."""
        return self.request("PUT", f"{API_PREFIX}/experiments/{quote(name, safe='')}",
                            json_body=dict(document))

    def delete_experiment(self, name: str) -> None:
        self.request("DELETE", f"{API_PREFIX}/experiments/{quote(name, safe='')}")

    def run_experiment(self, name: str, *, dry_run: bool = False,
                       idempotency_key: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"dry_run": dry_run}
        if idempotency_key:
            body["idempotency_key"] = idempotency_key
        return self.request("POST", f"{API_PREFIX}/experiments/{quote(name, safe='')}/run",
                            json_body=body)

    def experiment_runs(self, name: str | None = None, limit: int | None = None
                        ) -> list[dict[str, Any]]:
        params = {"limit": limit} if limit else None
        path = (f"{API_PREFIX}/experiments/{quote(name, safe='')}/runs" if name
                else f"{API_PREFIX}/experiment-runs")
        page = self.request("GET", path, params=params) or {}
        return list(page.get("items") or [])

    def get_run(self, run_id: str) -> dict[str, Any]:
        return self.request("GET", f"{API_PREFIX}/experiment-runs/{quote(run_id, safe='')}")

    def cancel_run(self, run_id: str, reason: str | None = None) -> dict[str, Any]:
        body = {"reason": reason} if reason else {}
        return self.request("POST",
                            f"{API_PREFIX}/experiment-runs/{quote(run_id, safe='')}/cancel",
                            json_body=body)

    def resume_run(self, run_id: str, step: str) -> dict[str, Any]:
        return self.request("POST",
                            f"{API_PREFIX}/experiment-runs/{quote(run_id, safe='')}/resume",
                            json_body={"step": step})

    def journal(self, run_or_job_id: str) -> dict[str, Any]:
        """The Chaos Toolkit journal of an experiment run (`x-…`) or of a job."""
        kind = "experiment-runs" if run_or_job_id.startswith("x-") else "jobs"
        return self.request("GET",
                            f"{API_PREFIX}/{kind}/{quote(run_or_job_id, safe='')}/journal")

    # -- the kill switch ---------------------------------------------------------------------

    def halt(self, reason: str | None) -> dict[str, Any]:
        body = {"reason": reason} if reason else {}
        return self.request("POST", f"{API_PREFIX}/halt", json_body=body)

    def lift_halt(self) -> dict[str, Any]:
        return self.request("DELETE", f"{API_PREFIX}/halt")

    def halt_state(self) -> dict[str, Any]:
        return self.request("GET", f"{API_PREFIX}/halt")

    # -- the rest -------------------------------------------------------------------------

    def actions(self) -> list[dict[str, Any]]:
        answer = self.request("GET", f"{API_PREFIX}/actions")
        if isinstance(answer, dict):
            for key in ("items", "actions"):
                if isinstance(answer.get(key), list):
                    return answer[key]
        return answer if isinstance(answer, list) else []
