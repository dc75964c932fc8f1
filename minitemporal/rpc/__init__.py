"""gRPC between roles: generated code (gen/), conversion (convert.py), server and client."""
