"""The wire format shared by the handler, the collector and ``send``: limits, message ids and timestamps,
the field rules, strict JSON and batch framing. Internal: knows neither logging nor HTTP."""
