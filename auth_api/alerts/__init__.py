"""Alert rules on predictions and the alerts they raise (a stack feature; docs/alerts.md)."""
