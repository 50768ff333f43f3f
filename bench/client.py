"""Load client for every scenario that wrk cannot drive: uploads, downloads, rejects,
slow uploaders, slowloris and idle connections.

`python client.py MODE --port P [options]` talks raw HTTP/1.1 to 127.0.0.1:P and
prints one JSON object on stdout. One-shot modes (upload, bigupload, download,
reject) print it when done. Hold modes (slowup, slowloris, idle) open their
connections, print `READY {json}`, keep trickling until a line arrives on stdin
or --hold seconds pass, then print the final JSON. Every mode is bounded in
time and count; the client never talks to anything but 127.0.0.1.
"""

import argparse
import asyncio
import fcntl
import hashlib
import json
import os
import resource
import selectors
import shutil
import socket
import struct
import sys
import termios
import time

MIB = 1024 * 1024
HOST = "127.0.0.1"


def raise_nofile():
    """Lift the soft RLIMIT_NOFILE to the hard limit (hold modes open thousands of sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def post_head(path, length, expect=False):
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: bench",
        f"Content-Length: {length}",
        "Content-Type: application/octet-stream",
    ]
    if expect:
        lines.append("Expect: 100-continue")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse_head(raw):
    """(status, {lower-name: value}) from a response head without its final CRLFCRLF."""
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def read_response(reader, keep=True):
    """Read one final response (skipping 1xx): (status, headers, body or byte count)."""
    while True:
        status, headers = parse_head((await reader.readuntil(b"\r\n\r\n"))[:-4])
        if status >= 200:
            break
    parts, count = [], 0
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            data = await reader.readexactly(size)
            await reader.readexactly(2)
            count += size
            if keep:
                parts.append(data)
    elif "content-length" in headers:
        left = int(headers["content-length"])
        while left:
            data = await reader.read(min(left, MIB))
            if not data:
                raise ConnectionError(f"EOF with {left} body bytes missing")
            left -= len(data)
            count += len(data)
            if keep:
                parts.append(data)
    else:
        while data := await reader.read(MIB):
            count += len(data)
            if keep:
                parts.append(data)
    return status, headers, (b"".join(parts) if keep else count)


async def open_conn(port, timeout=5.0):
    return await asyncio.wait_for(asyncio.open_connection(HOST, port, limit=MIB), timeout)


def close_writer(writer):
    try:
        writer.transport.abort()
    except Exception:  # noqa: BLE001 - closing is best effort
        pass


# -- one-shot modes ---------------------------------------------------------------


async def mode_upload(args):
    """S2: `--count` uploads of `--size` bytes over `--concurrency` keep-alive connections."""
    body = os.urandom(args.size)
    expected = f"{args.size} {hashlib.sha256(body).hexdigest()}".encode()
    head = post_head("/upload", args.size)
    tickets = iter(range(args.count))
    stats = {"ok": 0, "bad": 0, "errors": 0, "reconnects": 0, "error_kinds": {}}

    async def worker():
        conn = None
        for _ in tickets:
            try:
                if conn is None:
                    conn = await open_conn(args.port)
                    stats["reconnects"] += 1
                reader, writer = conn
                writer.write(head)
                writer.write(body)
                await writer.drain()
                status, headers, answer = await asyncio.wait_for(read_response(reader), 30)
                good = status == 200 and answer.strip() == expected
                stats["ok" if good else "bad"] += 1
                if headers.get("connection", "").lower() == "close":
                    close_writer(conn[1])
                    conn = None
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as error:
                stats["errors"] += 1
                kind = type(error).__name__
                stats["error_kinds"][kind] = stats["error_kinds"].get(kind, 0) + 1
                if conn is not None:
                    close_writer(conn[1])
                conn = None
        if conn is not None:
            close_writer(conn[1])

    start = time.monotonic()
    await asyncio.wait_for(
        asyncio.gather(*(worker() for _ in range(args.concurrency))), args.timeout
    )
    elapsed = time.monotonic() - start
    stats["reconnects"] -= args.concurrency
    stats.update(
        elapsed_s=round(elapsed, 3), mib_per_s=round(stats["ok"] * args.size / MIB / elapsed, 1)
    )
    return stats


async def mode_bigupload(args):
    """S3: one upload of `--mib` MiB streamed in 1 MiB writes; checks the sha256 answer."""
    chunk = os.urandom(MIB)
    digest = hashlib.sha256()
    for _ in range(args.mib):
        digest.update(chunk)
    expected = f"{args.mib * MIB} {digest.hexdigest()}".encode()
    reader, writer = await open_conn(args.port)
    start = time.monotonic()
    answer = asyncio.ensure_future(read_response(reader))

    async def send():
        writer.write(post_head("/upload", args.mib * MIB))
        for _ in range(args.mib):
            if answer.done():
                return
            writer.write(chunk)
            await writer.drain()

    send_error = None
    try:
        try:
            await asyncio.wait_for(send(), args.timeout)
        except OSError as error:
            # The server may have answered (413 and close) before taking it all.
            send_error = f"{type(error).__name__}: {error}"
        try:
            status, _, body = await asyncio.wait_for(answer, 5 if send_error else args.timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as error:
            if not send_error:
                raise
            return {"error": f"{send_error}; no response ({type(error).__name__})"}
    finally:
        close_writer(writer)
    elapsed = time.monotonic() - start
    result = {
        "status": status,
        "ok": status == 200 and body.strip() == expected,
        "elapsed_s": round(elapsed, 3),
        "mib_per_s": round(args.mib / elapsed, 1),
    }
    if not result["ok"]:
        result["answer"] = body[:200].decode("latin-1")
    if send_error:
        result["send_error"] = send_error
    return result


async def mode_download(args):
    """S4: GET /stream?mib=N (or --path /file), read as fast as possible, check the length.

    With curl installed, curl downloads (to /dev/null): a client in C takes
    the bytes several times faster than this one can, so the rate is the
    server's, not the client's. Without it, this process reads them."""
    path = getattr(args, "path", "/stream")
    curl = shutil.which("curl")
    if curl:
        return await download_with_curl(curl, args, path)
    reader, writer = await open_conn(args.port)
    start = time.monotonic()
    try:
        writer.write(f"GET {path}?mib={args.mib} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        status, _, count = await asyncio.wait_for(read_response(reader, keep=False), args.timeout)
    finally:
        close_writer(writer)
    elapsed = time.monotonic() - start
    return {
        "status": status,
        "ok": status == 200 and count == args.mib * MIB,
        "bytes": count,
        "elapsed_s": round(elapsed, 3),
        "mib_per_s": round(count / MIB / elapsed, 1),
        "client": "python",
    }


async def download_with_curl(curl, args, path):
    """`mode_download` by curl: one GET, body to /dev/null, bounded by --timeout."""
    proc = await asyncio.create_subprocess_exec(
        curl,
        "--silent",
        "--show-error",
        "--output",
        "/dev/null",
        "--max-time",
        str(args.timeout),
        "--header",
        "Host: bench",
        "--write-out",
        "%{http_code} %{size_download} %{time_total}",
        f"http://{HOST}:{args.port}{path}?mib={args.mib}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    try:
        status, count, elapsed = out.decode().split()
        status, count, elapsed = int(status), int(count), float(elapsed)
    except ValueError:
        return {"ok": False, "error": err.decode(errors="replace").strip()[:200]}
    return {
        "status": status,
        "ok": proc.returncode == 0 and status == 200 and count == args.mib * MIB,
        "bytes": count,
        "elapsed_s": round(elapsed, 3),
        "mib_per_s": round(count / MIB / max(elapsed, 1e-6), 1),
        "client": "curl",
    }


def unacked(sock):
    """Bytes still in our send queue (not yet acknowledged by the server's kernel)."""
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    except OSError:
        return 0


def mode_reject(args):
    """S5: declare `--mib` MiB to /reject, push body bytes until a response or close.

    With --expect the head carries `Expect: 100-continue` and the body is sent
    only after a `100 Continue` (or after 1 s of silence, as curl does).
    """
    total = args.mib * MIB
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, args.sndbuf)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(5)
    sock.connect((HOST, args.port))
    sock.sendall(post_head("/reject", total, args.expect))
    start = time.monotonic()
    sock.setblocking(False)
    selector = selectors.DefaultSelector()
    block = memoryview(b"x" * 65536)
    result = {
        "expect": args.expect,
        "declared": total,
        "sndbuf": sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
        "got_100": False,
        "status": None,
        "body_bytes_sent": 0,
        "time_to_response_ms": None,
        "connection_close_header": None,
        "connection": None,
        "note": "",
    }
    sending = not args.expect
    selector.register(sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if sending else 0))
    buffer, sent, ended, headers = b"", 0, None, {}
    deadline = start + args.timeout
    while result["status"] is None and ended is None and time.monotonic() < deadline:
        if args.expect and not sending and time.monotonic() - start > 1.0:
            sending = True
            result["note"] = "no answer within 1 s, sent body anyway"
            selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        for _, mask in selector.select(timeout=0.1):
            if mask & selectors.EVENT_READ:
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    data = None
                except ConnectionResetError:
                    ended = "reset before response"
                    break
                if data is None:
                    pass
                elif not data:
                    ended = "closed before response"
                    break
                else:
                    buffer += data
                while b"\r\n\r\n" in buffer:
                    raw, buffer = buffer.split(b"\r\n\r\n", 1)
                    status, headers = parse_head(raw)
                    if status == 100:
                        result["got_100"] = True
                        if not sending:
                            sending = True
                            selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
                    elif status >= 200:
                        result["status"] = status
                        result["time_to_response_ms"] = round((time.monotonic() - start) * 1000, 1)
                        break
            if mask & selectors.EVENT_WRITE and result["status"] is None and sent < total:
                try:
                    sent += sock.send(block[: min(len(block), total - sent)])
                except BlockingIOError:
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    ended = "reset while sending"
                    break
                if sent >= total:
                    selector.modify(sock, selectors.EVENT_READ)
    result["body_bytes_sent"] = sent
    result["body_bytes_acked"] = sent - unacked(sock)
    if result["status"] is None and ended:
        # A reset can follow a response we have not read yet: the kernel still holds it.
        try:
            buffer += sock.recv(65536)
        except OSError:
            pass
        if b"\r\n\r\n" in buffer:
            status, headers = parse_head(buffer.split(b"\r\n\r\n", 1)[0])
            if status >= 200:
                result["status"] = status
                result["note"] = f"response read after: {ended}"
    if result["status"] is not None:
        result["connection_close_header"] = headers.get("connection", "").lower() == "close"
        # Stop sending; does the server close the connection or keep waiting for the body?
        selector.modify(sock, selectors.EVENT_READ)
        ended = "open after 3 s"
        until = time.monotonic() + 3.0
        while time.monotonic() < until:
            if not selector.select(timeout=0.1):
                continue
            try:
                if not sock.recv(65536):
                    ended = "closed"
                    break
            except BlockingIOError:
                continue
            except ConnectionResetError:
                ended = "reset"
                break
    result["connection"] = ended or "no response before timeout"
    selector.close()
    sock.close()
    return result


# -- hold modes -------------------------------------------------------------------


class Holder:
    """Opens `count` connections that each send `first` then `drip` every `every` s."""

    def __init__(self, args, first, drip, read_reply):
        self.args, self.first, self.drip, self.read_reply = args, first, drip, read_reply
        self.stats = {
            "wanted": args.count,
            "connected": 0,
            "connect_errors": 0,
            "answered": 0,
            "statuses": {},
            "closed_by_server": 0,
            "reset": 0,
        }
        self.stop = asyncio.Event()
        self.writers = []

    async def one(self, gate):
        async with gate:
            try:
                reader, writer = await open_conn(self.args.port, self.args.connect_timeout)
            except (TimeoutError, OSError):
                self.stats["connect_errors"] += 1
                return None
        self.stats["connected"] += 1
        self.writers.append(writer)
        writer.write(self.first)
        if self.read_reply:
            try:
                status, _, _ = await asyncio.wait_for(
                    read_response(reader), self.args.connect_timeout
                )
                self.stats["answered"] += 1
                self.stats["statuses"][str(status)] = self.stats["statuses"].get(str(status), 0) + 1
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                pass
        return reader, writer

    async def watch(self, reader, writer):
        """Trickle until stopped; note a response, a close or a reset from the server."""

        async def listen():
            try:
                data = await reader.read(65536)
            except OSError:
                self.stats["reset"] += 1
                return
            if not data:
                self.stats["closed_by_server"] += 1
            elif data.startswith(b"HTTP/1."):
                code = data.split()[1].decode()
                self.stats["statuses"][code] = self.stats["statuses"].get(code, 0) + 1

        listener = asyncio.ensure_future(listen())
        while not self.stop.is_set() and not listener.done():
            try:
                await asyncio.wait_for(self.stop.wait(), self.args.every)
            except TimeoutError:
                pass
            if self.drip and not self.stop.is_set() and not listener.done():
                try:
                    writer.write(self.drip)
                except OSError:
                    break
        listener.cancel()

    async def run(self):
        gate = asyncio.Semaphore(self.args.connect_concurrency)
        start = time.monotonic()
        opened = await asyncio.gather(*(self.one(gate) for _ in range(self.args.count)))
        self.stats["setup_s"] = round(time.monotonic() - start, 2)
        watchers = [asyncio.ensure_future(self.watch(*conn)) for conn in opened if conn]
        await asyncio.sleep(self.args.settle)
        print("READY " + json.dumps(self.stats), flush=True)
        loop = asyncio.get_running_loop()
        line = loop.run_in_executor(None, sys.stdin.readline)
        try:
            await asyncio.wait_for(asyncio.shield(line), self.args.hold)
        except TimeoutError:
            self.stats["note"] = "hold expired before stop"
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*watchers, return_exceptions=True), 10)
        for writer in self.writers:
            close_writer(writer)
        return self.stats


async def mode_slowup(args):
    """S6/S8: POST /upload heads declaring 1 MiB, `--initial` body bytes, then a drip."""
    first = post_head("/upload", MIB) + b"x" * args.initial
    return await Holder(args, first, b"x" * args.drip, read_reply=False).run()


async def mode_slowloris(args):
    """S7: a request line and then one more header line every `--every` s, never ending."""
    first = b"GET / HTTP/1.1\r\nHost: bench\r\n"
    return await Holder(args, first, b"X-Slow: loris\r\n", read_reply=False).run()


async def mode_idle(args):
    """S8: one GET / per connection, then the connection stays open and silent."""
    first = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    return await Holder(args, first, b"", read_reply=True).run()


MODES = {
    "upload": mode_upload,
    "bigupload": mode_bigupload,
    "download": mode_download,
    "reject": mode_reject,
    "slowup": mode_slowup,
    "slowloris": mode_slowloris,
    "idle": mode_idle,
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=120.0, help="bound on a one-shot mode")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--size", type=int, default=MIB)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--path", default="/stream", help="download: /stream or /file")
    parser.add_argument("--expect", action="store_true")
    parser.add_argument(
        "--sndbuf",
        type=int,
        default=65536,
        help="SO_SNDBUF asked (Linux doubles it; 32 KiB or less stalls loopback)",
    )
    parser.add_argument("--initial", type=int, default=0, help="body bytes sent with the head")
    parser.add_argument("--drip", type=int, default=4, help="bytes sent every --every s")
    parser.add_argument("--every", type=float, default=1.0)
    parser.add_argument("--hold", type=float, default=60.0, help="bound on a hold mode")
    parser.add_argument("--settle", type=float, default=1.0)
    parser.add_argument("--connect-timeout", type=float, default=3.0)
    parser.add_argument("--connect-concurrency", type=int, default=500)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    raise_nofile()
    mode = MODES[args.mode]
    try:
        result = mode(args) if args.mode == "reject" else asyncio.run(mode(args))
    except Exception as error:  # noqa: BLE001 - the caller records the failure
        result = {"error": f"{type(error).__name__}: {error}"}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
