"""The `pystol` command line: client commands for every API verb, process commands
(`api`, `worker`, `beat`, `watch`, `up`), and the HTTP client they share.

The process commands import their process's code only when they run it (kubernetes,
kopf and gunicorn cost a second to import), so `pystol jobs list` stays quick.
"""
