"""The two workloads: the reference example's track event (~500 bytes on the wire) and a larger
one with ~4 kB of properties (an e-commerce "Order Completed" with a product list).

Both use the reference example's userId and context. The same objects are passed on every call,
to every contender; each contender must snapshot them itself (the handler promises a snapshot at emit).

Neither workload contains the string ``"type"`` anywhere: the receiver counts messages by it.
"""

from __future__ import annotations

import json

USER_ID = "019mr8mf4r"

# From reference/example.json (the track event), minus the fields every library fills in itself
# (type, messageId, timestamp, context.library).
CONTEXT = {
    "ip": "24.5.68.47",
    "page": {
        "referrer": "http://localhost:3000/test",
        "url": "http://localhost:3000/test/path?param=a088fb06-a208-4552-b4b7-28fb7f95aeaf",
    },
    "userAgent": (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36"
    ),
    "campaign": {"name": "my_campaign", "source": "demo", "medium": "calendly", "term": "", "content": ""},
}

SMALL_EVENT = "Song Played"
SMALL_PROPERTIES = {"name": "Fallin for You", "artist": "Dierks Bentley"}


def _large_properties() -> dict:
    products = []
    for i in range(11):
        products.append(
            {
                "product_id": f"507f1f77bcf86cd7994390{i:02d}",
                "sku": f"G-{32 + i:03d}-{(i * 7919) % 10000:04d}",
                "category": ["Games", "Books", "Music", "Outdoor"][i % 4],
                "name": f"Product number {i} with a reasonably descriptive name",
                "brand": ["Hasbro", "Penguin", "Sony", "Patagonia"][i % 4],
                "variant": ["red", "blue", "green", "large", "small"][i % 5],
                "price": round(9.99 + i * 3.5, 2),
                "quantity": 1 + i % 3,
                "coupon": "SUMMER15" if i % 3 == 0 else None,
                "position": i + 1,
                "url": f"https://www.example.com/product/{i}/path",
                "image_url": f"https://www.example.com/product/{i}/image.jpg",
            }
        )
    return {
        "checkout_id": "fksdjfsdjfisjf9sdfjsd9f",
        "order_id": "50314b8e9bcf000000000000",
        "affiliation": "Google Store",
        "total": 270.00,
        "subtotal": 255.00,
        "revenue": 260.00,
        "shipping": 3.00,
        "tax": 2.00,
        "discount": 2.50,
        "coupon": "hasbros",
        "currency": "USD",
        "first_order": False,
        "products": products,
    }


LARGE_EVENT = "Order Completed"
LARGE_PROPERTIES = _large_properties()

WORKLOADS = {
    "small": {"event": SMALL_EVENT, "properties": SMALL_PROPERTIES},
    "large": {"event": LARGE_EVENT, "properties": LARGE_PROPERTIES},
}


def wire_size(name: str) -> int:
    """Approximate serialised size of one message of the workload (compact JSON), for reports."""
    w = WORKLOADS[name]
    msg = {
        "type": "track",
        "messageId": "3f8236bc-c010-43bb-a341-cd30b5228e9d",
        "userId": USER_ID,
        "event": w["event"],
        "properties": w["properties"],
        "context": {**CONTEXT, "library": {"name": "dreamdata-logging", "version": "0.1.0"}},
        "timestamp": "2012-12-02T00:30:12.984Z",
    }
    return len(json.dumps(msg, separators=(",", ":")).encode())


def properties_size(name: str) -> int:
    return len(json.dumps(WORKLOADS[name]["properties"], separators=(",", ":")).encode())


def _check() -> None:
    for name, w in WORKLOADS.items():
        text = json.dumps([USER_ID, w, CONTEXT])
        assert '"type"' not in text and "messageId" not in text, name


_check()

if __name__ == "__main__":
    for n in WORKLOADS:
        print(n, "message bytes:", wire_size(n), "properties bytes:", properties_size(n))
