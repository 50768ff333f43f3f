"""A Flask app for the framework tests: form, file upload, JSON and a streamed response.

Each view answers JSON describing what Flask parsed from the request, so the test
can compare it with what it sent through Siesta.
"""

import hashlib

from flask import Flask, Response, jsonify, request

app = Flask(__name__)


@app.get("/hello")
def hello():
    return "hello from flask"


@app.post("/form")
def form():
    return jsonify(form=request.form.to_dict(flat=False))


@app.post("/upload")
def upload():
    uploaded = request.files["file"]
    data = uploaded.read()
    return jsonify(
        filename=uploaded.filename,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        form=request.form.to_dict(),
    )


@app.post("/json")
def json_echo():
    return jsonify(received=request.get_json())


@app.get("/stream")
def stream():
    count = int(request.args.get("count", 5))

    def generate():
        for i in range(count):
            yield f"line {i}\n"

    return Response(generate(), mimetype="text/plain")
