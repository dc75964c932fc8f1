"""The scheduler role: the only writer of state. Thin over the store, the queue and the domain."""
