"""ACE-Step 1.5 for audiotrain: the 2B and XL flow-matching DiT over Oobleck VAE latents, Qwen3-Embedding text."""
