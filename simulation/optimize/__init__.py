"""Allocation optimiser (domain §6.2): per-zone path returns from simulation, a convex search over the zone
(and region) weights, an efficient frontier, and re-simulation of the chosen allocation.

``assets`` simulates one single-zone (or zone × region) sub-fund per asset on common random numbers;
``problem`` states the objective and constraints over those paths and solves them (cvxpy, Clarabel);
``frontier`` traces the efficient frontier; ``run`` ties them together with the re-simulation.
"""
