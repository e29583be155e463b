"""Hostwinds Cloud: the API client, the VPS and SSH-key dynamic resources, and the fleet component."""
