"""AI judges: the pure core (no Django). Each judge rates all K completions of an item."""
