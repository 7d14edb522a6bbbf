"""The airlock tests run against the same real demo gateway as the API tests."""

from tests.api.conftest import client, demo_settings, services, tokens  # noqa: F401
