"""uvicorn started from a script with uvicorn.run(): the app (and our handler) exist before uvicorn's own
dictConfig runs.   python uvicorn_run.py PORT"""

from __future__ import annotations

import sys

import asgi_app
import uvicorn

uvicorn.run(asgi_app.app, host="127.0.0.1", port=int(sys.argv[1]), log_level="info")
