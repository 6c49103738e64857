"""Settings every test process needs before anything imports Prefect.

Prefect reads its settings from the environment once, when it is imported, so a test's
``monkeypatch.setenv("PREFECT_...")`` does not reach flows run in the pytest process
itself (it still reaches the ``ganzoo`` subprocesses that tests start). Set here, these
hold for the whole session: the in-process ephemeral Prefect server keeps its database
out of the user's ~/.prefect, and it may take longer than Prefect's default 20 s to start
while a Ray cluster starts beside it on 2 cores.
"""

import atexit
import os
import shutil
import tempfile

if "PREFECT_HOME" not in os.environ:
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="ganzoo-tests-prefect-")
    # registered before Prefect's own exit hook, so it runs after the ephemeral server has stopped
    atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
