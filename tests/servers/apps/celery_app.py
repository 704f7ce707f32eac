"""A Celery app on the filesystem broker (no result backend); the task "emit" logs one event.

    celery -A celery_app worker ...        the worker
    python celery_app.py COUNT             send COUNT tasks and exit

Environment: DD_CELERY_FOLDER (the broker's folder), DD_CELERY_MODE:
- "named": the handler on the "analytics" logger, made at import;
- "root-unhijacked": the handler on the root logger, made at import, with worker_hijack_root_logger=False;
- "root-signal": the handler added to the root logger from Celery's after_setup_logger signal;
- "root-setup": the handler on the root logger, made at import, and dreamdata_logging.celery.setup() called
  (which puts it back after the worker's own logging set-up removed it).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import dd_common
from celery import Celery
from celery.signals import after_setup_logger

folder = os.environ["DD_CELERY_FOLDER"]
mode = os.environ.get("DD_CELERY_MODE", "named")
logger_name = "analytics" if mode == "named" else ""

app = Celery("celery_app")
app.conf.update(
    broker_url="filesystem://",
    broker_transport_options={
        "data_folder_in": folder,
        "data_folder_out": folder,
        "control_folder": os.path.join(folder, "control"),  # not the current directory
        "store_processed": False,
        "polling_interval": 0.1,
    },
    result_backend=None,
    task_ignore_result=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=mode != "root-unhijacked",
)

if mode == "root-unhijacked":  # Celery leaves the root logger alone: the app gives it a console, as apps do
    import logging

    logging.basicConfig(level=logging.INFO)
if mode in ("named", "root-unhijacked", "root-setup"):
    dd_common.attach(logger_name)
if mode == "root-setup":
    import dreamdata_logging.celery

    dreamdata_logging.celery.setup()
elif mode == "root-signal":

    @after_setup_logger.connect
    def add_handler(logger: Any, **kwargs: Any) -> None:
        logger.addHandler(dd_common.DreamdataHandler(**dd_common.handler_options()))


@app.task(name="emit")
def emit(n: int) -> None:
    dd_common.log_event("Task Ran", logger_name=logger_name, n=n)


if __name__ == "__main__":
    for n in range(int(sys.argv[1])):
        emit.delay(n)
