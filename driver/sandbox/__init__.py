"""The sandbox platform: ``python -m driver sandbox up|down|status|reset``."""
