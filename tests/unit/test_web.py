"""The console's pure parts: tokens, the login cookie, CSRF, the [web] config section, the
overview's sums and link colours, the plot, where a form may send a person back to."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the [web] extra is not installed")

from scbundle.core.config import WebSettings, config_from_dict, embedded_default  # noqa: E402
from scbundle.core.errors import ConfigError  # noqa: E402
from scbundle.web.app import _safe_back  # noqa: E402
from scbundle.web.auth import Keyring, Principal  # noqa: E402
from scbundle.web.svg import done_svg  # noqa: E402
from scbundle.web.views import link_level, stage_rows  # noqa: E402

OP, RD = "o" * 20, "r" * 20


def ring(**env: str) -> Keyring:
    return Keyring.from_settings(WebSettings.model_validate({"token": OP, "users": {"rita": {"token": RD}}}), env=env)


def test_tokens_name_their_principal_and_role():
    k = ring()
    assert k.by_token(OP) == Principal("operator", "operator")
    assert k.by_token(RD) == Principal("rita", "reader") and not k.by_token(RD).may_act
    assert k.by_token(OP[:-1]) is None and k.by_token("") is None
    env = ring(SCBUNDLE_WEB_TOKEN="e" * 20)
    assert env.by_token("e" * 20) == Principal("operator", "operator") and env.by_token(OP) is None


def test_the_cookie_is_refused_when_tampered_expired_or_its_token_changed():
    k = ring()
    c = k.cookie_for(Principal("rita", "reader"), now=1000.0)
    assert k.by_cookie(c, now=1001.0) == Principal("rita", "reader")
    name, exp, mac = c.rsplit(".", 2)
    assert k.by_cookie(f"operator.{exp}.{mac}", now=1001.0) is None  # another name, same mac
    assert k.by_cookie(f"{name}.{int(exp) + 10**6}.{mac}", now=1001.0) is None  # a later expiry
    assert k.by_cookie(c, now=float(exp) + 1) is None  # expired
    assert k.by_cookie("garbage", now=1001.0) is None and k.by_cookie("a.b", now=1001.0) is None
    changed = Keyring.from_settings(WebSettings.model_validate({"token": OP, "users": {"rita": {"token": "x" * 20}}}), env={})
    assert changed.by_cookie(c, now=1001.0) is None  # a new token ends the old sessions


def test_csrf_is_bound_to_the_session():
    k = ring()
    a, b = k.cookie_for(Principal("operator", "operator")), k.cookie_for(Principal("rita", "reader"))
    assert k.csrf_ok(a, k.csrf_for(a)) and not k.csrf_ok(a, k.csrf_for(b))
    assert not k.csrf_ok(a, None) and not k.csrf_ok(a, "")


@pytest.mark.parametrize(
    "web, says",
    [
        ({"token": "short"}, "web.token: a web token needs at least 16 characters"),
        ({"token": OP, "users": {"a b": {"token": RD}}}, "web user names are"),
        ({"token": OP, "users": {"rita": {"token": OP}}}, "two web users share a token"),
        ({"users": {"rita": {"token": RD, "role": "admin"}}}, "web.users.rita.role"),
        ({"tokens": OP}, "unknown key 'web.tokens'"),
    ],
)
def test_the_web_section_is_strict_and_never_quotes_a_token(web, says):
    with pytest.raises(ConfigError) as e:
        config_from_dict({**embedded_default(), "web": web}, "t.toml")
    assert says in str(e.value) and OP not in str(e.value) and RD not in str(e.value)


def test_no_token_at_all_is_one_line_saying_how_to_set_one():
    with pytest.raises(ConfigError, match=r"set \[web\] token in the config or \$SCBUNDLE_WEB_TOKEN"):
        Keyring.from_settings(WebSettings(), env={})
    with pytest.raises(ConfigError, match="SCBUNDLE_WEB_TOKEN: a web token needs at least 16"):
        Keyring.from_settings(WebSettings(), env={"SCBUNDLE_WEB_TOKEN": "abc"})


def test_stage_rows_sum_runs_per_label_and_stage():
    runs = [
        {"remote_id": 1, "label": "a", "stage": "chip", "state": "full", "njobs": 5, "ngood": 5, "nfail": 0, "npending": 0, "nabandoned": 0},
        {"remote_id": 2, "label": "a", "stage": "chip", "state": "error", "njobs": 4, "ngood": 1, "nfail": 3, "npending": 0, "nabandoned": 1},
        {"remote_id": 3, "label": "a", "stage": "cam", "state": "new", "njobs": 2, "ngood": 0, "nfail": 0, "npending": 2, "nabandoned": 0},
    ]
    rows = stage_rows(runs, {2: {5: 2, 2: 1}})
    assert [(r.label, r.stage, r.runs, r.njobs, r.ngood, r.nfail, r.npending, r.nabandoned, r.faults) for r in rows] == [
        ("a", "cam", {"new": 1}, 2, 0, 0, 2, 0, {}),
        ("a", "chip", {"full": 1, "error": 1}, 9, 6, 3, 0, 1, {5: 2, 2: 1}),
    ]


def test_link_colours():
    assert link_level(True, 5 * 3600, 0) == "ok"
    assert link_level(True, 1800, 0) == "warn"  # the last hour before the drop
    assert link_level(False, None, 0) == "down"
    assert link_level(False, None, 3) == "red"  # down with runs parked in auth
    assert link_level(None, None, 1) == "red"


def test_the_plot_draws_each_stage_and_escapes_names():
    svg = done_svg({"chip": [("2026-01-01 00:00:00", 3), ("2026-01-01 01:00:00", 7)], "<x>": [("2026-01-01 00:30:00", 1)]})
    assert svg.startswith("<svg") and svg.count("<path") == 2 and "chip: 7" in svg and "&lt;x&gt;: 1" in svg and "<x>" not in svg
    assert "no components done yet" in done_svg({})


@pytest.mark.parametrize("back, to", [("/runs/3?x=1", "/runs/3?x=1"), ("//evil.example/", "/"), ("https://evil.example/", "/"),
                                      ("/\\evil", "/"), ("", "/"), (None, "/"), ("runs", "/")])
def test_a_form_sends_back_only_to_this_server(back, to):
    assert _safe_back(back) == to


def test_a_components_record_and_its_rank_log_lines(tmp_path):
    from scbundle.web.views import _rank_log, _rank_record

    (tmp_path / "results").mkdir()
    (tmp_path / "logs").mkdir()
    (tmp_path / "results" / "rank-00002.jsonl").write_text(
        '{"index": 6, "exit": 0}\nnot json\n{"index": 7, "exit": 5, "phase": "command", "error": "bad input"}\n')
    (tmp_path / "logs" / "rank-00002.log").write_text(
        "=== 10:00 index 6 stage_id 16 attempt 1 command\nok\n=== exit 0 after 0.1s\n"
        "=== 10:01 index 7 stage_id 17 attempt 1 command\n--- stderr ---\nbad input\n=== exit 5 after 0.2s\n"
        "=== 10:01 index 7 stage_id 17 attempt 2 command\nbad input\n=== exit 5 after 0.2s\n"
        "=== 10:02 index 17 stage_id 27 attempt 1 command\nother\n")  # index 17 is not index 7
    assert _rank_record(tmp_path, 2, 7) == {"index": 7, "exit": 5, "phase": "command", "error": "bad input"}
    assert _rank_record(tmp_path, 2, 8) is None and _rank_record(tmp_path, 3, 7) is None
    lines = _rank_log(tmp_path, 2, 7)
    assert lines[0].startswith("=== 10:01 index 7 ") and "attempt 2" in lines[4] and lines[-1] == "=== exit 5 after 0.2s"
    assert not any("other" in x or "ok" == x for x in lines)
    assert _rank_log(tmp_path, 9, 7) is None
