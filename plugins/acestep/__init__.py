"""ACE-Step v1 plugin for audiotrain (music: flow-matching transformer over DCAE latents)."""
