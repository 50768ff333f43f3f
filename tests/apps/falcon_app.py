"""A Falcon WSGI app for the framework tests: JSON media, raw bounded stream, status.

`/items` stores and lists JSON items in memory, `/raw` hashes the body read from
req.bounded_stream, `/teapot` answers a custom status.
"""

import hashlib

import falcon


class Items:
    def __init__(self):
        self.items = []

    def on_get(self, req, resp):
        resp.media = {"items": self.items}

    def on_post(self, req, resp):
        self.items.append(req.get_media())
        resp.status = falcon.HTTP_201
        resp.media = {"count": len(self.items)}


class Raw:
    def on_post(self, req, resp):
        # Without Content-Length (chunked) only req.stream, the raw wsgi.input, has the body.
        stream = req.bounded_stream if req.content_length is not None else req.stream
        data = stream.read()
        resp.media = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


class Teapot:
    def on_get(self, req, resp):
        resp.status = falcon.HTTP_418
        resp.text = "short and stout"


app = falcon.App()
app.add_route("/items", Items())
app.add_route("/raw", Raw())
app.add_route("/teapot", Teapot())
