"""Client side of Stockade: what runs on a developer machine or a CI runner, without a server
home (no settings, no database). ``download.py`` fetches pinned requirements from a signed
index, every page and file verified with python-tuf's client (``stockade client download``).
"""
