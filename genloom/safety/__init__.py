"""Responsible AIGC: moderation of prompts and outputs (first version; labels and watermarks come later)."""
