"""What the web app needs beyond the library: background jobs and their worker, the saved
workspace, and the quick start.

The top of the library: nothing in `core` imports it but the entry points (`core.cli`, `core.worker`).
"""
