"""An app that logs through gunicorn's `gunicorn.error` logger, as many apps
written for gunicorn do (its handlers handed to the app's own logger)."""

import logging

error_log = logging.getLogger("gunicorn.error")
app_log = logging.getLogger("gunicorn_logger_app")
app_log.handlers = error_log.handlers
app_log.setLevel(error_log.level)
app_log.propagate = False


def app(environ, start_response):
    app_log.info("app info: %d handler(s), level %d", len(error_log.handlers), error_log.level)
    app_log.debug("app debug")
    app_log.warning("app warning")
    try:
        {}["missing"]
    except KeyError:
        app_log.exception("app exception")
    error_log.info("straight to gunicorn.error")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"logged\n"]
