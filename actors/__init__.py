"""Ray actors, one role per file: env runners (real LIBERO), world-model workers, evaluators."""
