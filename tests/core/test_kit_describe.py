"""Plugin.describe_example's default: the row's text fields as markdown, nothing the core knows by name."""
from __future__ import annotations

import pytest

from audiotrain.plugins import registry
from audiotrain.plugins.base import Plugin


@pytest.mark.parametrize("name", sorted(registry.discover()))
def test_default_lists_the_rows_text_fields(name):
    plugin = registry.get(name)
    row = {"key": "k/1", "audio_path": "/x/1.wav", "caption": "a dog barks", "labels": ["loud", "outdoor"],
           "blank": "  ", "count": 3, "mixed": ["a", 1]}
    assert Plugin.describe_example(plugin, row) == "CAPTION: a dog barks\n\nLABELS: loud, outdoor"
    assert Plugin.describe_example(plugin, {"key": "k", "audio_path": "/a.wav"}) == ""
    assert isinstance(plugin.describe_example(row | {"text": "", "tags": [], "lyrics": ""}), str)
