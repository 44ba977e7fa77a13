"""Pure, vectorised NumPy model of a home-equity fund (no gRPC, no I/O). See docs/model.md."""

ENGINE_VERSION = "2.1.0"
