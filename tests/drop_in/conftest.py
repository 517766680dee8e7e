"""The ``drop_in`` marker (tests against other projects' installed code) until pyproject.toml lists it."""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "drop_in: checks a patcher against the installed project it patches "
                            "(pip install -e '.[drop-in]'); skipped where the project is absent")
