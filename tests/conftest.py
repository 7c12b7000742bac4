"""Test-session environment: Prefect state in a private folder, long start-up timeouts, no telemetry."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="reelforge-prefect-"))

pytest_plugins = ["integration.s3_fixtures"]  # tests/ is on sys.path (rootdir conftest, prepend mode)
