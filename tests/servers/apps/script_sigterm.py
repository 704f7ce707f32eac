"""A plain script that logs COUNT events, prints "ready" and sleeps until it is ended by a signal.

    python script_sigterm.py COUNT

SIGTERM keeps its default action (the script installs no handler); DD_HANDLE_SIGTERM turns the handler's
own SIGTERM delivery on or off. Set DD_FLUSH_INTERVAL high so nothing is sent before the signal.
"""

from __future__ import annotations

import sys
import time

import dd_common

dd_common.attach()
for n in range(int(sys.argv[1])):
    dd_common.log_event("Script Event", n=n)
print("ready", flush=True)
time.sleep(120)
