"""Per-index policies: rules → a decision with a reason for every block (no I/O here)."""

from stockade.core.policy.model import (
    Decision,
    FileFacts,
    Policy,
    PolicyError,
    Reason,
    VulnFact,
    evaluate,
    parse_policy,
)

__all__ = [
    "Decision",
    "FileFacts",
    "Policy",
    "PolicyError",
    "Reason",
    "VulnFact",
    "evaluate",
    "parse_policy",
]
