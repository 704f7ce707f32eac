"""Delivery, per process: the buffer between callers and the worker thread, the worker, one batch's fate
(dispatch), deadlines, outage mode with the spool's drain, the ledger of outcomes and the reports of problems,
and the process lifecycle (exit, fork, signals). Internal: uses a transport and a spool, knows no logging records."""
