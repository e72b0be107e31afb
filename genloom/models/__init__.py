"""Model families' networks: one file each, its config dataclass on top (the registry is genloom.families)."""
