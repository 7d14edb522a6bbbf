"""The hub-side checks run against the same real demo gateway as the API tests."""

from tests.api.conftest import demo_settings, services, tokens  # noqa: F401
