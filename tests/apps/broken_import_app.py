"""An app module whose import fails on a missing dependency (for CLI exit-code tests).

Loading `broken_import_app:app` must make siesta exit 4 with one line naming
`missing_dependency_zq`, not a traceback.
"""

import missing_dependency_zq  # noqa: F401 - deliberately not installed


def app(environ, start_response):
    start_response("200 OK", [])
    return [b"unreachable"]
