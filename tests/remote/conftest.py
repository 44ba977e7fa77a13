"""The real service fixtures of the service tests, for the end-to-end runs of the remote commands."""

from tests.service.conftest import service, settings  # noqa: F401  (fixtures)
