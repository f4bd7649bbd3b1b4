"""Builders shared by the tests: generated images and files (never copied between tests)."""
