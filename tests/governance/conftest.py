"""The same demo installation as the API tests (real store, audit log, sandboxes)."""

from tests.api.conftest import client, demo_settings, services, tokens  # noqa: F401
