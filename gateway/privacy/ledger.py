"""Per-agreement privacy ledger: the release lock, the epsilon budget, cached noisy answers.

Every release of an agreement (noisy or audited) first takes the agreement's ledger row
for writing, so two releases of one agreement never check against a state that the
other is about to change: a row lock on PostgreSQL (gateways behind a load balancer),
the database write lock on SQLite. The row is written before anything is read, because
a SQLite transaction that read first cannot take the write lock later.

Epsilon is charged when a noisy answer is stored, in the same transaction; the same
query asked again (same agreement, rewritten SQL and dataset versions) gets the stored
answer and is not charged.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from gateway.errors import BudgetExhausted
from gateway.policy.models import Noise
from gateway.privacy.models import NoisyAnswer, PrivacyBudget
from gateway.store.db import Store
from gateway.store.models import utcnow

# Float sums of per-query epsilons: 10 x 0.1 must fit a budget of 1.0.
TOLERANCE = 1e-9


def lock(session: Session, agreement_id: str) -> PrivacyBudget:
    """Take the agreement's ledger row for this transaction (created on first use)."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(PrivacyBudget).values(
        agreement_id=agreement_id, epsilon_spent=0.0, noisy_releases=0, updated_at=utcnow(),
    ).on_conflict_do_nothing(index_elements=["agreement_id"]))
    session.execute(update(PrivacyBudget).where(PrivacyBudget.agreement_id == agreement_id)
                    .values(updated_at=utcnow()))
    row = session.get(PrivacyBudget, agreement_id, populate_existing=True)
    assert row is not None
    return row


@dataclass(frozen=True)
class Balance:
    spent: float
    noisy_releases: int
    cached_answers: int


def balance(store: Store, agreement_id: str) -> Balance:
    with store.session() as session:
        row = session.get(PrivacyBudget, agreement_id)
        cached = session.scalar(select(func.count()).select_from(NoisyAnswer)
                                .where(NoisyAnswer.agreement_id == agreement_id)) or 0
    return Balance(row.epsilon_spent if row else 0.0, row.noisy_releases if row else 0,
                   int(cached))


def cached(store: Store, agreement_id: str, key: str) -> NoisyAnswer | None:
    with store.session() as session:
        return _cached(session, agreement_id, key, with_answer=True)


def _cached(session: Session, agreement_id: str, key: str, *, with_answer: bool
            ) -> NoisyAnswer | None:
    found = session.scalar(select(NoisyAnswer).where(NoisyAnswer.agreement_id == agreement_id,
                                                     NoisyAnswer.cache_key == key))
    if found is not None and with_answer:
        _ = found.answer  # load the deferred column while the session is open
    return found


def exhausted(agreement_id: str, noise: Noise, spent: float) -> BudgetExhausted:
    return BudgetExhausted(
        f"the privacy budget of agreement {agreement_id} is spent: {spent:g} of "
        f"{noise.budget_epsilon:g} epsilon used, and a new query costs "
        f"{noise.epsilon_per_query:g}. Queries asked before are still answered (from their "
        "stored noisy answers, at no cost); for new ones ask the data provider for a new "
        "agreement or a larger budget.")


def check_affordable(store: Store, agreement_id: str, noise: Noise, key: str) -> None:
    """Before running: refuse a new query the budget cannot pay (a repeat is free)."""
    spent = balance(store, agreement_id).spent
    if spent + noise.epsilon_per_query <= noise.budget_epsilon + TOLERANCE:
        return
    with store.session() as session:
        if _cached(session, agreement_id, key, with_answer=False) is not None:
            return
    raise exhausted(agreement_id, noise, spent)


def charge(store: Store, agreement_id: str, noise: Noise, answer: NoisyAnswer
           ) -> tuple[NoisyAnswer, float]:
    """Store ``answer`` and charge its epsilon; returns (answer kept, epsilon spent after).

    If the same query was answered meanwhile (another worker), that answer is returned
    and nothing is charged, so the two never differ.
    """
    with store.session() as session:
        row = lock(session, agreement_id)
        earlier = _cached(session, agreement_id, answer.cache_key, with_answer=True)
        if earlier is not None:
            return earlier, row.epsilon_spent
        if row.epsilon_spent + answer.epsilon > noise.budget_epsilon + TOLERANCE:
            raise exhausted(agreement_id, noise, row.epsilon_spent)
        row.epsilon_spent += answer.epsilon
        row.noisy_releases += 1
        session.add(answer)
        return answer, row.epsilon_spent
