"""Who may do what: accounts and tokens, roles, agreement checks and quotas."""
