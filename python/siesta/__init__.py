"""Siesta: a WSGI server whose ``wsgi.input.read()`` puts one request to sleep, not a thread.

The HTTP server, the WSGI environ, ``wsgi.input`` and response streaming are
written in Rust (``siesta._siesta``); this package holds the command line,
the settings table, app loading and the gevent hub loop. Apps may catch
:class:`ClientDisconnected`, :class:`ClientTimeout` and :class:`RequestTooLarge`
(``--limit-request-body``) around body reads.
"""

from siesta._siesta import ClientDisconnected, ClientTimeout, RequestTooLarge, __version__

__all__ = ["ClientDisconnected", "ClientTimeout", "RequestTooLarge", "__version__"]
