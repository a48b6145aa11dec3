"""SongGen plugin for audiotrain (text-to-song: a decoder over X-Codec tokens, mixed / mixed_pro / dual-track)."""
