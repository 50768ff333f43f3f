"""The configurations of docs/deploy.md, as the tests run them.

Each block in the page is preceded by `<!-- config: NAME -->`; `config(NAME)`
returns its text, and the helpers below change only its addresses (the
page's `127.0.0.1:8000`, unix socket paths and `listen 80`/`bind :80`) to
the ones a test uses, plus nginx's `$scheme`, which is `https` behind TLS
and stands in for it here. Anything else in a block runs as written, so
the page cannot drift from what is tested.
"""

import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "deploy.md"
BLOCK = re.compile(r"<!-- config: ([a-z0-9-]+) -->\n```[a-z]*\n(.*?)```", re.S)
SIESTA_ADDR = "127.0.0.1:8000"


def configs():
    """Every named block of docs/deploy.md."""
    return dict(BLOCK.findall(DOC.read_text("utf-8")))


def config(name):
    blocks = configs()
    assert name in blocks, f"docs/deploy.md has no <!-- config: {name} --> block"
    return blocks[name]


def _replace(text, old, new):
    assert old in text, f"{old!r} is not in the block any more"
    return text.replace(old, new)


def nginx_site(block, upstream, proxy_bind=None, listen="{listen0}"):
    """An nginx `http` block's site with Siesta at `upstream` (`HOST:PORT` or
    `unix:PATH`); `proxy_bind` makes nginx connect from that address."""
    if upstream.startswith("unix:"):
        unix = config("nginx-unix")
        old_upstream = re.search(r"upstream siesta \{.*?\n\}", block, re.S)
        assert old_upstream, "no upstream block"
        block = block.replace(old_upstream.group(0), unix.strip())
        block = _replace(block, "unix:/run/siesta/siesta.sock", upstream)
    else:
        block = _replace(block, f"server {SIESTA_ADDR};", f"server {upstream};")
    block = _replace(block, "listen 80;", f"listen {listen};")
    block = _replace(block, "$scheme", "https")
    if proxy_bind:
        block = _replace(
            block,
            "proxy_pass http://siesta;",
            f"proxy_pass http://siesta;\n        proxy_bind {proxy_bind};",
        )
    return block


def nginx_rolling(block, sockets):
    """The rolling-deploy site with the test's two unix sockets."""
    block = _replace(block, "unix:/run/siesta/a.sock", f"unix:{sockets[0]}")
    block = _replace(block, "unix:/run/siesta/b.sock", f"unix:{sockets[1]}")
    block = _replace(block, "listen 80;", "listen {listen0};")
    return _replace(block, "$scheme", "https")


def nginx_stream(block, upstream):
    block = _replace(block, f"proxy_pass {SIESTA_ADDR};", f"proxy_pass {upstream};")
    return _replace(block, "listen 80;", "listen {listen0};")


def haproxy(block, upstream):
    block = _replace(block, f" {SIESTA_ADDR} ", f" {upstream} ")
    return _replace(block, "bind :80", "bind {listen0}")
