"""ACE-Step 1.5 plugin for audiotrain (music: flow-matching DiT over Oobleck VAE latents, Qwen3-Embedding text)."""
