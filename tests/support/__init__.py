"""Helpers shared by the test suites: services, real processes, the REST client."""
