"""Governance workflows the regulations ask for: objections, complaints, misuse records,
usage reports, and the early-warning rules over the job log."""
