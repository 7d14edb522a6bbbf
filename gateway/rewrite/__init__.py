"""Query rewriter: SQL + scenario -> rewritten SQL and explanation, or a rejection."""
