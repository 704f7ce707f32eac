"""Events, in the caller's thread: the helpers that build event data, ``bind()``, where a record carries it,
building one message and encoding it to bytes. Internal: import the public names from ``dreamdata_logging``."""
