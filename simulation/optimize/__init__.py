"""Allocation optimiser (domain §6.2): per-zone path returns from simulation, a convex search over the zone
(and region) weights, an efficient frontier, and re-simulation of the chosen allocation.

``spec`` is what is asked (objective, bounds, limits; plain data); ``assets`` simulates one single-zone (or
zone × region) sub-fund per asset on common random numbers; ``surrogate`` measures an allocation on those
paths; ``problem`` states the objective and constraints over them and solves them (cvxpy, Clarabel);
``frontier`` traces the efficient frontier; ``run`` ties them together with the re-simulation.
"""
