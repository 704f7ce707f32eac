"""Send Dreamdata analytics events (track, identify, group, page, screen, alias) from Python's ``logging``.

import logging
from dreamdata_logging import DreamdataHandler, track

logging.getLogger().addHandler(DreamdataHandler("WRITE_KEY"))
logging.getLogger("analytics").info("Signed Up", extra=track(user_id="42"))
"""

from dreamdata_logging._aflush import aflush
from dreamdata_logging._handler import DreamdataHandler
from dreamdata_logging._serverless import flush, flush_after
from dreamdata_logging._version import __version__
from dreamdata_logging.errors import (
    DeliveryError,
    DreamdataError,
    InvalidEventError,
    PayloadTooLargeError,
    QueueFullError,
)
from dreamdata_logging.events.bind import bind
from dreamdata_logging.events.helpers import alias, group, identify, page, screen, track

__all__ = [
    "DeliveryError",
    "DreamdataError",
    "DreamdataHandler",
    "InvalidEventError",
    "PayloadTooLargeError",
    "QueueFullError",
    "__version__",
    "aflush",
    "alias",
    "bind",
    "flush",
    "flush_after",
    "group",
    "identify",
    "page",
    "screen",
    "track",
]
