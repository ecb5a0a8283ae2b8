"""What the desk and the workers start: the threads that dispatch triage, send wake-ups and
carry leased work (restorations, service requests, access changes)."""
