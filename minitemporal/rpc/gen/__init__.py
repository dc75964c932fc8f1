"""Generated protobuf and gRPC code. Regenerate: scripts/gen_protos.py."""
