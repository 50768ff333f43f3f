"""A client that goes away (or stalls) mid-body: the app sees an exception, not EOF.

The client sends the head and part of the body, then closes; the app
(body_app.catch_disconnect) reads in 1000-byte pieces and records that it caught
siesta.ClientDisconnected (an OSError) after all bytes that did arrive.  With
--body-timeout a stalled client gives siesta.ClientTimeout instead.  The server
keeps serving in both cases.
"""

import re
import signal
import socket
import struct

import rawhttp
from rawhttp import new_token


def partial_upload(conn, target, sent=5000):
    """Sends a POST head declaring 100,000 bytes, and `sent` of them."""
    conn.send(rawhttp.build_request("POST", target, [("Content-Length", "100000")]))
    conn.send(b"d" * sent)


def assert_refused(srv, conn, mark, status, line):
    """The answer on `conn` is `status` with the connection closed, and the log
    since `mark` has `line` and no traceback."""
    resp = conn.read_response("POST")
    assert resp.status == status, resp
    assert resp.has_token("Connection", "close"), resp
    assert conn.read_to_eof() == b""
    assert srv.wait_log(line, since=mark), srv.log(mark)
    assert "Traceback" not in srv.log(mark), srv.log(mark)


def test_client_disconnect_mid_body_raises_client_disconnected(server):
    token = new_token()
    with server.connect() as conn:
        conn.send(
            rawhttp.build_request(
                "POST", f"/disconnect?token={token}", [("Content-Length", "100000")]
            )
        )
        conn.send(b"d" * 5000)
    records = server.wait_records(f"disconnect-{token}")
    assert records == ["ClientDisconnected reset=True read=5000"], records
    server.assert_serving()


def test_client_disconnect_mid_chunked_body(server):
    token = new_token()
    with server.connect() as conn:
        conn.send(
            rawhttp.build_request(
                "POST", f"/disconnect?token={token}", [("Transfer-Encoding", "chunked")]
            )
        )
        conn.send(rawhttp.chunk(b"d" * 3000))
    records = server.wait_records(f"disconnect-{token}")
    assert records == ["ClientDisconnected reset=True read=3000"], records
    server.assert_serving()


def test_client_reset_mid_body(server):
    """An abortive close (RST) is a disconnect too."""
    token = new_token()
    conn = server.connect()
    conn.send(
        rawhttp.build_request("POST", f"/disconnect?token={token}", [("Content-Length", "100000")])
    )
    conn.send(b"d" * 2000)
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
    records = server.wait_records(f"disconnect-{token}")
    assert len(records) == 1 and records[0].startswith("ClientDisconnected reset=True"), records
    server.assert_serving()


def test_complete_body_reads_to_eof(server):
    token = new_token()
    resp = server.request("POST", f"/disconnect?token={token}", body=b"d" * 4321)
    assert resp.status == 200
    assert server.wait_records(f"disconnect-{token}") == ["eof read=4321"]


def test_stalled_client_raises_client_timeout(start_server, mode):
    srv = start_server("router_app:app", "--body-timeout", "1", mode=mode)
    token = new_token()
    with srv.connect() as conn:
        conn.send(
            rawhttp.build_request(
                "POST", f"/disconnect?token={token}", [("Content-Length", "100000")]
            )
        )
        conn.send(b"d" * 1000)
        records = srv.wait_records(f"disconnect-{token}", timeout=15)
    assert records == ["ClientTimeout oserror=True timeouterror=True read=1000"], records
    srv.assert_serving()


def test_an_app_that_catches_client_timeout_answers_with_connection_close(start_server, mode):
    """The app catches siesta.ClientTimeout and answers itself: the client is
    stalled mid-body, so the connection cannot carry another request, and the
    head says so (it was closed after the response without a word)."""
    srv = start_server("router_app:app", "--body-timeout", "1", mode=mode)
    token = new_token()
    with srv.connect() as conn:
        conn.send(
            rawhttp.build_request("POST", f"/disconnect?token={token}", [("Content-Length", "40")])
        )
        conn.send(b"abc")
        resp = conn.read_response()
        assert resp.status == 200, resp
        assert resp.has_token("Connection", "close"), resp.headers
        assert conn.wait_closed()
    assert srv.wait_records(f"disconnect-{token}")[0].startswith("ClientTimeout"), srv.log()
    srv.assert_serving()


def test_a_client_timeout_the_app_lets_through_is_answered_408(start_server, mode):
    """A body stalled past --body-timeout, with the app letting
    siesta.ClientTimeout propagate, was answered 500 and logged as the app's
    error with a traceback. It is the client's doing: 408, the connection
    closed, and one line naming the refusal."""
    srv = start_server("router_app:app", "--body-timeout", "1", mode=mode)
    mark = srv.log_mark()
    with srv.connect() as conn:
        partial_upload(conn, "/sha256", 1000)
        assert_refused(srv, conn, mark, 408, r"408 POST /sha256 from .*\[body_timeout\]")
    srv.assert_serving()


def test_an_app_that_lets_client_disconnected_through_logs_one_line(server):
    """Operator probe (session 17): an app that does not catch siesta.ClientDisconnected
    (here body_app.sha256, reading to the end) logged an ERROR traceback whenever a
    client went away mid-upload: noise for the client's doing. One line now names
    the request, and no traceback; since session 24 it is the refusal's line (the
    request was counted and access-logged as the app's 500 before)."""
    before = server.log_mark()
    with server.connect() as conn:
        partial_upload(conn, "/sha256?gone=1")
    assert server.wait_log(
        r"400 POST /sha256\?gone=1 from .*: client disconnected before the request body "
        r"was complete \[client_disconnected\]",
        since=before,
    ), server.log(before)
    server.assert_serving()
    assert "Traceback" not in server.log(before), server.log(before)


def test_a_body_cut_short_by_a_half_close_is_answered_400(start_server, mode):
    """Session 24: a client that sent part of a declared body, then half-closed
    (shutdown(SHUT_WR)) and waited, got a 500 when the app let
    siesta.ClientDisconnected through, and the access log and metrics counted it
    as the app's error. The body ended short: 400, the connection closed, logged
    as the client's doing."""
    srv = start_server("router_app:app", mode=mode)
    mark = srv.log_mark()
    with srv.connect() as conn:
        partial_upload(conn, "/sha256?half=1")
        conn.sock.shutdown(socket.SHUT_WR)
        assert_refused(srv, conn, mark, 400, r"\[client_disconnected\]")
    srv.assert_serving()


def test_a_body_read_cut_by_the_stop_is_logged_as_the_stops_doing(start_server, mode):
    """Session 24: when a stop's --graceful-timeout ran out with an app reading
    a trickling upload, the cut read was logged as "Client went away" and
    counted as the app's 500. The stop did it: a warning that says so, a 503
    in the access log, and no traceback."""
    srv = start_server(
        "router_app:app", "--graceful-timeout", "1", "--access-logfile", "-", mode=mode
    )
    srv.assert_serving()  # booted: a TERM now stops a serving worker
    mark = srv.log_mark()
    with srv.connect() as conn:
        partial_upload(conn, "/sha256?cut=1", 1000)
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(20) == 0
    srv.stop()
    log = srv.log(mark)
    access = srv.stdout.text()
    assert re.search(
        r"\[WARNING\] 503 POST /sha256\?cut=1 from .*: connection cut by the stop "
        r"\(--graceful-timeout ran out, or INT/QUIT\) \[cut_by_stop\]",
        log,
    ), log
    assert re.search(r'"POST /sha256\?cut=1 HTTP/1.1" 503 ', access), access
    assert "Client went away" not in log and "Traceback" not in log, log


def test_a_client_gone_during_write_is_one_line(server):
    """QA probe (session 24): an app writing its response with write() whose
    client left got siesta.ClientDisconnected from write(), as it should; let
    through, it was logged at ERROR with a traceback, for every aborted
    download. One info line now, as for a read (a generator's client that
    leaves is not logged at all)."""
    mark = server.log_mark()
    with server.connect() as conn:
        conn.send(rawhttp.build_request("GET", "/write?n=4000&block=65536&token=wgone"))
        assert conn.read_head()[2] == 200
        conn.read_exact(1 << 20)
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert server.wait_log(
        r"\[INFO\] Client went away while the app wrote the response to /write\?n=4000",
        since=mark,
    ), server.log(mark)
    server.assert_serving()
    assert "Traceback" not in server.log(mark), server.log(mark)
