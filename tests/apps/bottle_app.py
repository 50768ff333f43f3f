"""A Bottle app for the framework tests: route parameters, form POST and file upload.

Views answer JSON (Bottle serialises returned dicts) describing what Bottle parsed.
"""

import hashlib

import bottle

app = bottle.Bottle()


@app.get("/hello/<name>")
def hello(name):
    return f"hello {name}"


@app.post("/form")
def form():
    return {"form": {key: bottle.request.forms.getall(key) for key in bottle.request.forms}}


@app.post("/upload")
def upload():
    uploaded = bottle.request.files.get("file")
    data = uploaded.file.read()
    return {
        "filename": uploaded.raw_filename,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


@app.post("/raw")
def raw():
    data = bottle.request.body.read()
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
