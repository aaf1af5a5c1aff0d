"""CLI start-up: importing the command line loads none of the heavy libraries, which only
the commands that need them import (cron runs several commands a day)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("sqlalchemy", "pydantic", "jinja2", "mjml", "uvicorn")


def test_importing_the_cli_loads_no_heavy_library() -> None:
    probe = (
        "import json, sys; import newsletter.cli.main; "
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) == []
