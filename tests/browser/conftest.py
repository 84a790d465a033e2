"""Real-browser tests: collected only when asked for (``make test-browser`` sets
``CXRLAB_BROWSER=1``), so the unit run never starts JupyterLab or Chromium by accident."""
import os

if os.environ.get("CXRLAB_BROWSER") != "1":
    collect_ignore_glob = ["test_*.py"]
