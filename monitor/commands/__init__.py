"""The code behind each `monitor` command; cli.py only parses flags."""
