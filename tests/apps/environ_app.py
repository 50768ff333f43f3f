"""Apps that show the test what environ the server built.

`dump` answers with the environ as JSON (values plus their type names, the
methods of wsgi.input/wsgi.errors, selected os.environ keys via ?osenv=NAME) and
can read the body (?read=1) or write to wsgi.errors (?errors=TEXT).  `validated`
is an app wrapped in wsgiref.validate.validator, with its warnings made errors,
so any PEP 3333 violation by the server turns into a 500.
"""

import json
import os
import warnings
from wsgiref.validate import WSGIWarning, validator

from records import params

warnings.filterwarnings("error", category=WSGIWarning)


def _jsonable(value):
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return repr(type(value))


def _methods(obj):
    names = ["read", "readline", "readlines", "__iter__", "write", "writelines", "flush"]
    return [name for name in names if callable(getattr(obj, name, None))]


def dump(environ, start_response):
    query = params(environ)
    result = {
        "environ": {k: _jsonable(v) for k, v in environ.items()},
        "types": {k: type(v).__name__ for k, v in environ.items()},
        "environ_is_dict": type(environ) is dict,
        "input_methods": _methods(environ.get("wsgi.input")),
        "errors_methods": _methods(environ.get("wsgi.errors")),
        "file_wrapper_callable": callable(environ.get("wsgi.file_wrapper")),
    }
    if "osenv" in query:
        result["osenv"] = os.environ.get(query["osenv"])
    if query.get("read") == "1":
        result["body"] = environ["wsgi.input"].read().decode("latin-1")
    if "errors" in query:
        environ["wsgi.errors"].write(query["errors"] + "\n")
        environ["wsgi.errors"].flush()
    body = json.dumps(result).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def _inner(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    stream = environ["wsgi.input"]
    data = stream.read(length) if length else b""
    extra = stream.read(1)  # past the end: must be b"" at once
    environ["wsgi.errors"].write("validated app ran\n")
    body = b"validated:" + data + extra
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


validated = validator(_inner)
