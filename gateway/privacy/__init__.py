"""Privacy of aggregate releases beyond one query's k-threshold (issue 10).

    plan.py      what the rewriter's ``bound_contributions`` tells the noise step
    noise.py     OpenDP Laplace noise on bounded counts and sums
    ledger.py    per-agreement release lock, epsilon budget, cached noisy answers
    sets.py      entity sets of a released result (from its hidden column)
    auditing.py  refuse releases that isolate < k entities with earlier ones
    guard.py     what the job service calls: before running, and to release
    models.py    the tables (migration 0008)

Nothing here is imported by ``gateway.privacy`` itself: importing the package does not
load OpenDP.
"""
