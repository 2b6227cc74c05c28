"""The console in-process (FastAPI's TestClient) on a database the real steps made: the same
truth as `scbundle status --json`, tokens and CSRF refused, 4xx on bad input, actions through
the CLI's code and into the journal with who did them."""

from __future__ import annotations

import json
import re

import pytest
from webkit import OPERATOR, READER

BEARER = {"Authorization": f"Bearer {OPERATOR}"}
READ = {"Authorization": f"Bearer {READER}"}


def _no_disk(doc: dict) -> dict:
    """The document without the workdir's free bytes (other processes write to this disk
    between the two reads)."""
    for s in doc["sites"]:
        s.pop("free_disk")
    return doc


@pytest.mark.parametrize("args", [(), ("--remote-id", "1", "--all")])
def test_api_status_is_what_status_json_prints(console, client, args):
    cli = json.loads(console.cli("status", "--json", *args))
    query = {"--remote-id": "remote_id", "--label": "label"}
    params = {query[a]: v for a, v in zip(args[::2], args[1::2]) if a in query}
    if "--all" in args:
        params["all"] = "true"
    api = client.get("/api/status", params=params, headers=BEARER)
    assert api.status_code == 200
    assert _no_disk(api.json()) == _no_disk(cli)
    assert cli["runs"], "the fixture has runs"


def test_overview_sums_the_status_runs_per_label_and_stage_with_fault_counts(console, client):
    data = client.get("/api/overview", headers=BEARER).json()
    rows = {(r["label"], r["stage"]): r for r in data["stages"]}
    runs = {r["label"]: r for r in data["status"]["runs"]}
    assert rows[("web0", "chip")]["njobs"] == runs["web0"]["njobs"] == 4
    assert rows[("web0", "chip")]["nfail"] == 1 and rows[("web0", "chip")]["faults"] == {"5": 1}
    assert [t["task"] for t in data["tasks"]] == ["prepare", "exec", "poll", "advance"]
    # the overview's fault count is a link to the failed component, whose page says why
    html = client.get("/", headers=BEARER).text
    href = re.search(r'href="(/faults\?label=web0&amp;stage=chip&amp;fault=5)"', html).group(1).replace("&amp;", "&")
    faults = client.get(href, headers=BEARER).text
    sid = console.bad_stage_id["web0"]
    assert f'href="/runs/{console.run_ids["web0"]}/components/{sid}"' in faults
    comp = client.get(f"/api/runs/{console.run_ids['web0']}/components/{sid}", headers=BEARER).json()
    assert comp["component"]["exit_code"] == 5 and comp["phase"] == "command"
    assert "truncated: 10 pixel bytes" in comp["stderr_tail"]


def test_run_page_filters_components_and_shows_the_journal(console, client):
    rid = console.run_ids["web0"]
    every = client.get(f"/api/runs/{rid}", params={}, headers=BEARER).json()
    assert len(every["components"]) == 4
    failed = client.get(f"/api/runs/{rid}", params={"state": "failed", "fault": 5}, headers=BEARER).json()
    assert [c["stage_id"] for c in failed["components"]] == [console.bad_stage_id["web0"]]
    (host,) = {c["host"] for c in every["components"]}
    assert len(client.get(f"/api/runs/{rid}", params={"host": host, "rank": 0}, headers=BEARER).json()["components"]) >= 1
    assert client.get(f"/api/runs/{rid}", params={"host": "nowhere"}, headers=BEARER).json()["components"] == []
    assert [(e["command"], e["to"]) for e in every["history"]] == [("define", "new"), ("prepare", "pending"), ("exec", "run"), ("poll", "error")]
    assert every["run"]["usage"]["nodes"] >= 1


def test_without_a_token_nothing_is_shown_or_done(console, client):
    for path in ("/", "/runs/1", "/history", "/api/overview", "/api/status"):
        r = client.get(path)
        assert r.status_code == 401, path
        assert "web0" not in r.text
    assert client.get("/api/status", headers={"Authorization": "Bearer not-a-token-of-ours"}).status_code == 401
    assert client.get("/api/status", headers={"Authorization": f"Basic {OPERATOR}"}).status_code == 401
    r = client.post("/api/revert", json={"remote_id": console.run_ids["web1"]})
    assert r.status_code == 401
    r = client.post("/api/revert", json={"remote_id": console.run_ids["web1"]}, headers=READ)
    assert r.status_code == 403 and "reader" in r.json()["error"]
    assert console.q("select state from remote_run where remote_id = :r", r=console.run_ids["web1"]) == [("error",)]


def test_a_cookie_post_needs_the_pages_csrf_token_and_the_revert_lands_in_the_journal(console, client):
    rid = console.run_ids["web1"]
    r = client.post("/login", data={"token": "wrong-token-0123456789", "next": "/"}, follow_redirects=False)
    assert r.status_code == 401 and "scbundle_session" not in r.headers.get("set-cookie", "")
    r = client.post("/login", data={"token": OPERATOR, "next": "//evil.example/"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert "HttpOnly" in r.headers["set-cookie"] and "SameSite=strict" in r.headers["set-cookie"]
    page = client.get(f"/runs/{rid}").text
    csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', page).group(1)
    form = {"remote_id": str(rid), "fault": "5", "back": f"/runs/{rid}"}
    assert client.post("/actions/revert", data=form, follow_redirects=False).status_code == 403  # forged: no token
    assert client.post("/actions/revert", data={**form, "csrf": "0" * 64}, follow_redirects=False).status_code == 403
    r = client.post("/actions/revert", data={**form, "csrf": csrf}, headers={"Origin": "http://evil.example"}, follow_redirects=False)
    assert r.status_code == 403
    assert console.q("select state from remote_run where remote_id = :r", r=rid) == [("error",)]
    r = client.post("/actions/revert", data={**form, "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith(f"/runs/{rid}?done=")
    assert console.q("select state, fault from remote_run where remote_id = :r", r=rid) == [("new", 0)]
    assert console.q("select count(*) from remote_component where remote_id = :r and state = 'error'", r=rid) == [(0,)]
    (ev,) = console.q("select command, src, dst, who from journal_event where remote_id = :r and command = 'web'", r=rid)
    assert ev == ("web", "error", "new", "operator@web")


def test_task_switches_from_the_api_are_journaled_with_who(console, client):
    r = client.post("/api/tasks", json={"task": "advance", "enabled": False}, headers=BEARER)
    assert r.status_code == 200 and {t["task"]: t["enabled"] for t in r.json()}["advance"] is False
    client.post("/api/tasks", json={"task": "advance", "enabled": True}, headers=BEARER)
    evs = console.q("select command, src, dst, who from journal_event where kind = 'task' order by id")
    assert evs[-2:] == [("web", "on", "off", "operator@web"), ("web", "off", "on", "operator@web")]
    assert console.q("select enabled, changed_by from task_switch where task = 'advance'") == [(1, "operator@web")]


@pytest.mark.parametrize(
    "method, path, body, status, says",
    [
        ("get", "/runs/0", None, 422, "remote_id"),
        ("get", "/runs/abc", None, 422, "remote_id"),
        ("get", "/runs/99999", None, 404, "remote_id 99999 does not exist"),
        ("get", "/api/runs/1?state=bogus", None, 422, "state 'bogus' is not one of"),
        ("get", "/api/runs/1?fault=9", None, 422, "fault"),
        ("get", "/api/runs/1/components/123456", None, 404, "no component with stage_id 123456"),
        ("get", "/api/overview?label=a%20b", None, 422, "label"),
        ("get", "/api/runs/1?offset=-1", None, 422, "offset"),
        ("post", "/api/revert", {}, 422, "revert needs a remote_id or a label"),
        ("post", "/api/revert", {"remote_id": 1, "fault": 7}, 422, "fault"),
        ("post", "/api/revert", {"remote_id": 1, "drop": "tables"}, 422, "drop"),
        ("post", "/api/tasks", {"task": "rm", "enabled": True}, 422, "task"),
        ("post", "/api/cancel", {"remote_id": 1}, 409, "cancel needs state"),
        ("post", "/api/revert", "not json", 422, "bad input"),
    ],
)
def test_bad_input_is_a_4xx_with_one_line(client, method, path, body, status, says):
    kw = {"headers": BEARER}
    if body is not None:
        kw["content" if isinstance(body, str) else "json"] = body  # type: ignore[assignment]
    r = getattr(client, method)(path, **kw)
    assert r.status_code == status, r.text
    msg = r.json()["error"] if path.startswith("/api/") else re.search(r'id="error">([^<]*)<', r.text).group(1)
    assert says in msg and "\n" not in msg and "Traceback" not in r.text


def test_no_page_shows_a_token(console, client):
    client.post("/login", data={"token": OPERATOR, "next": "/"})
    rid, sid = console.run_ids["web0"], console.bad_stage_id["web0"]
    for path in ("/", f"/runs/{rid}", f"/runs/{rid}/components/{sid}", "/history?label=web0", "/faults?label=web0&stage=chip",
                 "/api/overview", f"/api/runs/{rid}", "/api/history", "/login"):
        text = client.get(path).text
        assert OPERATOR not in text and READER not in text, path


def test_the_run_pages_filter_form_treats_empty_fields_as_any(console, client):
    rid = console.run_ids["web0"]
    r = client.get(f"/runs/{rid}", params={"state": "", "fault": "", "rank": "", "host": ""}, headers=BEARER)
    assert r.status_code == 200 and r.text.count('class="component"') == 4
    r = client.get(f"/runs/{rid}", params={"state": "error", "fault": "5", "rank": "", "host": ""}, headers=BEARER)
    assert r.text.count('class="component"') == 1
    r = client.get(f"/runs/{rid}", params={"fault": "x"}, headers=BEARER)
    assert r.status_code == 422 and "fault &#39;x&#39; is not a whole number from 0 to 6" in r.text
