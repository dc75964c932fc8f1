"""The fault-injection suite: fixtures are in tests/conftest.py, helpers in tests/support."""
