"""Tamper-evident audit trail: hash chain, signed checkpoints, receipts."""
