"""Splitting a pool for the model: the budget plan, equal-size K-means, and the diverse/similar/random subsets."""

from selectllm_core.split.budget import PAPER_QUERIES, BudgetPlan, check_budget, plan_budget
from selectllm_core.split.kmeans import equal_size_kmeans
from selectllm_core.split.subsets import STRATEGIES, SubsetPlan, make_subsets

__all__ = ["PAPER_QUERIES", "STRATEGIES", "BudgetPlan", "SubsetPlan", "check_budget", "equal_size_kmeans", "make_subsets",
           "plan_budget"]
