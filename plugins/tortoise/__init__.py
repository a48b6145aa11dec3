"""audiotrain's TorToiSe plugin: fine-tuning TorToiSe's autoregressive model (UnifiedVoice) the way
ai-voice-cloning drives DL-Art-School, from a voice folder to ``<step>_gpt.pth`` files TorToiSe loads."""
