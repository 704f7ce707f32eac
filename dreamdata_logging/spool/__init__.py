"""The spool: an SQLite file that keeps undelivered message bytes through outages and restarts (leases,
byte bound, damaged or replaced files). Internal: knows storage, not HTTP."""
