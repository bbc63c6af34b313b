"""Watching the scores once deployed: drift of the p-values, the flag rate against its promise, and
the decision log. Fed by the plane's score operation with plain numbers (``events.ScoredEvent``)."""
