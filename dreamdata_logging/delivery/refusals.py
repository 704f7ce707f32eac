"""A batch refused with 400 for some of its messages: halves are sent again until the refused ones are alone.

One malformed or refused message must not cost the other events of its batch. A refused batch is split in
halves and each half is sent again (and split again while refused) until every refused message is alone:
it is given up on with the server's reason, the others arrive. Isolating one refused message among ``n``
takes about ``2 * log2(n)`` requests. The splitting of one batch is bounded: past :data:`MAX_ISOLATED`
refused messages' worth of requests, a part still refused fails as it is (an endpoint that refuses every
batch, say, is not asked once per message). A single message refused is final, and a refused batch is never
sent again whole. A rejected write key (401, 403) is not a refusal of messages: it is never split.
"""

from __future__ import annotations

import math

from dreamdata_logging.errors import DeliveryError

#: Refused messages isolated per batch, at about 2 * log2(n) requests each, before refused parts fail whole.
MAX_ISOLATED = 8


def refused_for_its_messages(error: DeliveryError) -> bool:
    """The endpoint refused the batch's content (400): some of its messages may be fine on their own."""
    return error.status == 400


class Splits:
    """The requests left for splitting one refused batch (both halves of each split are one request each)."""

    __slots__ = ("left", "count")

    def __init__(self, count: int) -> None:
        self.count = count
        self.left = MAX_ISOLATED * 2 * max(1, math.ceil(math.log2(max(2, count))))

    def take(self) -> bool:
        """Whether a refused part may be split once more (spending two requests)."""
        if self.left < 2:
            return False
        self.left -= 2
        return True

    def spent(self, error: DeliveryError, count: int) -> DeliveryError:
        """``error`` for a refused part of ``count`` events that is not split further."""
        return DeliveryError(
            f"{error} ({count} events given up on together: the batch of {self.count} had more refused "
            f"messages than the {MAX_ISOLATED} isolated one by one)",
            status=error.status,
        )
