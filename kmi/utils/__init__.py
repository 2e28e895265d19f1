"""Utilities shared by every part of kmi; :mod:`kmi.utils.validation` checks inputs."""
