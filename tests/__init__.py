"""cxrlab's unit tests, as a package: shared helpers live in :mod:`tests.helpers`, the scripts the
tests start as subprocesses in :mod:`tests.scripts` (``python -m tests.scripts.NAME`` from the
repository root), shared session fixtures in ``tests/conftest.py``."""
