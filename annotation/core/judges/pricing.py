"""List prices per model, US dollars per million tokens (input, output). They drift: check
the providers' pages and update this one table. A model not listed costs 0 here, and the
job log says that its cost is unknown."""

from __future__ import annotations

from annotation.core.judges.base import Usage

PRICES_PER_MILLION: dict[str, tuple[float, float]] = {
    "gemini-2.5-flash-lite": (0.10, 0.40),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-pro": (1.25, 10.00),
    "gemini-2.0-flash": (0.10, 0.40),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
}


def price_for(model: str) -> tuple[float, float] | None:
    """Longest listed name that the model id starts with ("gpt-4o-mini-2024-07-18")."""
    name = model.split("/")[-1]
    matches = [m for m in PRICES_PER_MILLION if name.startswith(m)]
    return PRICES_PER_MILLION[max(matches, key=len)] if matches else None


def cost_usd(model: str, usage: Usage) -> float:
    price = price_for(model)
    if price is None:
        return 0.0
    return (usage.input_tokens * price[0] + usage.output_tokens * price[1]) / 1_000_000
