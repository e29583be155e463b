"""Pulumi mocks that record every resource the program declares (outputs = inputs)."""

from __future__ import annotations

import pulumi
import pytest


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self):
        self.created = []

    def new_resource(self, args):
        self.created.append(args)
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args):
        return {}


@pytest.fixture
def mocks():
    found = RecordingMocks()
    pulumi.runtime.set_mocks(found, preview=False)
    return found
