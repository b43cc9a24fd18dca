"""The sba command line."""
