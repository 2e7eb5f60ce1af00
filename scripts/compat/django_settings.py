"""Minimal Django settings for the compatibility capture: one database, the
capture cluster's `app` (port from COMPAT_PORT)."""

import os

SECRET_KEY = "compat-capture-only"
USE_TZ = True
INSTALLED_APPS = []
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "app",
        "USER": "postgres",
        "HOST": os.environ.get("COMPAT_HOST", "127.0.0.1"),
        "PORT": os.environ["COMPAT_PORT"],
    }
}
