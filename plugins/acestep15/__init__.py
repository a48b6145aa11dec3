"""ACE-Step 1.5 (2B and XL DiT, Oobleck VAE, Qwen3 text encoder) as an audiotrain plugin."""
