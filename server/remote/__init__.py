"""Talking to a running service from Python and the shell: ``client`` (SimulationService with deadlines and
retries) and the published gRPC service config it uses (``service_config.json``)."""
