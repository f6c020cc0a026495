"""The tiny trained run and its onboarded indexes of the service tests, reused by the `predict` tests."""

from tests.api.conftest import artifacts  # noqa: F401  (the session fixture: a one-epoch run, its indexes)
