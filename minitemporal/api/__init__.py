"""The api role: REST over falcon ASGI, a thin translation to the scheduler's gRPC calls."""
