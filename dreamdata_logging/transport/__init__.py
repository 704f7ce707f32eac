"""The transport: one HTTP POST of a request body to the batch endpoint with its retry policy, the write key's
checks and Basic auth, the total deadline watchdog, bounded answers, and scrubbing secrets from text.
Internal: knows HTTP, not logging."""
