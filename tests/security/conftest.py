from tests.pg import pg_template  # noqa: F401 - fixture
