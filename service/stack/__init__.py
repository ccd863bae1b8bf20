"""Launchers for real local servers (SeaweedFS, redis-server) on free loopback ports.

Used by the integration tests, by `make bench` and by `zipedge stack`. Standard library
only: they start subprocesses and talk to them over plain sockets.
"""
