"""Mail: messages are rendered from templates, queued in the outbox table with the change that needs them, and sent by a
background sender over SMTP (or written to ``var_dir/outbox/*.eml`` when no SMTP server is configured)."""
