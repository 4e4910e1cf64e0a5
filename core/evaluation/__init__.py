"""Evaluation of trained models: preference and generation metrics, a pairwise LLM judge, lm-eval tasks."""
