"""Fixtures shared by the method tests."""
import pytest

import halluc


@pytest.fixture(scope="session")
def toy():
    """The shipped toy-llava on CPU, loaded once (the formula tests read its weights; nothing mutates it)."""
    return halluc.load("toy-llava", device="cpu")
