"""Portfolio impact of one loan (domain §8.2): paired runs on common random numbers, fast and exact."""

from .analysis import Applicant, ImpactResult, Recommendation, analyze
from .candidate import CandidateLoan, with_candidate
from .paths import Base, build_base, exact_path, fast_path
from .rules import Policy, Rule

__all__ = [
    "Applicant",
    "Base",
    "CandidateLoan",
    "ImpactResult",
    "Policy",
    "Recommendation",
    "Rule",
    "analyze",
    "build_base",
    "exact_path",
    "fast_path",
    "with_candidate",
]
