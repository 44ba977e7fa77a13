"""The integration runtime: upstream adapters wired to the cache, the event bus and the gRPC services."""
