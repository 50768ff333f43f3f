"""Start a peer server that has no command line of its own (bjoern, meinheld, pyruvate).

`python launch.py SERVER PORT [THREADS]` serves `app:app` from this directory on
127.0.0.1:PORT. Where the server accepts a socket we bind it ourselves, so port 0
works and we print Siesta's ready line `Listening at: http://127.0.0.1:PORT (PID)`
on stderr; pyruvate takes only an address, so it needs a fixed free port and the
caller waits for it by connecting. SIGTERM stops the process (default action).
"""

import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from app import app  # noqa: E402


def _bound_socket(port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _ready(sock):
    port = sock.getsockname()[1]
    print(f"Listening at: http://127.0.0.1:{port} ({os.getpid()})", file=sys.stderr, flush=True)


def run_bjoern(port, _threads):
    import bjoern

    sock = _bound_socket(port)
    _ready(sock)
    bjoern.server_run(sock, app)


def run_meinheld(port, _threads):
    from meinheld import server

    sock = _bound_socket(port)
    server.set_listen_socket(sock.fileno())
    server.set_keepalive(75)
    server.set_max_content_length(2**31 - 1)  # default 16 MiB would refuse S3's upload
    _ready(sock)
    server.run(app)


def run_pyruvate(port, threads):
    import pyruvate

    pyruvate.serve(app, f"127.0.0.1:{port}", threads)


RUNNERS = {"bjoern": run_bjoern, "meinheld": run_meinheld, "pyruvate": run_pyruvate}


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in RUNNERS:
        print(f"usage: launch.py {{{','.join(RUNNERS)}}} PORT [THREADS]", file=sys.stderr)
        return 2
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    RUNNERS[sys.argv[1]](int(sys.argv[2]), threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
