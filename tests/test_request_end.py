"""Issue 11/12: every response the server makes ends in one place, with an access-log line.

Answered by the app (200), failed by the app (500), refused by Siesta's own
checks (400 for a missing Host), refused by the HTTP parser (400 for a
malformed head), timed out before its head was complete (408), shed after --queue-timeout (503 with
Retry-After), in both modes: each appears in the access log with its status,
and each refusal also gets an error-log line naming the peer. Load shedding
recovers by itself once the app slots free up.
"""

import datetime
import json
import re
import threading
import time

from rawhttp import new_token


def access_line(srv, mark, needle, status):
    match = srv.stdout.wait_for(rf"{needle}.* {status} ", 10.0, since=mark)
    assert match is not None, f"no access line with {needle} {status}:\n{srv.stdout.text(mark)}"
    return match.string


def out_mark(srv):
    with srv.stdout.cond:
        return len(srv.stdout.lines)


def slow_mode_args(mode):
    # One app slot: one thread, or one greenlet.
    return ["--threads", "1"] if mode == "thread" else ["--worker-connections", "1"]


def test_every_response_is_logged(start_server, mode):
    srv = start_server("hold_app:app", "--access-logfile", "-", mode=mode)
    mark = out_mark(srv)
    assert srv.get("/ping?answered").status == 200
    access_line(srv, mark, "answered", 200)

    assert srv.get("/raise?failed").status == 500
    access_line(srv, mark, "failed", 500)

    err = srv.log_mark()
    with srv.connect() as conn:
        conn.send(b"GET /nohost?refused HTTP/1.1\r\n\r\n")
        assert conn.read_head()[2] == 400
    access_line(srv, mark, "refused", 400)
    assert srv.wait_log(
        r"400 GET /nohost\?refused from 127\.0\.0\.1:\d+: .*\[bad_host\]", since=err
    )

    with srv.connect() as conn:
        conn.send(b"GET /x HTTP/1.1\r\nHost: t\r\nBad Header Line\r\n\r\n")
        status = conn.read_head()[2]
    assert status == 400
    line = access_line(srv, mark, '"-"', 400)
    assert line.startswith("127.0.0.1 "), line
    assert srv.wait_log(r"400 request from 127\.0\.0\.1:\d+: malformed request head", since=err)
    srv.assert_serving()


def test_header_timeout_is_logged(start_server, mode):
    srv = start_server(
        "hold_app:app", "--access-logfile", "-", "--header-timeout", "0.5", mode=mode
    )
    mark = out_mark(srv)
    with srv.connect() as conn:
        conn.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n")  # never finished
        assert conn.read_head()[2] == 408
    access_line(srv, mark, '"-"', 408)
    srv.assert_serving()


def test_shedding_then_recovery(start_server, mode, tmp_path):
    srv = start_server(
        "hold_app:app",
        "--access-logfile",
        "-",
        "--queue-timeout",
        "0.5",
        *slow_mode_args(mode),
        mode=mode,
    )
    mark = out_mark(srv)
    tok, go = new_token(), "go-" + new_token()
    held = {}

    def hold():
        held["resp"] = srv.get(f"/hold?token={tok}&go={go}")

    holder = threading.Thread(target=hold)
    holder.start()
    assert srv.wait_records(f"held-{tok}") == ["held"], "the only slot is taken"
    shed = srv.get("/ping?shed")
    assert shed.status == 503
    assert shed.header("Retry-After") == "1"
    access_line(srv, mark, "shed", 503)
    (srv.record_dir / go).write_text("go\n")
    holder.join(30)
    assert held["resp"].status == 200 and held["resp"].body == b"released"
    recovered = srv.get("/ping?recovered")
    assert recovered.status == 200, "shedding ends once a slot is free"


def test_response_header_environ_and_percent_atoms(start_server, mode):
    """Probe (access log): %({x}o)s and %({PATH_INFO}e)s printed `-`, %% printed `%%`,
    and an unknown atom went by without a word. Now the response header and the environ
    variable are logged, %% is %, and the unknown atom is warned about once."""
    fmt = "%({CONTENT-type}o)s|%({PATH_INFO}e)s|%({query_string}e)s|%(U)s|100%%|%(zz)s|%(zz)s"
    srv = start_server(
        "router_app:app", "--access-logfile", "-", "--access-logformat", fmt, mode=mode
    )
    mark = out_mark(srv)
    assert srv.get("/ping?x=1").status == 200
    line = srv.stdout.wait_for(r"\|/ping\|", 10.0, since=mark)
    assert line is not None, srv.stdout.text(mark)
    assert line.string == "text/plain|/ping|x=1|/ping|100%|-|-", line.string
    warnings = [ln for ln in srv.log().splitlines() if "unknown atom" in ln]
    assert len(warnings) == 1 and "%(zz)s" in warnings[0], srv.log()


def test_repeated_headers_and_absolute_targets_are_logged_as_the_app_saw_them(start_server, mode):
    """QA (session 30): %({HTTP_X_FORWARDED_FOR}e)s logged only the last of two
    X-Forwarded-For fields, where the app saw both joined (a proxy chain's
    client lost from the log); %(r)s logged an absolute-form target without its
    scheme and host, so an open-proxy probe looked like a local request."""
    fmt = "%({HTTP_X_FORWARDED_FOR}e)s|%({HTTP_COOKIE}e)s|%({X-Forwarded-For}i)s|%(r)s"
    srv = start_server(
        "router_app:app", "--access-logfile", "-", "--access-logformat", fmt, mode=mode
    )
    mark = out_mark(srv)
    resp = srv.get(
        "/env",
        headers=[
            ("X-Forwarded-For", "1.1.1.1"),
            ("X-Forwarded-For", "2.2.2.2"),
            ("Cookie", "a=1"),
            ("Cookie", "b=2"),
        ],
    )
    env = json.loads(resp.body)["environ"]
    assert (env["HTTP_X_FORWARDED_FOR"], env["HTTP_COOKIE"]) == ("1.1.1.1,2.2.2.2", "a=1; b=2")
    line = srv.stdout.wait_for(r"GET /env HTTP/1.1$", 10.0, since=mark)
    assert line is not None, srv.stdout.text(mark)
    # The header atom keeps gunicorn's last value; the environ atom is the environ's.
    assert line.string == "1.1.1.1,2.2.2.2|a=1; b=2|2.2.2.2|GET /env HTTP/1.1", line.string
    mark = out_mark(srv)
    assert srv.get("http://example.com/ping?x=1").status == 200
    line = srv.stdout.wait_for(r"GET http://example.com/ping\?x=1 HTTP/1.1$", 10.0, since=mark)
    assert line is not None, srv.stdout.text(mark)
    # QA (session 36): a refused CONNECT's authority-form target was logged empty,
    # so `%(r)s` no longer split in three.
    mark = out_mark(srv)
    conn = srv.connect()
    try:
        conn.send(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        assert conn.read_head()[2] == 501
    finally:
        conn.close()
    line = srv.stdout.wait_for(r"\|CONNECT \S+ HTTP/1.1$", 10.0, since=mark)
    assert line is not None, srv.stdout.text(mark)
    assert line.string.endswith("|CONNECT example.com:443 HTTP/1.1"), line.string


def test_a_full_access_log_is_told_in_the_error_log(start_server, mode):
    """QA (session 30): access-log lines that could not be written (a full disk, a
    reader gone) were dropped without a word. The error log now says so, once per
    10 s with the count since, and requests are served on."""
    srv = start_server("router_app:app", "--access-logfile", "/dev/full", mode=mode)
    for _ in range(3):
        assert srv.get("/ping").status == 200
    said = srv.wait_log(r"\[ERROR\] Cannot write the access log to /dev/full: .*No space left")
    assert said, srv.log()
    time.sleep(1)  # the later requests' lines are tried after their responses: let them be
    assert srv.log().count("Cannot write the access log") == 1, srv.log()


def test_a_non_ascii_root_path_is_one_script_name_in_the_environ_and_the_log(start_server, mode):
    """Review (session 18): with --root-path /café, SCRIPT_NAME was '/cafÃ©' (the
    bytes a path matches it by, read as latin-1, as PEP 3333 has native strings) for
    a path under it and '/café' for the others, in the environ and in the access log's
    %({SCRIPT_NAME}e)s. It is the same latin-1 string for every path, in both."""
    fmt = "%(U)s|%({SCRIPT_NAME}e)s|%({PATH_INFO}e)s"
    srv = start_server(
        "router_app:app",
        "--root-path",
        "/café",
        "--access-logfile",
        "-",
        "--access-logformat",
        fmt,
        mode=mode,
    )
    want = "/café".encode().decode("latin-1")
    for target, path in (("/caf%C3%A9/env", "/env"), ("/env", "/env")):
        mark = out_mark(srv)
        resp = srv.get(target)
        assert resp.status == 200, resp
        env = json.loads(resp.body)["environ"]
        assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == (want, path)
        line = srv.stdout.wait_for(r"\|/env$", 10.0, since=mark)
        assert line is not None, srv.stdout.text(mark)
        # %(U)s is PATH_INFO, as gunicorn logs it (session 24; it was the raw path).
        assert line.string == f"{path}|{want}|{path}", line.string


def test_path_and_bytes_atoms_are_logged_as_gunicorn_logs_them(start_server, mode):
    """Session 24: %(U)s was the raw target's path, where gunicorn logs PATH_INFO
    (decoded, read as latin-1), and %(b)s was `-` for a response with no body,
    where gunicorn logs `0` (its docs say `-`; log parsers see what it writes)."""
    fmt = "%(m)s|%(U)s|%(b)s|%(B)s|%(s)s"
    srv = start_server(
        "router_app:app", "--access-logfile", "-", "--access-logformat", fmt, mode=mode
    )
    mark = out_mark(srv)
    assert srv.request("HEAD", "/ping").status == 200
    line = srv.stdout.wait_for(r"^HEAD\|", 10.0, since=mark)
    assert line is not None, srv.stdout.text(mark)
    assert line.string == "HEAD|/ping|0|0|200", line.string
    mark = out_mark(srv)
    resp = srv.get("/p%C3%A9%20x")
    line = srv.stdout.wait_for(r"^GET\|", 10.0, since=mark)
    assert line is not None, srv.stdout.text(mark)
    sent = len(resp.body)
    decoded = "/pé x".encode().decode("latin-1")
    assert line.string == f"GET|{decoded}|{sent}|{sent}|{resp.status}", line.string


def test_conversion_specs_pad_and_cut_atoms_as_gunicorn_does(start_server, mode):
    """QA probe (session 24): a width (`%(h)-15s`) made the rest of the line one
    unknown atom, logged as `-`; gunicorn formats the line with Python's `%`, so
    widths, precisions and `d` apply."""
    fmt = "[%(m)-6s]|%(U).3s|%(s)5s|%(B)06d|%(h)s"
    srv = start_server(
        "router_app:app", "--access-logfile", "-", "--access-logformat", fmt, mode=mode
    )
    mark = out_mark(srv)
    resp = srv.get("/ping")
    assert resp.status == 200
    line = srv.stdout.wait_for(r"^\[GET", 10.0, since=mark)
    assert line is not None, srv.stdout.text(mark)
    assert line.string == f"[GET   ]|/pi|  200|{len(resp.body):06d}|127.0.0.1", line.string
    assert "unknown atom" not in srv.log(), srv.log()


def test_the_time_atom_is_when_the_line_is_written(start_server, mode):
    """`%(t)s` was the time the request came in, where gunicorn stamps the
    time its line is written: a long request's line came out stamped before
    the lines of requests that ended earlier, which log stores that want
    lines in time order (Loki) reject. A request taking 1.2 s is now
    stamped no earlier than the second 1.2 s after it was sent."""
    fmt = "%(t)s|%(U)s"
    srv = start_server(
        "router_app:app", "--access-logfile", "-", "--access-logformat", fmt, mode=mode
    )
    mark = out_mark(srv)
    sent = time.time()
    assert srv.get("/write?n=2&delay=0.6").status == 200  # 1.2 s at least
    line = srv.stdout.wait_for(r"\|/write$", 10.0, since=mark)
    assert line is not None, srv.stdout.text(mark)
    stamp = line.string.split("|")[0]
    logged = datetime.datetime.strptime(stamp, "[%d/%b/%Y:%H:%M:%S %z]").timestamp()
    assert logged >= int(sent + 1.2), (stamp, sent)


def test_log_stamps_are_in_local_time_as_tz_says(start_server, mode):
    """QA (session 30): the error and access logs were stamped in UTC whatever TZ
    said, where gunicorn stamps local time (`+0530` under TZ=Asia/Kolkata), the time
    beside the app's own log lines. Both are stamped in local time now."""
    srv = start_server(
        "router_app:app", "--access-logfile", "-", mode=mode, env={"TZ": "Asia/Kolkata"}
    )
    mark = out_mark(srv)
    before = time.time()
    assert srv.get("/ping").status == 200
    line = srv.stdout.wait_for(r"GET /ping", 10.0, since=mark)
    assert line is not None, srv.stdout.text(mark)
    stamp = re.search(r"\[([^\]]+ \+0530)\]", line.string)
    assert stamp, line.string
    logged = datetime.datetime.strptime(stamp.group(1), "%d/%b/%Y:%H:%M:%S %z").timestamp()
    assert int(before) <= logged <= time.time() + 1, (stamp.group(1), before)
    started = re.search(r"^\[([^\]]+)\] \[\d+\] \[INFO\] Starting siesta", srv.log(), re.M)
    assert started and started.group(1).endswith(" +0530"), srv.log()
    logged = datetime.datetime.strptime(started.group(1), "%Y-%m-%d %H:%M:%S %z").timestamp()
    assert logged <= time.time() + 1
