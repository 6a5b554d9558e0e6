"""The batch CLI: one question about many images, one record per image (`python -m glm_vision.batch`)."""
