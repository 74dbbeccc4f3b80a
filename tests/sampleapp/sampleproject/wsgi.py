"""WSGI entry point: `djangoscale serve sampleproject.wsgi:application`."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sampleproject.settings")
application = get_wsgi_application()
