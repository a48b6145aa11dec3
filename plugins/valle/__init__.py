"""VALL-E plugin for audiotrain (speech: AR+NAR transformer over EnCodec codes)."""
