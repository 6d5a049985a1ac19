"""Where Scout's evidence comes from."""
