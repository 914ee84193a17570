"""Hostile input against the production topology (two ``orca api`` on PostgreSQL, workers on
OpenSSH): the bad-request catalogue sent by several clients at once, a schemathesis fuzz of
/openapi.json, and generated command strings (unicode, quotes, newlines, 64 KiB) that must come
back byte for byte in stdout when run as ``printf %s ...``."""

from __future__ import annotations

import random
import shlex
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from e2e.test_bad_requests import CATALOGUE, Bad, fill, system
from orca.http.app import ENDPOINTS, Api
from reliability.checks import Report
from reliability.cluster import Cluster
from reliability.sizes import SIZE
from support.contract import assert_error
from support.fuzz import Fuzzed
from support.postgres import PrivatePostgres
from support.sshd import SshdHost

pytestmark = [pytest.mark.reliability, pytest.mark.postgres, pytest.mark.sshd]
CATALOGUE_CLIENTS = 8
CATALOGUE_ROUNDS = 1 if SIZE.name == "fast" else 5
KIB_64 = 64 * 1024


@pytest.fixture(scope="module")
def cluster(private_postgres: PrivatePostgres, fleet: list[SshdHost]) -> Iterator[Cluster]:
    if not private_postgres.running:
        private_postgres.start()
    for host in fleet:
        if not host.running:
            host.resume()
    started = Cluster(private_postgres, fleet).start()
    yield started
    started.close()
    started.remove_files()


# --- the bad-request catalogue, from several clients at once -------------------------------


def totals(cluster: Cluster) -> dict[str, Any]:
    systems = cluster.call("GET", "/api/systems", limit=500).json()
    return {
        "systems": systems["total"],
        "jobs": cluster.call("GET", "/api/jobs").json()["total"],
        "users": cluster.call("GET", "/api/users").json()["total"],
        "system rows": systems["systems"],
    }


@pytest.mark.timeout(300)
def test_the_bad_request_catalogue_sent_by_clients_at_once_gets_its_documented_errors(
    cluster: Cluster,
) -> None:
    ids = {}
    for key, name in (("a", "existing-a"), ("b", "existing-b")):
        created = cluster.call("POST", "/api/systems", json=system(name=name))
        assert created.status_code == 201, created.text
        ids[key] = created.json()["id"]
    before = totals(cluster)
    token = cluster.admin.http.headers["Authorization"]
    seen: Counter[int] = Counter()
    failures: list[str] = []
    lock = threading.Lock()

    def run(n: int) -> None:
        rng = random.Random(n)
        headers = {"Authorization": token}
        url = cluster.api_url(n)
        with httpx.Client(base_url=url, timeout=60, trust_env=False, headers=headers) as client:
            for _ in range(CATALOGUE_ROUNDS):
                entries = list(CATALOGUE.items())
                rng.shuffle(entries)
                for name, bad in entries:
                    response = send(client, bad, ids)
                    try:
                        assert_error(response, bad.status, bad.field)
                    except AssertionError as error:
                        with lock:
                            failures.append(f"{name}: {error}")
                    with lock:
                        seen[response.status_code] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=run, args=(n,)) for n in range(CATALOGUE_CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - started
    after = totals(cluster)

    report = Report(f"bad-request catalogue, {CATALOGUE_CLIENTS} clients at once ({SIZE.name})")
    report.tried(
        {
            "bad requests in the catalogue": len(CATALOGUE),
            "requests": sum(seen.values()),
            "clients at once": CATALOGUE_CLIENTS,
            "rounds per client": CATALOGUE_ROUNDS,
            "seconds": round(seconds, 1),
            "statuses": dict(sorted(seen.items())),
        }
    )
    assert not failures, f"{len(failures)} answers not as documented:\n" + "\n".join(failures[:20])
    assert all(status < 500 for status in seen), seen
    assert after == before, "a bad request stored something"
    report.survived(
        {
            "answers as documented": sum(seen.values()),
            "totals after = before": f"{after['systems']} systems, {after['jobs']} jobs, "
            f"{after['users']} users",
        }
    )


def test_an_update_that_changes_nothing_answers_with_the_user(cluster: Cluster) -> None:
    """Found by the fuzz: a role or an active flag set to what it is saved no event, and
    the empty save was a 500."""
    user = {"username": "same-again", "password": "same-again-pw", "role": "viewer"}
    assert cluster.call("POST", "/api/users", json=user).status_code == 201
    for change in ({"role": "viewer"}, {"is_active": True}, {"role": "viewer", "is_active": True}):
        response = cluster.call("PUT", f"/api/users/{user['username']}", json=change)
        assert response.status_code == 200, response.text
        assert (response.json()["role"], response.json()["is_active"]) == ("viewer", True)


def send(client: httpx.Client, bad: Bad, ids: dict[str, str]) -> httpx.Response:
    path = bad.path.format(**ids) if "{a}" in bad.path else bad.path
    kwargs: dict[str, Any] = {"headers": bad.headers}
    if bad.content is not None:
        kwargs["content"] = bad.content
    elif bad.json is not None:
        kwargs["json"] = fill(bad.json, ids)
    return client.request(bad.method, path, **kwargs)


# --- a schemathesis fuzz of /openapi.json ------------------------------------------------


@pytest.fixture(scope="module")
def fuzzed(cluster: Cluster) -> Fuzzed:
    return Fuzzed(cluster.processes["api-1"])


FUZZED: Counter[int] = Counter()


@pytest.mark.timeout(600)
@pytest.mark.full_only  # the fast run leaves the fuzz to tests/e2e/test_schema_fuzz.py
@pytest.mark.parametrize("api", ENDPOINTS, ids=lambda a: f"{a.method} {a.path}")
def test_a_schema_fuzz_of_the_cluster_finds_no_server_error(fuzzed: Fuzzed, api: Api) -> None:
    fuzzed.route(api, SIZE.fuzz_examples, FUZZED)


@pytest.mark.full_only
def test_the_fuzz_is_reported() -> None:
    """Runs after the fuzz above (same module, in order): its figures."""
    if not FUZZED:
        pytest.skip("reports on the fuzz above, which did not run")
    report = Report(f"schemathesis fuzz of the cluster ({SIZE.name})")
    report.tried(
        {
            "routes": len(ENDPOINTS),
            "examples per route": SIZE.fuzz_examples,
            "requests": sum(FUZZED.values()),
            "statuses": dict(sorted(FUZZED.items())),
        }
    )
    report.survived({"5xx": sum(n for status, n in FUZZED.items() if status >= 500)})


# --- command strings that must come back byte for byte --------------------------------------

SHELL_SPECIALS = "'\"\\$`!*?[]{}()<>|&;#~%^=\n\r\t \x1b\x7f\u00a0\u2028\ufeff"
ANY_TEXT = st.characters(codec="utf-8", exclude_characters="\x00")
COMMAND_TEXT = st.one_of(
    st.text(ANY_TEXT, max_size=400),
    st.text(st.sampled_from(SHELL_SPECIALS), max_size=200),
    st.text(st.one_of(st.sampled_from(SHELL_SPECIALS), ANY_TEXT), min_size=1000, max_size=4000),
)


def sixty_four_kib() -> str:
    """64 KiB of UTF-8 with every kind of trouble in it, quoting kept under the 128 KiB that
    Linux allows a single argument (the command reaches bash as one)."""
    piece = "é€😀 \"$HOME\" `id` $(id) \\n \\\\ %s %% \r\n\t; echo pwned & | > /tmp/x 'q' 日本\n"
    text = piece * (KIB_64 // len(piece.encode()) + 1)
    data = text.encode()[:KIB_64]
    return data.decode("utf-8", errors="ignore")


TRIED: Counter[str] = Counter()


@pytest.mark.timeout(120 + SIZE.command_examples * 30)
@settings(
    max_examples=SIZE.command_examples,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(texts=st.lists(COMMAND_TEXT, min_size=1, max_size=6))
@example(texts=[sixty_four_kib()])
@example(texts=["", "'", '"', "\\", "\n", "a\nb\n", "-n", "%s%d%n", "\r\n\r\n"])
def test_a_command_s_text_comes_back_byte_for_byte_from_printf(
    cluster: Cluster, texts: list[str]
) -> None:
    system_ids = sorted(cluster.systems)
    jobs = []
    for n, text in enumerate(texts):
        command = f"printf %s {shlex.quote(text)}"
        on = [system_ids[n % len(system_ids)]]
        created = cluster.create_job({"name": f"printf-{n}", "command": command, "system_ids": on})
        assert created["command"] == command
        jobs.append(created["id"])
    for job_id, text in zip(jobs, texts, strict=True):
        job = cluster.wait_for_job(job_id)
        (execution,) = job["executions"]
        assert execution["status"] == "completed", execution["error_message"]
        assert execution["stdout"] == text
        assert (execution["stderr"], execution["stdout_truncated"]) == ("", False)
        TRIED["commands"] += 1
        TRIED["bytes"] += len(text.encode())
        TRIED["largest"] = max(TRIED["largest"], len(text.encode()))
        TRIED["with a newline"] += "\n" in text
        TRIED["with a quote"] += "'" in text or '"' in text
        TRIED["beyond ASCII"] += any(ord(c) > 127 for c in text)


def test_the_command_strings_tried_are_reported() -> None:
    """Runs after the property test (same module, in order): its figures."""
    if not TRIED:
        pytest.skip("reports on the property test above, which did not run")
    report = Report(f"command strings through printf %s ({SIZE.name})")
    report.tried({"hypothesis examples": SIZE.command_examples} | dict(TRIED))
    report.survived({"byte for byte in stdout": TRIED["commands"]})
    assert TRIED["commands"] > 0
    assert TRIED["largest"] >= KIB_64 - 4
