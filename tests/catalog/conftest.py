"""Catalog tests use `make_image` and `image_slug` from tests/conftest.py."""
