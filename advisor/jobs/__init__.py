"""The job queue in the database (leases, heartbeats, attempts, retries, cancellation), job functions by
name, executors by name (`local`, `ray`) and the worker loop."""
