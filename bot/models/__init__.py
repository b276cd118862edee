"""Model adapters: each implements ``bot.model.Model``."""
