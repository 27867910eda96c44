"""Browser tests use the `chromium` and `page` fixtures from tests/conftest.py."""
