"""Infrastructure the routes share: database, security, errors, limits, metrics."""
