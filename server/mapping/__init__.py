"""Pure translations between the protobuf contract and the simulation engine (no I/O, no gRPC calls).

``config``: proto ``SimulationConfig`` ⇄ engine config, and ``ConfigError`` → ``InvalidArgument``.
``result``: engine ``SimulationResult`` → proto ``SimulationResult``.
``simulation``: a stored run → the ``Simulation`` resource in a ``SimulationView``.
"""
