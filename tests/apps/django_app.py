"""A single-file Django project for the framework tests.

Settings, URLs and views live here (ROOT_URLCONF is this module): a CSRF-exempt
form POST, a file upload through request.FILES, and a view that writes to and
counts rows in a SQLite database kept in the test's record directory (for
concurrency tests).  `application` is the WSGI callable.
"""

import hashlib
import os
import tempfile

import django
from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

DATA_DIR = os.environ.get("WSGI_TEST_RECORD_DIR") or tempfile.mkdtemp(prefix="django-app-")

settings.configure(
    DEBUG=False,
    SECRET_KEY="siesta-tests-not-secret",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
    ],
    INSTALLED_APPS=[],
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.path.join(DATA_DIR, "django.sqlite3"),
            "OPTIONS": {"timeout": 20},
        }
    },
    USE_TZ=True,
)
django.setup()


def hello(request):
    return HttpResponse("hello from django", content_type="text/plain")


@csrf_exempt
def form(request):
    return JsonResponse({"method": request.method, "form": dict(request.POST.lists())})


@csrf_exempt
def upload(request):
    uploaded = request.FILES["file"]
    data = uploaded.read()
    return JsonResponse(
        {
            "filename": uploaded.name,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "form": request.POST.dict(),
        }
    )


@csrf_exempt
def hits(request):
    """POST inserts a row named ?name=, GET counts rows; both in one SQLite table."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS hits (id INTEGER PRIMARY KEY, name TEXT)")
        if request.method == "POST":
            cursor.execute("INSERT INTO hits (name) VALUES (%s)", [request.GET.get("name", "")])
        cursor.execute("SELECT COUNT(*) FROM hits")
        (count,) = cursor.fetchone()
    return JsonResponse({"count": count})


def protected(request):
    """Not exempt: a POST without a CSRF token must be refused by Django (403)."""
    return HttpResponse("should not get here")


urlpatterns = [
    path("hello", hello),
    path("form", form),
    path("upload", upload),
    path("hits", hits),
    path("protected", protected),
]

from django.core.wsgi import get_wsgi_application  # noqa: E402 (after settings.configure)

application = get_wsgi_application()
