"""The example project's settings, with a database file the server's threads can share."""

import os
import tempfile

from django_chat.settings import *  # noqa: F403

_db = os.path.join(tempfile.gettempdir(), f"roomcast-django-test-{os.getpid()}.sqlite3")
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": _db,
        # A file, not pytest-django's in-memory default: view threads open their own
        # connections, and the tests count them.
        "TEST": {"NAME": _db},
    }
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast test logins
