"""Policy model: datasets, scenarios and agreements as typed, validated objects."""

from gateway.policy.loading import PolicySet, load_policies
from gateway.policy.models import Agreement, Column, Dataset, Scenario

__all__ = ["Agreement", "Column", "Dataset", "PolicySet", "Scenario", "load_policies"]
