"""Model adapters: each implements ``bot.domain.model.Model``."""
